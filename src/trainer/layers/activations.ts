/** ReLU (explicit backward: the hot path of the MLP benchmark) and GELU (autograd). */
import * as tf from '@tensorflow/tfjs-core';
import * as K from '../kernels/kernels.js';
import { BaseLayer } from './layer-util.js';
import { FunctionalLayer } from './functional.js';
import type { ForwardContext } from './layer.js';

export class Relu extends BaseLayer {
  readonly type = 'relu';
  constructor(path: string, shape: readonly number[]) {
    super(path, shape, shape);
  }
  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    const y = tf.relu(x);
    if (ctx.record) this.save(y);
    return y;
  }
  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const [y] = this.takeCache();
    // dReLU: pass dy where the output is positive (PyTorch: threshold_backward, grad 0 at 0).
    const dx = needInputGrad ? K.reluGrad(dy, y) : null;
    y.dispose();
    return dx;
  }
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** GELU, exact (erf) by default as PyTorch; `approximate: 'tanh'` as nn.GELU(approximate='tanh'). */
export function gelu(path: string, shape: readonly number[], approximate: 'none' | 'tanh'): FunctionalLayer {
  const fn =
    approximate === 'tanh'
      ? (x: tf.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(tf.mul(SQRT_2_OVER_PI, tf.add(x, tf.mul(0.044715, tf.pow(x, 3)))))))
      : (x: tf.Tensor) => tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.div(x, Math.SQRT2))));
  return new FunctionalLayer('gelu', path, shape, shape, fn);
}
