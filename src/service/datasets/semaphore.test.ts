import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Semaphore } from './semaphore.js';

test('a semaphore runs at most n tasks, in arrival order, handing slots over', async () => {
  const s = new Semaphore(2);
  const started: number[] = [];
  const gates: Array<() => void> = [];
  const runs = Array.from({ length: 5 }, (_, i) =>
    s.run(async () => {
      started.push(i);
      await new Promise<void>((r) => gates.push(r));
      return i;
    }),
  );
  assert.deepEqual(started, [0, 1], 'the first two start at once, the rest wait');
  gates[0]!();
  assert.equal(await runs[0], 0);
  await Promise.resolve();
  assert.deepEqual(started, [0, 1, 2]);
  assert.equal(s.running, 2);
  gates[1]!();
  gates[2]!();
  await Promise.all([runs[1], runs[2]]);
  assert.deepEqual(started, [0, 1, 2, 3, 4]);
  gates[3]!();
  gates[4]!();
  assert.deepEqual(await Promise.all(runs), [0, 1, 2, 3, 4]);
  assert.equal(s.running, 0);
});

test('a failing task frees its slot', async () => {
  const s = new Semaphore(1);
  await assert.rejects(s.run(async () => Promise.reject(new Error('boom'))), /boom/);
  assert.equal(await s.run(async () => 7), 7);
  assert.equal(s.running, 0);
});
