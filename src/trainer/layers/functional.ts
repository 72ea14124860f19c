/**
 * A layer whose backward is tfjs autograd over its own pure forward function: right for
 * layers that need no communication (activations, pooling, GroupNorm/LayerNorm/
 * InstanceNorm). The forward is recomputed inside `tf.grads` during backward, which
 * costs one extra forward of this layer only.
 */
import * as tf from '@tensorflow/tfjs-core';
// tfjs-core alone registers no gradient functions; the union package's bundle registers
// all of them (into tfjs-core's global registry) when loaded.
import '@tensorflow/tfjs';
import type { Param } from '../tensor-types.js';
import { BaseLayer, setGradOf } from './layer-util.js';
import type { ForwardContext } from './layer.js';

export type LayerFn = (x: tf.Tensor, params: tf.Tensor[]) => tf.Tensor;

export class FunctionalLayer extends BaseLayer {
  constructor(
    readonly type: string,
    path: string,
    inputShape: readonly number[],
    outputShape: readonly number[],
    private readonly fn: LayerFn,
    params: Param[] = [],
  ) {
    super(path, inputShape, outputShape);
    this.ownParams.push(...params);
  }

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    if (ctx.record) this.save(x);
    return tf.tidy(() => this.fn(x, this.ownParams.map((p) => p.value)));
  }

  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const [x] = this.takeCache();
    if (x.size === 0) {
      x.dispose();
      for (const p of this.ownParams) setGradOf(p, tf.zerosLike(p.value));
      return needInputGrad ? tf.zeros(x.shape) : null;
    }
    const grads = tf.grads((...args: tf.Tensor[]) => this.fn(args[0], args.slice(1)));
    const [dx, ...dps] = grads([x, ...this.ownParams.map((p) => p.value)], dy);
    this.ownParams.forEach((p, i) => setGradOf(p, dps[i]));
    x.dispose();
    if (needInputGrad) return dx;
    dx.dispose();
    return null;
  }
}
