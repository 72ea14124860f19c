/**
 * BatchNorm over [N, C] (1d) or [N, H, W, C] (2d, channels-last), with optional SyncBN.
 *
 * Training forward, every rank:
 *   1. local per-channel (count, mean, M2), two-pass (kernels.channelMoments);
 *   2. SyncBN: ALL-GATHER of the packed stats, not an all-reduce of means, because
 *      counts may differ between ranks (pytorch#22192); merged with Chan's formula in
 *      rank order (math/bn-stats), so every rank holds the same bits;
 *   3. normalise with the global mean and biased variance M2/n;
 *   4. running stats from the global mean and unbiased M2/(n-1) (PyTorch) or biased
 *      M2/n (Keras), with the global n.
 * Training backward: local Σdy and Σdy·(x-μ); SyncBN ALL-REDUCES both (sum) and divides
 * by the global count (pytorch PR #36382). dγ, dβ stay local sums: they are reduced with
 * the other parameter gradients.
 * A rank with no samples still joins both collectives with zeros (pytorch#44957).
 */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';
import * as K from '../kernels/kernels.js';
import { biasedVariance, emptyStats, mergeAll, packStats, unpackStats, type ChannelStats } from '../math/bn-stats.js';
import { newValueWeight, type BnConvention } from '../math/momentum.js';
import type { HostTensorMap, Param } from '../tensor-types.js';
import { BaseLayer, newBuffer, newParam, takeState, toHost, setGradOf } from './layer-util.js';
import type { BnSync, ForwardContext } from './layer.js';

export interface BatchNormOptions {
  channels: number;
  eps: number;
  /** PyTorch: weight of the new value; Keras: weight of the old value; null: cumulative average. */
  momentum: number | null;
  affine: boolean;
  trackRunningStats: boolean;
  /** Synchronise batch statistics across ranks (SyncBN) when the job has more than one rank. */
  sync: boolean;
  convention: BnConvention;
}

interface Saved {
  xmu: tf.Tensor2D | null;
  invstd: tf.Tensor1D;
  globalCount: number;
  /** The communication used in forward; backward must use the same (null: local BN). */
  sync: BnSync | null;
  shape: number[];
}

export class BatchNorm extends BaseLayer {
  readonly type = 'batchnorm';
  readonly gamma: Param | null;
  readonly beta: Param | null;
  readonly runningMean: tf.Variable | null;
  readonly runningVar: tf.Variable | null;
  numBatchesTracked = 0;
  private saved: Saved | null = null;
  /** Eval constants kept between `frozen` passes (see ForwardContext.frozen). */
  private evalConsts: { alpha: tf.Tensor1D; beta: tf.Tensor1D } | null = null;

  constructor(path: string, inputShape: readonly number[], readonly opts: BatchNormOptions) {
    super(path, inputShape, inputShape);
    const c = opts.channels;
    this.gamma = opts.affine ? newParam(path, 'weight', tf.ones([c])) : null;
    this.beta = opts.affine ? newParam(path, 'bias', tf.zeros([c])) : null;
    if (this.gamma && this.beta) this.ownParams.push(this.gamma, this.beta);
    this.runningMean = opts.trackRunningStats ? newBuffer(tf.zeros([c])) : null;
    this.runningVar = opts.trackRunningStats ? newBuffer(tf.ones([c])) : null;
  }

  override batchNorms(): BatchNorm[] {
    return [this];
  }

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    const c = this.opts.channels;
    const rows = x.size / c;
    const useBatchStats = ctx.training || !this.opts.trackRunningStats;
    if (!useBatchStats) {
      if (ctx.onBnStats) ctx.onBnStats(this.path, rows > 0 ? hostStats(x, c) : emptyStats(c), 'local');
      if (ctx.frozen) {
        this.evalConsts ??= this.evalAffine();
        const { alpha, beta } = this.evalConsts;
        return tf.tidy(() => tf.add(tf.mul(x, alpha), beta));
      }
      return tf.tidy(() => {
        const { alpha, beta } = this.evalAffine();
        return tf.add(tf.mul(x, alpha), beta);
      });
    }

    const synced = ctx.training && (this.opts.sync || ctx.syncAllBn === true) && ctx.bnSync !== null;
    const x2d = tf.reshape(x, [rows, c]) as tf.Tensor2D;
    let mean: tf.Tensor1D;
    let varB: tf.Tensor1D; // biased variance the batch is normalised with
    let xmu: tf.Tensor2D | null = null;
    let globalStats: ChannelStats | null = null;
    let globalCount: number;
    if (synced) {
      const local = rows > 0 ? hostStats(x2d, c) : emptyStats(c);
      // 2C+1 floats per rank; all-gather, then Chan merge in rank order.
      const parts = await ctx.bnSync!.gatherStats(packStats(local));
      globalStats = mergeAll(parts.map(unpackStats));
      globalCount = globalStats.count;
      if (globalCount <= 1) x2d.dispose();
      this.checkCount(globalCount, x.shape);
      mean = tf.tensor1d(Float32Array.from(globalStats.mean));
      varB = tf.tensor1d(Float32Array.from(biasedVariance(globalStats)));
      if (rows > 0) xmu = tf.tidy(() => tf.sub(x2d, mean)) as tf.Tensor2D;
    } else {
      globalCount = rows;
      if (globalCount <= 1) x2d.dispose();
      this.checkCount(globalCount, x.shape);
      const m = K.channelMoments(x2d);
      mean = m.mean;
      xmu = m.xmu;
      varB = tf.tidy(() => tf.relu(tf.div(m.m2, rows))) as tf.Tensor1D; // clamp at 0
      m.m2.dispose();
      if (ctx.onBnStats) globalStats = hostStats(x2d, c);
    }
    x2d.dispose();
    if (ctx.onBnStats && globalStats) ctx.onBnStats(this.path, globalStats, 'batch');

    if (this.opts.trackRunningStats && ctx.updateRunningStats) this.updateRunning(mean, varB, globalCount, ctx);
    const invstd = tf.tidy(() => tf.rsqrt(tf.add(varB, this.opts.eps))) as tf.Tensor1D;
    mean.dispose();
    varB.dispose();

    const y = xmu ? tf.tidy(() => tf.reshape(K.bnNormalize(xmu!, invstd, this.gammaValue(), this.betaValue()), x.shape)) : tf.zeros(x.shape);
    if (ctx.record) {
      this.saved = { xmu: xmu ? tf.keep(xmu) : null, invstd: tf.keep(invstd), globalCount, sync: synced ? ctx.bnSync : null, shape: x.shape.slice() };
    } else {
      xmu?.dispose();
      invstd.dispose();
    }
    return y;
  }

  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    const s = this.saved;
    if (!s) throw new Error(`${this.path}: backward without a recording forward`);
    this.saved = null;
    const c = this.opts.channels;
    const rows = dy.size / c;
    const dy2d = tf.reshape(dy, [rows, c]) as tf.Tensor2D;
    let sumDy: tf.Tensor1D;
    let sumDyXmu: tf.Tensor1D;
    if (rows > 0 && s.xmu) ({ sumDy, sumDyXmu } = K.bnBackwardSums(dy2d, s.xmu));
    else [sumDy, sumDyXmu] = [tf.zeros([c]), tf.zeros([c])];
    if (this.gamma && this.beta) {
      setGradOf(this.gamma, tf.mul(sumDyXmu, s.invstd));
      setGradOf(this.beta, tf.clone(sumDy));
    }
    let dx: tf.Tensor | null = null;
    if (needInputGrad) {
      if (s.sync) {
        // C, C -> 2C floats; one all-reduce (sum) for both reductions.
        const local = new Float32Array(2 * c);
        local.set(sumDy.dataSync() as Float32Array, 0);
        local.set(sumDyXmu.dataSync() as Float32Array, c);
        const global = await s.sync.reduceSums(local);
        sumDy.dispose();
        sumDyXmu.dispose();
        sumDy = tf.tensor1d(global.subarray(0, c));
        sumDyXmu = tf.tensor1d(global.subarray(c));
      }
      dx =
        rows > 0 && s.xmu
          ? tf.tidy(() => tf.reshape(K.bnInputGrad(dy2d, s.xmu!, s.invstd, this.gammaValue(), sumDy, sumDyXmu, s.globalCount), s.shape))
          : tf.zeros(s.shape);
    }
    sumDy.dispose();
    sumDyXmu.dispose();
    dy2d.dispose();
    s.xmu?.dispose();
    s.invstd.dispose();
    return dx;
  }

  private checkCount(count: number, shape: number[]): void {
    if (count <= 1) {
      // PyTorch's message (torch/nn/functional.py _verify_batch_size); n/(n-1) would divide by zero (tensorflow#34062).
      throw new TrainerError('TAS_ERR_BN_SINGLE_VALUE', `Expected more than 1 value per channel when training, got input size [${shape.join(', ')}] (layer ${this.path})`);
    }
  }

  private updateRunning(mean: tf.Tensor1D, varB: tf.Tensor1D, n: number, ctx: ForwardContext): void {
    this.dropEvalConsts();
    this.numBatchesTracked += 1;
    const momentum = ctx.bnMomentum !== undefined ? ctx.bnMomentum : this.opts.momentum;
    const w = newValueWeight(this.opts.convention, momentum, this.numBatchesTracked);
    // PyTorch: unbiased variance with the GLOBAL n; Keras: the biased one.
    const unbias = this.opts.convention === 'pytorch' ? n / (n - 1) : 1;
    tf.tidy(() => {
      this.runningMean!.assign(tf.add(tf.mul(this.runningMean!, 1 - w), tf.mul(mean, w)));
      this.runningVar!.assign(tf.add(tf.mul(this.runningVar!, 1 - w), tf.mul(varB, w * unbias)));
    });
  }

  /**
   * Eval-mode normalisation as PyTorch's CPU inference kernel computes it (ATen
   * batch_norm_cpu_collect_linear_and_constant_terms): y = x * alpha + beta with
   * alpha = gamma / sqrt(running_var + eps) and beta = bias - running_mean * alpha, per
   * channel. Two element-wise kernels per call instead of five, and PyTorch's rounding.
   */
  private evalAffine(): { alpha: tf.Tensor1D; beta: tf.Tensor1D } {
    return tf.tidy(() => {
      const invstd = tf.reciprocal(tf.sqrt(tf.add(this.runningVar!, this.opts.eps)));
      const alpha = (this.gamma ? tf.mul(invstd, this.gamma.value) : invstd) as tf.Tensor1D;
      const shift = tf.mul(this.runningMean!, alpha);
      const beta = (this.beta ? tf.sub(this.beta.value, shift) : tf.neg(shift)) as tf.Tensor1D;
      return { alpha, beta };
    });
  }

  /** Forget the cached eval constants (the statistics or parameters changed, or the layer goes). */
  private dropEvalConsts(): void {
    this.evalConsts?.alpha.dispose();
    this.evalConsts?.beta.dispose();
    this.evalConsts = null;
  }

  private gammaValue(): tf.Tensor1D | null {
    return this.gamma ? (this.gamma.value as tf.Tensor1D) : null;
  }

  private betaValue(): tf.Tensor1D | null {
    return this.beta ? (this.beta.value as tf.Tensor1D) : null;
  }

  /** Replace the running statistics (recalibration). */
  setRunningStats(mean: ArrayLike<number>, variance: ArrayLike<number>): void {
    if (!this.runningMean || !this.runningVar) throw new TrainerError('TAS_ERR_INVALID_SPEC', `${this.path} does not track running statistics`);
    this.dropEvalConsts();
    this.runningMean.assign(tf.tensor1d(Float32Array.from(mean)));
    this.runningVar.assign(tf.tensor1d(Float32Array.from(variance)));
  }

  override exportState(): HostTensorMap {
    const out = super.exportState();
    if (this.runningMean && this.runningVar) {
      out.set('running_mean', toHost(this.runningMean));
      out.set('running_var', toHost(this.runningVar));
      out.set('num_batches_tracked', { shape: [], data: Float32Array.of(this.numBatchesTracked) });
    }
    return out;
  }

  override importState(state: HostTensorMap): void {
    this.dropEvalConsts();
    super.importState(state);
    if (this.runningMean && this.runningVar) {
      const c = this.opts.channels;
      this.runningMean.assign(tf.tensor1d(takeState(state, this.path, 'running_mean', [c]).data));
      this.runningVar.assign(tf.tensor1d(takeState(state, this.path, 'running_var', [c]).data));
      // Fixtures and some exporters leave num_batches_tracked out: keep 0 then.
      const nbt = state.get('num_batches_tracked');
      this.numBatchesTracked = nbt ? nbt.data[0] : 0;
    }
  }

  override clearCache(): void {
    super.clearCache();
    if (this.saved) {
      this.saved.xmu?.dispose();
      this.saved.invstd.dispose();
      this.saved = null;
    }
  }

  override dispose(): void {
    this.dropEvalConsts();
    super.dispose();
    this.runningMean?.dispose();
    this.runningVar?.dispose();
  }
}

/** Two-pass host statistics of a [rows, C]-viewable tensor (downloaded once). */
function hostStats(x: tf.Tensor, c: number): ChannelStats {
  const rows = x.size / c;
  const t = tf.tidy(() => {
    const m = K.channelStats(tf.reshape(x, [rows, c]) as tf.Tensor2D);
    return tf.concat([m.mean, m.m2]);
  });
  const buf = t.dataSync() as Float32Array;
  t.dispose();
  return { count: rows, mean: Float64Array.from(buf.subarray(0, c)), m2: Float64Array.from(buf.subarray(c)) };
}
