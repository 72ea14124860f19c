// The worker registry against a real PostgreSQL: reservations take only workers that can
// hold the job and avoid a failed attempt's workers while others are free; workers that
// stopped leave the table, and ones unseen too long are pruned.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../db/testing/fresh-schema.js';
import { useMigratedDatabase } from '../db/testing/migrated-database.js';
import { onlineWorkers, poolCounts, WorkerRegistry } from './worker-registry.js';

const unavailable = await databaseUnavailable();
const GiB = 2 ** 30;

describe('WorkerRegistry', { skip: unavailable ?? false }, () => {
  const db = useMigratedDatabase();

  const worker = (id: string, memoryLimitBytes: number | null, lastSeenAt = new Date()) =>
    db.prisma.worker.create({ data: { id, address: id, deviceKind: 'cpu', backend: 'native', state: 'idle', lastSeenAt, memoryLimitBytes: memoryLimitBytes === null ? null : BigInt(memoryLimitBytes) } });
  const job = async () => (await db.prisma.job.create({ data: { name: 'j', spec: {}, workers: 2 } })).id;

  test('reserve: only workers that hold the job; a retry avoids the failed workers while others are free', async () => {
    await worker('w0', 1 * GiB);
    await worker('w1', 1 * GiB);
    await worker('w2', 8 * GiB);
    await worker('w3', null); // did not say: taken on trust
    const registry = new WorkerRegistry(db.prisma, { probeIntervalMs: 60_000 });

    const big = await job();
    const needs2GiB = { memoryNeed: () => 2 * GiB };
    assert.deepEqual((await registry.reserve(big, 2, needs2GiB))?.map((w) => w.id), ['w2', 'w3']);
    assert.equal(await registry.reserve(await job(), 1, needs2GiB), null, 'the small workers are never taken for it');
    await registry.release(big);

    const retry = await job();
    assert.deepEqual((await registry.reserve(retry, 2, { avoid: ['w0', 'w1'] }))?.map((w) => w.id), ['w2', 'w3']);
    await registry.release(retry);
    assert.deepEqual((await registry.reserve(retry, 3, { avoid: ['w0', 'w1'] }))?.map((w) => w.id), ['w2', 'w3', 'w0']);
    await registry.release(retry);

    const online = await onlineWorkers(db.prisma, 60_000);
    assert.deepEqual(online.map((w) => [w.id, w.memoryLimitBytes]), [['w0', GiB], ['w1', GiB], ['w2', 8 * GiB], ['w3', null]]);
  });

  test('a worker that stopped leaves the table; one unseen for pruneAfterMs is pruned; counts follow', async () => {
    await db.prisma.worker.deleteMany();
    await worker('a', GiB);
    await worker('b', GiB);
    await worker('gone', GiB, new Date(Date.now() - 3_600_000));
    const registry = new WorkerRegistry(db.prisma, { probeIntervalMs: 60_000, pruneAfterMs: 600_000 });
    assert.equal(await registry.prune(), 1);
    assert.deepEqual((await db.prisma.worker.findMany({ orderBy: { id: 'asc' } })).map((w) => w.id), ['a', 'b']);
    assert.equal(await registry.prune(), 0);
    await registry.remove('b');
    assert.deepEqual((await db.prisma.worker.findMany()).map((w) => w.id), ['a']);
    assert.deepEqual(await poolCounts(db.prisma, 60_000), { online: { gpu: 0, cpu: 1 }, idle: { gpu: 0, cpu: 1 } });
  });
});
