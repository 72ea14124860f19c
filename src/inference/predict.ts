/**
 * Eval-mode forward of a trained model: the function every serving path runs. BatchNorm
 * normalises with the stored running (or recalibrated) statistics, dropout is the
 * identity, and inputs and outputs are in PyTorch layout (rows of `input_shape`, NCHW for
 * images), so outputs equal PyTorch's `model.eval()(x)` on the same artifact.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedArtifact } from '../trainer/artifact/artifact.js';
import type { ForwardContext } from '../trainer/layers/layer.js';
import { Rng } from '../trainer/math/rng.js';
import { Model } from '../trainer/model/model.js';

// Served models never change after loading: BN keeps its eval scale and shift (`frozen`).
const EVAL: ForwardContext = { training: false, record: false, bnSync: null, updateRunningStats: false, rng: new Rng(0), frozen: true };

/** A model ready to serve: built from the artifact's spec with the artifact's state. */
export interface ServableModel {
  readonly model: Model;
  /** One input row in PyTorch layout. */
  readonly inputShape: readonly number[];
  /** One output row in PyTorch layout. */
  readonly outputShape: readonly number[];
  /**
   * True when some BatchNorm normalises with batch statistics even in eval
   * (`track_running_stats: false`): a row's output then depends on the other rows of its
   * batch, so requests must never be batched together.
   */
  readonly batchDependent: boolean;
}

export function servable(artifact: LoadedArtifact): ServableModel {
  const model = Model.build(artifact.model);
  model.loadStateDict(artifact.state);
  const out = model.outputShape;
  // Channels-last [H, W, C] inside the trainer; [C, H, W] outside.
  const outputShape = out.length === 3 ? [out[2]!, out[0]!, out[1]!] : [...out];
  return {
    model,
    inputShape: [...artifact.model.input_shape],
    outputShape,
    batchDependent: model.batchNorms().some((b) => b.runningMean === null),
  };
}

/** Eval-mode outputs for `rows` rows of input (row-major, PyTorch layout). */
export async function predict(s: ServableModel, input: Float32Array, rows: number): Promise<Float32Array> {
  if (rows === 0) return new Float32Array(0);
  const x = s.model.inputTensor(input, rows);
  let y: tf.Tensor;
  try {
    y = await s.model.forward(x, EVAL);
  } finally {
    x.dispose();
  }
  try {
    if (y.rank === 4) {
      const nchw = tf.transpose(y, [0, 3, 1, 2]);
      y.dispose();
      y = nchw;
    }
    // An own copy: the backend may reuse the memory a read returns a view of.
    return ((await y.data()) as Float32Array).slice();
  } finally {
    y.dispose();
  }
}
