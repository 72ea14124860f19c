/**
 * The `native` tfjs backend: tfjs's cpu backend (tensors are JS typed arrays) with the
 * heavy kernels replaced by the native compute addon (native/compute, over OpenBLAS).
 *
 * Every cpu kernel is registered again under `native`; those below then replace the ones
 * the trainer spends its time in: matrix products in every transpose form (the BLAS's
 * sgemm reads the transposes in place), the three convolutions (im2col + sgemm),
 * element-wise arithmetic with broadcasting, the unary maps and sums over a run of axes,
 * plus the fused kernels kernels.ts asks for by name (BatchNorm's moments, normalise,
 * backward sums and input gradient; ReLU's gradient). The addon works on the tensors'
 * own arrays: inputs are read where they are, outputs are fresh arrays the addon fills.
 * A case a native kernel does not cover (another dtype, a dilated or NCHW convolution,
 * a reduction over scattered axes) goes to the cpu kernel it replaced, so every op still
 * runs.
 */
import * as tf from '@tensorflow/tfjs-core';
import { MathBackendCPU } from '@tensorflow/tfjs-backend-cpu';
import { BinaryOp, ReduceOp, UnaryOp, type AdamUpdateOptions, type NativeCompute, type SgdUpdateOptions } from './native-addon.js';
import { FUSED } from './fused.js';

export const NATIVE_BACKEND = 'native';

type KernelArgs = Parameters<tf.KernelFunc>[0];
type Info = tf.TensorInfo;

/** Most bytes of released output arrays kept for reuse. */
const POOL_BYTES = 512 * 1024 * 1024;

/**
 * The cpu backend, whose data store the native kernels read and fill, plus a pool of the
 * kernels' output arrays. A training step allocates the same sizes every step, so the
 * arrays of disposed tensors are handed to the next kernel that needs that size: no
 * fresh pages to fault in and zero, and no garbage for V8 to collect (memory stays flat).
 * An array that left the backend (read by `dataSync`/`data`) is never reused, since
 * its reader may hold it after the tensor is gone.
 */
class NativeBackend extends MathBackendCPU {
  private readonly free = new Map<number, Float32Array[]>();
  private readonly recyclable = new WeakSet<Float32Array>();
  private freeBytes = 0;

  constructor() {
    super();
    // The cpu backend's one-time "install tfjs-node" notice speaks of the cpu backend, not this one.
    (this as unknown as { firstUse: boolean }).firstUse = false;
  }

  /** An array of n floats for a kernel to fill completely (a reused one holds old values). */
  alloc(n: number): Float32Array {
    const reused = this.free.get(n)?.pop();
    if (reused) {
      this.freeBytes -= reused.byteLength;
      return reused;
    }
    const a = new Float32Array(n);
    this.recyclable.add(a);
    return a;
  }

  override readSync(dataId: object): tf.backend_util.BackendValues {
    const values = super.readSync(dataId);
    if (values instanceof Float32Array) this.recyclable.delete(values);
    return values;
  }

  override disposeData(dataId: object, force = false): boolean {
    const values = this.data.get(dataId)?.values;
    const released = super.disposeData(dataId, force);
    if (released && values instanceof Float32Array && this.recyclable.has(values) && this.freeBytes + values.byteLength <= POOL_BYTES) {
      const list = this.free.get(values.length);
      if (list) list.push(values);
      else this.free.set(values.length, [values]);
      this.freeBytes += values.byteLength;
    }
    return released;
  }

  override dispose(): void {
    this.free.clear();
    this.freeBytes = 0;
    super.dispose();
  }
}

function cpuBackend(args: KernelArgs): NativeBackend {
  return args.backend as NativeBackend;
}

function valuesOf(backend: MathBackendCPU, t: Info): Float32Array {
  return backend.data.get(t.dataId).values as Float32Array;
}

function out(backend: MathBackendCPU, shape: number[], values: Float32Array): Info {
  return backend.makeTensorInfo(shape, 'float32', values);
}

function allFloat32(...ts: Info[]): boolean {
  return ts.every((t) => t.dtype === 'float32');
}

/** The cpu kernel of `name`, for the cases a native kernel passes on. */
function cpuKernel(name: string): tf.KernelFunc {
  const k = tf.getKernel(name, 'cpu');
  if (!k) throw new Error(`tfjs-backend-cpu has no kernel ${name}`);
  return k.kernelFunc;
}

function withFallback(name: string, native: (args: KernelArgs) => Info | Info[] | null): tf.KernelConfig {
  const cpu = cpuKernel(name);
  return { kernelName: name, backendName: NATIVE_BACKEND, kernelFunc: (args) => native(args) ?? cpu(args) };
}

function matMulKernel(addon: NativeCompute): tf.KernelConfig {
  return withFallback(tf.BatchMatMul, (args) => {
    const { a, b } = args.inputs as { a: Info; b: Info };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (!allFloat32(a, b) || a.shape.length > 3 || b.shape.length > 3) return null;
    const ra = a.shape.length, rb = b.shape.length;
    const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
    const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
    const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
    const batchA = ra === 3 ? a.shape[0] : 1, batchB = rb === 3 ? b.shape[0] : 1;
    if (k !== kb || (batchA !== batchB && batchA !== 1 && batchB !== 1)) return null;
    const batch = Math.max(batchA, batchB);
    const backend = cpuBackend(args);
    const av = valuesOf(backend, a), bv = valuesOf(backend, b);
    const y = backend.alloc(batch * m * n);
    const lda = transposeA ? m : k, ldb = transposeB ? k : n;
    for (let i = 0; i < batch; i++) {
      const ai = batchA === 1 ? av : av.subarray(i * m * k, (i + 1) * m * k);
      const bi = batchB === 1 ? bv : bv.subarray(i * k * n, (i + 1) * k * n);
      addon.sgemm(transposeA, transposeB, m, n, k, 1, ai, lda, bi, ldb, 0, batch === 1 ? y : y.subarray(i * m * n, (i + 1) * m * n), n);
    }
    const outShape = ra === 3 || rb === 3 ? [batch, m, n] : [m, n];
    return out(backend, outShape, y);
  });
}

interface ConvAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** The addon's geometry for a channels-last, undilated convolution; null for any other. */
function convGeometry(xShape: number[], filterShape: number[], attrs: ConvAttrs): Int32Array | null {
  if (attrs.dataFormat !== undefined && attrs.dataFormat !== 'NHWC') return null;
  const info = tf.backend_util.computeConv2DInfo(
    xShape as [number, number, number, number],
    filterShape as [number, number, number, number],
    attrs.strides,
    attrs.dilations ?? 1,
    attrs.pad,
    attrs.dimRoundingMode,
    false,
    'channelsLast',
  );
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1) return null;
  return Int32Array.of(
    info.batchSize,
    info.inHeight,
    info.inWidth,
    info.inChannels,
    info.filterHeight,
    info.filterWidth,
    info.outChannels,
    info.strideHeight,
    info.strideWidth,
    info.padInfo.top,
    info.padInfo.left,
    info.outHeight,
    info.outWidth,
  );
}

function convKernels(addon: NativeCompute): tf.KernelConfig[] {
  return [
    withFallback(tf.Conv2D, (args) => {
      const { x, filter } = args.inputs as { x: Info; filter: Info };
      const g = allFloat32(x, filter) ? convGeometry(x.shape, filter.shape, args.attrs as unknown as ConvAttrs) : null;
      if (!g) return null;
      const backend = cpuBackend(args);
      const y = backend.alloc(g[0] * g[11] * g[12] * g[6]);
      addon.conv2d(valuesOf(backend, x), valuesOf(backend, filter), y, g);
      return out(backend, [g[0], g[11], g[12], g[6]], y);
    }),
    withFallback(tf.Conv2DBackpropInput, (args) => {
      const { dy, filter } = args.inputs as { dy: Info; filter: Info };
      const attrs = args.attrs as unknown as ConvAttrs & { inputShape: number[] };
      const g = allFloat32(dy, filter) ? convGeometry(attrs.inputShape, filter.shape, attrs) : null;
      if (!g) return null;
      const backend = cpuBackend(args);
      const dx = backend.alloc(g[0] * g[1] * g[2] * g[3]);
      addon.conv2dBackpropInput(valuesOf(backend, dy), valuesOf(backend, filter), dx, g);
      return out(backend, attrs.inputShape.slice(), dx);
    }),
    withFallback(tf.Conv2DBackpropFilter, (args) => {
      const { x, dy } = args.inputs as { x: Info; dy: Info };
      const attrs = args.attrs as unknown as ConvAttrs & { filterShape: number[] };
      const g = allFloat32(x, dy) ? convGeometry(x.shape, attrs.filterShape, attrs) : null;
      if (!g) return null;
      const backend = cpuBackend(args);
      const dw = backend.alloc(g[4] * g[5] * g[3] * g[6]);
      addon.conv2dBackpropFilter(valuesOf(backend, x), valuesOf(backend, dy), dw, g);
      return out(backend, attrs.filterShape.slice(), dw);
    }),
  ];
}

/** Shapes left-padded with 1s to one rank. */
function padShape(shape: number[], rank: number): Int32Array {
  const s = new Int32Array(rank).fill(1);
  s.set(shape, rank - shape.length);
  return s;
}

function binaryKernel(addon: NativeCompute, name: string, op: BinaryOp): tf.KernelConfig {
  return withFallback(name, (args) => {
    const { a, b } = args.inputs as { a: Info; b: Info };
    if (!allFloat32(a, b)) return null;
    const shape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
    if (shape.length > 6) return null;
    const backend = cpuBackend(args);
    const y = backend.alloc(tf.util.sizeFromShape(shape));
    const r = shape.length;
    addon.binary(op, valuesOf(backend, a), padShape(a.shape, r), valuesOf(backend, b), padShape(b.shape, r), Int32Array.from(shape), y);
    return out(backend, shape, y);
  });
}

function unaryKernel(addon: NativeCompute, name: string, op: UnaryOp): tf.KernelConfig {
  return withFallback(name, (args) => {
    const { x } = args.inputs as { x: Info };
    if (!allFloat32(x)) return null;
    const backend = cpuBackend(args);
    const y = backend.alloc(tf.util.sizeFromShape(x.shape));
    const alpha = name === tf.Step ? (args.attrs as unknown as { alpha: number }).alpha : 0;
    addon.unary(op, valuesOf(backend, x), y, alpha);
    return out(backend, x.shape.slice(), y);
  });
}

/** Sum / Mean over one contiguous run of axes: x as [outer, mid, inner]. */
function reduceKernel(addon: NativeCompute, name: string, op: ReduceOp): tf.KernelConfig {
  return withFallback(name, (args) => {
    const { x } = args.inputs as { x: Info };
    const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
    if (!allFloat32(x)) return null;
    const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
    if (axes.some((ax, i) => i > 0 && ax !== axes[i - 1] + 1)) return null;
    const first = axes.length ? axes[0] : 0, last = axes.length ? axes[axes.length - 1] : -1;
    const size = (dims: number[]): number => dims.reduce((p, q) => p * q, 1);
    const outer = size(x.shape.slice(0, first)), mid = size(x.shape.slice(first, last + 1)), inner = size(x.shape.slice(last + 1));
    const backend = cpuBackend(args);
    const y = backend.alloc(outer * inner);
    addon.reduce(op, valuesOf(backend, x), outer, mid, inner, y);
    const shape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    return out(backend, shape, y);
  });
}

/** The fused kernels of kernels.ts (names and contracts in fused.ts). */
function fusedKernels(addon: NativeCompute): tf.KernelConfig[] {
  const config = (kernelName: string, kernelFunc: (args: KernelArgs, backend: NativeBackend) => Info | Info[]): tf.KernelConfig => ({
    kernelName,
    backendName: NATIVE_BACKEND,
    kernelFunc: (args) => kernelFunc(args, cpuBackend(args)),
  });
  const vec = (backend: MathBackendCPU, t: Info | undefined): Float32Array | null => (t ? valuesOf(backend, t) : null);
  return [
    config(FUSED.bnMoments, (args, backend) => {
      const { x } = args.inputs as { x: Info };
      const c = x.shape[1];
      const mean = backend.alloc(c), m2 = backend.alloc(c);
      addon.bnMoments(valuesOf(backend, x), c, mean, m2);
      return [out(backend, [c], mean), out(backend, [c], m2)];
    }),
    config(FUSED.bnNormalize, (args, backend) => {
      const { xmu, invstd, gamma, beta } = args.inputs as { xmu: Info; invstd: Info; gamma?: Info; beta?: Info };
      const y = backend.alloc(tf.util.sizeFromShape(xmu.shape));
      addon.bnNormalize(valuesOf(backend, xmu), valuesOf(backend, invstd), vec(backend, gamma), vec(backend, beta), y);
      return out(backend, xmu.shape.slice(), y);
    }),
    config(FUSED.bnBackwardSums, (args, backend) => {
      const { dy, xmu } = args.inputs as { dy: Info; xmu: Info };
      const c = dy.shape[1];
      const sumDy = backend.alloc(c), sumDyXmu = backend.alloc(c);
      addon.bnBackwardSums(valuesOf(backend, dy), valuesOf(backend, xmu), sumDy, sumDyXmu);
      return [out(backend, [c], sumDy), out(backend, [c], sumDyXmu)];
    }),
    config(FUSED.bnInputGrad, (args, backend) => {
      const { dy, xmu, invstd, gamma, sumDy, sumDyXmu } = args.inputs as Record<string, Info | undefined> as {
        dy: Info; xmu: Info; invstd: Info; gamma?: Info; sumDy: Info; sumDyXmu: Info;
      };
      const { count } = args.attrs as unknown as { count: number };
      const dx = backend.alloc(tf.util.sizeFromShape(dy.shape));
      addon.bnInputGrad(valuesOf(backend, dy), valuesOf(backend, xmu), valuesOf(backend, invstd), vec(backend, gamma), valuesOf(backend, sumDy), valuesOf(backend, sumDyXmu), count, dx);
      return out(backend, dy.shape.slice(), dx);
    }),
    config(FUSED.sgdUpdate, (args, backend) => {
      const { param, grad, buf } = args.inputs as { param: Info; grad: Info; buf?: Info };
      const o = args.attrs as unknown as SgdUpdateOptions;
      const n = tf.util.sizeFromShape(param.shape);
      const p = backend.alloc(n), b = o.momentum !== 0 ? backend.alloc(n) : null;
      addon.sgdUpdate(o, valuesOf(backend, param), valuesOf(backend, grad), vec(backend, buf), p, b);
      return b ? [out(backend, param.shape.slice(), p), out(backend, param.shape.slice(), b)] : [out(backend, param.shape.slice(), p)];
    }),
    config(FUSED.adamUpdate, (args, backend) => {
      const { param, grad, m, v, vmax } = args.inputs as { param: Info; grad: Info; m?: Info; v?: Info; vmax?: Info };
      const o = args.attrs as unknown as AdamUpdateOptions;
      const n = tf.util.sizeFromShape(param.shape);
      const outs = [backend.alloc(n), backend.alloc(n), backend.alloc(n), ...(o.amsgrad ? [backend.alloc(n)] : [])];
      addon.adamUpdate(o, valuesOf(backend, param), valuesOf(backend, grad), vec(backend, m), vec(backend, v), vec(backend, vmax), outs[0], outs[1], outs[2], outs[3] ?? null);
      return outs.map((a) => out(backend, param.shape.slice(), a));
    }),
    config(FUSED.reluGrad, (args, backend) => {
      const { dy, y } = args.inputs as { dy: Info; y: Info };
      const dx = backend.alloc(tf.util.sizeFromShape(dy.shape));
      addon.reluGrad(valuesOf(backend, dy), valuesOf(backend, y), dx);
      return out(backend, dy.shape.slice(), dx);
    }),
  ];
}

/**
 * Register the `native` backend and its kernels (once per JS environment). The caller
 * then selects it with `tf.setBackend('native')`.
 */
export function registerNativeBackend(addon: NativeCompute): void {
  if (tf.findBackendFactory(NATIVE_BACKEND)) return;
  const own = [
    matMulKernel(addon),
    ...convKernels(addon),
    binaryKernel(addon, tf.Add, BinaryOp.Add),
    binaryKernel(addon, tf.Sub, BinaryOp.Sub),
    binaryKernel(addon, tf.Multiply, BinaryOp.Mul),
    binaryKernel(addon, tf.RealDiv, BinaryOp.Div),
    unaryKernel(addon, tf.Relu, UnaryOp.Relu),
    unaryKernel(addon, tf.Neg, UnaryOp.Neg),
    unaryKernel(addon, tf.Square, UnaryOp.Square),
    unaryKernel(addon, tf.Sqrt, UnaryOp.Sqrt),
    unaryKernel(addon, tf.Rsqrt, UnaryOp.Rsqrt),
    unaryKernel(addon, tf.Reciprocal, UnaryOp.Reciprocal),
    unaryKernel(addon, tf.Exp, UnaryOp.Exp),
    unaryKernel(addon, tf.Log, UnaryOp.Log),
    unaryKernel(addon, tf.Abs, UnaryOp.Abs),
    unaryKernel(addon, tf.Step, UnaryOp.Step),
    reduceKernel(addon, tf.Sum, ReduceOp.Sum),
    reduceKernel(addon, tf.Mean, ReduceOp.Mean),
    ...fusedKernels(addon),
  ];
  const ownNames = new Set(own.map((k) => k.kernelName));
  for (const k of own) tf.registerKernel(k);
  for (const k of tf.getKernelsForBackend('cpu')) {
    if (!ownNames.has(k.kernelName)) tf.registerKernel({ ...k, backendName: NATIVE_BACKEND });
  }
  tf.registerBackend(NATIVE_BACKEND, () => new NativeBackend(), 0);
}
