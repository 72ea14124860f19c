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

test('forget: later calls start anew while the forgotten call still answers its callers', async () => {
  const sf = new SingleFlight<string, string>();
  const gated = () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    return { release, gate };
  };
  const first = gated();
  const second = gated();
  const before = sf.run('a', async () => {
    await first.gate;
    return 'before';
  });
  sf.forget('a');
  const after = sf.run('a', async () => {
    await second.gate;
    return 'after';
  });
  // The forgotten call settling does not drop the newer one: a caller now still joins it.
  first.release();
  assert.equal(await before, 'before');
  const joined = sf.run('a', async () => 'a third run');
  second.release();
  assert.equal(await after, 'after');
  assert.equal(await joined, 'after');
  const again = sf.run('b', async () => 'b1');
  sf.forget();
  assert.equal(await sf.run('b', async () => 'b2'), 'b2');
  assert.equal(await again, 'b1');
});
