/**
 * Flatten to [N, features] in PyTorch's NCHW order, so the next Linear's weight has
 * PyTorch's layout: channels-last [N, H, W, C] is permuted to [N, C, H, W] first.
 */
import * as tf from '@tensorflow/tfjs-core';
import { BaseLayer } from './layer-util.js';
import type { ForwardContext } from './layer.js';

export class Flatten extends BaseLayer {
  readonly type = 'flatten';
  constructor(path: string, inputShape: readonly number[]) {
    super(path, inputShape, [inputShape.reduce((a, b) => a * b, 1)]);
  }
  async forward(x: tf.Tensor): Promise<tf.Tensor> {
    const n = x.shape[0];
    if (x.rank !== 4) return tf.reshape(x, [n, this.outputShape[0]]);
    return tf.tidy(() => tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [n, this.outputShape[0]]));
  }
  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    if (!needInputGrad) return null;
    const n = dy.shape[0];
    if (this.inputShape.length !== 3) return tf.reshape(dy, [n, ...this.inputShape]);
    const [h, w, c] = this.inputShape;
    return tf.tidy(() => tf.transpose(tf.reshape(dy, [n, c, h, w]), [0, 2, 3, 1]));
  }
  // Flatten keeps nothing between passes.
  override clearCache(): void {}
  protected ctxUnused(_: ForwardContext): void {}
}
