/**
 * One rank's training step: forward (SyncBN layers await their all-gather), loss of the
 * global batch, backward (SyncBN layers await their all-reduce) during which the
 * parameter gradients are all-reduced in buckets as soon as each bucket is complete
 * (grad-buckets.ts), then the wait for the last buckets, optimizer update.
 *
 * Where SyncBN's communication happens: layers/batchnorm.ts calls the BnSync built here,
 * which forwards to the Collective (in-process or gRPC). Parameter gradients are reduced
 * by the GradientBuckets built here.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Collective } from '../collective/collective.js';
import type { BnSync, ForwardContext } from '../layers/layer.js';
import type { Rng } from '../math/rng.js';
import type { Model } from '../model/model.js';
import type { Optimizer } from '../optim/optimizer.js';
import { collectiveBnSync, type BnSyncTimer } from './bn-sync.js';
import { GradientBuckets, gradientBucketsFromEnv, type GradientBucketsOptions } from './grad-buckets.js';
import { crossEntropy, mse, type LossKind } from './loss.js';

export interface StepTargets {
  labels?: Int32Array;
  values?: Float32Array;
}

export interface StepTimings {
  /** Wall time of the whole step. */
  totalMs: number;
  /** Time waiting in SyncBN's forward all-gathers. */
  bnForwardSyncMs: number;
  /** Time waiting in SyncBN's backward all-reduces. */
  bnBackwardSyncMs: number;
  /** Time waiting for the gradient all-reduce after backward (what overlap with backward did not hide). */
  gradSyncMs: number;
  /** The rest: forward/backward compute, loss, optimizer. */
  computeMs: number;
}

export interface StepResult {
  /** Mean loss over the global batch (identical on every rank). */
  loss: number;
  /** Accuracy over the global batch (cross-entropy), else NaN. */
  accuracy: number;
  globalCount: number;
  timings: StepTimings;
}

export class RankTrainer {
  private readonly timer: BnSyncTimer = { forwardMs: 0, backwardMs: 0 };
  readonly bnSync: BnSync | null;
  private readonly buckets: GradientBuckets | null;

  constructor(
    readonly model: Model,
    readonly optimizer: Optimizer,
    readonly collective: Collective,
    readonly loss: LossKind,
    gradSync: GradientBucketsOptions = gradientBucketsFromEnv(),
  ) {
    this.bnSync = collective.worldSize > 1 ? collectiveBnSync(collective, this.timer) : null;
    this.buckets = collective.worldSize > 1 ? new GradientBuckets(model.params(), collective, gradSync) : null;
  }

  /**
   * One step on this rank's rows (`x` channels-last, possibly 0 rows). `globalCount` is
   * the number of rows of the global batch (all ranks).
   */
  async step(x: tf.Tensor, targets: StepTargets, globalCount: number, lr: number, bnMomentum: number | null | undefined, rng: Rng): Promise<StepResult> {
    const t0 = performance.now();
    this.timer.forwardMs = 0;
    this.timer.backwardMs = 0;
    const ctx: ForwardContext = { training: true, record: true, bnSync: this.bnSync, updateRunningStats: true, rng, ...(bnMomentum !== undefined ? { bnMomentum } : {}) };
    const out = (await this.model.forward(x, ctx)) as tf.Tensor2D;
    const res = this.loss === 'cross_entropy' ? crossEntropy(out, targets.labels ?? new Int32Array(0), globalCount) : mse(out, targets.values ?? new Float32Array(0), globalCount);
    out.dispose();
    const buckets = this.buckets;
    buckets?.begin(res.lossSum, res.correct);
    await this.model.backward(res.grad, buckets ? (params) => buckets.ready(params) : undefined);
    res.grad.dispose();
    const tg = performance.now();
    const [lossSum, correct] = buckets ? await buckets.finish() : [res.lossSum, res.correct];
    const gradSyncMs = performance.now() - tg;
    this.optimizer.step(this.model.params(), lr);
    const totalMs = performance.now() - t0;
    return {
      loss: lossSum / globalCount,
      accuracy: this.loss === 'cross_entropy' ? correct / globalCount : Number.NaN,
      globalCount,
      timings: {
        totalMs,
        bnForwardSyncMs: this.timer.forwardMs,
        bnBackwardSyncMs: this.timer.backwardMs,
        gradSyncMs,
        computeMs: totalMs - this.timer.forwardMs - this.timer.backwardMs - gradSyncMs,
      },
    };
  }
}
