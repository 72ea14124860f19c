/**
 * The seed's alternatives to SyncBN, which need no communication at all: GroupNorm,
 * LayerNorm and InstanceNorm (PyTorch semantics; biased variance; two-pass moments).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Param } from '../tensor-types.js';
import { FunctionalLayer } from './functional.js';
import { newParam } from './layer-util.js';

function affineParams(path: string, shape: number[], affine: boolean): Param[] {
  return affine ? [newParam(path, 'weight', tf.ones(shape)), newParam(path, 'bias', tf.zeros(shape))] : [];
}

/** Normalise over `axes` with two-pass moments (tf.moments: mean, then mean squared deviation). */
function normalize(x: tf.Tensor, axes: number[], eps: number): tf.Tensor {
  const { mean, variance } = tf.moments(x, axes, true);
  return tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
}

/** GroupNorm(groups, channels): statistics over (channels of a group) x H x W per sample. */
export function groupNorm(path: string, inputShape: readonly number[], groups: number, eps: number, affine: boolean): FunctionalLayer {
  const c = inputShape[inputShape.length - 1];
  const spatial = inputShape.slice(0, -1);
  const fn = (x: tf.Tensor, p: tf.Tensor[]) => {
    const n = x.shape[0];
    const g = tf.reshape(x, [n, ...spatial, groups, c / groups]);
    const axes = [...spatial.map((_, i) => i + 1), spatial.length + 2];
    const y = tf.reshape(normalize(g, axes, eps), x.shape);
    return affine ? tf.add(tf.mul(y, p[0]), p[1]) : y;
  };
  return new FunctionalLayer('groupnorm', path, inputShape, inputShape, fn, affineParams(path, [c], affine));
}

/**
 * LayerNorm over the whole sample (PyTorch `LayerNorm(sample_shape)`): [D] for features,
 * [C, H, W] for images. Parameters are stored in PyTorch's layout ([C, H, W]) and
 * permuted to channels-last inside the forward.
 */
export function layerNorm(path: string, inputShape: readonly number[], eps: number, affine: boolean): FunctionalLayer {
  const image = inputShape.length === 3;
  const torchShape = image ? [inputShape[2], inputShape[0], inputShape[1]] : inputShape.slice();
  const axes = inputShape.map((_, i) => i + 1);
  const fn = (x: tf.Tensor, p: tf.Tensor[]) => {
    const y = normalize(x, axes, eps);
    if (!affine) return y;
    const [w, b] = image ? [tf.transpose(p[0], [1, 2, 0]), tf.transpose(p[1], [1, 2, 0])] : p;
    return tf.add(tf.mul(y, w), b);
  };
  return new FunctionalLayer('layernorm', path, inputShape, inputShape, fn, affineParams(path, torchShape, affine));
}

/** InstanceNorm2d: per sample and channel over H x W (affine off by default, as PyTorch). */
export function instanceNorm(path: string, inputShape: readonly number[], eps: number, affine: boolean): FunctionalLayer {
  const c = inputShape[2];
  const fn = (x: tf.Tensor, p: tf.Tensor[]) => {
    const y = normalize(x, [1, 2], eps);
    return affine ? tf.add(tf.mul(y, p[0]), p[1]) : y;
  };
  return new FunctionalLayer('instancenorm', path, inputShape, inputShape, fn, affineParams(path, [c], affine));
}
