/**
 * The safetensors format (https://github.com/huggingface/safetensors):
 *
 *   8 bytes   N, little-endian u64
 *   N bytes   UTF-8 JSON header, padded with spaces to a multiple of 8:
 *             { "__metadata__": { string: string },
 *               "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ... }
 *   rest      the byte buffer; offsets are relative to its start, data little-endian.
 *
 * The encoder lays tensors out in the order given, contiguously, and omits `__metadata__`
 * when it has no entries. The decoder validates like the reference implementation: the
 * tensors must cover the byte buffer exactly (no overlap, no gap, nothing past the end),
 * each tensor's byte size must equal product(shape) * dtype size, and the dtype must be
 * one this module can return. Anything else is `TrainerError('TAS_ERR_DATA_FORMAT')`.
 */
import { TrainerError } from '../errors.js';

export type SafetensorsWritableDtype = 'F32' | 'I64';

export interface SafetensorsInput {
  name: string;
  dtype: SafetensorsWritableDtype;
  shape: number[];
  data: Float32Array | BigInt64Array;
}

export type SafetensorsData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

export interface SafetensorsTensor {
  dtype: string;
  shape: number[];
  /**
   * Decoded values. When the tensor's bytes are suitably aligned in `buf` this is a view
   * that shares memory with the decoded buffer; otherwise a copy.
   */
  data: SafetensorsData;
}

export interface DecodedSafetensors {
  /** In the order of their data offsets. */
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

type ArrayCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): SafetensorsData;
  new (length: number): SafetensorsData;
  readonly BYTES_PER_ELEMENT: number;
};

/** Dtypes the decoder returns, with their element size and array type. BOOL decodes to Uint8Array. */
const DTYPES: Record<string, ArrayCtor> = {
  F32: Float32Array as unknown as ArrayCtor,
  F64: Float64Array as unknown as ArrayCtor,
  I64: BigInt64Array as unknown as ArrayCtor,
  I32: Int32Array as unknown as ArrayCtor,
  U8: Uint8Array as unknown as ArrayCtor,
  BOOL: Uint8Array as unknown as ArrayCtor,
};

/** Dtypes of the format that this module does not decode (reported as unsupported, not unknown). */
const OTHER_FORMAT_DTYPES = new Set(['F16', 'BF16', 'F8_E4M3', 'F8_E5M2', 'I8', 'I16', 'U16', 'U32', 'U64', 'C64']);

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function formatError(message: string): TrainerError {
  return new TrainerError('TAS_ERR_DATA_FORMAT', `safetensors: ${message}`);
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && d >= 0);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of a typed array in little-endian order. */
function littleEndianBytes(data: Float32Array | BigInt64Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  if (data instanceof Float32Array) data.forEach((v, i) => view.setFloat32(i * 4, v, true));
  else data.forEach((v, i) => view.setBigInt64(i * 8, v, true));
  return out;
}

export function encodeSafetensors(tensors: SafetensorsInput[], metadata: Record<string, string>): Uint8Array {
  // Built by hand rather than with one JSON.stringify of an object, so that the header
  // lists tensors in the order given even for integer-like names.
  const header: string[] = [];
  const names = new Set<string>();
  const metaKeys = Object.keys(metadata);
  if (metaKeys.length > 0) {
    const meta: Record<string, string> = {};
    for (const k of metaKeys) {
      if (typeof metadata[k] !== 'string') throw formatError(`metadata value of '${k}' is not a string`);
      meta[k] = metadata[k];
    }
    header.push(`"__metadata__":${JSON.stringify(meta)}`);
  }
  let offset = 0;
  const parts: Uint8Array[] = [];
  for (const t of tensors) {
    if (t.name === '__metadata__') throw formatError("a tensor cannot be named '__metadata__'");
    if (typeof t.name !== 'string' || names.has(t.name)) throw formatError(`duplicate or invalid tensor name '${String(t.name)}'`);
    names.add(t.name);
    if (!isShape(t.shape)) throw formatError(`tensor '${t.name}' has an invalid shape [${String(t.shape)}]`);
    const expectedCtor = t.dtype === 'F32' ? Float32Array : t.dtype === 'I64' ? BigInt64Array : null;
    if (expectedCtor === null) throw formatError(`tensor '${t.name}': cannot write dtype ${String(t.dtype)}`);
    if (!(t.data instanceof expectedCtor)) throw formatError(`tensor '${t.name}': dtype ${t.dtype} needs a ${expectedCtor.name}`);
    if (t.data.length !== elementCount(t.shape)) {
      throw formatError(`tensor '${t.name}' has shape [${t.shape}] but ${t.data.length} values`);
    }
    const bytes = littleEndianBytes(t.data);
    header.push(`${JSON.stringify(t.name)}:${JSON.stringify({ dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] })}`);
    parts.push(bytes);
    offset += bytes.byteLength;
  }
  const json = new TextEncoder().encode(`{${header.join(',')}}`);
  const headerLen = Math.ceil(json.byteLength / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerLen), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.byteLength, 8 + headerLen);
  let pos = 8 + headerLen;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.byteLength;
  }
  return out;
}

interface Entry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

export function decodeSafetensors(buf: Uint8Array): DecodedSafetensors {
  if (buf.byteLength < 8) throw formatError(`file of ${buf.byteLength} bytes is shorter than the 8-byte header length`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(buf.byteLength - 8)) {
    throw formatError(`header length ${n64} runs past the end of the file (${buf.byteLength - 8} bytes after the length)`);
  }
  const n = Number(n64);
  if (n < 2) throw formatError(`header length ${n} is too small for a JSON object`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + n));
  } catch {
    throw formatError('header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw formatError("header does not start with '{'");
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw formatError(`header is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw formatError('header is not a JSON object');

  const metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const [name, info] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof info !== 'object' || info === null || Array.isArray(info)) throw formatError('__metadata__ is not an object');
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== 'string') throw formatError(`__metadata__ value of '${k}' is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof info !== 'object' || info === null || Array.isArray(info)) throw formatError(`entry of tensor '${name}' is not an object`);
    const { dtype, shape, data_offsets: offsets } = info as Record<string, unknown>;
    if (typeof dtype !== 'string') throw formatError(`tensor '${name}' has no dtype`);
    if (!Object.hasOwn(DTYPES, dtype)) {
      throw formatError(OTHER_FORMAT_DTYPES.has(dtype) ? `tensor '${name}' has unsupported dtype ${dtype}` : `tensor '${name}' has unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (!isShape(shape)) throw formatError(`tensor '${name}' has an invalid shape ${JSON.stringify(shape)}`);
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw formatError(`tensor '${name}' has invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const expected = elementCount(shape) * DTYPES[dtype].BYTES_PER_ELEMENT;
    if (end - begin !== expected) {
      throw formatError(`tensor '${name}' (${dtype} [${shape}]) needs ${expected} bytes but data_offsets [${begin}, ${end}] give ${end - begin}`);
    }
    entries.push({ name, dtype, shape, begin, end });
  }

  const dataStart = 8 + n;
  const dataLen = buf.byteLength - dataStart;
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    if (e.end > dataLen) throw formatError(`tensor '${e.name}' data_offsets [${e.begin}, ${e.end}] run past the byte buffer (${dataLen} bytes)`);
    if (e.begin < cursor) throw formatError(`tensor '${e.name}' data_offsets [${e.begin}, ${e.end}] overlap the previous tensor (ends at ${cursor})`);
    if (e.begin > cursor) throw formatError(`gap in the byte buffer before tensor '${e.name}' (bytes ${cursor}..${e.begin} unused)`);
    cursor = e.end;
  }
  if (cursor !== dataLen) throw formatError(`byte buffer has ${dataLen} bytes but the tensors cover ${cursor}`);

  const tensors = new Map<string, SafetensorsTensor>();
  for (const e of entries) {
    tensors.set(e.name, { dtype: e.dtype, shape: e.shape, data: readArray(buf, dataStart + e.begin, e.end - e.begin, DTYPES[e.dtype]) });
  }
  return { tensors, metadata };
}

function readArray(buf: Uint8Array, start: number, byteLength: number, Ctor: ArrayCtor): SafetensorsData {
  const size = Ctor.BYTES_PER_ELEMENT;
  const count = byteLength / size;
  const absolute = buf.byteOffset + start;
  if (LITTLE_ENDIAN || size === 1) {
    if (absolute % size === 0) return new Ctor(buf.buffer, absolute, count);
    const copy = new Uint8Array(byteLength);
    copy.set(buf.subarray(start, start + byteLength));
    return new Ctor(copy.buffer, 0, count);
  }
  // Big-endian host: convert element by element.
  const dv = new DataView(buf.buffer, absolute, byteLength);
  const out = new Ctor(count);
  for (let i = 0; i < count; i++) {
    if (out instanceof Float32Array) out[i] = dv.getFloat32(i * 4, true);
    else if (out instanceof Float64Array) out[i] = dv.getFloat64(i * 8, true);
    else if (out instanceof BigInt64Array) out[i] = dv.getBigInt64(i * 8, true);
    else if (out instanceof Int32Array) out[i] = dv.getInt32(i * 4, true);
  }
  return out;
}
