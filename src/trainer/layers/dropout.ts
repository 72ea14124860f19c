/**
 * Inverted dropout (PyTorch): in training, zero each value with probability p and scale
 * the rest by 1/(1-p); identity in eval. The mask comes from the step's seeded RNG, so a
 * run reproduces and a resumed run draws the same masks.
 */
import * as tf from '@tensorflow/tfjs-core';
import { BaseLayer } from './layer-util.js';
import type { ForwardContext } from './layer.js';

export class Dropout extends BaseLayer {
  readonly type = 'dropout';
  constructor(path: string, shape: readonly number[], readonly p: number) {
    super(path, shape, shape);
  }
  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    if (!ctx.training || this.p === 0) {
      if (ctx.record) this.save(tf.ones([1]));
      return x.clone();
    }
    const keep = 1 - this.p;
    const m = new Float32Array(x.size);
    for (let i = 0; i < m.length; i++) m[i] = ctx.rng.next() < keep ? 1 / keep : 0;
    const mask = tf.tensor(m, x.shape);
    const y = tf.mul(x, mask);
    if (ctx.record) this.save(mask);
    mask.dispose();
    return y;
  }
  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const [mask] = this.takeCache();
    const dx = needInputGrad ? tf.mul(dy, mask) : null;
    mask.dispose();
    return dx;
  }
}
