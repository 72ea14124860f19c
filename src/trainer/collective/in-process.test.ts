/**
 * The in-process collective: results on 1, 2 and 4 ranks, bit-identical on every rank,
 * and failures (mismatched calls, abort, length mismatch) rejecting every rank.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TrainerError } from '../errors.js';
import type { Collective } from './collective.js';
import { InProcessGroup } from './in-process.js';

/** Run `fn` on every rank of a fresh group; results in rank order. */
function onRanks<T>(world: number, fn: (c: Collective, rank: number) => Promise<T>): Promise<T[]> {
  const group = new InProcessGroup(world);
  return Promise.all(Array.from({ length: world }, (_, r) => fn(group.member(r), r)));
}

/** Every rank's outcome, without failing fast (to check that every rank rejects). */
function settleRanks<T>(group: InProcessGroup, fn: (c: Collective, rank: number) => Promise<T>): Promise<PromiseSettledResult<T>[]> {
  return Promise.allSettled(Array.from({ length: group.worldSize }, (_, r) => fn(group.member(r), r)));
}

/** Values whose float32 sum depends on the order of addition. */
function rankData(rank: number, n: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => (rank % 2 ? 1e8 : 1) * Math.fround(Math.sin(rank * 31 + i) * 3.3 + 0.1 * rank));
}

function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function assertCollectiveError(r: PromiseSettledResult<unknown>, pattern: RegExp, rank: number): TrainerError {
  assert.equal(r.status, 'rejected', `rank ${rank} should reject`);
  const e = (r as PromiseRejectedResult).reason;
  assert.ok(e instanceof TrainerError, `rank ${rank}: ${e}`);
  assert.equal(e.code, 'TAS_ERR_COLLECTIVE');
  assert.match(e.message, pattern);
  return e;
}

for (const world of [1, 2, 4]) {
  describe(`in-process collective, ${world} rank(s)`, () => {
    it('allGather returns every buffer in rank order, lengths may differ', async () => {
      const out = await onRanks(world, (c, r) => c.allGather(rankData(r, r + 1)));
      for (const [r, parts] of out.entries()) {
        assert.equal(parts.length, world, `rank ${r}`);
        parts.forEach((p, q) => assert.deepEqual(p, rankData(q, q + 1), `rank ${r} part ${q}`));
      }
    });

    it('allReduce sums element-wise in rank order, bit-identical on every rank', async () => {
      const n = 17;
      const out = await onRanks(world, (c, r) => c.allReduce(rankData(r, n)));
      const want = new Float32Array(n);
      for (let r = 0; r < world; r++) {
        const d = rankData(r, n);
        for (let i = 0; i < n; i++) want[i] = Math.fround(want[i] + d[i]);
      }
      for (const [r, sum] of out.entries()) {
        assert.ok(sum instanceof Float32Array);
        assert.ok(bytes(sum).equals(bytes(want)), `rank ${r} differs from the rank-order float32 sum`);
      }
    });

    it("broadcast gives the root's buffer to every rank, for every root", async () => {
      for (let root = 0; root < world; root++) {
        const out = await onRanks(world, (c, r) => c.broadcast(r === root ? rankData(r, 5) : new Float32Array(5), root));
        for (const [r, got] of out.entries()) assert.ok(bytes(got).equals(bytes(rankData(root, 5))), `root ${root}, rank ${r}`);
      }
    });

    it('barrier resolves only when every rank has arrived', async () => {
      const group = new InProcessGroup(world);
      const arrived: number[] = [];
      const passed: number[] = [];
      const ranks = Array.from({ length: world }, async (_, r) => {
        // Ranks arrive one after another, several event-loop turns apart.
        for (let k = 0; k < 3 * r; k++) await new Promise((res) => setImmediate(res));
        arrived.push(r);
        await group.member(r).barrier();
        passed.push(r);
        assert.equal(arrived.length, world, `rank ${r} passed the barrier before everyone arrived`);
      });
      await Promise.all(ranks);
      assert.equal(passed.length, world);
    });

    it('a sequence of mixed collectives matches call by call', async () => {
      const out = await onRanks(world, async (c, r) => {
        const a = await c.allReduce(Float32Array.of(r, 1));
        await c.barrier();
        const g = await c.allGather(Float32Array.of(r * 10));
        const b = await c.broadcast(Float32Array.of(r + 100), world - 1);
        const a2 = await c.allReduce(Float32Array.of(2 * r));
        return { a: Array.from(a), g: g.map((x) => x[0]), b: b[0], a2: a2[0] };
      });
      const tri = (world * (world - 1)) / 2;
      for (const o of out) {
        assert.deepEqual(o, { a: [tri, world], g: Array.from({ length: world }, (_, q) => q * 10), b: world - 1 + 100, a2: 2 * tri });
      }
    });

    it('every rank gets its own allReduce and broadcast result (mutating one leaves the others alone)', async () => {
      const out = await onRanks(world, async (c, r) => ({ sum: await c.allReduce(Float32Array.of(1, 2)), b: await c.broadcast(Float32Array.of(r === 0 ? 7 : 0), 0) }));
      out[0].sum[0] = -1;
      out[0].b[0] = -1;
      for (const o of out.slice(1)) {
        assert.deepEqual(Array.from(o.sum), [world, 2 * world]);
        assert.deepEqual(Array.from(o.b), [7]);
      }
    });
  });
}

describe('in-process collective failures', () => {
  it('mismatched calls (allReduce on one rank, allGather on another) reject on every rank', async () => {
    for (const world of [2, 4]) {
      const group = new InProcessGroup(world);
      const res = await settleRanks<unknown>(group, (c, r) => (r === 1 ? c.allGather(Float32Array.of(r)) : c.allReduce(Float32Array.of(r))));
      res.forEach((r, rank) => assertCollectiveError(r, /collective mismatch at call 0/, rank));
      // The group stays failed: later calls reject too, with the same error.
      await assert.rejects(group.member(0).barrier(), (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_COLLECTIVE');
    }
  });

  it('a broadcast with a different root is a mismatch', async () => {
    const group = new InProcessGroup(3);
    const res = await settleRanks(group, (c, r) => c.broadcast(Float32Array.of(r), r === 2 ? 1 : 0));
    res.forEach((r, rank) => assertCollectiveError(r, /mismatch/, rank));
  });

  it('a mismatch after matching calls names the call and still rejects every rank', async () => {
    const group = new InProcessGroup(3);
    const res = await settleRanks(group, async (c, r) => {
      await c.allReduce(Float32Array.of(1));
      await c.barrier();
      return r === 0 ? c.barrier() : c.allReduce(Float32Array.of(1));
    });
    res.forEach((r, rank) => assertCollectiveError(r, /call 2/, rank));
  });

  it('allReduce with different lengths rejects on every rank', async () => {
    for (const world of [2, 4]) {
      const group = new InProcessGroup(world);
      const res = await settleRanks(group, (c, r) => c.allReduce(new Float32Array(r === world - 1 ? 3 : 4)));
      res.forEach((r, rank) => assertCollectiveError(r, /length mismatch/, rank));
    }
  });

  it('abort rejects pending calls and every later call with the given error', async () => {
    const group = new InProcessGroup(3);
    const err = new TrainerError('TAS_ERR_COLLECTIVE', 'rank 2 died');
    // Ranks 0 and 1 wait in an allReduce that rank 2 never joins.
    const pending = [group.member(0).allReduce(Float32Array.of(1)), group.member(1).allReduce(Float32Array.of(2))];
    let settled = false;
    void Promise.allSettled(pending).then(() => (settled = true));
    await new Promise((res) => setImmediate(res));
    assert.equal(settled, false, 'the allReduce must wait for rank 2');
    group.abort(err);
    for (const p of pending) await assert.rejects(p, (e) => e === err);
    await assert.rejects(group.member(2).allReduce(Float32Array.of(3)), (e) => e === err);
    await assert.rejects(group.member(0).barrier(), (e) => e === err);
  });

  it('rejects bad world sizes and ranks', () => {
    assert.throws(() => new InProcessGroup(0), RangeError);
    assert.throws(() => new InProcessGroup(1.5), RangeError);
    const g = new InProcessGroup(2);
    assert.throws(() => g.member(2), RangeError);
    assert.throws(() => g.member(-1), RangeError);
    assert.equal(g.member(1).worldSize, 2);
    assert.equal(g.member(1).rank, 1);
  });
});
