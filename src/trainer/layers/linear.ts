/**
 * Linear: y = x · W + b with W stored [in, out] (channels-last friendly: the forward
 * product needs no transpose). PyTorch's state layout is [out, in]; export/import
 * transposes.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as K from '../kernels/kernels.js';
import type { HostTensorMap } from '../tensor-types.js';
import { BaseLayer, hostOf, newParam, setGradOf, takeState, toHost, uniformInit } from './layer-util.js';
import type { ForwardContext } from './layer.js';

export interface LinearOptions {
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
}

export class Linear extends BaseLayer {
  readonly type = 'linear';
  private readonly weight;
  private readonly bias;

  constructor(path: string, readonly opts: LinearOptions, next: () => number) {
    super(path, [opts.inFeatures], [opts.outFeatures]);
    // Draw in PyTorch's [out, in] order so a seed gives the same init as the export layout.
    const w = uniformInit([opts.outFeatures, opts.inFeatures], opts.inFeatures, next);
    this.weight = newParam(path, 'weight', tf.tidy(() => tf.transpose(w)));
    w.dispose();
    this.ownParams.push(this.weight);
    this.bias = opts.bias ? newParam(path, 'bias', uniformInit([opts.outFeatures], opts.inFeatures, next)) : null;
    if (this.bias) this.ownParams.push(this.bias);
  }

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    if (ctx.record) this.save(x);
    return tf.tidy(() => {
      const y = K.matMul(x as tf.Tensor2D, this.weight.value as tf.Tensor2D);
      return this.bias ? tf.add(y, this.bias.value) : y;
    });
  }

  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const [x] = this.takeCache();
    const dy2 = dy as tf.Tensor2D;
    setGradOf(this.weight, K.matMul(x as tf.Tensor2D, dy2, true, false));
    if (this.bias) setGradOf(this.bias, tf.sum(dy2, 0));
    const dx = needInputGrad ? K.matMul(dy2, this.weight.value as tf.Tensor2D, false, true) : null;
    x.dispose();
    return dx;
  }

  override exportState(): HostTensorMap {
    const out: HostTensorMap = new Map();
    out.set('weight', hostOf(() => tf.transpose(this.weight.value)));
    if (this.bias) out.set('bias', toHost(this.bias.value));
    return out;
  }

  override importState(state: HostTensorMap): void {
    const w = takeState(state, this.path, 'weight', [this.opts.outFeatures, this.opts.inFeatures]);
    this.weight.value.assign(tf.tidy(() => tf.transpose(tf.tensor2d(w.data, [this.opts.outFeatures, this.opts.inFeatures]))));
    if (this.bias) {
      const b = takeState(state, this.path, 'bias', [this.opts.outFeatures]);
      this.bias.value.assign(tf.tensor1d(b.data));
    }
  }
}
