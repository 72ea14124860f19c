/**
 * The arithmetic of the gRPC collective, apart from its I/O: element-wise float32 sums in
 * rank order.
 *
 * Every function here gives the bits of the in-process group's reduction, which starts
 * from zeros and rounds to float32 after each rank's addition (`out[i] += x_r[i]` on a
 * Float32Array): `0 + x_0` first (so -0 becomes +0, as there), then `+ x_1`, `+ x_2`, ...
 * A sum of two float32 values computed in double and rounded once to float32 is the
 * float32 sum (double has more than 2 * 24 + 2 bits), so each step below is one JS double
 * addition followed by a rounding: `Math.fround` between the steps, the Float32Array store
 * after the last one. The steps of one element are fused into one pass over the memory
 * (each input read once, the output written once) and unrolled by four.
 *
 * Where native/sum.c is built (`npm run build:native`, run by `npm ci` where a C compiler
 * is present), `sumInRankOrder` calls it instead: the same bits (C float arithmetic
 * without fast-math or contraction rounds the same way; tests compare both on signed
 * zeros, infinities and subnormals; a NaN stays a NaN, though not always the same one:
 * x86 propagates one operand's, and the compilers may order the operands differently;
 * every rank still gets the owner's bits), vectorized by the compiler, 2-3x faster than
 * the JS below (2M float32, 2 parts: 1.7-2.3 ms against 4.8-5.8). TAS_NATIVE_SUM=0 turns
 * it off; `SUM_BACKEND` says which one runs.
 */
import { createRequire } from 'node:module';

const f = Math.fround;

interface NativeSum {
  sumInRankOrder(out: Float32Array, parts: readonly Float32Array[]): void;
}

function loadNative(): NativeSum | undefined {
  if (process.env.TAS_NATIVE_SUM === '0') return undefined;
  try {
    return createRequire(import.meta.url)('../../native/build/Release/tas_sum.node') as NativeSum;
  } catch {
    return undefined;
  }
}

const native = loadNative();

/** Which implementation `sumInRankOrder` uses: native/sum.c, or the JS here. */
export const SUM_BACKEND: 'native' | 'js' = native ? 'native' : 'js';

/** Below this many values the JS is as fast (no call into the addon). */
const NATIVE_MIN = 256;

/**
 * out[i] = (((0 + parts[0][i]) + parts[1][i]) + ...) + parts[k-1][i], rounded to float32
 * after every addition. Every array must have out's length. `out` may be one of the first
 * four parts (those are read, element by element, before out is written), not a later one.
 */
export function sumInRankOrder(out: Float32Array, parts: readonly Float32Array[]): void {
  // The addon checks the lengths itself (RangeError, as below).
  if (native && out.length >= NATIVE_MIN && parts.length > 0 && parts.length <= 64) native.sumInRankOrder(out, parts);
  else sumInRankOrderJs(out, parts);
}

function checkLengths(out: Float32Array, parts: readonly Float32Array[]): void {
  for (const p of parts) if (p.length !== out.length) throw new RangeError(`sumInRankOrder: a part has ${p.length} values, out has ${out.length}`);
}

/** The JS implementation (the reference; exported for the tests that compare the two). */
export function sumInRankOrderJs(out: Float32Array, parts: readonly Float32Array[]): void {
  const k = parts.length;
  if (k === 0) {
    out.fill(0);
    return;
  }
  checkLengths(out, parts);
  if (k === 1) sum1(out, parts[0]);
  else if (k === 2) sum2(out, parts[0], parts[1]);
  else if (k === 3) sum3(out, parts[0], parts[1], parts[2]);
  else {
    sum4(out, parts[0], parts[1], parts[2], parts[3]);
    // Further ranks continue from the rounded partial sum, up to three per pass.
    let r = 4;
    for (; r + 3 <= k; r += 3) add3(out, parts[r], parts[r + 1], parts[r + 2]);
    if (r + 2 === k) add2(out, parts[r], parts[r + 1]);
    else if (r + 1 === k) add1(out, parts[r]);
  }
}

function sum1(out: Float32Array, a: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = a[i] + 0;
}

function sum2(out: Float32Array, a: Float32Array, b: Float32Array): void {
  const n = out.length, m = n - (n & 3);
  let i = 0;
  for (; i < m; i += 4) {
    const s0 = a[i] + 0 + b[i], s1 = a[i + 1] + 0 + b[i + 1], s2 = a[i + 2] + 0 + b[i + 2], s3 = a[i + 3] + 0 + b[i + 3];
    out[i] = s0;
    out[i + 1] = s1;
    out[i + 2] = s2;
    out[i + 3] = s3;
  }
  for (; i < n; i++) out[i] = a[i] + 0 + b[i];
}

function sum3(out: Float32Array, a: Float32Array, b: Float32Array, c: Float32Array): void {
  const n = out.length, m = n - (n & 3);
  let i = 0;
  for (; i < m; i += 4) {
    const s0 = f(a[i] + 0 + b[i]) + c[i];
    const s1 = f(a[i + 1] + 0 + b[i + 1]) + c[i + 1];
    const s2 = f(a[i + 2] + 0 + b[i + 2]) + c[i + 2];
    const s3 = f(a[i + 3] + 0 + b[i + 3]) + c[i + 3];
    out[i] = s0;
    out[i + 1] = s1;
    out[i + 2] = s2;
    out[i + 3] = s3;
  }
  for (; i < n; i++) out[i] = f(a[i] + 0 + b[i]) + c[i];
}

function sum4(out: Float32Array, a: Float32Array, b: Float32Array, c: Float32Array, d: Float32Array): void {
  const n = out.length, m = n - (n & 3);
  let i = 0;
  for (; i < m; i += 4) {
    const s0 = f(f(a[i] + 0 + b[i]) + c[i]) + d[i];
    const s1 = f(f(a[i + 1] + 0 + b[i + 1]) + c[i + 1]) + d[i + 1];
    const s2 = f(f(a[i + 2] + 0 + b[i + 2]) + c[i + 2]) + d[i + 2];
    const s3 = f(f(a[i + 3] + 0 + b[i + 3]) + c[i + 3]) + d[i + 3];
    out[i] = s0;
    out[i + 1] = s1;
    out[i + 2] = s2;
    out[i + 3] = s3;
  }
  for (; i < n; i++) out[i] = f(f(a[i] + 0 + b[i]) + c[i]) + d[i];
}

/** out[i] = out[i] + a[i] (out already holds a rounded partial sum). */
function add1(out: Float32Array, a: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] += a[i];
}

function add2(out: Float32Array, a: Float32Array, b: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = f(out[i] + a[i]) + b[i];
}

function add3(out: Float32Array, a: Float32Array, b: Float32Array, c: Float32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = f(f(out[i] + a[i]) + b[i]) + c[i];
}
