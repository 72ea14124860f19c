/**
 * The collective's wire format, `tas.collective.v1.Frame` (proto/collective.proto),
 * encoded and decoded by hand: a frame is written as its encoded fields followed by a view
 * of the caller's float32 payload (never copied, never JSON), and decoded as views into the
 * received message. `peekFrame` reads the fields of a frame whose payload has not arrived
 * yet, so the receiver can choose where the payload lands (receive-buffers.ts, group.ts).
 */
import type * as grpc from '@grpc/grpc-js';
import { putVarint, varintSize as varintLen } from '../grpc/varint.js';

/** `tas.collective.v1.Op`. */
export enum Op {
  OP_UNSPECIFIED = 0,
  HELLO = 1,
  ALL_GATHER = 2,
  REDUCE_SCATTER = 3,
  ALL_GATHER_RING = 4,
  REDUCE = 5,
  BROADCAST = 6,
  BARRIER = 7,
  HEARTBEAT = 8,
  ABORT = 9,
  GOODBYE = 10,
}

/** A decoded `tas.collective.v1.Frame` (uint64 fields as numbers: < 2^53). */
export interface Frame {
  jobId: string;
  generation: number;
  srcRank: number;
  seq: number;
  op: Op;
  chunk: number;
  /** View into the received message (no copy). */
  payload: Buffer;
  /** Returns the received message's buffer to the receive pool (once its payload is consumed). */
  release?: () => void;
  error: string;
  offset: number;
  total: number;
  root: number;
  failedRank?: number;
  worldSize: number;
  /** HELLO: the attempt's collective token ('' when none). */
  token: string;
}

export const EXCHANGE_PATH = '/tas.collective.v1.Collective/Exchange';

const EMPTY = Buffer.alloc(0);
// Field tags: (field number << 3) | wire type.
const T_JOB = 0x0a, T_GEN = 0x10, T_SRC = 0x18, T_SEQ = 0x20, T_OP = 0x28, T_CHUNK = 0x30;
const T_PAYLOAD = 0x3a, T_ERROR = 0x42, T_OFFSET = 0x48, T_TOTAL = 0x50, T_ROOT = 0x58;
const T_FAILED = 0x60, T_WORLD = 0x68, T_TOKEN = 0x72, T_PAD = 0x7a;
/** Receivers get each message at the start of its own 8-aligned buffer (grpc-h2.ts). */
const MSG_START = 0;

/** The fields every frame of one sender repeats (job_id, generation, src_rank), encoded once. */
export function encodeFrameHeader(jobId: string, generation: number, srcRank: number): Buffer {
  const job = Buffer.from(jobId, 'utf8');
  const buf = Buffer.alloc(1 + varintLen(job.length) + job.length + 1 + varintLen(generation) + 1 + varintLen(srcRank));
  let p = 0;
  buf[p++] = T_JOB;
  p = putVarint(buf, p, job.length);
  p += job.copy(buf, p);
  if (generation !== 0) {
    buf[p++] = T_GEN;
    p = putVarint(buf, p, generation);
  }
  if (srcRank !== 0) {
    buf[p++] = T_SRC;
    p = putVarint(buf, p, srcRank);
  }
  return buf.subarray(0, p);
}

export interface FrameFields {
  seq?: number;
  op: Op;
  chunk?: number;
  offset?: number;
  total?: number;
  root?: number;
  error?: string;
  failedRank?: number;
  worldSize?: number;
  token?: string;
}

/**
 * One frame: `header` (from `encodeFrameHeader`), the fields, then `payload` last, preceded
 * by the `pad` field so that the payload lands 4-byte aligned in the receiver's buffer.
 * One copy of the payload, into a buffer from `alloc` (at least `size` bytes).
 */
export function encodeFrame(header: Buffer, f: FrameFields, payload?: Uint8Array, alloc: (size: number) => Buffer = Buffer.allocUnsafe): Buffer {
  return encodeFrameParts(header, f, payload, alloc, true)[0] as Buffer;
}

/**
 * The frame as [fields, payload]: the encoded fields up to and including the payload's
 * tag and length, then `payload` itself, uncopied (written as a second part of the same
 * gRPC message). Without a payload, one part.
 */
export function encodeFrameParts(header: Buffer, f: FrameFields, payload?: Uint8Array, alloc: (size: number) => Buffer = Buffer.allocUnsafe, copy = false): Uint8Array[] {
  const seq = f.seq ?? 0, chunk = f.chunk ?? 0, offset = f.offset ?? 0, total = f.total ?? 0, root = f.root ?? 0;
  const world = f.worldSize ?? 0;
  const err = f.error ? Buffer.from(f.error, 'utf8') : undefined;
  const token = f.token ? Buffer.from(f.token, 'utf8') : undefined;
  let size = header.length + 2; // + op (always written: 1-byte tag, 1-byte value)
  if (seq) size += 1 + varintLen(seq);
  if (chunk) size += 1 + varintLen(chunk);
  if (offset) size += 1 + varintLen(offset);
  if (total) size += 1 + varintLen(total);
  if (root) size += 1 + varintLen(root);
  if (f.failedRank !== undefined) size += 1 + varintLen(f.failedRank);
  if (world) size += 1 + varintLen(world);
  if (err) size += 1 + varintLen(err.length) + err.length;
  if (token) size += 1 + varintLen(token.length) + token.length;
  let pad = 0;
  const plen = payload ? payload.byteLength : 0;
  if (plen > 0) {
    const start = size + 1 + varintLen(plen); // where the payload would start without pad
    const need = (4 - ((MSG_START + start) % 4)) % 4; // 0..3 bytes to skip
    pad = need === 0 ? 0 : need === 1 ? 5 : need === 2 ? 2 : 3; // pad field: tag + len + (len bytes)
    size = start + pad + plen;
  }
  const headSize = copy ? size : size - plen;
  const whole = alloc(headSize);
  const buf = whole.length === headSize ? whole : whole.subarray(0, headSize);
  let p = header.copy(buf, 0);
  if (seq) {
    buf[p++] = T_SEQ;
    p = putVarint(buf, p, seq);
  }
  buf[p++] = T_OP;
  buf[p++] = f.op;
  if (chunk) {
    buf[p++] = T_CHUNK;
    p = putVarint(buf, p, chunk);
  }
  if (offset) {
    buf[p++] = T_OFFSET;
    p = putVarint(buf, p, offset);
  }
  if (total) {
    buf[p++] = T_TOTAL;
    p = putVarint(buf, p, total);
  }
  if (root) {
    buf[p++] = T_ROOT;
    p = putVarint(buf, p, root);
  }
  if (f.failedRank !== undefined) {
    buf[p++] = T_FAILED;
    p = putVarint(buf, p, f.failedRank);
  }
  if (world) {
    buf[p++] = T_WORLD;
    p = putVarint(buf, p, world);
  }
  if (err) {
    buf[p++] = T_ERROR;
    p = putVarint(buf, p, err.length);
    p += err.copy(buf, p);
  }
  if (token) {
    buf[p++] = T_TOKEN;
    p = putVarint(buf, p, token.length);
    p += token.copy(buf, p);
  }
  if (plen > 0) {
    if (pad > 0) {
      buf[p++] = T_PAD;
      buf[p++] = pad - 2;
      for (let i = 0; i < pad - 2; i++) buf[p++] = 0;
    }
    buf[p++] = T_PAYLOAD;
    p = putVarint(buf, p, plen);
    if (!copy) return [buf, payload!];
    buf.set(payload!, p);
  }
  return [buf];
}

/**
 * Decodes a Frame; unknown fields are skipped. The payload is a view into `buf`, or, for a
 * message whose payload was placed apart (grpc-h2.ts `Placer`), `tail`: then `buf` ends with
 * the payload's tag and length, which must match `tail`.
 */
export function decodeFrame(buf: Buffer, tail?: Uint8Array): Frame {
  return parseFrame(buf, false, tail).f;
}

/**
 * A large message's first bytes: its fields up to the payload, and where the payload
 * starts in the message and how long it is (-1 when the fields end before a payload).
 * Throws when a field runs past `head`.
 */
export function peekFrame(head: Buffer): { f: Frame; payloadAt: number; payloadLen: number } {
  return parseFrame(head, true);
}

function parseFrame(buf: Buffer, head: boolean, tail?: Uint8Array): { f: Frame; payloadAt: number; payloadLen: number } {
  const f: Frame = { jobId: '', generation: 0, srcRank: 0, seq: 0, op: Op.OP_UNSPECIFIED, chunk: 0, payload: EMPTY, error: '', offset: 0, total: 0, root: 0, worldSize: 0, token: '' };
  const end = buf.length;
  let p = 0;
  const varint = (): number => {
    let v = 0, mul = 1, b: number;
    do {
      if (p >= end) throw new Error('truncated frame');
      b = buf[p++];
      v += (b & 127) * mul;
      mul *= 128;
    } while (b & 128);
    return v;
  };
  while (p < end) {
    const key = varint();
    const field = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) {
      const v = varint();
      switch (field) {
        case 2: f.generation = v; break;
        case 3: f.srcRank = v; break;
        case 4: f.seq = v; break;
        case 5: f.op = v as Op; break;
        case 6: f.chunk = v; break;
        case 9: f.offset = v; break;
        case 10: f.total = v; break;
        case 11: f.root = v; break;
        case 12: f.failedRank = v; break;
        case 13: f.worldSize = v; break;
      }
    } else if (wire === 2) {
      const len = varint();
      if (field === 7 && head) return { f, payloadAt: p, payloadLen: len };
      if (field === 7 && tail && p === end && len === tail.byteLength) {
        f.payload = Buffer.from(tail.buffer, tail.byteOffset, tail.byteLength);
        continue;
      }
      if (p + len > end) throw new Error('truncated frame');
      if (field === 1) f.jobId = buf.toString('utf8', p, p + len);
      else if (field === 7) f.payload = buf.subarray(p, p + len);
      else if (field === 8) f.error = buf.toString('utf8', p, p + len);
      else if (field === 14) f.token = buf.toString('utf8', p, p + len);
      p += len;
    } else if (wire === 1) p += 8;
    else if (wire === 5) p += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
  if (p > end) throw new Error('truncated frame');
  if (tail && f.payload.buffer !== tail.buffer) throw new Error('placed payload not at the end of the frame');
  return { f, payloadAt: -1, payloadLen: 0 };
}

const identity = (b: Buffer): Buffer => b;

/**
 * The `tas.collective.v1.Collective` service as grpc-js defines services (encoded Buffers
 * out, Frames in): for grpc-js peers of this collective (the tests dial ours and serve
 * one); our own servers and clients are grpc-h2.ts.
 */
export const COLLECTIVE_SERVICE = {
  Exchange: {
    path: EXCHANGE_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: decodeFrame,
    responseSerialize: identity,
    responseDeserialize: decodeFrame,
    originalName: 'exchange',
  },
} as unknown as grpc.ServiceDefinition;
