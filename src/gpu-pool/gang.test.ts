// Gang placement: all-or-nothing, one device kind, GPUs first, stable order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gangCapacity, pickGang, waitingFor, type GangCandidate } from './gang.js';

const w = (id: string, deviceKind: 'gpu' | 'cpu'): GangCandidate => ({ id, address: `${id}:1`, deviceKind });

test('picks N idle workers of one kind, GPUs first, in id order', () => {
  const idle = [w('c2', 'cpu'), w('g1', 'gpu'), w('c1', 'cpu'), w('g0', 'gpu')];
  assert.deepEqual(pickGang(idle, 2)?.map((x) => x.id), ['g0', 'g1']);
  assert.deepEqual(pickGang(idle, 1)?.map((x) => x.id), ['g0']);
  // Three of one kind do not exist: no mixed gang, no partial gang.
  assert.equal(pickGang(idle, 3), null);
  assert.deepEqual(pickGang([w('c2', 'cpu'), w('g0', 'gpu'), w('c1', 'cpu')], 2)?.map((x) => x.id), ['c1', 'c2']);
  assert.equal(pickGang([], 1), null);
  assert.throws(() => pickGang(idle, 0), RangeError);
});

test("a retry avoids the failed attempt's workers while others are free; workers that cannot hold the job are never taken", () => {
  const idle = [w('c0', 'cpu'), w('c1', 'cpu'), w('c2', 'cpu'), w('c3', 'cpu')];
  const avoid = new Set(['c0', 'c1']);
  assert.deepEqual(pickGang(idle, 2, { avoid })?.map((x) => x.id), ['c2', 'c3']);
  // Not enough others: the avoided ones fill the gang (after the others).
  assert.deepEqual(pickGang(idle, 3, { avoid })?.map((x) => x.id), ['c2', 'c3', 'c0']);
  assert.deepEqual(pickGang(idle.slice(0, 3), 2, { avoid })?.map((x) => x.id), ['c2', 'c0']);
  const fits = (x: GangCandidate) => x.id !== 'c2';
  assert.deepEqual(pickGang(idle, 3, { fits })?.map((x) => x.id), ['c0', 'c1', 'c3']);
  assert.equal(pickGang(idle, 4, { fits }), null);
  // A kind whose workers are too small does not count: the job goes to the other kind.
  assert.deepEqual(pickGang([w('g0', 'gpu'), w('g1', 'gpu'), ...idle], 2, { fits: (x) => x.deviceKind === 'cpu' })?.map((x) => x.id), ['c0', 'c1']);
});

test('capacity and what a queued job waits for', () => {
  const counts = { online: { gpu: 0, cpu: 2 }, idle: { gpu: 0, cpu: 1 } };
  assert.equal(gangCapacity(counts), 2);
  assert.deepEqual(waitingFor(2, counts), {
    requestedWorkers: 2,
    freeWorkers: 1,
    onlineWorkers: 2,
    reason: 'waiting for 2 free workers of one device kind (1 free of 2)',
  });
  assert.match(waitingFor(3, counts).reason, /only 2 online/);
  assert.match(waitingFor(1, counts).reason, /are free/);
});
