/**
 * The training job spec: schema validation (schemas/train.schema.json), the
 * sub-validators of optimizer / LR schedule / momentum schedule, and defaults resolved
 * once, so the engine reads plain values. Errors name the field.
 */
import { TrainerError } from '../errors.js';
import type { DataSource } from '../data/load.js';
import { validateLrSchedule, type LrScheduleSpec } from '../math/lr-schedule.js';
import { scheduleProblem, type MomentumSchedule } from '../math/momentum.js';
import type { LayerSpec, ModelSpec } from '../model/spec.js';
import { validateOptimizerSpec, type OptimizerSpec } from '../optim/index.js';
import { validateAgainst } from '../schema.js';
import type { RecalibrationMode } from './recalibrate.js';
import type { LossKind } from './loss.js';

export interface TrainSpec {
  name?: string;
  model: ModelSpec;
  data: DataSource;
  loss?: LossKind;
  optimizer: OptimizerSpec;
  lr_schedule?: LrScheduleSpec;
  epochs: number;
  workers?: number;
  batch_size?: number;
  local_batch_sizes?: number[];
  shuffle?: boolean;
  drop_last?: boolean;
  seed?: number;
  bn?: { momentum_schedule?: MomentumSchedule; unit?: 'step' | 'epoch' };
  recalibration?: { mode: RecalibrationMode | 'none'; batches?: number; batch_size?: number };
  checkpoint?: { every_steps?: number };
  init_from?: string;
}

/** A validated spec with every default filled in. */
export interface ResolvedTrainSpec {
  raw: TrainSpec;
  name: string;
  model: ModelSpec;
  data: DataSource;
  loss: LossKind;
  optimizer: OptimizerSpec;
  lrSchedule: LrScheduleSpec;
  epochs: number;
  workers: number;
  localBatchSizes: number[];
  globalBatch: number;
  shuffle: boolean;
  dropLast: boolean;
  seed: number;
  bnMomentum: { schedule: MomentumSchedule; unit: 'step' | 'epoch' } | null;
  recalibration: { mode: RecalibrationMode; batches: number; batchSize: number } | null;
  checkpointEverySteps: number | null;
  initFrom: string | null;
}

function fail(field: string, msg: string): never {
  throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: ${msg}`, field);
}

function hasBatchNorm(layers: LayerSpec[]): boolean {
  return layers.some((l) => l.type === 'batchnorm' || (l.type === 'residual' && (hasBatchNorm(l.body) || hasBatchNorm(l.shortcut ?? []))));
}

/** Sub-validators' errors, reworded to the one form "field: reason". */
function fieldFirst<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof TrainerError && e.field && !e.message.startsWith(`${e.field}:`)) {
      const reason = e.message.startsWith(e.field) ? e.message.slice(e.field.length).trim() : e.message;
      throw new TrainerError(e.code, `${e.field}: ${reason}`, e.field);
    }
    throw e;
  }
}

export function resolveTrainSpec(input: unknown): ResolvedTrainSpec {
  const s = validateAgainst<TrainSpec>('train.schema.json', input, '');
  fieldFirst(() => validateOptimizerSpec(s.optimizer));
  const lrSchedule: LrScheduleSpec = s.lr_schedule ?? { type: 'constant' };
  fieldFirst(() => validateLrSchedule(lrSchedule, 'lr_schedule'));
  if (s.bn?.momentum_schedule) {
    const p = scheduleProblem(s.bn.momentum_schedule);
    if (p) fail(`bn.momentum_schedule.${p[0]}`, p[1]);
  }

  let workers = s.workers ?? s.local_batch_sizes?.length ?? 1;
  let local: number[];
  if (s.local_batch_sizes) {
    if (s.workers !== undefined && s.local_batch_sizes.length !== s.workers) fail('local_batch_sizes', `has ${s.local_batch_sizes.length} entries for ${s.workers} workers`);
    if (s.batch_size !== undefined && s.batch_size !== s.local_batch_sizes.reduce((a, b) => a + b, 0)) fail('batch_size', 'must equal the sum of local_batch_sizes (or be left out)');
    local = s.local_batch_sizes.slice();
    workers = local.length;
  } else if (s.batch_size !== undefined) {
    if (s.batch_size < workers) fail('batch_size', `${s.batch_size} is smaller than the ${workers} workers`);
    const base = Math.floor(s.batch_size / workers);
    local = Array.from({ length: workers }, (_, r) => base + (r < s.batch_size! % workers ? 1 : 0));
  } else {
    fail('batch_size', 'is required (or give local_batch_sizes)');
  }
  const globalBatch = local.reduce((a, b) => a + b, 0);
  if (globalBatch === 0) fail('local_batch_sizes', 'the global batch must not be empty');
  if (globalBatch < 2 && hasBatchNorm(s.model.layers)) fail('batch_size', 'BatchNorm needs more than 1 value per channel when training: use a global batch of at least 2');

  let recalibration: ResolvedTrainSpec['recalibration'] = null;
  if (s.recalibration && s.recalibration.mode !== 'none') {
    if (s.recalibration.mode === 'exact' && s.recalibration.batches !== undefined) fail('recalibration.batches', "exact recalibration always uses the whole training set; 'batches' applies to precise and update_bn");
    recalibration = { mode: s.recalibration.mode, batches: s.recalibration.batches ?? Infinity, batchSize: s.recalibration.batch_size ?? globalBatch };
  }

  return {
    raw: s,
    name: s.name ?? 'job',
    model: s.model,
    data: s.data,
    loss: s.loss ?? 'cross_entropy',
    optimizer: s.optimizer,
    lrSchedule,
    epochs: s.epochs,
    workers,
    localBatchSizes: local,
    globalBatch,
    shuffle: s.shuffle ?? true,
    dropLast: s.drop_last ?? false,
    seed: s.seed ?? 0,
    bnMomentum: s.bn?.momentum_schedule ? { schedule: s.bn.momentum_schedule, unit: s.bn.unit ?? 'step' } : null,
    recalibration,
    checkpointEverySteps: s.checkpoint?.every_steps ?? null,
    initFrom: s.init_from ?? null,
  };
}
