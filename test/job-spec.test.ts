/** Job spec validation: every bad input names its field; defaults are resolved. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readFileSync } from 'node:fs';
import { resolveTrainSpec } from '../src/trainer/engine/job-spec.js';
import { TrainerError } from '../src/trainer/errors.js';

const quickstart = JSON.parse(readFileSync(new URL('../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;

function withChange(change: (s: Record<string, any>) => void): unknown {
  const s = structuredClone(quickstart) as Record<string, any>;
  change(s);
  return s;
}

function fieldOf(spec: unknown): string | undefined {
  try {
    resolveTrainSpec(spec);
  } catch (e) {
    assert.ok(e instanceof TrainerError, `expected a TrainerError, got ${String(e)}`);
    assert.equal(e.code, 'TAS_ERR_INVALID_SPEC');
    assert.ok(e.message.startsWith(`${e.field}: `), `message "${e.message}" should start with the field`);
    return e.field;
  }
  return undefined;
}

describe('train spec', () => {
  it('accepts every example and resolves defaults', () => {
    const s = resolveTrainSpec(quickstart);
    assert.equal(s.workers, 2);
    assert.deepEqual(s.localBatchSizes, [32, 32]);
    assert.equal(s.loss, 'cross_entropy');
    assert.equal(s.shuffle, true);
    assert.equal(s.dropLast, false);
    const cnn = resolveTrainSpec(JSON.parse(readFileSync(new URL('../examples/cnn-images.json', import.meta.url), 'utf8')));
    assert.deepEqual(cnn.localBatchSizes, [24, 40]);
    assert.equal(cnn.globalBatch, 64);
  });

  it('splits an uneven global batch with the remainder on the first ranks', () => {
    assert.deepEqual(resolveTrainSpec(withChange((s) => ((s.batch_size = 10), (s.workers = 3)))).localBatchSizes, [4, 3, 3]);
  });

  const cases: Array<[string, (s: Record<string, any>) => void, string]> = [
    ['missing epochs', (s) => delete s.epochs, 'epochs'],
    ['unknown top-level field', (s) => (s.epochz = 3), 'epochz'],
    ['bad layer type', (s) => (s.model.layers[2].type = 'sigmoid'), 'model.layers[2].type'],
    ['conv kernel missing', (s) => (s.model.layers[0] = { type: 'conv2d', out: 3 }), 'model.layers[0].kernel'],
    ['negative lr', (s) => (s.optimizer.lr = -1), 'optimizer.lr'],
    ['nesterov without momentum', (s) => (s.optimizer = { type: 'sgd', lr: 0.1, nesterov: true }), 'optimizer.nesterov'],
    ['bad BN momentum', (s) => (s.model.layers[1].momentum = 1.5), 'model.layers[1].momentum'],
    ['momentum schedule rate', (s) => (s.bn = { momentum_schedule: { type: 'exponential', start: 0.9, rate: 2 } }), 'bn.momentum_schedule.rate'],
    ['no batch size', (s) => delete s.batch_size, 'batch_size'],
    ['local sizes vs workers', (s) => ((s.local_batch_sizes = [3, 4, 5]), delete s.batch_size), 'local_batch_sizes'],
    ['global batch of 1 with BN', (s) => ((s.batch_size = 1), (s.workers = 1)), 'batch_size'],
    ['exact recalibration with batches', (s) => (s.recalibration = { mode: 'exact', batches: 3 }), 'recalibration.batches'],
    ['lr schedule field', (s) => (s.lr_schedule = { type: 'step' }), 'lr_schedule.step_size'],
  ];
  for (const [name, change, field] of cases) {
    it(`rejects ${name} naming ${field}`, () => assert.equal(fieldOf(withChange(change)), field));
  }
});
