/**
 * IDX reader (the MNIST format), plain or gzipped (detected by the gzip magic): a magic
 * of two zero bytes, a type byte and a dimension count, big-endian uint32 dimensions,
 * then big-endian values.
 */
import { gunzipSync } from 'node:zlib';
import { TrainerError } from '../errors.js';
import type { NdArray } from './npy.js';

const TYPES: Record<number, { size: number; kind: NdArray['kind'] }> = {
  0x08: { size: 1, kind: 'u' },
  0x09: { size: 1, kind: 'i' },
  0x0b: { size: 2, kind: 'i' },
  0x0c: { size: 4, kind: 'i' },
  0x0d: { size: 4, kind: 'f' },
  0x0e: { size: 8, kind: 'f' },
};

export function parseIdx(input: Uint8Array, field: string): NdArray {
  const fail = (msg: string): never => {
    throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: ${msg}`, field);
  };
  let buf = input;
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = new Uint8Array(gunzipSync(buf));
    } catch (e) {
      fail(`corrupt gzip stream (${(e as Error).message})`);
    }
  }
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) return fail('not an IDX file (the magic number must start with two zero bytes)');
  const type = TYPES[buf[2]];
  if (!type) return fail(`unknown IDX element type 0x${buf[2].toString(16)}`);
  const nd = buf[3];
  if (nd < 1) fail('an IDX file needs at least one dimension');
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 4 + 4 * nd) fail('truncated header');
  const shape = Array.from({ length: nd }, (_, d) => view.getUint32(4 + 4 * d, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const start = 4 + 4 * nd;
  if (buf.length - start < count * type.size) fail(`holds ${buf.length - start} data bytes, shape [${shape.join(', ')}] needs ${count * type.size}`);
  const data = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const p = start + i * type.size;
    switch (buf[2]) {
      case 0x08: data[i] = buf[p]; break;
      case 0x09: data[i] = view.getInt8(p); break;
      case 0x0b: data[i] = view.getInt16(p, false); break;
      case 0x0c: data[i] = view.getInt32(p, false); break;
      case 0x0d: data[i] = view.getFloat32(p, false); break;
      default: data[i] = view.getFloat64(p, false);
    }
  }
  return { shape, kind: type.kind, data };
}
