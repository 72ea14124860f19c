/**
 * The layer contract: explicit forward and backward passes, both async.
 *
 * Why not tfjs autograd for the whole model: a SyncBN layer needs an all-reduce in the
 * middle of the forward pass and again in the middle of the backward pass, and the
 * collective is asynchronous while `tf.grad` is synchronous. So the model runs layer by
 * layer, awaiting the collective inside each BN layer; a layer caches what its backward
 * needs during a recording forward and frees it in `backward` (or `clearCache`).
 *
 * Shapes inside the trainer are channels-last: a sample is `[D]` or `[H, W, C]`. State
 * import/export converts to PyTorch layouts and names.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { HostTensorMap, Param } from '../tensor-types.js';
import type { ChannelStats } from '../math/bn-stats.js';
import type { Rng } from '../math/rng.js';

/** Communication a BN layer needs; only BatchNorm calls it (house rule 1). */
export interface BnSync {
  /** All-gather of this layer's packed local stats; resolves to every rank's stats in rank order. */
  gatherStats(local: Float32Array): Promise<Float32Array[]>;
  /** Sum over ranks of BN backward's [sum_dy, sum_dy_xmu]. */
  reduceSums(local: Float32Array): Promise<Float32Array>;
}

export interface ForwardContext {
  /** Training mode: BN uses batch statistics, dropout drops. */
  training: boolean;
  /** Keep what backward needs. False for eval and recalibration passes. */
  record: boolean;
  /** Cross-rank SyncBN communication; null when running alone. */
  bnSync: BnSync | null;
  /** Synchronise every BN layer, also those with `sync: false` (recalibration is always global). */
  syncAllBn?: boolean;
  /** Update BN running statistics in training mode (false for a no-update pass). */
  updateRunningStats: boolean;
  /**
   * Momentum override for this step from a schedule: a number, `null` for the cumulative
   * average, or `undefined` to use each layer's own momentum.
   */
  bnMomentum?: number | null;
  /** Observer of each BN layer's statistics: global batch stats in training mode, local input stats in eval mode. */
  onBnStats?: (layerPath: string, stats: ChannelStats, mode: 'batch' | 'local') => void;
  /** Random stream for dropout masks (seeded per rank and step, so runs reproduce). */
  rng: Rng;
  /**
   * Eval passes of a model whose parameters and statistics no longer change (serving):
   * layers may keep what they derive from them between calls (BN's per-channel scale and
   * shift) instead of recomputing it. Loading a state or setting statistics still drops
   * what was kept; changing parameters in place (an optimizer step) does not, so never set
   * this on a model that trains.
   */
  frozen?: boolean;
}

export interface Layer {
  /** PyTorch state_dict prefix, e.g. `layers.3` or `layers.2.body.0`. */
  readonly path: string;
  readonly type: string;
  /** Output sample shape for an input sample shape (channels-last). */
  readonly inputShape: readonly number[];
  readonly outputShape: readonly number[];
  forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor>;
  /** dL/dx from dL/dy; accumulates parameter gradients. Returns null when `needInputGrad` is false. */
  backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null>;
  params(): Param[];
  /** BatchNorm layers, own or nested. */
  batchNorms(): import('./batchnorm.js').BatchNorm[];
  /** State in PyTorch names (relative to `path`) and layouts. */
  exportState(): HostTensorMap;
  importState(state: HostTensorMap): void;
  clearCache(): void;
  dispose(): void;
}

