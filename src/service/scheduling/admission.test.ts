// Admission by memory: a job is refused only when no gang of one kind can hold it, and
// the message compares with the best gang's smallest worker.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { resolveTrainSpec } from '../../trainer/engine/job-spec.js';
import { estimateJobMemory } from '../../trainer/engine/memory.js';
import { TrainerError } from '../../trainer/errors.js';
import { admitByMemory } from './admission.js';

const GiB = 2 ** 30;
const quickstart = JSON.parse(readFileSync(new URL('../../../examples/quickstart.json', import.meta.url), 'utf8')) as { model: { layers: Array<Record<string, unknown>> } };
const spec = (firstOut: number) => resolveTrainSpec({ ...quickstart, model: { ...quickstart.model, layers: quickstart.model.layers.map((l, i) => (i === 0 ? { ...l, out: firstOut } : l)) } });
const estimate = (firstOut: number) => (backend: string | null) => estimateJobMemory(spec(firstOut), { samples: 1200, backend });
const cpu = (gib: number | null, backend = 'native') => ({ deviceKind: 'cpu' as const, backend, memoryLimitBytes: gib === null ? null : gib * GiB });
const gpu = (gib: number) => ({ deviceKind: 'gpu' as const, backend: 'tensorflow', memoryLimitBytes: gib * GiB });

test('admits a job some gang of one kind can hold', () => {
  admitByMemory(estimate(64), 2, [cpu(1), cpu(1)]);
  // 20,000 wide: ~0.4 GiB of weights and state; two of the three workers hold it.
  admitByMemory(estimate(20_000), 2, [cpu(0.5), cpu(4), cpu(4)]);
  // Workers that did not say their memory are taken on trust.
  admitByMemory(estimate(10_000_000), 2, [cpu(null), cpu(null)]);
  // The GPUs cannot, the CPUs can: admitted (the scheduler only reserves workers that hold it).
  admitByMemory(estimate(20_000), 2, [gpu(0.3), gpu(0.3), cpu(4), cpu(4)]);
});

test('refuses one no gang can hold, naming the layer and the gang that came closest', () => {
  assert.throws(
    () => admitByMemory(estimate(10_000_000), 2, [cpu(11.7), cpu(11.7), cpu(2, 'wasm')]),
    (e: unknown) => {
      assert.ok(e instanceof TrainerError);
      assert.equal(e.code, 'TAS_ERR_OUT_OF_MEMORY');
      assert.equal(e.field, 'model.layers[0]');
      assert.match(e.message, /more than the 11\.7 GiB a cpu worker \(native backend\) has/);
      return true;
    },
  );
  // wasm counts its heap twice: what fits a native worker may not fit a wasm one.
  const e = estimate(20_000);
  const nativeNeed = e('native').bytes;
  assert.ok(e('wasm').bytes > nativeNeed);
  assert.throws(() => admitByMemory(e, 1, [cpu(nativeNeed / GiB, 'wasm')]), /TAS_ERR_OUT_OF_MEMORY|model\.layers/);
  admitByMemory(e, 1, [cpu(nativeNeed / GiB, 'native')]);
});
