/**
 * Losses of the GLOBAL batch, computed from one rank's share: each rank returns the SUM
 * of its per-sample losses and the gradient of (local sum / global count), so that the
 * sum of the ranks' gradients is exactly the gradient of the global mean loss, also when
 * shares differ (the golden fixtures' rule; never average per-rank means equally).
 */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';

export type LossKind = 'cross_entropy' | 'mse';

export interface LossResult {
  /** Σ of per-sample losses over this rank's rows. */
  lossSum: number;
  /** Correctly classified rows (cross-entropy only; 0 for MSE). */
  correct: number;
  /** dL/dlogits of (lossSum / globalCount). */
  grad: tf.Tensor2D;
}

/** Softmax cross-entropy with integer labels, numerically stable (log-sum-exp). */
export function crossEntropy(logits: tf.Tensor2D, labels: Int32Array, globalCount: number): LossResult {
  const [rows, classes] = logits.shape;
  if (labels.length !== rows) throw new TrainerError('TAS_ERR_SHAPE', `got ${labels.length} labels for ${rows} rows`);
  if (rows === 0) return { lossSum: 0, correct: 0, grad: tf.zeros([0, classes]) };
  for (const l of labels) if (l < 0 || l >= classes) throw new TrainerError('TAS_ERR_SHAPE', `label ${l} outside [0, ${classes}) for a model with ${classes} outputs`);
  const [logp, grad] = tf.tidy(() => {
    const onehot = tf.cast(tf.oneHot(tf.tensor1d(labels, 'int32'), classes), 'float32');
    const logp = tf.logSoftmax(logits);
    const grad = tf.div(tf.sub(tf.exp(logp), onehot), globalCount) as tf.Tensor2D;
    return [tf.sum(tf.mul(logp, onehot), 1), grad];
  });
  const lp = logp.dataSync();
  logp.dispose();
  let lossSum = 0;
  for (let i = 0; i < rows; i++) lossSum -= lp[i];
  const pred = tf.tidy(() => tf.argMax(logits, 1));
  const pd = pred.dataSync();
  pred.dispose();
  let correct = 0;
  for (let i = 0; i < rows; i++) if (pd[i] === labels[i]) correct++;
  return { lossSum, correct, grad };
}

/** Mean squared error over all outputs of a sample, summed over samples (PyTorch MSELoss divides by rows x dims). */
export function mse(outputs: tf.Tensor2D, targets: Float32Array, globalCount: number): LossResult {
  const [rows, dims] = outputs.shape;
  if (targets.length !== rows * dims) throw new TrainerError('TAS_ERR_SHAPE', `got ${targets.length} target values for ${rows} x ${dims} outputs`);
  if (rows === 0) return { lossSum: 0, correct: 0, grad: tf.zeros([0, dims]) };
  const [sq, grad] = tf.tidy(() => {
    const diff = tf.sub(outputs, tf.tensor2d(targets, [rows, dims]));
    return [tf.sum(tf.square(diff)), tf.mul(diff, 2 / (globalCount * dims)) as tf.Tensor2D];
  });
  const lossSum = (sq.dataSync()[0] as number) / dims;
  sq.dispose();
  return { lossSum, correct: 0, grad };
}
