import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DynamicBatcher, type BatchRun } from './batcher.js';

/** An executor the test releases by hand; it doubles every value and records each batch. */
function gatedExecutor() {
  const calls: Array<{ rows: number; input: Float32Array; release(): void; fail(e: Error): void }> = [];
  let onCall: (() => void) | null = null;
  const run = (input: Float32Array, rows: number) =>
    new Promise<BatchRun>((resolve, reject) => {
      calls.push({ rows, input: input.slice(), release: () => resolve({ output: input.map((v) => v * 2), computeMs: 1 }), fail: reject });
      onCall?.();
    });
  /** Resolves once the executor has received `n` batches in all. */
  const called = (n: number) =>
    new Promise<void>((resolve) => {
      const check = () => {
        if (calls.length >= n) {
          onCall = null;
          resolve();
        }
      };
      onCall = check;
      check();
    });
  return { calls, run, called };
}

const rowsOf = (first: number, rows: number) => Float32Array.from({ length: rows * 2 }, (_, i) => first + i);

describe('DynamicBatcher', () => {
  test('requests that arrive while a batch runs go together in the next one, each caller gets its own rows', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 64, maxQueueDelayMs: 0, run: ex.run });
    const first = b.submit(rowsOf(0, 1), 1);
    await ex.called(1);
    const rest = [b.submit(rowsOf(100, 2), 2), b.submit(rowsOf(200, 1), 1), b.submit(rowsOf(300, 3), 3)];
    assert.equal(b.pending, 4);
    ex.calls[0]!.release();
    await ex.called(2);
    assert.deepEqual(ex.calls.map((c) => c.rows), [1, 6]);
    ex.calls[1]!.release();
    const results = await Promise.all([first, ...rest]);
    assert.deepEqual(results.map((r) => [...r.output]), [
      [0, 2],
      [200, 202, 204, 206],
      [400, 402],
      [600, 602, 604, 606, 608, 610],
    ]);
    assert.deepEqual(results.map((r) => r.batchRows), [1, 6, 6, 6]);
    assert.equal(b.pending, 0);
  });

  test('a batch never exceeds maxBatchSize rows; a request larger than that runs alone', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 4, maxQueueDelayMs: 0, run: ex.run });
    const blocker = b.submit(rowsOf(0, 1), 1);
    await ex.called(1);
    const queued = [b.submit(rowsOf(0, 3), 3), b.submit(rowsOf(0, 2), 2), b.submit(rowsOf(0, 9), 9), b.submit(rowsOf(0, 1), 1)];
    for (let i = 1; i <= 4; i++) {
      ex.calls[i - 1]!.release();
      await ex.called(i + 1);
    }
    ex.calls[4]!.release();
    await Promise.all([blocker, ...queued]);
    // 3 (2 would overflow), then 2 (9 would), then 9 alone, then 1.
    assert.deepEqual(ex.calls.map((c) => c.rows), [1, 3, 2, 9, 1]);
  });

  test('with a queue delay, an idle model waits that long for company before running', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 64, maxQueueDelayMs: 30, run: ex.run });
    const a = b.submit(rowsOf(0, 1), 1);
    const c = b.submit(rowsOf(10, 1), 1);
    await ex.called(1);
    assert.deepEqual(ex.calls.map((x) => x.rows), [2]);
    ex.calls[0]!.release();
    const [ra, rc] = await Promise.all([a, c]);
    assert.ok(ra.queueMs >= 25, `waited ${ra.queueMs} ms`);
    assert.deepEqual([...rc.output], [20, 22]);
  });

  test('a full batch leaves at once, without waiting out the delay', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 2, maxQueueDelayMs: 60_000, run: ex.run });
    const all = [b.submit(rowsOf(0, 1), 1), b.submit(rowsOf(0, 1), 1)];
    await ex.called(1);
    ex.calls[0]!.release();
    await Promise.all(all);
  });

  test('maxInFlight batches run at once', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 64, maxQueueDelayMs: 0, maxInFlight: 2, run: ex.run });
    const all = [b.submit(rowsOf(0, 1), 1), b.submit(rowsOf(0, 1), 1), b.submit(rowsOf(0, 1), 1)];
    await ex.called(2);
    assert.deepEqual(ex.calls.map((c) => c.rows), [1, 1]);
    ex.calls[0]!.release();
    await ex.called(3);
    ex.calls[1]!.release();
    ex.calls[2]!.release();
    await Promise.all(all);
  });

  test('a failed batch fails each of its requests; close rejects what waits', async () => {
    const ex = gatedExecutor();
    const b = new DynamicBatcher({ rowSize: 2, outRowSize: 2, maxBatchSize: 64, maxQueueDelayMs: 0, run: ex.run });
    const first = b.submit(rowsOf(0, 1), 1);
    await ex.called(1);
    const second = [b.submit(rowsOf(0, 1), 1), b.submit(rowsOf(0, 1), 1)];
    ex.calls[0]!.fail(new Error('boom'));
    await assert.rejects(first, /boom/);
    await ex.called(2);
    const waiting = b.submit(rowsOf(0, 1), 1);
    b.close(new Error('unloaded'));
    await assert.rejects(waiting, /unloaded/);
    await assert.rejects(b.submit(rowsOf(0, 1), 1), /unloaded/);
    ex.calls[1]!.release();
    assert.equal((await Promise.all(second)).length, 2);
  });
});
