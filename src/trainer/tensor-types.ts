import type * as tf from '@tensorflow/tfjs-core';

/** A host-side float32 array with its shape (row-major). Used for state dicts, checkpoints and wire formats. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

/** Name → host tensor, in insertion order (state_dict order). */
export type HostTensorMap = Map<string, HostTensor>;

/**
 * A trainable parameter. `name` is the PyTorch state_dict name (`layers.0.weight`).
 * `grad` holds the gradient of the GLOBAL mean loss after the gradient all-reduce;
 * it is owned by the parameter (disposed when replaced).
 */
export interface Param {
  readonly name: string;
  readonly value: tf.Variable;
  grad: tf.Tensor | null;
}
