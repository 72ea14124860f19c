import { test } from 'node:test';
import assert from 'node:assert/strict';
import { learningRate, validateLrSchedule, type LrScheduleSpec } from './lr-schedule.js';
import { TrainerError } from '../errors.js';

const close = (a: number, b: number, msg?: string) => assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), msg ?? `${a} vs ${b}`);
const atEpoch = (spec: LrScheduleSpec, epoch: number, base = 0.1) => learningRate(base, spec, { step: 1000 + epoch, epoch });

test('constant', () => {
  for (const e of [0, 1, 50]) assert.equal(atEpoch({ type: 'constant' }, e), 0.1);
});

test('step (StepLR)', () => {
  const spec: LrScheduleSpec = { type: 'step', step_size: 3 };
  const expected = [0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001];
  expected.forEach((lr, e) => close(atEpoch(spec, e), lr));
  close(atEpoch({ type: 'step', step_size: 2, gamma: 0.5 }, 5, 1), 0.25);
});

test('multistep (MultiStepLR), milestones in any order, duplicates count twice', () => {
  const spec: LrScheduleSpec = { type: 'multistep', milestones: [5, 2], gamma: 0.5 };
  const expected = [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25];
  expected.forEach((lr, e) => close(atEpoch(spec, e, 1), lr));
  close(atEpoch({ type: 'multistep', milestones: [3, 3] }, 3, 1), 0.01);
  close(atEpoch({ type: 'multistep', milestones: [3] }, 2, 1), 1);
});

test('cosine (CosineAnnealingLR closed form)', () => {
  const spec: LrScheduleSpec = { type: 'cosine', t_max: 10, eta_min: 0.001 };
  close(atEpoch(spec, 0), 0.1);
  close(atEpoch(spec, 5), 0.001 + (0.1 - 0.001) / 2);
  close(atEpoch(spec, 10), 0.001);
  close(atEpoch(spec, 2), 0.001 + (0.099 * (1 + Math.cos(Math.PI / 5))) / 2);
  close(atEpoch({ type: 'cosine', t_max: 4 }, 2, 1), 0.5);
});

test('exponential (ExponentialLR)', () => {
  const spec: LrScheduleSpec = { type: 'exponential', gamma: 0.9 };
  close(atEpoch(spec, 0), 0.1);
  close(atEpoch(spec, 1), 0.09);
  close(atEpoch(spec, 3), 0.1 * 0.729);
});

test('warm-up: linear from start_factor (default 1/3), then the main schedule from its start', () => {
  const spec: LrScheduleSpec = { type: 'step', step_size: 2, gamma: 0.5, warmup: { steps: 4 } };
  // t=0..3: base * (1/3 + (2/3) * t/4); then StepLR counted from t=4.
  const expected = [1 / 3, 1 / 3 + 1 / 6, 1 / 3 + 2 / 6, 1 / 3 + 3 / 6, 1, 1, 0.5, 0.5, 0.25];
  expected.forEach((lr, e) => close(atEpoch(spec, e, 1), lr, `epoch ${e}: ${atEpoch(spec, e, 1)} vs ${lr}`));
  const custom: LrScheduleSpec = { type: 'constant', warmup: { steps: 5, start_factor: 0.1 } };
  close(atEpoch(custom, 0, 2), 0.2);
  close(atEpoch(custom, 4, 2), 2 * (0.1 + 0.9 * 0.8));
  close(atEpoch(custom, 5, 2), 2);
  const cos: LrScheduleSpec = { type: 'cosine', t_max: 10, warmup: { steps: 2 } };
  close(atEpoch(cos, 2), 0.1);
  close(atEpoch(cos, 7), 0.05);
  close(atEpoch({ type: 'constant', warmup: { steps: 0 } }, 0), 0.1);
});

test("unit 'step' counts optimizer steps, 'epoch' (default) counts epochs", () => {
  const perStep: LrScheduleSpec = { type: 'step', step_size: 100, unit: 'step', warmup: { steps: 10, start_factor: 0.5 } };
  close(learningRate(1, perStep, { step: 0, epoch: 7 }), 0.5);
  close(learningRate(1, perStep, { step: 5, epoch: 7 }), 0.75);
  close(learningRate(1, perStep, { step: 109, epoch: 0 }), 1);
  close(learningRate(1, perStep, { step: 110, epoch: 0 }), 0.1);
  const perEpoch: LrScheduleSpec = { type: 'step', step_size: 1 };
  close(learningRate(1, perEpoch, { step: 500, epoch: 0 }), 1);
  close(learningRate(1, perEpoch, { step: 0, epoch: 2 }), 0.01);
});

test('validateLrSchedule accepts valid specs and names the offending field', () => {
  const good: unknown[] = [
    { type: 'constant' },
    { type: 'step', step_size: 3, gamma: 0.5, unit: 'step' },
    { type: 'multistep', milestones: [] },
    { type: 'multistep', milestones: [10, 20], gamma: 0.2, warmup: { steps: 3, start_factor: 0.25 } },
    { type: 'cosine', t_max: 5 },
    { type: 'exponential', gamma: 0.95, unit: 'epoch' },
  ];
  for (const s of good) validateLrSchedule(s, 'train.lr_schedule');

  const cases: Array<[unknown, string]> = [
    [null, 'train.lr_schedule'],
    [{ type: 'linear' }, 'train.lr_schedule.type'],
    [{}, 'train.lr_schedule.type'],
    [{ type: 'step' }, 'train.lr_schedule.step_size'],
    [{ type: 'step', step_size: 0 }, 'train.lr_schedule.step_size'],
    [{ type: 'step', step_size: 1.5 }, 'train.lr_schedule.step_size'],
    [{ type: 'step', step_size: 2, gamma: 0 }, 'train.lr_schedule.gamma'],
    [{ type: 'step', step_size: 2, t_max: 3 }, 'train.lr_schedule.t_max'],
    [{ type: 'multistep', milestones: 3 }, 'train.lr_schedule.milestones'],
    [{ type: 'multistep', milestones: [1, -2] }, 'train.lr_schedule.milestones.1'],
    [{ type: 'cosine', t_max: -1 }, 'train.lr_schedule.t_max'],
    [{ type: 'cosine', t_max: 10, eta_min: -0.1 }, 'train.lr_schedule.eta_min'],
    [{ type: 'exponential' }, 'train.lr_schedule.gamma'],
    [{ type: 'exponential', gamma: Number.NaN }, 'train.lr_schedule.gamma'],
    [{ type: 'constant', unit: 'batch' }, 'train.lr_schedule.unit'],
    [{ type: 'constant', warmup: 5 }, 'train.lr_schedule.warmup'],
    [{ type: 'constant', warmup: {} }, 'train.lr_schedule.warmup.steps'],
    [{ type: 'constant', warmup: { steps: -1 } }, 'train.lr_schedule.warmup.steps'],
    [{ type: 'constant', warmup: { steps: 2, start_factor: 0 } }, 'train.lr_schedule.warmup.start_factor'],
    [{ type: 'constant', warmup: { steps: 2, start_factor: 1.5 } }, 'train.lr_schedule.warmup.start_factor'],
    [{ type: 'constant', warmup: { steps: 2, end_factor: 1 } }, 'train.lr_schedule.warmup.end_factor'],
  ];
  for (const [spec, field] of cases) {
    assert.throws(
      () => validateLrSchedule(spec, 'train.lr_schedule'),
      (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_INVALID_SPEC' && e.field === field,
      `${JSON.stringify(spec)} should fail on ${field}`,
    );
  }
});
