/**
 * Conv2d over channels-last input with a [kh, kw, in, out] filter. PyTorch's state layout
 * is [out, in, kh, kw]; export/import permutes. The filter gradient goes through
 * kernels.conv2dBackpropFilter, which falls back to im2col where the backend lacks the
 * kernel (wasm: shared/notes/environment.md).
 */
import * as tf from '@tensorflow/tfjs-core';
import * as K from '../kernels/kernels.js';
import type { HostTensorMap } from '../tensor-types.js';
import { BaseLayer, hostOf, newParam, setGradOf, takeState, toHost, uniformInit } from './layer-util.js';
import type { ForwardContext } from './layer.js';

export interface Conv2dOptions {
  inChannels: number;
  outChannels: number;
  kernel: number;
  stride: number;
  padding: number;
  bias: boolean;
}

export function convOutputSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

export class Conv2d extends BaseLayer {
  readonly type = 'conv2d';
  private readonly weight;
  private readonly bias;
  private readonly geom: K.Conv2DGeometry;

  constructor(path: string, inputShape: readonly number[], readonly opts: Conv2dOptions, next: () => number) {
    const [h, w] = inputShape;
    super(path, inputShape, [
      convOutputSize(h, opts.kernel, opts.stride, opts.padding),
      convOutputSize(w, opts.kernel, opts.stride, opts.padding),
      opts.outChannels,
    ]);
    this.geom = { kernel: [opts.kernel, opts.kernel], stride: opts.stride, padding: opts.padding };
    const fanIn = opts.inChannels * opts.kernel * opts.kernel;
    const wt = uniformInit([opts.outChannels, opts.inChannels, opts.kernel, opts.kernel], fanIn, next);
    this.weight = newParam(path, 'weight', tf.tidy(() => tf.transpose(wt, [2, 3, 1, 0])));
    wt.dispose();
    this.ownParams.push(this.weight);
    this.bias = opts.bias ? newParam(path, 'bias', uniformInit([opts.outChannels], fanIn, next)) : null;
    if (this.bias) this.ownParams.push(this.bias);
  }

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    if (ctx.record) this.save(x);
    return tf.tidy(() => {
      const y = K.conv2d(x as tf.Tensor4D, this.weight.value as tf.Tensor4D, this.geom);
      return this.bias ? tf.add(y, this.bias.value) : y;
    });
  }

  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const [x] = this.takeCache();
    const dy4 = dy as tf.Tensor4D;
    const w = this.weight.value as tf.Tensor4D;
    setGradOf(this.weight, K.conv2dBackpropFilter(x as tf.Tensor4D, dy4, w.shape, this.geom));
    if (this.bias) setGradOf(this.bias, tf.tidy(() => tf.sum(dy4, [0, 1, 2])));
    const dx = needInputGrad ? K.conv2dBackpropInput(dy4, w, x.shape as [number, number, number, number], this.geom) : null;
    x.dispose();
    return dx;
  }

  override exportState(): HostTensorMap {
    const out: HostTensorMap = new Map();
    out.set('weight', hostOf(() => tf.transpose(this.weight.value, [3, 2, 0, 1])));
    if (this.bias) out.set('bias', toHost(this.bias.value));
    return out;
  }

  override importState(state: HostTensorMap): void {
    const { inChannels: i, outChannels: o, kernel: k } = this.opts;
    const w = takeState(state, this.path, 'weight', [o, i, k, k]);
    this.weight.value.assign(tf.tidy(() => tf.transpose(tf.tensor4d(w.data, [o, i, k, k]), [2, 3, 1, 0])));
    if (this.bias) this.bias.value.assign(tf.tensor1d(takeState(state, this.path, 'bias', [o]).data));
  }
}
