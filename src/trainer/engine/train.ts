/**
 * One rank's whole training run: epochs of deterministic shards, LR and BN-momentum
 * schedules, checkpoints, resume, recalibration and a final evaluation. Every rank runs
 * this with its own Collective; all ranks end with the same model, bit for bit.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Checkpoint } from '../artifact/checkpoint.js';
import type { Collective } from '../collective/collective.js';
import { sampleSize, type Dataset } from '../data/dataset.js';
import { TrainerError } from '../errors.js';
import { recordsBnStatsAt, summariseBnBuffers, type BnLayerSummary } from '../math/bn-summary.js';
import { learningRate } from '../math/lr-schedule.js';
import { momentumAt } from '../math/momentum.js';
import { Rng } from '../math/rng.js';
import { epochOrder, shardOf, shareSizes, stepsPerEpoch } from '../math/sharding.js';
import { Model } from '../model/model.js';
import { createOptimizer } from '../optim/index.js';
import type { HostTensorMap } from '../tensor-types.js';
import type { ResolvedTrainSpec } from './job-spec.js';
import { crossEntropy, mse } from './loss.js';
import { recalibrate, type RecalibrationRecord } from './recalibrate.js';
import { RankTrainer, type StepTargets, type StepTimings } from './rank-trainer.js';

export interface StepMetrics {
  globalStep: number;
  totalSteps: number;
  epoch: number;
  stepInEpoch: number;
  loss: number;
  accuracy: number;
  lr: number;
  bnMomentum: number | null | undefined;
  samples: number;
  samplesPerSec: number;
  timings: StepTimings;
  /**
   * Each BN layer's running statistics after this step, summarised (rank 0 only, and
   * only when it has an `onStep`). Present on every step of a run of up to 500 steps,
   * on 500 evenly spread steps of a longer one, and always on the last step
   * (`recordsBnStatsAt`, a function of the global step, so a resumed run reports the
   * same steps): enough for a plot, without a read on every step of a long run. A report
   * reads only the BN buffers (`Model.bnBuffers`): about 15 µs per step on the
   * quickstart's 2 ms steps (bench/bn-stats.ts). `[]` for a model without BN.
   */
  bnStats?: BnLayerSummary[];
}

export interface TrainRankOptions {
  spec: ResolvedTrainSpec;
  dataset: Dataset;
  collective: Collective;
  /** Continue from this checkpoint. */
  resume?: Checkpoint;
  /** Start from these weights (an artifact's state), when not resuming. */
  init?: HostTensorMap;
  /** Called on rank 0 with each checkpoint to persist. */
  onCheckpoint?: (c: Checkpoint) => Promise<void>;
  onStep?: (m: StepMetrics) => void;
  /** Stop after this many global steps (a preemption; a checkpoint is written first). */
  stopAfterGlobalStep?: number;
  signal?: AbortSignal;
  /** Fingerprint of the job spec, stored in checkpoints so they resume only into the same job. */
  specHash?: string;
}

export interface TrainRankResult {
  model: Model;
  globalSteps: number;
  completed: boolean;
  recalibration: RecalibrationRecord | null;
  /** Eval-mode loss and accuracy over the whole training set (all ranks), when completed. */
  evaluation: { loss: number; accuracy: number; samples: number } | null;
  /**
   * Each BN layer's running statistics in the final model, summarised: after
   * recalibration when configured, so the statistics the artifact holds (at the stop
   * when not completed).
   */
  bnFinal: BnLayerSummary[];
}

/** Dropout stream of (seed, rank, step): reproducible without saving RNG state. */
function stepRng(seed: number, rank: number, step: number): Rng {
  return new Rng((Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) + Math.imul(rank + 1, 0x165667b1) + Math.imul(step + 1, 0x9e3779b1)) >>> 0);
}

export function gatherRows(ds: Dataset, indices: ArrayLike<number>): { x: Float32Array; targets: StepTargets } {
  const d = sampleSize(ds);
  const x = new Float32Array(indices.length * d);
  for (let i = 0; i < indices.length; i++) x.set(ds.x.subarray(indices[i] * d, (indices[i] + 1) * d), i * d);
  if (ds.targets.kind === 'classes') {
    const labels = new Int32Array(indices.length);
    for (let i = 0; i < indices.length; i++) labels[i] = ds.targets.labels[indices[i]];
    return { x, targets: { labels } };
  }
  const td = ds.targets.targetDim;
  const values = new Float32Array(indices.length * td);
  for (let i = 0; i < indices.length; i++) values.set(ds.targets.values.subarray(indices[i] * td, (indices[i] + 1) * td), i * td);
  return { x, targets: { values } };
}

/** Broadcast parameters and BN buffers from rank 0, so every rank starts from the same bits. */
async function broadcastState(model: Model, c: Collective): Promise<void> {
  if (c.worldSize === 1) return;
  const state = model.stateDict();
  let total = 0;
  for (const t of state.values()) total += t.data.length;
  const buf = new Float32Array(total);
  let off = 0;
  for (const t of state.values()) {
    buf.set(t.data, off);
    off += t.data.length;
  }
  const got = await c.broadcast(buf, 0);
  off = 0;
  for (const t of state.values()) {
    t.data = got.slice(off, off + t.data.length);
    off += t.data.length;
  }
  model.loadStateDict(state);
}

export async function trainRank(o: TrainRankOptions): Promise<TrainRankResult> {
  const { spec, dataset: ds, collective: c } = o;
  const rank = c.rank;
  if (c.worldSize !== spec.workers) throw new TrainerError('TAS_ERR_INVALID_SPEC', `workers: the job asks for ${spec.workers} workers but the group has ${c.worldSize}`, 'workers');
  checkDataFitsModel(spec, ds);
  const perEpoch = stepsPerEpoch(ds.count, spec.globalBatch, spec.dropLast);
  if (perEpoch === 0) throw new TrainerError('TAS_ERR_INVALID_SPEC', `batch_size: the dataset has ${ds.count} samples, fewer than one global batch of ${spec.globalBatch} with drop_last`, 'batch_size');
  const lastRows = ds.count - (perEpoch - 1) * spec.globalBatch;
  if (!spec.dropLast && lastRows === 1 && spec.model.layers.length > 0 && modelHasBn(spec)) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `batch_size: the last batch of each epoch would hold 1 sample, and BatchNorm needs more than 1 value per channel when training; set drop_last or change batch_size`, 'batch_size');
  }
  const totalSteps = perEpoch * spec.epochs;

  const model = Model.build(spec.model, spec.seed);
  const optimizer = createOptimizer(spec.optimizer);
  let epoch = 0;
  let stepInEpoch = 0;
  let globalStep = 0;
  if (o.resume) {
    model.loadStateDict(o.resume.model);
    optimizer.importState(o.resume.optimizer);
    ({ epoch, stepInEpoch, globalStep } = o.resume);
  } else {
    if (o.init) model.loadStateDict(o.init);
    await broadcastState(model, c);
  }
  const trainer = new RankTrainer(model, optimizer, c, spec.loss);
  // Only the reporting rank reads BN buffers for progress; the others would read identical bits.
  const reportsBnStats = rank === 0 && o.onStep !== undefined;

  const checkpoint = async (nextEpoch: number, nextStep: number) => {
    if (rank !== 0 || !o.onCheckpoint) return;
    await o.onCheckpoint({
      globalStep,
      epoch: nextEpoch,
      stepInEpoch: nextStep,
      seed: spec.seed,
      specHash: o.specHash ?? '',
      model: model.stateDict(),
      optimizer: optimizer.exportState(),
    });
  };

  let stopped = false;
  try {
    outer: for (; epoch < spec.epochs; epoch++, stepInEpoch = 0) {
      const order = epochOrder(ds.count, spec.seed, epoch, spec.shuffle);
      for (; stepInEpoch < perEpoch; ) {
        if (o.signal?.aborted) throw new TrainerError('TAS_ERR_CANCELLED', 'training cancelled');
        const shard = shardOf(order, stepInEpoch, spec.localBatchSizes, rank);
        const { x, targets } = gatherRows(ds, shard.indices);
        const xt = model.inputTensor(x, shard.indices.length);
        const lr = learningRate(spec.optimizer.lr, spec.lrSchedule, { step: globalStep, epoch });
        const bnMomentum = spec.bnMomentum ? momentumAt(spec.bnMomentum.schedule, spec.bnMomentum.unit === 'step' ? globalStep : epoch) : undefined;
        const res = await trainer.step(xt, targets, shard.globalRows, lr, bnMomentum, stepRng(spec.seed, rank, globalStep));
        xt.dispose();
        if (!Number.isFinite(res.loss)) throw new TrainerError('TAS_ERR_NUMERIC', `loss is ${res.loss} at step ${globalStep + 1} (epoch ${epoch + 1}); lower the learning rate`);
        globalStep++;
        stepInEpoch++;
        const bnStats = reportsBnStats && recordsBnStatsAt(globalStep, totalSteps) ? summariseBnBuffers(model.bnBuffers()) : undefined;
        o.onStep?.({
          globalStep,
          totalSteps,
          epoch,
          stepInEpoch,
          loss: res.loss,
          accuracy: res.accuracy,
          lr,
          bnMomentum,
          samples: shard.globalRows,
          samplesPerSec: (shard.globalRows / res.timings.totalMs) * 1000,
          timings: res.timings,
          ...(bnStats ? { bnStats } : {}),
        });
        const epochEnd = stepInEpoch === perEpoch;
        const [ne, ns] = epochEnd ? [epoch + 1, 0] : [epoch, stepInEpoch];
        const preempt = o.stopAfterGlobalStep !== undefined && globalStep >= o.stopAfterGlobalStep;
        if (epochEnd || preempt || (spec.checkpointEverySteps && globalStep % spec.checkpointEverySteps === 0)) await checkpoint(ne, ns);
        if (preempt && globalStep < totalSteps) {
          stopped = true;
          break outer;
        }
      }
    }
  } catch (e) {
    model.dispose();
    optimizer.dispose();
    throw e;
  }
  optimizer.dispose();
  if (stopped) return { model, globalSteps: globalStep, completed: false, recalibration: null, evaluation: null, bnFinal: summariseBnBuffers(model.bnBuffers()) };

  let recalibration: RecalibrationRecord | null = null;
  if (spec.recalibration) {
    const r = spec.recalibration;
    const local = spec.localBatchSizes.map((b) => (b * r.batchSize) / spec.globalBatch);
    const order = epochOrder(ds.count, spec.seed, 0, false);
    const batches = function* () {
      for (let start = 0; start < ds.count; start += r.batchSize) {
        const rows = Math.min(r.batchSize, ds.count - start);
        const sizes = shareSizes(rows, local.map((v) => Math.max(0, v)));
        let off = start;
        for (let q = 0; q < rank; q++) off += sizes[q];
        const idx = order.subarray(off, off + sizes[rank]);
        yield model.inputTensor(gatherRows(ds, idx).x, idx.length);
      }
    };
    recalibration = (await recalibrate(model, c, batches, r.mode, r.batches)).record;
  }
  const evaluation = await evaluate(model, ds, c, spec);
  // After recalibration (and the eval pass, which leaves running statistics alone).
  const bnFinal = summariseBnBuffers(model.bnBuffers());
  return { model, globalSteps: globalStep, completed: true, recalibration, evaluation, bnFinal };
}

function modelHasBn(spec: ResolvedTrainSpec): boolean {
  return JSON.stringify(spec.model.layers).includes('"batchnorm"');
}

function checkDataFitsModel(spec: ResolvedTrainSpec, ds: Dataset): void {
  const want = spec.model.input_shape;
  if (ds.sampleShape.join() !== want.join()) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `model.input_shape: is [${want.join(', ')}] but the data's samples are [${ds.sampleShape.join(', ')}]`, 'model.input_shape');
  }
}

/** Eval-mode loss/accuracy over the whole dataset, each rank its contiguous part, summed. */
export async function evaluate(model: Model, ds: Dataset, c: Collective, spec: Pick<ResolvedTrainSpec, 'loss'>, batch = 512): Promise<{ loss: number; accuracy: number; samples: number }> {
  const per = Math.ceil(ds.count / c.worldSize);
  const from = Math.min(ds.count, c.rank * per);
  const to = Math.min(ds.count, from + per);
  let lossSum = 0;
  let correct = 0;
  for (let s = from; s < to; s += batch) {
    const idx = Uint32Array.from({ length: Math.min(batch, to - s) }, (_, i) => s + i);
    const { x, targets } = gatherRows(ds, idx);
    const xt = model.inputTensor(x, idx.length);
    const out = (await model.forward(xt, { training: false, record: false, bnSync: null, updateRunningStats: false, rng: new Rng(0) })) as tf.Tensor2D;
    xt.dispose();
    const r = spec.loss === 'cross_entropy' ? crossEntropy(out, targets.labels!, 1) : mse(out, targets.values!, 1);
    r.grad.dispose();
    out.dispose();
    lossSum += r.lossSum;
    correct += r.correct;
  }
  const sums = await c.allReduce(Float32Array.of(lossSum, correct, to - from));
  return { loss: sums[0] / sums[2], accuracy: spec.loss === 'cross_entropy' ? sums[1] / sums[2] : Number.NaN, samples: sums[2] };
}
