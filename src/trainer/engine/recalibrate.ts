/**
 * Recalibration of BN running statistics after training, with weights frozen (the
 * second seed's "whole training set" question), computed across ranks with the same
 * Chan merge as SyncBN (detectron2#5398: PreciseBN and update_bn do not sync; here they do).
 *
 * - exact: layer by layer, the population mean and variance of each BN layer's input over
 *   the whole dataset, with the BN layers before it already normalising with their exact
 *   population statistics (eval mode). One pass per BN layer.
 * - precise (fvcore PreciseBN): one pass over K batches in training mode (each batch
 *   normalised with its own global batch statistics); pooled mean and variance over the
 *   batches, weighting batches by size (Chan merge).
 * - update_bn (torch.optim.swa_utils.update_bn): reset, momentum null, one pass: the
 *   equal-weight average of per-batch means and unbiased variances.
 * Running variances are stored unbiased (PyTorch's convention for running_var); during
 * the exact passes the earlier layers normalise with the biased population variance
 * (the exact population normalisation), which the fixture's 'exact' follows.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { Collective } from '../collective/collective.js';
import type { ForwardContext } from '../layers/layer.js';
import { biasedVariance, emptyStats, mergeAll, mergeStats, packStats, unbiasedVariance, unpackStats, type ChannelStats } from '../math/bn-stats.js';
import { Rng } from '../math/rng.js';
import type { Model } from '../model/model.js';
import { collectiveBnSync } from './bn-sync.js';

export type RecalibrationMode = 'exact' | 'precise' | 'update_bn';

export interface RecalibrationRecord {
  mode: RecalibrationMode;
  /** Global batches used. */
  batches: number;
  /** Samples seen per pass (all ranks). */
  samples: number;
  worldSize: number;
  layers: string[];
  at: string;
}

/** One rank's rows of each global batch. Every rank yields the same number of batches (possibly with 0 rows). */
export type LocalBatches = () => AsyncIterable<tf.Tensor> | Iterable<tf.Tensor>;

/** Population statistics per BN layer (exact mode), for reports and tests. */
export type PopulationStats = Record<string, { mean: Float64Array; varBiased: Float64Array; varUnbiased: Float64Array; count: number }>;

export async function recalibrate(
  model: Model,
  collective: Collective,
  batches: LocalBatches,
  mode: RecalibrationMode,
  maxBatches = Infinity,
): Promise<{ record: RecalibrationRecord; population: PopulationStats }> {
  const population: PopulationStats = {};
  const bns = model.batchNorms().filter((b) => b.opts.trackRunningStats);
  const bnSync = collective.worldSize > 1 ? collectiveBnSync(collective) : null;
  const base: Omit<ForwardContext, 'training' | 'updateRunningStats'> = { record: false, bnSync, syncAllBn: true, rng: new Rng(0) };
  let batchCount = 0;
  let samples = 0;

  const pass = async (ctx: ForwardContext, onBatch?: (rows: number) => void) => {
    let i = 0;
    for await (const x of batches()) {
      if (i++ >= maxBatches) {
        x.dispose();
        break;
      }
      onBatch?.(x.shape[0]);
      const y = await model.forward(x, ctx);
      y.dispose();
      x.dispose();
    }
    return i > maxBatches ? maxBatches : i;
  };

  if (mode === 'exact') {
    for (const bn of bns) {
      let acc: ChannelStats = emptyStats(bn.opts.channels);
      let localRows = 0;
      batchCount = await pass(
        {
          ...base,
          training: false,
          updateRunningStats: false,
          onBnStats: (path, s, kind) => {
            if (path === bn.path && kind === 'local') acc = mergeStats(acc, s);
          },
        },
        (rows) => (localRows += rows),
      );
      // Per-rank accumulations, merged once in rank order.
      const global = mergeAll((await collective.allGather(packStats(acc))).map(unpackStats));
      const pop = { mean: global.mean, varBiased: biasedVariance(global), varUnbiased: unbiasedVariance(global), count: global.count };
      population[bn.path] = pop;
      // Later layers' passes normalise this one with its exact population statistics.
      bn.setRunningStats(pop.mean, pop.varBiased);
      samples = (await collective.allReduce(Float32Array.of(localRows)))[0];
    }
    for (const bn of bns) bn.setRunningStats(population[bn.path].mean, population[bn.path].varUnbiased);
  } else if (mode === 'precise') {
    const acc = new Map(bns.map((b) => [b.path, emptyStats(b.opts.channels)]));
    let localRows = 0;
    batchCount = await pass(
      {
        ...base,
        training: true,
        updateRunningStats: false,
        onBnStats: (path, s, kind) => {
          // In training mode with syncAllBn the batch stats are already global (identical on every rank).
          if (kind === 'batch' && acc.has(path)) acc.set(path, mergeStats(acc.get(path)!, s));
        },
      },
      (rows) => (localRows += rows),
    );
    for (const bn of bns) {
      const s = acc.get(bn.path)!;
      bn.setRunningStats(s.mean, unbiasedVariance(s));
    }
    samples = (await collective.allReduce(Float32Array.of(localRows)))[0];
  } else {
    for (const bn of bns) {
      bn.setRunningStats(new Float64Array(bn.opts.channels), new Float64Array(bn.opts.channels).fill(1));
      bn.numBatchesTracked = 0;
    }
    let localRows = 0;
    batchCount = await pass({ ...base, training: true, updateRunningStats: true, bnMomentum: null }, (rows) => (localRows += rows));
    samples = (await collective.allReduce(Float32Array.of(localRows)))[0];
  }
  return { record: { mode, batches: batchCount, samples, worldSize: collective.worldSize, layers: bns.map((b) => b.path), at: new Date().toISOString() }, population };
}
