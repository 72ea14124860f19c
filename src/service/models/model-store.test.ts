// Publication is idempotent per job: a run thought lost that finishes beside its retry
// must not make a second version of the model.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../db/testing/fresh-schema.js';
import { useMigratedDatabase } from '../db/testing/migrated-database.js';
import { ModelStore } from './model-store.js';

const unavailable = await databaseUnavailable();

describe('ModelStore.publish', { skip: unavailable ?? false }, () => {
  const db = useMigratedDatabase();

  test('one version per job, however often (and however concurrently) it publishes', async () => {
    const store = new ModelStore(db.prisma);
    const job = (name: string) => db.prisma.job.create({ data: { name, spec: {}, workers: 2 } });
    const a = await job('a');
    const b = await job('b');
    const input = (jobId: string | null, file: string) => ({ name: 'm', jobId, artifactPath: `/artifacts/${file}`, metadata: {} });

    const twice = await Promise.all([store.publish(input(a.id, 'a1')), store.publish(input(a.id, 'a2'))]);
    assert.deepEqual(twice, [1, 1]);
    assert.equal(await store.publish(input(a.id, 'a3')), 1);
    assert.equal(await store.publish(input(b.id, 'b1')), 2);
    // Artifacts imported without a job are versions of their own each time.
    assert.equal(await store.publish(input(null, 'x')), 3);
    assert.equal(await store.publish(input(null, 'y')), 4);

    const rows = await db.prisma.modelVersion.findMany({ orderBy: { version: 'asc' }, select: { version: true, jobId: true, artifactPath: true } });
    assert.deepEqual(rows.map((r) => [r.version, r.jobId]), [[1, a.id], [2, b.id], [3, null], [4, null]]);
    // Job a's version is whichever of its two concurrent publications came first.
    assert.ok(['/artifacts/a1', '/artifacts/a2'].includes(rows[0]!.artifactPath), rows[0]!.artifactPath);
  });
});
