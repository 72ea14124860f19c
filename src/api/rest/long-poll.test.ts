// ChangeWatch: waiters on one key share its reads; each is answered when the value's tag
// differs from its own, with the latest value when its wait ends or its client leaves.
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import { describe, test } from 'node:test';
import { ChangeWatch, type ChangeSource } from './long-poll.js';

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

/** Announcements as the test makes them (what the database's change feed delivers). */
class Announcer implements ChangeSource {
  live = true;
  private readonly listeners = new Set<(topic: string | null) => void>();
  subscribe(changed: (topic: string | null) => void): () => void {
    this.listeners.add(changed);
    return () => this.listeners.delete(changed);
  }
  announce(topic: string | null): void {
    for (const l of this.listeners) l(topic);
  }
}

/** A watch on a live test source, its reads current for 25 ms without it and 1 s with it, on a clock the test steps (`c.t`). */
function steppedWatch() {
  const source = new Announcer();
  const c = { t: 0, now: () => c.t };
  const watch = new ChangeWatch({ checkMs: 25, quietMs: 1000, source, now: c.now });
  return { source, c, watch };
}
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

  test('with a live source, an announced change answers its waiters at once; other topics read nothing', { timeout: 10_000 }, async () => {
    const source = new Announcer();
    // Without the announcement the waiter would be read again only after a minute.
    const watch = new ChangeWatch({ checkMs: 5, quietMs: 60_000, source, affects: (key, topic) => key === topic });
    const r = resource();
    const waiting = watch.wait('a', r.read, tagOf, (t) => t === 'v1', 1, 120_000, never());
    // A poll without a read to start from is read at once.
    await once(r.events, 'read');
    assert.equal(r.reads, 1);
    r.value = 2;
    source.announce('b');
    source.announce('a');
    assert.equal(await waiting, 2);
    assert.equal(r.reads, 2, "'b' read nothing");
    watch.close();
  });

  test('latest: with a live source a read stays current until a change is announced (quietMs at most); without one, checkMs', async () => {
    const { source, c, watch } = steppedWatch();
    const r = resource();
    await watch.latest('k', r.read);
    c.t += 500;
    await watch.latest('k', r.read);
    assert.equal(r.reads, 1, 'nothing announced: the read holds');
    source.announce('job:x');
    await watch.latest('k', r.read);
    assert.equal(r.reads, 2, 'announced: read again');
    c.t += 1001;
    await watch.latest('k', r.read);
    assert.equal(r.reads, 3, 'older than quietMs: read again');
    source.live = false;
    c.t += 10;
    await watch.latest('k', r.read);
    assert.equal(r.reads, 3);
    c.t += 20;
    await watch.latest('k', r.read);
    assert.equal(r.reads, 4, 'source down: reads every checkMs');
    watch.close();
  });

  test('a read that began before an announcement is not current after it', async () => {
    const { source, c, watch } = steppedWatch();
    let release!: () => void;
    let reads = 0;
    const slow = async () => {
      reads++;
      if (reads === 1) await new Promise<void>((r) => (release = r));
      return reads;
    };
    const first = watch.latest('k', slow);
    source.announce('job:x');
    release();
    assert.equal(await first, 1);
    c.t += 26;
    assert.equal(await watch.latest('k', slow), 2);
    watch.close();
  });

  test('the source coming back (null: changes may have been missed) reads every watched key again', { timeout: 10_000 }, async () => {
    const source = new Announcer();
    const watch = new ChangeWatch({ checkMs: 5, quietMs: 60_000, source, affects: () => false });
    const a = resource();
    const b = resource();
    const waits = [watch.wait('a', a.read, tagOf, (t) => t === 'v1', 1, 120_000, never()), watch.wait('b', b.read, tagOf, (t) => t === 'v1', 1, 120_000, never())];
    await Promise.all([once(a.events, 'read'), once(b.events, 'read')]);
    a.value = 2;
    b.value = 3;
    source.announce(null);
    assert.deepEqual(await Promise.all(waits), [2, 3]);
    watch.close();
  });

  test('a stream of announcements reads a key once per checkMs at most', { timeout: 10_000 }, async () => {
    const source = new Announcer();
    const watch = new ChangeWatch({ checkMs: 50, quietMs: 60_000, source });
    const r = resource();
    const waiting = watch.wait('a', r.read, tagOf, (t) => t === 'v1', 1, 120_000, never());
    await once(r.events, 'read');
    // An announcement every millisecond for 100 ms, as many jobs writing progress would make.
    const t0 = performance.now();
    await new Promise<void>((done) => {
      const every = setInterval(() => {
        source.announce('job:x');
        if (performance.now() - t0 >= 100) {
          clearInterval(every);
          done();
        }
      }, 1);
    });
    const elapsed = performance.now() - t0;
    assert.ok(r.reads <= 2 + Math.ceil(elapsed / 50), `${r.reads} reads in ${elapsed.toFixed(0)} ms`);
    r.value = 2;
    source.announce('job:x');
    assert.equal(await waiting, 2);
    watch.close();
  });
});
