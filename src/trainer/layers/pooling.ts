/** Max/avg pooling and global average pooling over channels-last [N, H, W, C]. */
import * as tf from '@tensorflow/tfjs-core';
import * as K from '../kernels/kernels.js';
import { convOutputSize } from './conv2d.js';
import { FunctionalLayer } from './functional.js';

export interface PoolOptions {
  kernel: number;
  stride: number;
  padding: number;
}

export function pool2d(kind: 'maxpool' | 'avgpool', path: string, inputShape: readonly number[], o: PoolOptions): FunctionalLayer {
  const [h, w, c] = inputShape;
  const out = [convOutputSize(h, o.kernel, o.stride, o.padding), convOutputSize(w, o.kernel, o.stride, o.padding), c];
  const pad = o.padding;
  const fn = (x: tf.Tensor) => {
    // Max pooling pads with -inf (PyTorch), average pooling with zeros counted in the
    // divisor (PyTorch's count_include_pad=True default).
    const padded = pad > 0 ? tf.pad(x as tf.Tensor4D, [[0, 0], [pad, pad], [pad, pad], [0, 0]], kind === 'maxpool' ? -3.4e38 : 0) : x;
    return kind === 'maxpool'
      ? K.maxPool2d(padded as tf.Tensor4D, o.kernel, o.stride)
      : tf.avgPool(padded as tf.Tensor4D, o.kernel, o.stride, 'valid');
  };
  return new FunctionalLayer(kind, path, inputShape, out, fn);
}

/** Mean over H and W: [N, H, W, C] -> [N, C] (PyTorch AdaptiveAvgPool2d(1) + flatten). */
export function globalAvgPool(path: string, inputShape: readonly number[]): FunctionalLayer {
  return new FunctionalLayer('global_avg_pool', path, inputShape, [inputShape[2]], (x) => tf.mean(x, [1, 2]));
}
