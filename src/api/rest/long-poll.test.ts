// ChangeWatch: waiters on one key share its reads; each is answered when the value's tag
// differs from its own, with the latest value when its wait ends or its client leaves.
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { describe, test } from 'node:test';
import { ChangeWatch } from './long-poll.js';

/** A resource whose value the test changes, counting its reads; `changed` fires on each read after a change. */
function resource() {
  const events = new EventEmitter();
  const r = {
    value: 1,
    reads: 0,
    events,
    read: async () => {
      r.reads++;
      events.emit('read', r.value);
      return r.value;
    },
  };
  return r;
}

const tagOf = (v: number) => `v${v}`;
const never = () => new AbortController().signal;

describe('ChangeWatch', () => {
  test('a thousand waiters on one key cost one read per check, and all hear the change', async () => {
    const watch = new ChangeWatch({ checkMs: 5 });
    const r = resource();
    const waits = Array.from({ length: 1000 }, () => watch.wait('job:a', r.read, tagOf, (t) => t === 'v1', 1, 60_000, never()));
    assert.equal(watch.waiting, 1000);
    // Wait for a few checks to have read the unchanged value.
    for (let i = 0; i < 3; i++) await once(r.events, 'read');
    const readsBefore = r.reads;
    assert.ok(readsBefore >= 3 && readsBefore <= 4, `reads: ${readsBefore}`);
    r.value = 2;
    const values = await Promise.all(waits);
    assert.ok(values.every((v) => v === 2));
    assert.ok(r.reads - readsBefore <= 2, `one read answered them all (${r.reads - readsBefore})`);
    assert.equal(watch.waiting, 0);
    // Nobody waits: nothing is read any more.
    const idle = r.reads;
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(r.reads, idle);
    watch.close();
  });

  test('latest: polls within one check share one read', async () => {
    const watch = new ChangeWatch({ checkMs: 50 });
    const r = resource();
    const values = await Promise.all(Array.from({ length: 100 }, () => watch.latest('k', r.read)));
    assert.ok(values.every((v) => v === 1));
    assert.equal(r.reads, 1);
    assert.equal(await watch.latest('k', r.read), 1);
    assert.equal(r.reads, 1, 'still fresh: no new read');
    // A failed read is not remembered.
    await assert.rejects(watch.latest('bad', async () => Promise.reject(new Error('gone'))), /gone/);
    watch.close();
  });

  test('each waiter compares with its own tag', async () => {
    const watch = new ChangeWatch({ checkMs: 5 });
    const r = resource();
    r.value = 7;
    // This client already has v7: it waits; the other has v6: answered at the first check.
    const upToDate = watch.wait('k', r.read, tagOf, (t) => t === 'v7', 7, 60_000, never());
    const behind = await watch.wait('k', r.read, tagOf, (t) => t === 'v6', 6, 60_000, never());
    assert.equal(behind, 7);
    assert.equal(watch.waiting, 1);
    r.value = 8;
    assert.equal(await upToDate, 8);
    watch.close();
  });

  test('the wait ends with the latest value; a client that leaves is let go', async () => {
    const watch = new ChangeWatch({ checkMs: 5 });
    const r = resource();
    const t0 = performance.now();
    assert.equal(await watch.wait('k', r.read, tagOf, (t) => t === 'v1', 1, 40, never()), 1);
    assert.ok(performance.now() - t0 >= 39);
    const leaving = new AbortController();
    const p = watch.wait('k', r.read, tagOf, (t) => t === 'v1', 1, 60_000, leaving.signal);
    assert.equal(watch.waiting, 1);
    leaving.abort();
    assert.equal(await p, 1);
    assert.equal(watch.waiting, 0);
    watch.close();
  });

  test('a failed read fails its waiters only; close answers the rest', async () => {
    const watch = new ChangeWatch({ checkMs: 5 });
    const r = resource();
    const broken = watch.wait('gone', async () => Promise.reject(new Error('no such job')), tagOf, () => true, 1, 60_000, never());
    const fine = watch.wait('k', r.read, tagOf, (t) => t === 'v1', 1, 60_000, never());
    await assert.rejects(broken, /no such job/);
    assert.equal(watch.waiting, 1);
    watch.close();
    assert.equal(await fine, 1);
    // After close, a wait answers at once.
    assert.equal(await watch.wait('k', r.read, tagOf, () => true, 5, 60_000, never()), 5);
  });
});
