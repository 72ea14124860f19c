/**
 * Test support for dataset uploads: .npy and IDX files as numpy and the MNIST tools
 * write them, built in memory, and a body streamed in chunks (so an upload is really
 * streamed, not sent as one buffer).
 */
import { Readable } from 'node:stream';

/** A .npy file (format 1.0, header padded to a multiple of 64 bytes as numpy does). */
export function npyBytes(descr: string, shape: readonly number[], body: Uint8Array): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const out = new Uint8Array(10 + header.length + body.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(body, 10 + header.length);
  return out;
}

/** An IDX file of unsigned bytes (type 0x08), big-endian dimensions. */
export function idxU8(shape: readonly number[], values: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(4 + 4 * shape.length + values.length);
  const view = new DataView(out.buffer);
  out.set([0, 0, 0x08, shape.length], 0);
  shape.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  out.set(Array.from(values), 4 + 4 * shape.length);
  return out;
}

export const f32 = (values: readonly number[]): Uint8Array => new Uint8Array(Float32Array.from(values).buffer);
export const i64 = (values: readonly number[]): Uint8Array => new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer);

/** `bytes` as a stream of `chunk`-byte pieces. */
export function chunked(bytes: Uint8Array, chunk = 4096): Readable {
  let at = 0;
  return new Readable({
    read() {
      if (at >= bytes.length) {
        this.push(null);
        return;
      }
      this.push(Buffer.from(bytes.subarray(at, at + chunk)));
      at += chunk;
    },
  });
}

/** The same, as a web stream for fetch (sent chunked: no Content-Length). */
export function webChunked(bytes: Uint8Array, chunk = 4096): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}
