/**
 * Hand-written protobuf codec for the messages of the inference hot path: ModelInferRequest
 * (decoded) and ModelInferResponse / ModelStreamInferResponse (encoded), wire-compatible
 * with proto/inference/grpc_predict_v2.proto and giving the same objects as proto-loader
 * with `PROTO_OPTIONS` (the tests check both against proto-loader).
 *
 * Why: proto-loader decodes into protobufjs messages, then converts them to plain objects
 * field by field (`toObject`), and encodes through `fromObject`; per request that was more
 * of the serving event loop's time than the inference itself (bench:infer profiles).
 * Only what the hot path needs is decoded here: a request with any field this decoder does
 * not handle (request, input or output `parameters`, typed `contents`) makes
 * `decodeInferRequest` return null, and the caller decodes it with proto-loader. Fields
 * unknown to the .proto are skipped, as protobuf requires. Pure: no I/O.
 */
import { putVarint, varintSize } from '../../grpc/varint.js';

// ---- the messages, as proto-loader gives them (keepCase, defaults, longs as numbers) ------

export interface InferInputTensorMsg {
  name: string;
  datatype: string;
  shape: number[];
  contents: import('../../inference/tensors.js').TypedContents | null;
}

export interface ModelInferRequestMsg {
  model_name: string;
  model_version: string;
  id: string;
  inputs: InferInputTensorMsg[];
  outputs: Array<{ name: string }>;
  raw_input_contents: Buffer[];
}

export interface InferOutputTensorMsg {
  name: string;
  datatype: string;
  shape: number[];
  contents?: { fp32_contents: ArrayLike<number> };
}

export interface ModelInferResponseMsg {
  model_name: string;
  model_version: string;
  id: string;
  outputs: InferOutputTensorMsg[];
  raw_output_contents: Uint8Array[];
}

export interface ModelStreamInferResponseMsg {
  error_message: string;
  infer_response: Partial<ModelInferResponseMsg> & Pick<ModelInferResponseMsg, 'model_name' | 'model_version' | 'id'>;
}

// ---- wire primitives ------------------------------------------------------------------

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Thrown for bytes that are not a valid message; grpc-js turns it into INTERNAL like proto-loader's errors. */
export class WireError extends Error {
  override readonly name = 'WireError';
}

class Reader {
  pos = 0;
  constructor(
    readonly buf: Buffer,
    public end = buf.length,
  ) {}

  varint(): number {
    // Up to 64 bits; values above 2^53 lose precision like proto-loader's `longs: Number`.
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new WireError('varint longer than 10 bytes');
  }

  /** An int64 field's value (two's complement for negatives, as protobufjs reads it). */
  int64(): number {
    const start = this.pos;
    const v = this.varint();
    // A negative int64 is 10 bytes long with the top bit set: re-read it as signed.
    if (this.pos - start === 10) {
      let lo = 0n;
      for (let i = 0; i < 10; i++) lo |= BigInt(this.buf[start + i]! & 0x7f) << BigInt(7 * i);
      return Number(BigInt.asIntN(64, lo));
    }
    return v;
  }

  bytes(): Buffer {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.end) throw new WireError('truncated length-delimited field');
    const b = this.buf.subarray(this.pos, end);
    this.pos = end;
    return b;
  }

  string(): string {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.end) throw new WireError('truncated string');
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end;
    return s;
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.pos += 8;
        break;
      case WIRE_LEN: {
        const len = this.varint();
        this.pos += len;
        break;
      }
      case WIRE_I32:
        this.pos += 4;
        break;
      default:
        throw new WireError(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) throw new WireError('truncated field');
  }
}

// ---- ModelInferRequest -----------------------------------------------------------------

/** Signals a field this decoder leaves to proto-loader. */
const FALLBACK = Symbol('fallback');

function decodeInput(r: Reader, end: number): InferInputTensorMsg | typeof FALLBACK {
  const outer = r.end;
  r.end = end;
  const t: InferInputTensorMsg = { name: '', datatype: '', shape: [], contents: null };
  while (r.pos < end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 1 && wire === WIRE_LEN) t.name = r.string();
    else if (field === 2 && wire === WIRE_LEN) t.datatype = r.string();
    else if (field === 3 && wire === WIRE_LEN) {
      // packed
      const stop = r.varint() + r.pos;
      if (stop > end) throw new WireError('truncated shape');
      while (r.pos < stop) t.shape.push(r.int64());
    } else if (field === 3 && wire === WIRE_VARINT) t.shape.push(r.int64());
    else if (field === 4 || field === 5) return FALLBACK;
    else r.skip(wire);
  }
  r.end = outer;
  return t;
}

function decodeOutput(r: Reader, end: number): { name: string } | typeof FALLBACK {
  const outer = r.end;
  r.end = end;
  const o = { name: '' };
  while (r.pos < end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 1 && wire === WIRE_LEN) o.name = r.string();
    else if (field === 2) return FALLBACK;
    else r.skip(wire);
  }
  r.end = outer;
  return o;
}

/**
 * ModelInferRequest from its bytes, or null when it uses a field left to proto-loader
 * (parameters, typed contents). `raw_input_contents` are views into `buf`.
 */
export function decodeInferRequest(buf: Buffer): ModelInferRequestMsg | null {
  const r = new Reader(buf);
  const m: ModelInferRequestMsg = { model_name: '', model_version: '', id: '', inputs: [], outputs: [], raw_input_contents: [] };
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === WIRE_LEN) {
      switch (field) {
        case 1:
          m.model_name = r.string();
          continue;
        case 2:
          m.model_version = r.string();
          continue;
        case 3:
          m.id = r.string();
          continue;
        case 4:
          return null;
        case 5: {
          const end = r.varint() + r.pos;
          if (end > r.end) throw new WireError('truncated input tensor');
          const t = decodeInput(r, end);
          if (t === FALLBACK) return null;
          m.inputs.push(t);
          continue;
        }
        case 6: {
          const end = r.varint() + r.pos;
          if (end > r.end) throw new WireError('truncated output tensor');
          const o = decodeOutput(r, end);
          if (o === FALLBACK) return null;
          m.outputs.push(o);
          continue;
        }
        case 7:
          m.raw_input_contents.push(r.bytes());
          continue;
      }
    }
    r.skip(wire);
  }
  return m;
}

// ---- ModelInferResponse / ModelStreamInferResponse ------------------------------------

class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(v: number): void {
    this.pos = putVarint(this.buf, this.pos, v);
  }

  tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** A length-delimited field of `len` bytes whose contents the caller writes next. */
  header(field: number, len: number): void {
    this.tag(field, WIRE_LEN);
    this.varint(len);
  }

  string(field: number, s: string, len: number): void {
    this.header(field, len);
    this.pos += this.buf.write(s, this.pos, 'utf8');
  }

  bytes(field: number, b: Uint8Array): void {
    this.header(field, b.byteLength);
    this.buf.set(b, this.pos);
    this.pos += b.byteLength;
  }
}

/** Size of a length-delimited field with a payload of `len` bytes. */
const lenField = (field: number, len: number) => varintSize(field * 8 + WIRE_LEN) + varintSize(len) + len;

interface TensorPlan {
  readonly t: InferOutputTensorMsg;
  readonly name: number;
  readonly datatype: number;
  readonly shape: number;
  readonly contents: number;
  /** The tensor message's size. */
  readonly size: number;
}

function planTensor(t: InferOutputTensorMsg): TensorPlan {
  const name = Buffer.byteLength(t.name);
  const datatype = Buffer.byteLength(t.datatype);
  let shape = 0;
  for (const d of t.shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new WireError(`output shape ${d} is not a non-negative integer`);
    shape += varintSize(d);
  }
  // InferTensorContents { repeated float fp32_contents = 6 [packed] }
  const fp32 = t.contents ? t.contents.fp32_contents.length * 4 : 0;
  const contents = t.contents ? (fp32 > 0 ? lenField(6, fp32) : 0) : -1;
  const size = (name ? lenField(1, name) : 0) + (datatype ? lenField(2, datatype) : 0) + (shape ? lenField(3, shape) : 0) + (contents >= 0 ? lenField(5, contents) : 0);
  return { t, name, datatype, shape, contents, size };
}

interface ResponsePlan {
  readonly r: Partial<ModelInferResponseMsg>;
  readonly model: number;
  readonly version: number;
  readonly id: number;
  readonly tensors: TensorPlan[];
  readonly size: number;
}

function planResponse(r: Partial<ModelInferResponseMsg>): ResponsePlan {
  const model = Buffer.byteLength(r.model_name ?? '');
  const version = Buffer.byteLength(r.model_version ?? '');
  const id = Buffer.byteLength(r.id ?? '');
  const tensors = (r.outputs ?? []).map(planTensor);
  let size = (model ? lenField(1, model) : 0) + (version ? lenField(2, version) : 0) + (id ? lenField(3, id) : 0);
  for (const p of tensors) size += lenField(5, p.size);
  for (const b of r.raw_output_contents ?? []) size += lenField(6, b.byteLength);
  return { r, model, version, id, tensors, size };
}

function writeResponse(w: Writer, p: ResponsePlan): void {
  const r = p.r;
  if (p.model) w.string(1, r.model_name!, p.model);
  if (p.version) w.string(2, r.model_version!, p.version);
  if (p.id) w.string(3, r.id!, p.id);
  for (const tp of p.tensors) {
    const t = tp.t;
    w.header(5, tp.size);
    if (tp.name) w.string(1, t.name, tp.name);
    if (tp.datatype) w.string(2, t.datatype, tp.datatype);
    if (tp.shape) {
      w.header(3, tp.shape);
      for (const d of t.shape) w.varint(d);
    }
    if (tp.contents >= 0) {
      w.header(5, tp.contents);
      const values = t.contents!.fp32_contents;
      if (values.length > 0) {
        w.header(6, values.length * 4);
        for (let i = 0; i < values.length; i++) {
          w.buf.writeFloatLE(values[i]!, w.pos);
          w.pos += 4;
        }
      }
    }
  }
  for (const b of r.raw_output_contents ?? []) w.bytes(6, b);
}

/** ModelInferResponse's bytes. */
export function encodeInferResponse(r: ModelInferResponseMsg): Buffer {
  const p = planResponse(r);
  const w = new Writer(Buffer.allocUnsafe(p.size));
  writeResponse(w, p);
  return w.buf;
}

/** ModelStreamInferResponse's bytes. */
export function encodeStreamInferResponse(m: ModelStreamInferResponseMsg): Buffer {
  const err = Buffer.byteLength(m.error_message);
  const p = planResponse(m.infer_response);
  const w = new Writer(Buffer.allocUnsafe((err ? lenField(1, err) : 0) + lenField(2, p.size)));
  if (err) w.string(1, m.error_message, err);
  w.header(2, p.size);
  writeResponse(w, p);
  return w.buf;
}
