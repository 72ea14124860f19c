/**
 * Learning-rate schedules as pure closed forms of PyTorch's schedulers (no tfjs).
 *
 * t is the schedule's counter in its unit: with `unit: 'epoch'` (default, like PyTorch
 * schedulers stepped once per epoch) t is the 0-based epoch index; with `unit: 'step'` it
 * is the number of optimizer steps already taken (0 for the first update).
 *
 *   constant:     base
 *   step:         base * gamma^floor(t / step_size)                      (StepLR, gamma 0.1)
 *   multistep:    base * gamma^(number of milestones <= t)               (MultiStepLR, gamma 0.1)
 *   cosine:       eta_min + (base - eta_min) * (1 + cos(pi * t / t_max)) / 2
 *                                                                         (CosineAnnealingLR, eta_min 0)
 *   exponential:  base * gamma^t                                          (ExponentialLR)
 *
 * Warm-up (`warmup: { steps: W, start_factor: f }`, f defaults to 1/3 as in LinearLR) is
 * SequentialLR([LinearLR(f, 1, W), main], milestones=[W]): for t < W the rate is
 * base * (f + (1 - f) * t / W); from t = W on it is main(t - W), i.e. the main schedule
 * counts from the end of warm-up. W is in the same unit as t.
 */
import { TrainerError } from '../errors.js';

export interface LrWarmup {
  /** Warm-up length in the schedule's unit. 0 disables warm-up. */
  steps: number;
  /** Factor at t = 0, in (0, 1]; default 1/3 (PyTorch LinearLR). */
  start_factor?: number;
}

interface LrScheduleCommon {
  warmup?: LrWarmup;
  /** What t counts: 'epoch' (default) or optimizer 'step'. */
  unit?: 'step' | 'epoch';
}

export type LrScheduleSpec = LrScheduleCommon &
  (
    | { type: 'constant' }
    | { type: 'step'; step_size: number; gamma?: number }
    | { type: 'multistep'; milestones: number[]; gamma?: number }
    | { type: 'cosine'; t_max: number; eta_min?: number }
    | { type: 'exponential'; gamma: number }
  );

export interface LrPosition {
  /** Optimizer steps already taken (0-based index of the update about to happen). */
  step: number;
  /** 0-based epoch index. */
  epoch: number;
}

export const DEFAULT_WARMUP_START_FACTOR = 1 / 3;

/** Learning rate for the update at `pos`. `spec` is assumed valid (see validateLrSchedule). */
export function learningRate(baseLr: number, spec: LrScheduleSpec, pos: LrPosition): number {
  const t = (spec.unit ?? 'epoch') === 'step' ? pos.step : pos.epoch;
  const warmupSteps = spec.warmup?.steps ?? 0;
  if (t < warmupSteps) {
    const f = spec.warmup?.start_factor ?? DEFAULT_WARMUP_START_FACTOR;
    return baseLr * (f + ((1 - f) * t) / warmupSteps);
  }
  return mainSchedule(baseLr, spec, t - warmupSteps);
}

function mainSchedule(base: number, spec: LrScheduleSpec, t: number): number {
  switch (spec.type) {
    case 'constant':
      return base;
    case 'step':
      return base * (spec.gamma ?? 0.1) ** Math.floor(t / spec.step_size);
    case 'multistep': {
      let passed = 0;
      for (const m of spec.milestones) if (m <= t) passed++;
      return base * (spec.gamma ?? 0.1) ** passed;
    }
    case 'cosine': {
      const etaMin = spec.eta_min ?? 0;
      return etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * t) / spec.t_max))) / 2;
    }
    case 'exponential':
      return base * spec.gamma ** t;
  }
}

const KEYS: Record<LrScheduleSpec['type'], string[]> = {
  constant: [],
  step: ['step_size', 'gamma'],
  multistep: ['milestones', 'gamma'],
  cosine: ['t_max', 'eta_min'],
  exponential: ['gamma'],
};

/**
 * Checks a schedule spec and throws `TrainerError('TAS_ERR_INVALID_SPEC', …, field)` on the
 * first problem; `field` is `${fieldPrefix}.<name>` (e.g. `train.lr_schedule.step_size`).
 */
export function validateLrSchedule(spec: unknown, fieldPrefix: string): asserts spec is LrScheduleSpec {
  const fail = (field: string, message: string): never => {
    const path = field === '' ? fieldPrefix : `${fieldPrefix}.${field}`;
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${path}: ${message}`, path);
  };
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) fail('', 'must be an object');
  const s = spec as Record<string, unknown>;
  const type = s.type;
  if (typeof type !== 'string' || !Object.hasOwn(KEYS, type)) {
    fail('type', `must be one of ${Object.keys(KEYS).map((k) => `"${k}"`).join(', ')}, got ${JSON.stringify(type)}`);
  }
  const allowed = ['type', 'warmup', 'unit', ...KEYS[type as LrScheduleSpec['type']]];
  for (const key of Object.keys(s)) {
    if (!allowed.includes(key)) fail(key, `unknown field for schedule type "${String(type)}" (allowed: ${allowed.join(', ')})`);
  }

  const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
  const posInt = (key: string) => {
    const v = s[key];
    if (!num(v) || !Number.isInteger(v) || v < 1) fail(key, `must be an integer >= 1, got ${JSON.stringify(v)}`);
  };
  const gamma = (required: boolean) => {
    const v = s.gamma;
    if (v === undefined && !required) return;
    if (!num(v) || v <= 0) fail('gamma', `must be a finite number > 0, got ${JSON.stringify(v)}`);
  };

  switch (type) {
    case 'step':
      posInt('step_size');
      gamma(false);
      break;
    case 'multistep': {
      const ms = s.milestones;
      if (!Array.isArray(ms)) fail('milestones', 'must be an array of non-negative integers');
      (ms as unknown[]).forEach((m, i) => {
        if (!num(m) || !Number.isInteger(m) || m < 0) fail(`milestones.${i}`, `must be a non-negative integer, got ${JSON.stringify(m)}`);
      });
      gamma(false);
      break;
    }
    case 'cosine':
      posInt('t_max');
      if (s.eta_min !== undefined && (!num(s.eta_min) || s.eta_min < 0)) {
        fail('eta_min', `must be a finite number >= 0, got ${JSON.stringify(s.eta_min)}`);
      }
      break;
    case 'exponential':
      gamma(true);
      break;
  }

  if (s.unit !== undefined && s.unit !== 'step' && s.unit !== 'epoch') {
    fail('unit', `must be "step" or "epoch", got ${JSON.stringify(s.unit)}`);
  }
  const w = s.warmup;
  if (w !== undefined) {
    if (typeof w !== 'object' || w === null || Array.isArray(w)) fail('warmup', 'must be an object');
    const wr = w as Record<string, unknown>;
    for (const key of Object.keys(wr)) {
      if (key !== 'steps' && key !== 'start_factor') fail(`warmup.${key}`, 'unknown field (allowed: steps, start_factor)');
    }
    if (!num(wr.steps) || !Number.isInteger(wr.steps) || wr.steps < 0) {
      fail('warmup.steps', `must be a non-negative integer, got ${JSON.stringify(wr.steps)}`);
    }
    const f = wr.start_factor;
    if (f !== undefined && (!num(f) || f <= 0 || f > 1)) {
      fail('warmup.start_factor', `must be in (0, 1], got ${JSON.stringify(f)}`);
    }
  }
}
