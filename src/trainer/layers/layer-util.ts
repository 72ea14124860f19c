/** Shared plumbing for layers: parameter creation, state conversion, cache handling. */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';
import type { HostTensor, HostTensorMap, Param } from '../tensor-types.js';
import type { BatchNorm } from './batchnorm.js';
import type { ForwardContext, Layer } from './layer.js';

export function toHost(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: Float32Array.from(t.dataSync() as Float32Array) };
}

/** Host copy of a tensor computed on the fly (the temporary is freed). */
export function hostOf(fn: () => tf.Tensor): HostTensor {
  const t = tf.tidy(fn);
  const h = toHost(t);
  t.dispose();
  return h;
}

/** Replace a param's gradient, disposing the old one. */
export function setGradOf(p: Param, g: tf.Tensor): void {
  if (p.grad) p.grad.dispose();
  p.grad = g;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/** Fetch a tensor from an imported state, checking its PyTorch shape. */
export function takeState(state: HostTensorMap, path: string, name: string, shape: readonly number[]): HostTensor {
  const t = state.get(name);
  if (!t) throw new TrainerError('TAS_ERR_CHECKPOINT', `state has no '${path}.${name}'`);
  if (!sameShape(t.shape, shape)) {
    throw new TrainerError('TAS_ERR_CHECKPOINT', `'${path}.${name}' has shape [${t.shape}], the model expects [${shape}]`);
  }
  return t;
}

/** A trainable parameter holding `init`'s values (`init` itself is disposed: the variable has its own reference). */
export function newParam(path: string, name: string, init: tf.Tensor): Param {
  const value = tf.variable(init, true, `${path}.${name}#${tf.util.now()}`);
  init.dispose();
  return { name: `${path}.${name}`, value, grad: null };
}

/** A non-trainable variable (running statistics) holding `init`'s values; `init` is disposed. */
export function newBuffer(init: tf.Tensor): tf.Variable {
  const v = tf.variable(init, false);
  init.dispose();
  return v;
}

/** A layer with no BN children and a cache of tensors kept between forward and backward. */
export abstract class BaseLayer implements Layer {
  abstract readonly type: string;
  protected readonly cache: tf.Tensor[] = [];
  protected readonly ownParams: Param[] = [];

  constructor(
    readonly path: string,
    readonly inputShape: readonly number[],
    readonly outputShape: readonly number[],
  ) {}

  abstract forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor>;
  abstract backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null>;

  params(): Param[] {
    return this.ownParams;
  }
  batchNorms(): BatchNorm[] {
    return [];
  }
  exportState(): HostTensorMap {
    const out: HostTensorMap = new Map();
    for (const p of this.ownParams) out.set(p.name.slice(this.path.length + 1), toHost(p.value));
    return out;
  }
  importState(state: HostTensorMap): void {
    for (const p of this.ownParams) {
      const t = takeState(state, this.path, p.name.slice(this.path.length + 1), p.value.shape);
      p.value.assign(tf.tensor(t.data, t.shape));
    }
  }
  /** Keep tensors for backward. */
  protected save(...ts: tf.Tensor[]): void {
    // A clone shares the data (ref-counted) but survives the caller disposing `t`.
    for (const t of ts) this.cache.push(tf.keep(t.clone()));
  }
  protected takeCache(): tf.Tensor[] {
    if (this.cache.length === 0) throw new Error(`${this.path}: backward without a recording forward`);
    return this.cache.splice(0, this.cache.length);
  }
  clearCache(): void {
    for (const t of this.cache.splice(0, this.cache.length)) t.dispose();
  }
  dispose(): void {
    this.clearCache();
    for (const p of this.ownParams) {
      p.value.dispose();
      p.grad?.dispose();
      p.grad = null;
    }
  }
}

/** PyTorch's default init for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
export function uniformInit(shape: number[], fanIn: number, next: () => number): tf.Tensor {
  const bound = 1 / Math.sqrt(fanIn);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (2 * next() - 1) * bound;
  return tf.tensor(data, shape);
}
