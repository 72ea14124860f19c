// Concurrent calls share one run; a settled call is not reused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SingleFlight } from './single-flight.js';

test('concurrent calls for a key share one run; later calls run again', async () => {
  const sf = new SingleFlight<string, number>();
  let runs = 0;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const fn = async () => {
    runs++;
    await gate;
    return runs;
  };
  const all = Promise.all([sf.run('a', fn), sf.run('a', fn), sf.run('b', fn)]);
  release();
  assert.deepEqual(await all, [2, 2, 2]);
  assert.equal(runs, 2);
  assert.equal(await sf.run('a', async () => 7), 7);
  await assert.rejects(sf.run('a', async () => Promise.reject(new Error('x'))), /x/);
  assert.equal(await sf.run('a', async () => 8), 8);
});
