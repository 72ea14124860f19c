/**
 * NumPy .npy reader (format versions 1.0, 2.0 and 3.0): bool, signed/unsigned integers
 * of 1-8 bytes, float16/32/64, either byte order, C or Fortran order. Values come back
 * as float64 in C order with their shape; the caller narrows them.
 */
import { TrainerError } from '../errors.js';

export interface NdArray {
  shape: number[];
  /** 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool. */
  kind: 'f' | 'i' | 'u' | 'b';
  data: Float64Array;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

export function parseNpy(buf: Uint8Array, field: string): NdArray {
  const fail = (msg: string): never => {
    throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: ${msg}`, field);
  };
  if (buf.length < 10 || MAGIC.some((b, i) => buf[i] !== b)) fail('not a .npy file (no \\x93NUMPY magic)');
  const major = buf[6];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let headerLen: number;
  let off: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    off = 10;
  } else if (major === 2 || major === 3) {
    if (buf.length < 12) fail('truncated header');
    headerLen = view.getUint32(8, true);
    off = 12;
  } else return fail(`unsupported .npy format version ${major}.${buf[7]}`);
  if (off + headerLen > buf.length) fail('truncated header');
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(buf.subarray(off, off + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) return fail(`malformed header ${JSON.stringify(header.trim())}`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) fail(`bad shape (${shapeText})`);
  const m = /^([<>|=])([fiub])(\d+)$/.exec(descr);
  if (!m) return fail(`dtype '${descr}' is not supported (numbers and bools only)`);
  const little = m[1] !== '>';
  const kind = m[2] as NdArray['kind'];
  const size = Number(m[3]);
  const ok = kind === 'f' ? [2, 4, 8] : kind === 'b' ? [1] : [1, 2, 4, 8];
  if (!ok.includes(size)) fail(`dtype '${descr}' is not supported`);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = off + headerLen;
  if (buf.length - start < count * size) fail(`holds ${buf.length - start} data bytes, shape (${shape.join(', ')}) of '${descr}' needs ${count * size}`);

  const read = (i: number): number => {
    const p = start + i * size;
    if (kind === 'f') return size === 4 ? view.getFloat32(p, little) : size === 8 ? view.getFloat64(p, little) : halfToFloat(view.getUint16(p, little));
    if (kind === 'b') return buf[p] ? 1 : 0;
    if (kind === 'u') return size === 1 ? buf[p] : size === 2 ? view.getUint16(p, little) : size === 4 ? view.getUint32(p, little) : Number(view.getBigUint64(p, little));
    return size === 1 ? view.getInt8(p) : size === 2 ? view.getInt16(p, little) : size === 4 ? view.getInt32(p, little) : Number(view.getBigInt64(p, little));
  };
  const data = new Float64Array(count);
  if (fortran === 'False' || shape.length < 2) {
    for (let i = 0; i < count; i++) data[i] = read(i);
  } else {
    // Fortran order: the first index varies fastest. Walk C order, computing F offsets.
    const nd = shape.length;
    const fstride = new Array<number>(nd);
    fstride[0] = 1;
    for (let d = 1; d < nd; d++) fstride[d] = fstride[d - 1] * shape[d - 1];
    const idx = new Array<number>(nd).fill(0);
    for (let i = 0; i < count; i++) {
      let f = 0;
      for (let d = 0; d < nd; d++) f += idx[d] * fstride[d];
      data[i] = read(f);
      for (let d = nd - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) break;
        idx[d] = 0;
      }
    }
  }
  return { shape, kind, data };
}
