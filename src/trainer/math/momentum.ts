/**
 * BatchNorm running-statistics momentum: conventions and schedules. Pure functions.
 *
 * PyTorch convention: `running = (1 - m) * running + m * batch`, `m = null` is the
 * cumulative average (factor 1 / num_batches_tracked), running variance from the
 * UNBIASED batch variance. Keras convention: `running = m * running + (1 - m) * batch`
 * (m is the weight on the OLD value, default 0.99) with the BIASED batch variance.
 * A job states its convention; it is never guessed from the value of m.
 */
export type BnConvention = 'pytorch' | 'keras';

/**
 * Momentum schedules (the seed guide's "dynamic momentum"). `t` is the step or the
 * epoch index (0-based) depending on `unit`.
 * - constant: `value` (null = cumulative average).
 * - linear: `start - (t / total) * (start - end)`, held at `end` after `total`.
 * - exponential: `start * rate^t`, floored at `min` (default 0).
 * - list: `values[t]` per epoch/step, the last value repeated after the list ends.
 */
export type MomentumSchedule =
  | { type: 'constant'; value: number | null }
  | { type: 'linear'; start: number; end: number; total: number }
  | { type: 'exponential'; start: number; rate: number; min?: number }
  | { type: 'list'; values: Array<number | null> };

export interface MomentumScheduleSpec {
  schedule: MomentumSchedule;
  /** Whether `t` counts optimizer steps or epochs. Default 'step'. */
  unit?: 'step' | 'epoch';
}

export function momentumAt(schedule: MomentumSchedule, t: number): number | null {
  switch (schedule.type) {
    case 'constant':
      return schedule.value;
    case 'linear': {
      if (t >= schedule.total) return schedule.end;
      return schedule.start - (t / schedule.total) * (schedule.start - schedule.end);
    }
    case 'exponential':
      return Math.max(schedule.min ?? 0, schedule.start * Math.pow(schedule.rate, t));
    case 'list':
      return schedule.values[Math.min(t, schedule.values.length - 1)];
  }
}

/**
 * Weight of the NEW batch statistic in the running update, for either convention.
 * `numBatchesTracked` is the count AFTER incrementing for this batch.
 */
export function newValueWeight(convention: BnConvention, momentum: number | null, numBatchesTracked: number): number {
  if (momentum === null) return 1 / numBatchesTracked;
  return convention === 'pytorch' ? momentum : 1 - momentum;
}

/** In-place running update `running = (1 - w) * running + w * batch`. */
export function updateRunning(running: Float64Array | Float32Array, batch: ArrayLike<number>, w: number): void {
  for (let c = 0; c < running.length; c++) running[c] = (1 - w) * running[c] + w * batch[c];
}

/** Checks a schedule; returns the problem as [field suffix, message] or null. */
export function scheduleProblem(s: MomentumSchedule): [string, string] | null {
  const inUnit = (v: number | null) => v === null || (Number.isFinite(v) && v >= 0 && v <= 1);
  switch (s.type) {
    case 'constant':
      return inUnit(s.value) ? null : ['value', 'momentum must be in [0, 1] or null'];
    case 'linear':
      if (!inUnit(s.start) || !inUnit(s.end)) return ['start', 'start and end must be in [0, 1]'];
      return s.total > 0 ? null : ['total', 'total must be > 0'];
    case 'exponential':
      if (!inUnit(s.start)) return ['start', 'start must be in [0, 1]'];
      return s.rate > 0 && s.rate <= 1 ? null : ['rate', 'rate must be in (0, 1]'];
    case 'list':
      if (s.values.length === 0) return ['values', 'values must not be empty'];
      return s.values.every(inUnit) ? null : ['values', 'every value must be in [0, 1] or null'];
  }
}
