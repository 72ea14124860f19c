/**
 * The trainer's `Collective` over gRPC: one process per rank, one persistent bidirectional
 * `Exchange` stream (proto/collective.proto) per pair of ranks and direction.
 *
 * Transport: grpc-h2.ts, gRPC's wire protocol on our own HTTP/2 (h2-connection.ts;
 * grpc-js clients and servers interoperate with it, the tests check both ways). grpc-js
 * copied every megabyte frame twice into fresh buffers, node:http2 once more on receive;
 * here a frame is written as its encoded fields plus a view of the caller's floats, and
 * read from the socket straight into a pooled buffer or the result.
 *
 * Forming a group: every rank runs a collective server (its own, bound by `connect`, or
 * one from `listenCollectiveServer`: a pool worker's, on its own port) and opens one
 * persistent stream to every other rank's server; the first frame each way is HELLO. Rank
 * a's frames to rank b travel on the stream b opened to a, server → client, so each
 * connection carries bulk data one way only, and bulk is always received on a socket
 * this rank dialed: only those can read straight into our buffers (net's `onread`).
 * `connect` resolves when every pair has both streams. A server with no collective of the
 * job registered yet answers UNAVAILABLE and the dialer retries until `connectTimeoutMs`.
 * Peers are `host:port` or `unix:/path` (the same gRPC over a Unix socket).
 *
 * Algorithms (every rank calls the same collectives in the same order; call `seq` numbers
 * them; every frame carries seq, job id and generation):
 * - allGather: every rank's buffer to every other rank; results in rank order.
 * - allReduce, buffers under `smallMessageBytes` (64 KiB): every rank's buffer to every
 *   other rank; each rank sums all W buffers in rank order, starting from zeros, exactly
 *   as the in-process group does, so the bits equal the in-process result on every rank.
 * - allReduce, larger buffers, any W >= 2: reduce-scatter then all-gather over W
 *   segments, each a direct exchange: every rank sends its values of segment c to rank c
 *   (REDUCE_SCATTER), which sums the W parts in rank order from zeros (the same bits as
 *   the in-process group; the arithmetic is collective-math.ts) frame by frame as they
 *   arrive and sends each final frame to every other rank (ALL_GATHER_RING), where it is
 *   only copied into the result. 2(W-1)/W of the buffer each way per rank, as a ring, in
 *   2 dependent steps instead of 2(W-1), pipelined in frames of `frameBytes` (1 MiB for
 *   two ranks, 4 MiB for more: `defaultReduceFrameBytes`).
 * - allReduceInPlace: the same frames and bits, the result written into the caller's
 *   buffer (torch's all_reduce): each final segment overwrites the values sent from there
 *   once their write reached the socket.
 * - broadcast: the root writes its buffer to every rank; barrier: an empty frame each way.
 *
 * Failure: a stream error or end without GOODBYE ("rank 2 unreachable: ..."), no frame
 * from a peer for `timeoutMs` ("no heartbeat from rank 2 for 5012 ms"; idle streams carry
 * a HEARTBEAT every `heartbeatMs`), a frame of another job/generation, or a collective
 * mismatch fails the whole group: every pending and later call rejects with a
 * `CollectiveError` (`TrainerError` code TAS_ERR_COLLECTIVE) naming the rank, and an ABORT
 * goes to every other rank so that they fail at once too. A rank's event loop must not be
 * blocked for longer than `timeoutMs` (its heartbeats stop): keep `timeoutMs` above the
 * longest synchronous stretch of the training step.
 *
 * Data path: payloads are raw little-endian float32, encoded by hand and never copied on
 * send (the frame's fields, then a view of `data` or of the result; every call waits for
 * its writes to reach the socket before it returns, so the caller may then change them);
 * read from the socket into pooled buffers (`recvAlloc`; `Frame.release` after the sum) and
 * read as Float32Array views (the `pad` field aligns the payload), except all-gather
 * frames of a large allReduce, which are read straight into the result (`place`); compression
 * is off.
 *
 * What a large allReduce costs (2-core VM, 16 MB, in place, p50; bench/collective.ts and
 * docs/ARCHITECTURE.md, each beside gloo in the same run): W=2 over loopback TCP
 * 12.0-16.0 ms (gloo 16.1-22.3 ms), W=4 over Unix sockets 28.9-32.0 ms (gloo 37.8-53.4);
 * per rank and call 5-7.5 ms user CPU (mostly the sums: collective-math.ts, native/sum.c
 * where built) and 5.5-9 ms kernel (the socket copies). A fresh result (`allReduce`)
 * costs a V8 collection every few calls and, over TCP, fresh-page kernel time.
 */
import { endianness } from 'node:os';
import type * as grpc from '@grpc/grpc-js';
import { dial as dialH2, GrpcH2Server, Status, statusName, type CallStatus, type GrpcCall } from './transport/grpc-h2.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import type { Collective } from '../trainer/collective/collective.js';
import { sumInRankOrder } from './collective-math.js';
import { TrainerError } from '../trainer/errors.js';
import { putVarint, varintSize as varintLen } from '../grpc/varint.js';

// ---------------------------------------------------------------------------------------
// Wire format (tas.collective.v1.Frame), encoded and decoded by hand.

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
}

export const EXCHANGE_PATH = '/tas.collective.v1.Collective/Exchange';

const EMPTY = Buffer.alloc(0);
// Field tags: (field number << 3) | wire type.
const T_JOB = 0x0a, T_GEN = 0x10, T_SRC = 0x18, T_SEQ = 0x20, T_OP = 0x28, T_CHUNK = 0x30;
const T_PAYLOAD = 0x3a, T_ERROR = 0x42, T_OFFSET = 0x48, T_TOTAL = 0x50, T_ROOT = 0x58;
const T_FAILED = 0x60, T_WORLD = 0x68, T_PAD = 0x7a;
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
  let size = header.length + 2; // + op (always written: 1-byte tag, 1-byte value)
  if (seq) size += 1 + varintLen(seq);
  if (chunk) size += 1 + varintLen(chunk);
  if (offset) size += 1 + varintLen(offset);
  if (total) size += 1 + varintLen(total);
  if (root) size += 1 + varintLen(root);
  if (f.failedRank !== undefined) size += 1 + varintLen(f.failedRank);
  if (world) size += 1 + varintLen(world);
  if (err) size += 1 + varintLen(err.length) + err.length;
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
  const f: Frame = { jobId: '', generation: 0, srcRank: 0, seq: 0, op: Op.OP_UNSPECIFIED, chunk: 0, payload: EMPTY, error: '', offset: 0, total: 0, root: 0, worldSize: 0 };
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

// ---------------------------------------------------------------------------------------
// Errors.

/** A failed collective: TAS_ERR_COLLECTIVE, with the failed rank when one is to blame. */
export class CollectiveError extends TrainerError {
  /** The message as first raised (ABORT frames carry this, not the "reported by" suffix). */
  readonly origin: string;
  constructor(
    message: string,
    readonly failedRank?: number,
    origin?: string,
  ) {
    super('TAS_ERR_COLLECTIVE', message);
    this.origin = origin ?? message;
  }
}

// ---------------------------------------------------------------------------------------
// Options, servers.

export type { TlsFiles } from '../grpc/tls-files.js';

export interface GrpcCollectiveOptions {
  jobId: string;
  /** Incarnation of the job; frames of another generation are rejected. */
  generation: number;
  rank: number;
  worldSize: number;
  /** host:port of every rank's collective server, index = rank. */
  peers: string[];
  /** Port to bind when no `server` is given (default: the port of peers[rank]). */
  listenPort?: number;
  /** Host to bind when no `server` is given (default 0.0.0.0). */
  listenHost?: string;
  /** An already-bound server (e.g. from `listenCollectiveServer`, or the worker's). */
  server?: CollectiveServer;
  /** A dead, hung or partitioned peer fails every call within this (default 5000 ms). */
  timeoutMs?: number;
  /** Heartbeat interval on idle streams (default 500 ms; at most timeoutMs / 2). */
  heartbeatMs?: number;
  /** How long `connect` waits for the whole mesh (default max(30000, timeoutMs)). */
  connectTimeoutMs?: number;
  /** allReduce buffers below this many bytes use the rank-order all-to-all (default 64 KiB). */
  smallMessageBytes?: number;
  /**
   * Largest payload per frame; larger messages are split (default 4 MiB; a large allReduce
   * of two ranks: 1 MiB).
   */
  frameBytes?: number;
  /** PEM file paths: mutual TLS. Plaintext when absent. */
  tls?: TlsFiles;
  /** Where rejected frames and failures are reported (default console.warn). */
  log?: (message: string) => void;
}

/** The gRPC server of the Collective service (grpc-h2.ts: our own HTTP/2, not grpc-js). */
export type CollectiveServer = GrpcH2Server;

export interface CollectiveListenOptions {
  /** TCP host (default 0.0.0.0). */
  host?: string;
  /** TCP port (0 or absent: any free port). */
  port?: number;
  /**
   * Also listen on this Unix socket path: peers on the same host dial `unix:<path>`, the
   * same gRPC stream over a cheaper transport than loopback TCP.
   */
  unixPath?: string;
  tls?: TlsFiles;
}

/**
 * A gRPC server for collectives, bound to host:port (port 0: any free port; the bound port
 * is returned so that the ranks' addresses can be collected before `connect`) and, with
 * `unixPath`, to a Unix socket too.
 */
export async function listenCollectiveServer(opts: CollectiveListenOptions = {}): Promise<{ server: CollectiveServer; port: number; unixPath?: string }> {
  const server = await GrpcH2Server.listen(EXCHANGE_PATH, recvAlloc, { host: opts.host, port: opts.port ?? 0, unixPath: opts.unixPath, tls: opts.tls });
  routerFor(server);
  return { server, port: server.port, ...(server.unixPath ? { unixPath: server.unixPath } : {}) };
}

function portOf(address: string): number {
  const m = /:(\d+)$/.exec(address);
  if (!m) throw new RangeError(`peer address ${JSON.stringify(address)} has no :port`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------
// Router: one per server; routes each incoming stream to the collective of its job.

const routers = new WeakMap<CollectiveServer, Router>();

function routerFor(server: CollectiveServer): Router {
  let r = routers.get(server);
  if (!r) {
    r = new Router(server);
    routers.set(server, r);
  }
  return r;
}

const HELLO_TIMEOUT_MS = 10_000;

class Router {
  private readonly groups = new Map<string, GrpcCollective>();
  private readonly logged = new Set<string>();
  private log: (m: string) => void = (m) => console.warn(m);

  constructor(server: CollectiveServer) {
    server.on('call', (call: GrpcCall) => this.incoming(call));
  }

  register(c: GrpcCollective): void {
    const old = this.groups.get(c.jobId);
    if (old && old !== c) {
      if (old.generation >= c.generation) throw new CollectiveError(`a collective of job ${c.jobId} generation ${old.generation} is already registered on this server (this one: generation ${c.generation})`);
      old.supersede(c.generation);
    }
    this.groups.set(c.jobId, c);
    this.log = c.log;
  }

  unregister(c: GrpcCollective): void {
    if (this.groups.get(c.jobId) === c) this.groups.delete(c.jobId);
  }

  private incoming(call: GrpcCall): void {
    let settled = false;
    const reject = (code: number, details: string, logIt: boolean) => {
      settled = true;
      clearTimeout(timer);
      call.off('data', onHello);
      if (logIt) {
        const key = `${code}|${details}`;
        if (!this.logged.has(key)) {
          this.logged.add(key);
          this.log(`collective: rejected a stream from ${call.getPeer()}: ${details}`);
        }
      }
      call.finishWith(code, details);
    };
    const timer = setTimeout(() => reject(Status.DEADLINE_EXCEEDED, `no HELLO within ${HELLO_TIMEOUT_MS} ms`, true), HELLO_TIMEOUT_MS);
    timer.unref();
    const onHello = (m: Buffer) => {
      if (settled) return;
      let f: Frame;
      try {
        f = decodeFrame(m);
      } catch (e) {
        return reject(Status.FAILED_PRECONDITION, `undecodable first frame: ${(e as Error).message}`, true);
      }
      if (f.op !== Op.HELLO) return reject(Status.FAILED_PRECONDITION, `first frame is ${Op[f.op] ?? f.op}, not HELLO`, true);
      const g = this.groups.get(f.jobId);
      if (!g) {
        // Not registered (yet): the dialer retries. Logged when another job is here.
        return reject(Status.UNAVAILABLE, `no collective of job ${f.jobId} generation ${f.generation} here`, this.groups.size > 0);
      }
      if (f.generation < g.generation) return reject(Status.FAILED_PRECONDITION, `stale generation: job ${f.jobId} generation ${f.generation} from rank ${f.srcRank}, this server runs generation ${g.generation}`, true);
      if (f.generation > g.generation) return reject(Status.UNAVAILABLE, `job ${f.jobId} generation ${f.generation} not started here (still generation ${g.generation})`, false);
      const why = g.accept(call, f);
      if (why) return reject(Status.FAILED_PRECONDITION, why, true);
      settled = true;
      clearTimeout(timer);
      call.off('data', onHello);
    };
    call.on('data', onHello);
    call.on('error', () => {});
  }
}

// ---------------------------------------------------------------------------------------
// Links: one stream to one peer.

interface Waiter {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
}

/** A pending write: settled when its bytes reached the socket, or when the group fails. */
interface PendingWrite {
  resolve: () => void;
  reject: (e: Error) => void;
}

class Link {
  lastRecv = performance.now();
  lastSend = performance.now();
  /**
   * The stream this rank dialed to the peer's server: the peer's frames arrive on it
   * (server → client). We write only HELLO.
   */
  rx: GrpcCall | undefined;
  /** The stream the peer dialed to this rank's server: this rank's frames to the peer go on it. */
  tx: GrpcCall | undefined;
  /** Frames of calls that have started, waiting to be consumed. Key: seq:op:chunk:offset. */
  private readonly inbox = new Map<string, Frame>();
  private readonly waiters = new Map<string, Waiter>();
  /** Frames of calls this rank has not started yet. */
  early: Frame[] = [];
  /** Data frames written whose bytes have not reached the socket yet. */
  private readonly writes = new Set<PendingWrite>();
  /** The peer sent GOODBYE. */
  peerLeft = false;
  /** A stream of this link is over (ended, errored, cancelled). */
  gone = false;
  private txEnded = false;
  private rxEnded = false;
  private readonly finished: Promise<void>[] = [];

  constructor(
    readonly peer: number,
    private readonly owner: GrpcCollective,
  ) {}

  get ready(): boolean {
    return this.rx !== undefined && this.tx !== undefined;
  }

  /** Both streams are over (for a bounded wait on close). */
  get done(): Promise<unknown> {
    return Promise.all(this.finished);
  }

  attach(call: GrpcCall, dialed: boolean): void {
    const name = dialed ? 'receive stream' : 'send stream';
    if (dialed) this.rx = call;
    else this.tx = call;
    let markDone!: () => void;
    this.finished.push(new Promise<void>((r) => (markDone = r)));
    let over = false;
    // Whether the peer's end of this stream is over is judged per direction: the receive
    // stream (the peer's data) is done cleanly only after the peer's GOODBYE; the send
    // stream is done cleanly when the peer half-closes it (its close(); its data may still
    // be in flight on the receive stream, so that alone does not make it gone).
    let clean = false;
    const gone = (how: string) => {
      if (over) return;
      over = true;
      markDone();
      if (clean || this.peerLeft) return;
      this.onGone(`${name} ${how}`);
    };
    call.on('error', (e: Error & Partial<CallStatus>) => gone(e.details !== undefined ? `failed: ${statusName(e.code!)}: ${e.details}` : `failed: ${e.message}`));
    call.on('end', () => {
      // The peer ended its side: finish ours so that the stream completes.
      if (dialed) {
        this.endRx();
        gone('ended without GOODBYE');
      } else {
        clean = true;
        this.endTx();
      }
    });
    call.on('close', () => gone('closed'));
    if (dialed) call.on('status', (s: CallStatus) => gone(`ended with status ${statusName(s.code)}: ${s.details}`));
    else call.on('cancelled', () => gone('cancelled'));
    if (!dialed) call.on('finish', () => clean && markDone());
  }

  private onGone(how: string): void {
    const first = !this.gone;
    this.gone = true;
    if (first) this.owner.linkGone(this, how);
  }

  /**
   * Writes one frame (its parts, uncopied). The promise settles when its bytes reached the
   * socket: until then the parts' memory must not change. Frames stay in order. Nothing is
   * queued here: the payloads are views of the caller's arrays, so HTTP/2's own queue holds
   * no copies.
   */
  send(parts: readonly Uint8Array[]): Promise<void> {
    const failure = this.owner.failureFor(this);
    if (failure) return Promise.reject(failure);
    this.lastSend = performance.now();
    return new Promise<void>((resolve, reject) => {
      const w: PendingWrite = { resolve, reject };
      this.writes.add(w);
      this.tx!.writeMessage(parts, (err) => {
        if (!this.writes.delete(w)) return;
        if (err) reject(this.owner.failureFor(this) ?? new CollectiveError(`rank ${this.peer} unreachable: write failed: ${err.message}`, this.peer));
        else resolve();
      });
    });
  }

  /** Control frames (ABORT, GOODBYE, HEARTBEAT): written regardless of the group's state. */
  sendControl(buf: Buffer): void {
    if (!this.tx || this.txEnded || this.gone) return;
    this.lastSend = performance.now();
    try {
      this.tx.writeMessage([buf]);
    } catch {
      /* the stream is going away */
    }
  }

  /** Data frames are on their way to the socket (heartbeats would only queue behind them). */
  get blocked(): boolean {
    return this.writes.size > 0;
  }

  private endTx(): void {
    if (this.txEnded || !this.tx) return;
    this.txEnded = true;
    try {
      this.tx.end();
    } catch {
      /* already gone */
    }
  }

  private endRx(): void {
    if (this.rxEnded || !this.rx) return;
    this.rxEnded = true;
    try {
      this.rx.end();
    } catch {
      /* already gone */
    }
  }

  /** Ends both streams cleanly (after GOODBYE). */
  end(): void {
    this.endTx();
    this.endRx();
  }

  /** Abrupt: cancel the dialed stream, end the accepted one with a status. */
  kill(reason: string): void {
    this.txEnded = this.rxEnded = true;
    try {
      this.rx?.cancel();
    } catch {
      /* already gone */
    }
    try {
      this.tx?.finishWith(Status.ABORTED, reason);
    } catch {
      /* already gone */
    }
  }

  /** A frame of a started call. */
  deliver(f: Frame): void {
    const key = `${f.seq}:${f.op}:${f.chunk}:${f.offset}`;
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      w.resolve(f);
    } else this.inbox.set(key, f);
  }

  recv(seq: number, op: Op, chunk: number, offset: number): Promise<Frame> {
    const key = `${seq}:${op}:${chunk}:${offset}`;
    const f = this.inbox.get(key);
    if (f) {
      this.inbox.delete(key);
      return Promise.resolve(f);
    }
    const failure = this.owner.failureFor(this);
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => this.waiters.set(key, { resolve, reject }));
  }

  /** Drop what is left of a finished call (nothing, unless it failed). */
  forget(seq: number): void {
    const prefix = `${seq}:`;
    if (this.inbox.size) for (const k of this.inbox.keys()) if (k.startsWith(prefix)) this.inbox.delete(k);
  }

  get pendingRecvs(): number {
    return this.waiters.size;
  }

  rejectAll(err: Error): void {
    const ws = [...this.waiters.values()];
    this.waiters.clear();
    this.inbox.clear();
    this.early = [];
    for (const w of ws) w.reject(err);
    const pending = [...this.writes];
    this.writes.clear();
    for (const w of pending) w.reject(err);
  }
}

// ---------------------------------------------------------------------------------------
// The collective.

interface CallInfo {
  name: 'allGather' | 'allReduce' | 'broadcast' | 'barrier';
  ops: Op[];
  /** Byte length every rank must agree on (allReduce, broadcast). */
  total?: number;
  root?: number;
}

function family(op: Op): CallInfo['name'] | undefined {
  switch (op) {
    case Op.ALL_GATHER:
      return 'allGather';
    case Op.REDUCE:
    case Op.REDUCE_SCATTER:
    case Op.ALL_GATHER_RING:
      return 'allReduce';
    case Op.BROADCAST:
      return 'broadcast';
    case Op.BARRIER:
      return 'barrier';
    default:
      return undefined;
  }
}

function bytesOf(a: Float32Array, from = 0, to = a.length): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 4, (to - from) * 4);
}

/** The payload as float32: a view when aligned, else a copy. */
function floatsOf(b: Buffer): Float32Array {
  if ((b.byteOffset & 3) === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
  const out = new Float32Array(b.byteLength >>> 2);
  new Uint8Array(out.buffer).set(b);
  return out;
}

const DEFAULT_FRAME_BYTES = 4 << 20;

/**
 * Frame payload size of a large allReduce when the options give none: 1 MiB for two ranks
 * (each half of the buffer is 8 frames, so the reduce-scatter, the sums and the all-gather
 * overlap), 4 MiB for more. Chosen with grpc-js, which cost per message; on grpc-h2.ts the
 * size barely matters (16 MB in place, loopback, p50: W=2 256 KiB-2 MiB 10.3-11.6 ms,
 * W=4 1-4 MiB 33.6-34.5 ms, within this VM's noise). Other calls (broadcast, allGather)
 * send 4 MiB frames: nothing to overlap there.
 */
function defaultReduceFrameBytes(worldSize: number): number {
  return worldSize === 2 ? 1 << 20 : DEFAULT_FRAME_BYTES;
}

/** A Float32Array of n values, not zero-filled (every value is written before it is read). */
function uninitFloats(n: number): Float32Array {
  const b = Buffer.allocUnsafeSlow(n * 4);
  return new Float32Array(b.buffer, b.byteOffset, n);
}

/**
 * Receive buffers of large messages, reused once their frame is consumed (`Frame.release`):
 * every fresh large buffer costs page faults and, in bulk, V8 garbage collections. One free
 * list per power-of-two size from 64 KiB; up to 64 MiB kept per process. A buffer never
 * released is simply collected.
 */
const RECV_POOL_MIN = 64 * 1024;
const RECV_POOL_KEEP = 64 << 20;
const recvFree = new Map<number, Buffer[]>();
let recvKept = 0;

function sizeClass(n: number): number {
  return 2 ** Math.ceil(Math.log2(n));
}

/** A message buffer of exactly n bytes, starting 8-aligned (grpc-h2.ts's allocator). */
export function recvAlloc(n: number): Buffer {
  if (n < RECV_POOL_MIN) return Buffer.allocUnsafe(n);
  const c = sizeClass(n);
  const free = recvFree.get(c);
  const whole = free?.pop();
  if (whole) recvKept -= c;
  return (whole ?? Buffer.allocUnsafeSlow(c)).subarray(0, n);
}

function recvRelease(buf: Buffer): void {
  if (buf.length < RECV_POOL_MIN || buf.byteOffset !== 0) return;
  const c = buf.buffer.byteLength;
  if (c !== sizeClass(buf.length) || recvKept + c > RECV_POOL_KEEP) return;
  let free = recvFree.get(c);
  if (!free) recvFree.set(c, (free = []));
  free.push(Buffer.from(buf.buffer, 0, c));
  recvKept += c;
}

/** Decodes a received message (its payload in `tail` when placed); a pooled buffer comes with its `release`. */
function frameOf(m: Buffer, tail?: Uint8Array): Frame {
  const f = decodeFrame(m, tail);
  if (m.length >= RECV_POOL_MIN) {
    let once = false;
    f.release = () => {
      if (once) return;
      once = true;
      recvRelease(m);
    };
  }
  return f;
}

export class GrpcCollective implements Collective {
  readonly rank: number;
  readonly worldSize: number;
  readonly jobId: string;
  readonly generation: number;
  /** The port this collective bound (undefined when the caller passed `server`). */
  readonly port: number | undefined;
  readonly timeoutMs: number;
  readonly heartbeatMs: number;
  readonly log: (message: string) => void;

  private readonly peers: string[];
  private readonly server: CollectiveServer;
  private readonly ownServer: boolean;
  private readonly router: Router;
  private readonly tls?: TlsFiles;
  private readonly connectTimeoutMs: number;
  private readonly smallBytes: number;
  /** Largest payload per frame: broadcast, allGather, small allReduce. */
  private readonly frameFloats: number;
  /** Largest payload per frame of a large allReduce. */
  private readonly reduceFrameFloats: number;
  private readonly header: Buffer;
  private readonly heartbeatFrame: Buffer;
  private readonly links: Array<Link | undefined>;
  private readonly connections: Array<() => void> = [];
  private readonly dialCalls = new Set<GrpcCall>();
  private readyCount = 0;
  private nextSeq = 0;
  private readonly active = new Map<number, CallInfo>();
  /** Payload bytes received straight into allReduce results (diagnostics; grpc-h2.ts Placer). */
  placedBytes = 0;
  /** Large allReduce calls in progress: where their all-gather frames may be received directly. */
  private readonly sinks = new Map<number, (from: number, offset: number, length: number, total: number) => Uint8Array | undefined>();
  private failure: CollectiveError | null = null;
  private closing = false;
  private closed: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastTick = performance.now();
  private graceUntil = 0;
  private connected!: { resolve: () => void; reject: (e: Error) => void };
  private readonly connectedPromise: Promise<void>;

  /** Binds a server for collectives (see `listenCollectiveServer`). */
  static listen(opts: CollectiveListenOptions = {}): Promise<{ server: CollectiveServer; port: number; unixPath?: string }> {
    return listenCollectiveServer(opts);
  }

  /** Joins the group: binds (or uses) this rank's server, dials the lower ranks, waits for the full mesh. */
  static async connect(opts: GrpcCollectiveOptions): Promise<GrpcCollective> {
    if (endianness() !== 'LE') throw new CollectiveError('the gRPC collective sends little-endian float32 and needs a little-endian host');
    const { rank, worldSize, peers } = opts;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank ${rank} outside [0, ${worldSize})`);
    if (peers.length !== worldSize) throw new RangeError(`peers has ${peers.length} addresses for a world of ${worldSize}`);
    if (!Number.isSafeInteger(opts.generation) || opts.generation < 0) throw new RangeError(`generation must be a non-negative integer, got ${opts.generation}`);
    let server = opts.server;
    let port: number | undefined;
    if (!server) {
      ({ server, port } = await listenCollectiveServer({ host: opts.listenHost, port: opts.listenPort ?? portOf(peers[rank]), tls: opts.tls }));
    }
    const c = new GrpcCollective(opts, server, !opts.server, port);
    try {
      await c.establish();
    } catch (e) {
      await c.destroy();
      throw e;
    }
    return c;
  }

  private constructor(opts: GrpcCollectiveOptions, server: CollectiveServer, ownServer: boolean, port: number | undefined) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.jobId = opts.jobId;
    this.generation = opts.generation;
    this.peers = opts.peers.slice();
    this.server = server;
    this.ownServer = ownServer;
    this.port = port;
    this.tls = opts.tls;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.heartbeatMs = opts.heartbeatMs ?? Math.min(500, this.timeoutMs / 4);
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${this.timeoutMs}`);
    if (!(this.heartbeatMs > 0) || this.heartbeatMs > this.timeoutMs / 2) throw new RangeError(`heartbeatMs (${this.heartbeatMs}) must be positive and at most timeoutMs / 2 (${this.timeoutMs / 2})`);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? Math.max(30_000, this.timeoutMs);
    this.smallBytes = opts.smallMessageBytes ?? 64 * 1024;
    this.frameFloats = Math.max(1, Math.floor((opts.frameBytes ?? DEFAULT_FRAME_BYTES) / 4));
    this.reduceFrameFloats = Math.max(1, Math.floor((opts.frameBytes ?? defaultReduceFrameBytes(this.worldSize)) / 4));
    this.log = opts.log ?? ((m) => console.warn(m));
    this.header = encodeFrameHeader(this.jobId, this.generation, this.rank);
    this.heartbeatFrame = encodeFrame(this.header, { op: Op.HEARTBEAT });
    this.links = new Array<Link | undefined>(this.worldSize);
    this.router = routerFor(server);
    this.connectedPromise = new Promise<void>((resolve, reject) => (this.connected = { resolve, reject }));
    this.connectedPromise.catch(() => {});
  }

  // ---- forming the group -----------------------------------------------------------------

  private async establish(): Promise<void> {
    this.router.register(this);
    if (this.worldSize === 1) return;
    this.startTimer();
    const deadline = setTimeout(() => {
      const missing = [];
      for (let p = 0; p < this.worldSize; p++) if (p !== this.rank && !this.links[p]?.ready) missing.push(p);
      const p = missing[0];
      this.fail(new CollectiveError(`rank ${p} unreachable: no collective stream with rank ${missing.join(', rank ')} (${this.peers[p]}) within ${this.connectTimeoutMs} ms`, p));
    }, this.connectTimeoutMs);
    deadline.unref();
    try {
      for (let p = 0; p < this.worldSize; p++) if (p !== this.rank) this.dial(p, performance.now() + this.connectTimeoutMs);
      await this.connectedPromise;
    } finally {
      clearTimeout(deadline);
    }
  }

  private dial(p: number, deadline: number): void {
    const hello = encodeFrame(this.header, { op: Op.HELLO, worldSize: this.worldSize });
    let backoff = 20;
    const attempt = () => {
      if (this.failure || this.closing) return;
      const { call, close } = dialH2(this.peers[p], EXCHANGE_PATH, recvAlloc, this.tls);
      this.connections.push(close);
      this.dialCalls.add(call);
      let link: Link | undefined;
      let over = false;
      const abandon = () => {
        over = true;
        this.dialCalls.delete(call);
        close();
      };
      call.setPlacer((head, len) => this.place(p, head, len));
      call.on('data', (m: Buffer, tail?: Uint8Array) => {
        let f: Frame;
        try {
          f = frameOf(m, tail);
        } catch (e) {
          if (link) this.fail(new CollectiveError(`protocol error: rank ${p} sent an undecodable frame: ${(e as Error).message}`, p));
          else if (!over) {
            abandon();
            this.fail(new CollectiveError(`rank ${p} unreachable: undecodable HELLO from ${this.peers[p]}: ${(e as Error).message}`, p));
          }
          return;
        }
        if (link) {
          this.onFrame(link, f);
          return;
        }
        if (over) return;
        if (f.op !== Op.HELLO || f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p) {
          abandon();
          this.rejectedFrame(p, f, 'answered HELLO');
          call.cancel();
          return;
        }
        this.dialCalls.delete(call);
        link = this.attach(p, call, true);
      });
      const failed = (why: string, code?: number) => {
        if (link || over) return;
        abandon();
        if (this.failure || this.closing) return;
        const retry = code === Status.UNAVAILABLE || code === Status.UNIMPLEMENTED;
        if (retry && performance.now() + backoff < deadline) {
          const t = setTimeout(attempt, backoff);
          t.unref();
          backoff = Math.min(backoff * 2, 500);
          return;
        }
        this.fail(new CollectiveError(`rank ${p} unreachable: could not open the collective stream to ${this.peers[p]}: ${why}`, p));
      };
      call.on('error', (e: Error & Partial<CallStatus>) => failed(`${statusName(e.code ?? Status.UNKNOWN)}: ${e.details ?? e.message}`, e.code));
      call.on('status', (s: CallStatus) => failed(`stream ended with ${statusName(s.code)}: ${s.details}`, s.code));
      call.writeMessage([hello]);
    };
    attempt();
  }

  /** Router → a HELLO for this job and generation. Returns why it is refused, or null. */
  accept(call: GrpcCall, hello: Frame): string | null {
    const p = hello.srcRank;
    if (this.failure || this.closing) return `the collective of job ${this.jobId} generation ${this.generation} on rank ${this.rank} is ${this.closing ? 'closed' : 'failed'}`;
    if (hello.worldSize !== this.worldSize) return `rank ${p} has world size ${hello.worldSize}, rank ${this.rank} has ${this.worldSize}`;
    if (!Number.isInteger(p) || p === this.rank || p < 0 || p >= this.worldSize) return `rank ${p} is not a peer of rank ${this.rank} (world size ${this.worldSize})`;
    if (this.links[p]?.tx) return `rank ${p} is already connected to rank ${this.rank}`;
    const link = this.attach(p, call, false);
    call.on('data', (m: Buffer) => {
      let f: Frame;
      try {
        f = frameOf(m);
      } catch (e) {
        this.fail(new CollectiveError(`protocol error: rank ${p} sent an undecodable frame: ${(e as Error).message}`, p));
        return;
      }
      this.onFrame(link, f);
    });
    link.sendControl(encodeFrame(this.header, { op: Op.HELLO, worldSize: this.worldSize }));
    return null;
  }

  private attach(p: number, call: GrpcCall, dialed: boolean): Link {
    const link = (this.links[p] ??= new Link(p, this));
    link.attach(call, dialed);
    if (link.ready && ++this.readyCount === this.worldSize - 1) this.connected.resolve();
    return link;
  }

  /** A newer generation of this job registered on the shared server. */
  supersede(generation: number): void {
    this.fail(new CollectiveError(`job ${this.jobId} generation ${this.generation} was superseded by generation ${generation} on rank ${this.rank}`));
  }

  // ---- receiving -------------------------------------------------------------------------

  /**
   * grpc-h2.ts `Placer` of the stream from rank p: an all-gather frame of a large
   * allReduce in progress is received straight into the result (one copy less), when its
   * fields say exactly which frame of that call it is; anything else is buffered whole and
   * checked as usual. The fields are checked again when the frame is complete.
   */
  private place(p: number, head: Buffer, len: number): { at: number; dest: Uint8Array } | undefined {
    let h: ReturnType<typeof peekFrame>;
    try {
      h = peekFrame(head);
    } catch {
      return undefined;
    }
    const { f, payloadAt, payloadLen } = h;
    if (payloadAt < 0 || payloadAt + payloadLen !== len) return undefined;
    if (f.op !== Op.ALL_GATHER_RING || f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p || f.chunk !== p) return undefined;
    const dest = this.sinks.get(f.seq)?.(p, f.offset, payloadLen, f.total);
    return dest ? { at: payloadAt, dest } : undefined;
  }

  private onFrame(link: Link, f: Frame): void {
    if (this.failure && !this.closing) return; // failed: nothing more is read
    const p = link.peer;
    if (f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p) {
      this.rejectedFrame(p, f, 'sent');
      link.kill('rejected frame');
      return;
    }
    link.lastRecv = performance.now();
    switch (f.op) {
      case Op.HEARTBEAT:
        return;
      case Op.ABORT:
        this.fail(new CollectiveError(`${f.error} (reported by rank ${p})`, f.failedRank, f.error));
        return;
      case Op.GOODBYE:
        // Everything the peer sent precedes its GOODBYE: what is buffered stays valid; a
        // call still waiting for more from it can never complete.
        link.peerLeft = true;
        if (link.pendingRecvs > 0 && !this.closing) this.fail(this.leftError(p));
        return;
      case Op.HELLO:
      case Op.OP_UNSPECIFIED:
        this.fail(new CollectiveError(`protocol error: rank ${p} sent ${Op[f.op] ?? f.op} on an established stream`, p));
        return;
    }
    if (this.failure) return;
    const seq = f.seq;
    if (seq >= this.nextSeq) {
      link.early.push(f);
      return;
    }
    const info = this.active.get(seq);
    if (!info) {
      this.fail(new CollectiveError(`collective mismatch: rank ${p} sent ${Op[f.op] ?? f.op} for call ${seq}, which rank ${this.rank} has completed`, p));
      return;
    }
    const why = this.mismatch(seq, info, f, p);
    if (why) return this.fail(new CollectiveError(why, p));
    link.deliver(f);
  }

  private mismatch(seq: number, info: CallInfo, f: Frame, p: number): string | null {
    const fam = family(f.op);
    if (fam !== info.name) return `collective mismatch at call ${seq}: rank ${p} called ${fam ?? Op[f.op] ?? f.op} while rank ${this.rank} called ${info.name}`;
    if (info.total !== undefined && f.total !== info.total) return `${info.name} length mismatch at call ${seq}: rank ${p} has ${f.total / 4} values, rank ${this.rank} has ${info.total / 4} values`;
    if (info.root !== undefined && f.root !== info.root) return `collective mismatch at call ${seq}: rank ${p} broadcasts from root ${f.root}, rank ${this.rank} from root ${info.root}`;
    if (!info.ops.includes(f.op)) return `collective mismatch at call ${seq}: rank ${p} sent ${Op[f.op]} while rank ${this.rank} expects ${info.ops.map((o) => Op[o]).join('/')} (different smallMessageBytes?)`;
    if (f.payload.byteLength % 4 !== 0 || f.offset % 4 !== 0 || f.offset + f.payload.byteLength > f.total) return `protocol error at call ${seq}: rank ${p} sent a payload of ${f.payload.byteLength} bytes at offset ${f.offset} of ${f.total}`;
    return null;
  }

  private rejectedFrame(p: number, f: Frame, verb: string): void {
    const msg = `rank ${p} ${verb} a frame of job ${JSON.stringify(f.jobId)} generation ${f.generation} from rank ${f.srcRank} (op ${Op[f.op] ?? f.op}); this group is job ${JSON.stringify(this.jobId)} generation ${this.generation}: frame rejected, stream reset`;
    this.log(`collective rank ${this.rank}: ${msg}`);
    this.fail(new CollectiveError(msg, p));
  }

  /** Link → its stream is over. */
  linkGone(link: Link, how: string): void {
    if (this.closing) return;
    if (link.peerLeft) {
      if (link.pendingRecvs > 0) this.fail(this.leftError(link.peer));
      return;
    }
    this.fail(new CollectiveError(`rank ${link.peer} unreachable: ${how}`, link.peer));
  }

  private leftError(p: number): CollectiveError {
    const calls = [...this.active.keys()];
    return new CollectiveError(`rank ${p} has left the group (closed its collective)${calls.length ? ` while call ${calls[0]} needs it` : ''}`, p);
  }

  /**
   * The error a send, or a receive of a frame not buffered, on `link` fails with now, if
   * any; a peer that left fails the group (the other ranks get an ABORT).
   */
  failureFor(link: Link): Error | null {
    if (this.failure) return this.failure;
    if (link.peerLeft || link.gone) {
      this.fail(link.peerLeft ? this.leftError(link.peer) : new CollectiveError(`rank ${link.peer} unreachable: stream gone`, link.peer));
      return this.failure;
    }
    return null;
  }

  // ---- failure and liveness --------------------------------------------------------------

  private fail(err: CollectiveError): void {
    if (this.failure) return;
    this.failure = err;
    this.stopTimer();
    if (!this.closing) {
      const abort = encodeFrame(this.header, { op: Op.ABORT, error: err.origin, failedRank: err.failedRank });
      for (const l of this.links) if (l && !l.gone && !l.peerLeft) l.sendControl(abort);
    }
    for (const l of this.links) l?.rejectAll(err);
    this.connected.reject(err);
  }

  private startTimer(): void {
    const tick = Math.max(5, Math.min(this.heartbeatMs / 2, this.timeoutMs / 10));
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.onTick(tick), tick);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private onTick(tick: number): void {
    const now = performance.now();
    // Our own event loop was blocked: frames may be waiting unread in the sockets, so let
    // them be read (one more tick) before judging the peers.
    if (now - this.lastTick > 3 * tick) this.graceUntil = now + tick;
    this.lastTick = now;
    for (const l of this.links) {
      if (!l || l.gone || l.peerLeft) continue;
      if (now - l.lastSend >= this.heartbeatMs - tick / 2 && !l.blocked) l.sendControl(this.heartbeatFrame);
      // Judged one tick early so that the call fails within timeoutMs of the last frame.
      if (now >= this.graceUntil && now - l.lastRecv > this.timeoutMs - tick) {
        this.fail(new CollectiveError(`no heartbeat from rank ${l.peer} for ${Math.round(now - l.lastRecv)} ms (timeout ${this.timeoutMs} ms)`, l.peer));
        return;
      }
    }
  }

  // ---- calls -----------------------------------------------------------------------------

  private begin(info: CallInfo): number {
    if (this.failure) throw this.failure;
    const seq = this.nextSeq++;
    this.active.set(seq, info);
    for (const l of this.links) {
      if (!l || l.early.length === 0) continue;
      const early = l.early;
      l.early = [];
      for (const f of early) {
        if (f.seq !== seq) {
          l.early.push(f);
          continue;
        }
        const why = this.mismatch(seq, info, f, l.peer);
        if (why) {
          const err = new CollectiveError(why, l.peer);
          this.fail(err);
          throw err;
        }
        l.deliver(f);
      }
    }
    return seq;
  }

  private finish(seq: number): void {
    this.active.delete(seq);
    if (this.failure) for (const l of this.links) l?.forget(seq);
  }

  private link(p: number): Link {
    return this.links[p]!;
  }

  private others(): Link[] {
    const out: Link[] = [];
    for (const l of this.links) if (l) out.push(l);
    return out;
  }

  /**
   * Sends `data` as one logical message (split into frames) to every link in `to`; resolves
   * when every frame's bytes reached the sockets (`data` may change after that, not before).
   */
  private async sendMessage(to: Link[], seq: number, op: Op, root: number, data: Float32Array): Promise<void> {
    const total = data.byteLength, ff = this.frameFloats, n = data.length;
    const writes: Promise<void>[] = [];
    let a = 0;
    do {
      const b = Math.min(n, a + ff);
      const parts = encodeFrameParts(this.header, { seq, op, offset: a * 4, total, root }, bytesOf(data, a, b));
      for (const l of to) writes.push(l.send(parts));
      a = b;
    } while (a < n);
    await Promise.all(writes);
  }

  /** Receives one logical message from `from` (a fresh array, or a view into the received frame when `view`). */
  private async recvMessage(from: Link, seq: number, op: Op, view: boolean): Promise<Float32Array> {
    const first = await from.recv(seq, op, 0, 0);
    const total = first.total;
    if (first.payload.byteLength === total) {
      if (view) return floatsOf(first.payload); // never released: the view stays valid
      const copy = new Float32Array(floatsOf(first.payload));
      first.release?.();
      return copy;
    }
    const out = new Float32Array(total / 4);
    const bytes = new Uint8Array(out.buffer);
    bytes.set(first.payload, 0);
    first.release?.();
    let off = first.payload.byteLength;
    while (off < total) {
      const f = await from.recv(seq, op, 0, off);
      if (f.payload.byteLength === 0) throw new CollectiveError(`protocol error at call ${seq}: rank ${from.peer} sent an empty frame at offset ${off} of ${total}`, from.peer);
      bytes.set(f.payload, off);
      f.release?.();
      off += f.payload.byteLength;
    }
    return out;
  }

  async allGather(data: Float32Array): Promise<Float32Array[]> {
    if (this.worldSize === 1) return [data.slice()];
    const seq = this.begin({ name: 'allGather', ops: [Op.ALL_GATHER] });
    try {
      const others = this.others();
      const parts = await Promise.all([this.sendMessage(others, seq, Op.ALL_GATHER, 0, data), ...others.map((l) => this.recvMessage(l, seq, Op.ALL_GATHER, false))]);
      const out = new Array<Float32Array>(this.worldSize);
      out[this.rank] = data.slice();
      others.forEach((l, i) => (out[l.peer] = parts[i + 1] as Float32Array));
      return out;
    } finally {
      this.finish(seq);
    }
  }

  async allReduce(data: Float32Array): Promise<Float32Array> {
    if (this.worldSize === 1) return data.slice();
    const total = data.byteLength;
    if (total < this.smallBytes) {
      const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE], total });
      try {
        const others = this.others();
        const parts = await Promise.all([this.sendMessage(others, seq, Op.REDUCE, 0, data), ...others.map((l) => this.recvMessage(l, seq, Op.REDUCE, true))]);
        const byRank = new Array<Float32Array>(this.worldSize);
        byRank[this.rank] = data;
        others.forEach((l, i) => (byRank[l.peer] = parts[i + 1] as Float32Array));
        // Rank order from zeros, exactly as the in-process group: the same bits everywhere.
        const out = new Float32Array(data.length);
        sumInRankOrder(out, byRank);
        return out;
      } finally {
        this.finish(seq);
      }
    }
    const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE_SCATTER, Op.ALL_GATHER_RING], total });
    try {
      return await this.scatterReduce(seq, data, uninitFloats(data.length));
    } finally {
      this.finish(seq);
    }
  }

  /**
   * allReduce into `data` (the same frames and bits as `allReduce`): a large call writes
   * each final segment over the values it sent, after their write reached the socket, and
   * allocates no result (a fresh 16 MB result per call costs V8 a collection every few
   * calls: W=2, 16 MB, 5.2-5.6 ms user CPU per call in place against 7.9-8.3 ms).
   */
  async allReduceInPlace(data: Float32Array): Promise<void> {
    if (this.worldSize === 1) return;
    if (data.byteLength < this.smallBytes) {
      data.set(await this.allReduce(data));
      return;
    }
    const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE_SCATTER, Op.ALL_GATHER_RING], total: data.byteLength });
    try {
      await this.scatterReduce(seq, data, data);
    } finally {
      this.finish(seq);
    }
  }

  /**
   * Two or more ranks: reduce-scatter then all-gather over W segments, each step one
   * direct exchange (not a ring): segment c is owned by rank c; every rank sends its values
   * of segment c to rank c (REDUCE_SCATTER, chunk c), which sums the W contributions in rank
   * order from zeros, like the small path and the in-process group (the same bits), frame
   * by frame as they arrive, and sends each final frame to every other rank
   * (ALL_GATHER_RING, chunk c), where it is only copied. Each rank sends and receives
   * 2(W-1)/W of the buffer, as in a ring, in 2 dependent steps instead of 2(W-1).
   */
  private async scatterReduce(seq: number, data: Float32Array, out: Float32Array): Promise<Float32Array> {
    const n = data.length, ff = this.reduceFrameFloats, W = this.worldSize;
    const lo = (c: number) => Math.floor((c * n) / W);
    /** In place: frames (by start index) of other segments whose values we sent have reached the socket. */
    const sentDone = new Set<number>();
    const placed = new Set<number>();
    // All-gather frames received straight into `out`: only a frame of another segment, at a
    // frame boundary, of the exact length, once; in place, only over values already sent.
    this.sinks.set(seq, (c, offset, length, totalBytes) => {
      if (totalBytes !== n * 4 || offset % 4 !== 0 || c === this.rank) return undefined;
      const a = offset / 4, hi = lo(c + 1);
      if (a < lo(c) || a >= hi || (a - lo(c)) % ff !== 0) return undefined;
      const b = Math.min(hi, a + ff);
      if (length !== (b - a) * 4 || placed.has(a) || (out === data && !sentDone.has(a))) return undefined;
      placed.add(a);
      this.placedBytes += length;
      return bytesOf(out, a, b);
    });
    try {
      return await this.scatterReduceFrames(seq, data, out, sentDone);
    } finally {
      this.sinks.delete(seq);
    }
  }

  private async scatterReduceFrames(seq: number, data: Float32Array, out: Float32Array, sentDone: Set<number>): Promise<Float32Array> {
    const W = this.worldSize, r = this.rank, n = data.length, total = n * 4, ff = this.reduceFrameFloats;
    const inPlace = out === data;
    /** In place: the write of our values of each frame of another segment, by start index. */
    const sentAt = new Map<number, Promise<void>>();
    const lo = (c: number) => Math.floor((c * n) / W);
    const others = this.others();
    const sends: Promise<void>[] = [];
    // Frames are written uncopied (views of `data` and `out`): every write must reach the
    // socket before this call returns and the caller may change them.
    const send = (to: Link[], src: Float32Array, op: Op, c: number, a: number, b: number) => {
      const parts = encodeFrameParts(this.header, { seq, op, chunk: c, offset: a * 4, total }, bytesOf(src, a, b));
      for (const l of to) {
        const p = l.send(parts);
        p.catch(() => {});
        sends.push(p);
        if (inPlace && op === Op.REDUCE_SCATTER) {
          sentAt.set(a, p);
          p.then(() => sentDone.add(a), () => {});
        }
      }
    };
    // Our values of every other segment to its owner, frame by frame, owners interleaved
    // (starting with the next rank's segment) so that each gets its first frame early.
    let more = true;
    for (let k = 0; more; k++) {
      more = false;
      for (let i = 1; i < W; i++) {
        const c = (r + i) % W, a = lo(c) + k * ff, hi = lo(c + 1);
        if (a >= hi) continue;
        send([this.link(c)], data, Op.REDUCE_SCATTER, c, a, Math.min(hi, a + ff));
        more = true;
      }
    }
    const check = (f: Frame, p: number, want: number) => {
      if (f.payload.byteLength !== want) throw this.badFrame(seq, p, f, want);
      return floatsOf(f.payload);
    };
    // Our segment: sum each frame in rank order once every rank's part has come, then
    // send the final values to everyone.
    const own = (async () => {
      const byRank = new Array<Float32Array>(W);
      for (let a = lo(r), hi = lo(r + 1); a < hi; a += ff) {
        const b = Math.min(hi, a + ff);
        const frames = await Promise.all(others.map((l) => l.recv(seq, Op.REDUCE_SCATTER, r, a * 4)));
        others.forEach((l, i) => (byRank[l.peer] = check(frames[i], l.peer, (b - a) * 4)));
        // sumInRankOrder may write over one of the first four parts, not a later one.
        byRank[r] = inPlace && r >= 4 ? data.slice(a, b) : data.subarray(a, b);
        sumInRankOrder(out.subarray(a, b), byRank);
        for (const f of frames) f.release?.();
        send(others, out, Op.ALL_GATHER_RING, r, a, b);
      }
    })();
    // The other segments' final values, from their owners.
    const gather = others.map(async (l) => {
      const c = l.peer;
      for (let a = lo(c), hi = lo(c + 1); a < hi; a += ff) {
        const b = Math.min(hi, a + ff);
        const f = await l.recv(seq, Op.ALL_GATHER_RING, c, a * 4);
        if (f.payload.byteLength !== (b - a) * 4) throw this.badFrame(seq, c, f, (b - a) * 4);
        // Received straight into `out` (grpc-h2.ts Placer), or copied from its buffer. In
        // place, these values were sent from here: only once they are in the socket.
        if (f.payload.buffer !== out.buffer || f.payload.byteOffset !== out.byteOffset + a * 4) {
          const sent = sentAt.get(a);
          if (sent) await sent;
          bytesOf(out, a, b).set(f.payload);
        }
        f.release?.();
      }
    });
    await Promise.all([own, ...gather]);
    await Promise.all(sends);
    return out;
  }

  private badFrame(seq: number, p: number, f: Frame, want: number): CollectiveError {
    const err = new CollectiveError(`protocol error at call ${seq}: rank ${p} sent ${f.payload.byteLength} bytes for segment ${f.chunk} at offset ${f.offset}, expected ${want}`, p);
    this.fail(err);
    return err;
  }

  async broadcast(data: Float32Array, root: number): Promise<Float32Array> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) throw new RangeError(`broadcast root ${root} outside [0, ${this.worldSize})`);
    if (this.worldSize === 1) return data.slice();
    const seq = this.begin({ name: 'broadcast', ops: [Op.BROADCAST], total: data.byteLength, root });
    try {
      if (this.rank === root) {
        await this.sendMessage(this.others(), seq, Op.BROADCAST, root, data);
        return data.slice();
      }
      return await this.recvMessage(this.link(root), seq, Op.BROADCAST, false);
    } finally {
      this.finish(seq);
    }
  }

  async barrier(): Promise<void> {
    if (this.worldSize === 1) return;
    const seq = this.begin({ name: 'barrier', ops: [Op.BARRIER] });
    try {
      const others = this.others();
      const parts = encodeFrameParts(this.header, { seq, op: Op.BARRIER });
      const waits: Promise<unknown>[] = others.map((l) => l.recv(seq, Op.BARRIER, 0, 0));
      for (const l of others) waits.push(l.send(parts));
      await Promise.all(waits);
    } finally {
      this.finish(seq);
    }
  }

  // ---- shutting down ---------------------------------------------------------------------

  /**
   * Clean close: GOODBYE and end on every stream, wait (bounded) for the peers to finish
   * their side, then shut the server down (when this collective bound it). Pending calls
   * reject. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closed) this.closed = this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    this.stopTimer();
    this.router.unregister(this);
    const goodbye = encodeFrame(this.header, { op: Op.GOODBYE });
    for (const l of this.links) {
      if (!l || l.gone) continue;
      l.sendControl(goodbye);
      l.end();
    }
    if (!this.failure) this.failure = new CollectiveError(`the collective of rank ${this.rank} is closed`);
    for (const l of this.links) l?.rejectAll(this.failure);
    this.connected.reject(this.failure);
    const grace = Math.min(this.timeoutMs, 2000);
    await waitBounded(Promise.all(this.others().map((l) => l.done)), grace);
    for (const l of this.links) if (l && !l.gone) l.kill('closed');
    for (const call of this.dialCalls) call.cancel();
    for (const close of this.connections) close();
    if (this.ownServer) {
      const shut = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
      if (!(await waitBounded(shut, grace))) this.server.forceShutdown();
    }
  }

  /**
   * Abrupt teardown, as a crash would look to the peers: no GOODBYE, streams cancelled,
   * the server (when this collective bound it) force-shut. For tests, chaos and cancels.
   */
  async destroy(): Promise<void> {
    this.closing = true;
    this.stopTimer();
    this.router.unregister(this);
    if (!this.failure) this.failure = new CollectiveError(`the collective of rank ${this.rank} was destroyed`);
    for (const l of this.links) l?.rejectAll(this.failure);
    this.connected.reject(this.failure);
    for (const l of this.links) if (l && !l.gone) l.kill('destroyed');
    for (const call of this.dialCalls) call.cancel();
    for (const close of this.connections) close();
    if (this.ownServer) this.server.forceShutdown();
    this.closed ??= Promise.resolve();
  }
}

function waitBounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(t);
        resolve(true);
      },
      () => {
        clearTimeout(t);
        resolve(true);
      },
    );
  });
}
