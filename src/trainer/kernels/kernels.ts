/**
 * The heavy kernels of the trainer: matrix products, convolutions and BatchNorm's
 * per-channel reductions, normalisation and gradients. Layers call these for their heavy
 * work, so how each backend computes them (a transpose first on wasm, a fused native
 * kernel, the backend's own op) is decided here and not in the layers.
 *
 * Fused kernels: where the backend registers one of the kernels named in fused.ts (the
 * `native` backend does), the function below runs it in one pass over the memory;
 * elsewhere it composes the same arithmetic from tfjs ops. A CUDA or other backend plugs
 * in by registering the same names.
 *
 * Why explicit transposes: on the wasm backend `matMul` with transposeA/transposeB
 * falls off XNNPACK's fast path (measured here: 2.0 and 1.2 GFLOP/s against 19.6 plain);
 * a transpose copy plus a plain product is ~8x faster. The TensorFlow and native
 * backends read the transposed operand in place.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FUSED } from './fused.js';

function nativeTransposes(): boolean {
  const b = tf.getBackend();
  return b === 'tensorflow' || b === 'native' || b === 'webgl' || b === 'webgpu';
}

/** True when the active backend registers the fused kernel `name` (a FUSED value). */
export function fused(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

/** Run the fused kernel `name` (a FUSED value); null inputs are left out. */
export function runFused<T extends tf.Tensor | tf.Tensor[]>(name: string, inputs: Record<string, tf.Tensor | null>, attrs: tf.NamedAttrMap = {}): T {
  const given: tf.NamedTensorMap = {};
  for (const [k, v] of Object.entries(inputs)) if (v) given[k] = v;
  return tf.engine().runKernel(name, given, attrs) as unknown as T;
}

/** `op(a) · op(b)` with `op` = transpose where asked. 2-D only. */
export function matMul(a: tf.Tensor2D, b: tf.Tensor2D, transposeA = false, transposeB = false): tf.Tensor2D {
  if (nativeTransposes() || (!transposeA && !transposeB)) return tf.matMul(a, b, transposeA, transposeB);
  return tf.tidy(() => tf.matMul(transposeA ? tf.transpose(a) : a, transposeB ? tf.transpose(b) : b));
}

export interface Conv2DGeometry {
  /** [kh, kw] */
  kernel: [number, number];
  stride: number;
  padding: number;
}

/** NHWC convolution with a [kh, kw, in, out] filter and symmetric zero padding. */
export function conv2d(x: tf.Tensor4D, w: tf.Tensor4D, g: Conv2DGeometry): tf.Tensor4D {
  return tf.conv2d(x, w, g.stride, explicitPad(g.padding));
}

/** dL/dx of `conv2d`: the transposed convolution of dy (Conv2DBackpropInput). */
export function conv2dBackpropInput(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: [number, number, number, number], g: Conv2DGeometry): tf.Tensor4D {
  return tf.conv2dTranspose(dy, w, xShape, g.stride, explicitPad(g.padding));
}

/**
 * dL/dw of `conv2d`. Uses the backend's Conv2DBackpropFilter where registered; the wasm
 * backend has none, so there it is an im2col product: dW = cols(x)^T · dy, with cols of
 * shape [N*Ho*Wo, kh*kw*Cin] in the filter's (kh, kw, cin) order.
 */
export function conv2dBackpropFilter(x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: [number, number, number, number], g: Conv2DGeometry): tf.Tensor4D {
  if (tf.getKernel('Conv2DBackpropFilter', tf.getBackend()) !== undefined) {
    return tf.engine().runKernel(
      'Conv2DBackpropFilter',
      { x, dy },
      { strides: [g.stride, g.stride], pad: explicitPad(g.padding), dataFormat: 'NHWC', filterShape } as unknown as tf.NamedAttrMap,
    ) as tf.Tensor4D;
  }
  return tf.tidy(() => {
    const [kh, kw, cin, cout] = filterShape;
    const [n, ho, wo] = dy.shape;
    const cols = im2col(x, g, ho, wo); // [N*Ho*Wo, kh*kw*Cin]
    const dy2 = tf.reshape(dy, [n * ho * wo, cout]) as tf.Tensor2D;
    return tf.reshape(matMul(cols, dy2, true, false), [kh, kw, cin, cout]) as tf.Tensor4D;
  });
}

/** Patches of x for a conv with output size (ho, wo): [N*Ho*Wo, kh*kw*C]. */
export function im2col(x: tf.Tensor4D, g: Conv2DGeometry, ho: number, wo: number): tf.Tensor2D {
  return tf.tidy(() => {
    const [n, , , c] = x.shape;
    const [kh, kw] = g.kernel;
    const p = g.padding;
    const xp = p > 0 ? tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]) : x;
    const s = g.stride;
    const patches: tf.Tensor4D[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        patches.push(tf.stridedSlice(xp, [0, i, j, 0], [n, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c], [1, s, s, 1]) as tf.Tensor4D);
      }
    }
    // [N, Ho, Wo, kh*kw, C] -> [N*Ho*Wo, kh*kw*C]
    return tf.reshape(tf.stack(patches, 3), [n * ho * wo, kh * kw * c]) as tf.Tensor2D;
  });
}

/**
 * Max pooling with 'valid' windows (callers pad explicitly). On wasm the gradient is
 * computed here: tfjs-backend-wasm 4.22's MaxPoolGrad sends dy to the FIRST element of
 * every window whose maximum is negative (as if its running max started at 0), so a
 * maxpool over negative values (after BN without ReLU, on normalised inputs) trains on
 * wrong gradients. Other backends use their own kernel.
 */
export function maxPool2d(x: tf.Tensor4D, kernel: number, stride: number): tf.Tensor4D {
  if (tf.getBackend() !== 'wasm') return tf.maxPool(x, kernel, stride, 'valid');
  const pool = tf.customGrad((xi: tf.Tensor | tf.GradSaveFunc, save: tf.Tensor | tf.GradSaveFunc) => {
    const y = tf.maxPool(xi as tf.Tensor4D, kernel, stride, 'valid');
    (save as tf.GradSaveFunc)([xi as tf.Tensor4D, y]);
    return { value: y, gradFunc: (dy: tf.Tensor4D, saved: tf.Tensor[]) => maxPoolGrad(saved[0] as tf.Tensor4D, saved[1] as tf.Tensor4D, dy, kernel, stride) };
  });
  return pool(x) as tf.Tensor4D;
}

/**
 * dL/dx of a 'valid' max pool: each window's dy goes to its first maximum in row-major
 * window order (PyTorch's and tfjs-cpu's choice on ties), summed where windows overlap.
 */
export function maxPoolGrad(x: tf.Tensor4D, y: tf.Tensor4D, dy: tf.Tensor4D, kernel: number, stride: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [n, h, w, c] = x.shape;
    const [, ho, wo] = y.shape;
    const s = stride;
    let taken: tf.Tensor = tf.zeros(y.shape, 'bool');
    let dx: tf.Tensor = tf.zeros(x.shape);
    for (let i = 0; i < kernel; i++) {
      for (let j = 0; j < kernel; j++) {
        // The window element at offset (i, j) of every output position: [N, Ho, Wo, C].
        const xs = tf.stridedSlice(x, [0, i, j, 0], [n, i + s * (ho - 1) + 1, j + s * (wo - 1) + 1, c], [1, s, s, 1]);
        const hit = tf.logicalAnd(tf.equal(xs, y), tf.logicalNot(taken));
        taken = tf.logicalOr(taken, hit);
        // Scatter back to rows i + s*a, columns j + s*b: interleave s-1 zeros, then shift.
        let g: tf.Tensor = tf.mul(dy, tf.cast(hit, 'float32'));
        g = tf.reshape(tf.pad(tf.reshape(g, [n * ho, wo, 1, c]), [[0, 0], [0, 0], [0, s - 1], [0, 0]]), [n, ho, 1, wo * s * c]);
        g = tf.reshape(tf.pad(g, [[0, 0], [0, 0], [0, s - 1], [0, 0]]), [n, ho * s, wo * s, c]);
        g = tf.pad(g, [[0, 0], [i, Math.max(0, h - i - ho * s)], [j, Math.max(0, w - j - wo * s)], [0, 0]]);
        dx = tf.add(dx, tf.slice(g, [0, 0, 0, 0], [n, h, w, c]));
      }
    }
    return dx as tf.Tensor4D;
  });
}

function explicitPad(p: number): [[number, number], [number, number], [number, number], [number, number]] {
  return [[0, 0], [p, p], [p, p], [0, 0]];
}

/** Two-pass per-channel statistics of a [M, C] block: mean, then the sum of squared deviations (M2). */
export function channelStats(x2d: tf.Tensor2D): { mean: tf.Tensor1D; m2: tf.Tensor1D } {
  if (fused(FUSED.bnMoments)) {
    const [mean, m2] = runFused<tf.Tensor1D[]>(FUSED.bnMoments, { x: x2d });
    return { mean, m2 };
  }
  return tf.tidy(() => {
    const mean = tf.mean(x2d, 0) as tf.Tensor1D;
    const m2 = tf.sum(tf.square(tf.sub(x2d, mean)), 0) as tf.Tensor1D;
    return { mean, m2 };
  });
}

/** `channelStats`, plus `xmu = x - mean`, which the normalisation reuses. */
export function channelMoments(x2d: tf.Tensor2D): { mean: tf.Tensor1D; m2: tf.Tensor1D; xmu: tf.Tensor2D } {
  const { mean, m2 } = channelStats(x2d);
  return { mean, m2, xmu: tf.sub(x2d, mean) as tf.Tensor2D };
}

/** BatchNorm's training output: y = xmu · invstd · gamma + beta (no affine: xmu · invstd). */
export function bnNormalize(xmu: tf.Tensor2D, invstd: tf.Tensor1D, gamma: tf.Tensor1D | null, beta: tf.Tensor1D | null): tf.Tensor2D {
  if (fused(FUSED.bnNormalize)) return runFused<tf.Tensor2D>(FUSED.bnNormalize, { xmu, invstd, gamma, beta });
  return tf.tidy(() => {
    const xhat = tf.mul(xmu, invstd);
    return (gamma && beta ? tf.add(tf.mul(xhat, gamma), beta) : xhat) as tf.Tensor2D;
  });
}

/** BatchNorm backward's two per-channel reductions: Σ dy and Σ dy·(x - mean). */
export function bnBackwardSums(dy2d: tf.Tensor2D, xmu: tf.Tensor2D): { sumDy: tf.Tensor1D; sumDyXmu: tf.Tensor1D } {
  if (fused(FUSED.bnBackwardSums)) {
    const [sumDy, sumDyXmu] = runFused<tf.Tensor1D[]>(FUSED.bnBackwardSums, { dy: dy2d, xmu });
    return { sumDy, sumDyXmu };
  }
  return tf.tidy(() => ({ sumDy: tf.sum(dy2d, 0) as tf.Tensor1D, sumDyXmu: tf.sum(tf.mul(dy2d, xmu), 0) as tf.Tensor1D }));
}

/** ReLU's input gradient from its output: dy where y > 0, else 0 (PyTorch's threshold_backward). */
export function reluGrad(dy: tf.Tensor, y: tf.Tensor): tf.Tensor {
  if (fused(FUSED.reluGrad)) return runFused<tf.Tensor>(FUSED.reluGrad, { dy, y });
  return tf.tidy(() => tf.mul(dy, tf.step(y, 0)));
}

/**
 * dx of BatchNorm in training mode given the GLOBAL reductions and count (SyncBN's
 * formula, PyTorch `batch_norm_backward_elemt`):
 * dx = (dy - sumDy/N - xmu * invstd^2 * sumDyXmu/N) * invstd * gamma
 */
export function bnInputGrad(dy2d: tf.Tensor2D, xmu: tf.Tensor2D, invstd: tf.Tensor1D, gamma: tf.Tensor1D | null, sumDy: tf.Tensor1D, sumDyXmu: tf.Tensor1D, globalCount: number): tf.Tensor2D {
  if (fused(FUSED.bnInputGrad)) return runFused<tf.Tensor2D>(FUSED.bnInputGrad, { dy: dy2d, xmu, invstd, gamma, sumDy, sumDyXmu }, { count: globalCount });
  return tf.tidy(() => {
    const meanDy = tf.div(sumDy, globalCount);
    const meanDyXmu = tf.div(sumDyXmu, globalCount);
    const scale = gamma ? tf.mul(invstd, gamma) : invstd;
    const proj = tf.mul(xmu, tf.mul(tf.square(invstd), meanDyXmu));
    return tf.mul(tf.sub(tf.sub(dy2d, meanDy), proj), scale) as tf.Tensor2D;
  });
}
