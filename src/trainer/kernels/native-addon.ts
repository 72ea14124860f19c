/**
 * The native compute addon (native/compute: C over the BLAS), loaded once per JS
 * environment. It is optional: `npm ci` builds it where a C compiler and OpenBLAS's
 * headers are present, and `NATIVE_COMPUTE_MISSING` says why it is absent otherwise.
 *
 * The addon reads and writes the memory of the Float32Arrays it is given; the typed
 * surface below is all the trainer sees of it. Callers pass well-formed arguments (the
 * backend in native-backend.ts derives them from tensor shapes); the addon still refuses
 * any call that would reach outside an array.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** Operation codes of the addon (native/compute/compute.h). */
export const BinaryOp = { Add: 0, Sub: 1, Mul: 2, Div: 3 } as const;
export type BinaryOp = (typeof BinaryOp)[keyof typeof BinaryOp];
export const UnaryOp = { Relu: 0, Neg: 1, Square: 2, Sqrt: 3, Rsqrt: 4, Reciprocal: 5, Exp: 6, Log: 7, Abs: 8, Step: 9 } as const;
export type UnaryOp = (typeof UnaryOp)[keyof typeof UnaryOp];
export const ReduceOp = { Sum: 0, Mean: 1 } as const;
export type ReduceOp = (typeof ReduceOp)[keyof typeof ReduceOp];

/** A convolution's shapes: [n, h, w, c, kh, kw, cout, strideH, strideW, padTop, padLeft, outH, outW]. */
export type ConvGeometry = Int32Array;

/** SGD's scalars (fused.ts, sgdUpdate). */
export interface SgdUpdateOptions {
  lr: number;
  momentum: number;
  oneMinusDampening: number;
  weightDecay: number;
  nesterov: boolean;
}

/** Adam's scalars for one parameter's step (fused.ts, adamUpdate). */
export interface AdamUpdateOptions {
  decay: number;
  weightDecay: number;
  decoupled: boolean;
  amsgrad: boolean;
  lerpLow: boolean;
  w: number;
  oneMinusW: number;
  beta2: number;
  oneMinusBeta2: number;
  biasCorrection2Sqrt: number;
  eps: number;
  stepSize: number;
}

export interface NativeCompute {
  /** c = alpha · op(a) · op(b) + beta · c, row-major, with leading dimensions. */
  sgemm(transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number, a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number): void;
  conv2d(x: Float32Array, w: Float32Array, y: Float32Array, geom: ConvGeometry): void;
  conv2dBackpropInput(dy: Float32Array, w: Float32Array, dx: Float32Array, geom: ConvGeometry): void;
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dw: Float32Array, geom: ConvGeometry): void;
  /** Two-pass per-channel mean and M2 of a [rows, c] block. */
  bnMoments(x: Float32Array, c: number, mean: Float32Array, m2: Float32Array): void;
  bnNormalize(xmu: Float32Array, invstd: Float32Array, gamma: Float32Array | null, beta: Float32Array | null, y: Float32Array): void;
  bnBackwardSums(dy: Float32Array, xmu: Float32Array, sumDy: Float32Array, sumDyXmu: Float32Array): void;
  bnInputGrad(dy: Float32Array, xmu: Float32Array, invstd: Float32Array, gamma: Float32Array | null, sumDy: Float32Array, sumDyXmu: Float32Array, count: number, dx: Float32Array): void;
  /** out = a op b, NumPy broadcasting; the three shapes have one rank (<= 6). */
  binary(op: BinaryOp, a: Float32Array, aShape: Int32Array, b: Float32Array, bShape: Int32Array, outShape: Int32Array, out: Float32Array): void;
  unary(op: UnaryOp, x: Float32Array, y: Float32Array, alpha: number): void;
  reluGrad(dy: Float32Array, y: Float32Array, dx: Float32Array): void;
  /** x as [outer, mid, inner] → y [outer, inner]. */
  reduce(op: ReduceOp, x: Float32Array, outer: number, mid: number, inner: number, y: Float32Array): void;
  sgdUpdate(options: SgdUpdateOptions, param: Float32Array, grad: Float32Array, buf: Float32Array | null, paramOut: Float32Array, bufOut: Float32Array | null): void;
  adamUpdate(options: AdamUpdateOptions, param: Float32Array, grad: Float32Array, m: Float32Array | null, v: Float32Array | null, vmax: Float32Array | null, paramOut: Float32Array, mOut: Float32Array, vOut: Float32Array, vmaxOut: Float32Array | null): void;
  /** The BLAS's threads (process-wide). */
  setThreads(n: number): void;
  threads(): number;
  /** The BLAS's build and the core it chose, e.g. "OpenBLAS 0.3.21 ... (core SkylakeX)". */
  blasConfig(): string;
}

const ADDON = '../../../native/compute/build/Release/tas_compute.node';

function load(): { addon: NativeCompute | null; missing: string | null } {
  if (process.env.TAS_NATIVE_COMPUTE === '0') return { addon: null, missing: 'turned off by TAS_NATIVE_COMPUTE=0' };
  const path = join(import.meta.dirname, ADDON);
  if (!existsSync(path)) {
    return { addon: null, missing: 'the native compute addon is not built (npm ci builds it where a C compiler and OpenBLAS are installed: apt-get install build-essential libopenblas-dev, then npm run build:native)' };
  }
  try {
    return { addon: createRequire(import.meta.url)(ADDON) as NativeCompute, missing: null };
  } catch (err) {
    return { addon: null, missing: `the native compute addon does not load: ${(err as Error).message.split('\n')[0]}` };
  }
}

const loaded = load();

/** The addon, or null where it is not built or does not load. */
export const nativeCompute: NativeCompute | null = loaded.addon;
/** Why the addon is absent (null when it loaded). */
export const NATIVE_COMPUTE_MISSING: string | null = loaded.missing;
