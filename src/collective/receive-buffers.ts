/**
 * Receive buffers: where the collective's incoming frames land, and float32 views of them.
 *
 * Large messages are read from the socket (grpc-h2.ts, net's `onread`) straight into a
 * buffer of this pool and decoded as views (`frameOf`); the algorithm that consumes a
 * frame calls `Frame.release` and the buffer serves the next message. Every fresh large
 * buffer would cost page faults and, in bulk, V8 garbage collections. All-gather frames
 * of a large all-reduce skip this pool: they are read straight into the result (the
 * `place` hook of group.ts).
 */
import { decodeFrame, type Frame } from './frame-codec.js';

/** The float32 values [from, to) of `a` as bytes (a view, no copy). */
export function bytesOf(a: Float32Array, from = 0, to = a.length): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + from * 4, (to - from) * 4);
}

/** The payload as float32: a view when aligned, else a copy. */
export function floatsOf(b: Buffer): Float32Array {
  if ((b.byteOffset & 3) === 0) return new Float32Array(b.buffer, b.byteOffset, b.byteLength >>> 2);
  const out = new Float32Array(b.byteLength >>> 2);
  new Uint8Array(out.buffer).set(b);
  return out;
}

/** A Float32Array of n values, not zero-filled (every value is written before it is read). */
export function uninitFloats(n: number): Float32Array {
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
export function frameOf(m: Buffer, tail?: Uint8Array): Frame {
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
