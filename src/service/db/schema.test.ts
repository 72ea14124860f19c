// The hand-written migration against prisma/schema.prisma: every model is written with
// every field and read back through the generated client, on a schema built only by
// the migrations. A column the migration misnames, mistypes or forgets fails here.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Prisma } from './client.js';
import { databaseUnavailable } from './testing/fresh-schema.js';
import { useMigratedDatabase } from './testing/migrated-database.js';

const unavailable = await databaseUnavailable();

describe('schema.prisma and the migrations agree', { skip: unavailable ?? false }, () => {
  const db = useMigratedDatabase();

  test('every model round-trips with every field', async () => {
    const at = new Date('2026-03-04T05:06:07.089Z');
    const job = await db.prisma.job.create({
      data: {
        name: 'cnn', spec: { a: [1, 2, { b: null }] }, status: 'running', priority: 7, workers: 4, maxRestarts: 2,
        attempts: 1, idempotencyKey: 'k', step: 10, totalSteps: 100, epoch: 1, loss: 0.25, accuracy: 0.5,
        backend: 'wasm', error: 'none', createdAt: at, updatedAt: at, startedAt: at, finishedAt: at,
      },
    });
    assert.deepEqual(await db.prisma.job.findUniqueOrThrow({ where: { id: job.id } }), job);
    assert.equal(job.createdAt.getTime(), at.getTime(), 'timestamps keep milliseconds');

    const attempt = await db.prisma.jobAttempt.create({
      data: { jobId: job.id, number: 1, generation: 3, workerIds: ['w0', 'w1'], addresses: ['127.0.0.1:5001', '127.0.0.1:5002'], status: 'failed', error: 'rank 1 unreachable', startedAt: at, endedAt: at, schedulerId: 'host:42:ab', leaseUntil: at },
    });
    assert.deepEqual(await db.prisma.jobAttempt.findUniqueOrThrow({ where: { jobId_number: { jobId: job.id, number: 1 } } }), attempt);
    await assert.rejects(
      db.prisma.jobAttempt.create({ data: { jobId: job.id, number: 1, generation: 4 } }),
      (err: unknown) => err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002',
    );

    const transition = await db.prisma.jobTransition.create({ data: { jobId: job.id, from: 'scheduled', to: 'running', reason: 'r', at } });
    assert.equal(typeof transition.id, 'bigint');
    assert.deepEqual(await db.prisma.jobTransition.findUniqueOrThrow({ where: { id: transition.id } }), transition);

    const metric = await db.prisma.jobMetric.create({
      data: { jobId: job.id, step: 10, loss: 0.25, accuracy: 0.5, lr: 0.05, samplesPerSec: 1e4, computeMs: 14.3, bnFwdMs: 2.9, bnBwdMs: 4.4, gradMs: 1.9, bnStats: { bn1: { mean: [0.1], var: [1] } } },
    });
    assert.deepEqual(await db.prisma.jobMetric.findFirstOrThrow({ where: { jobId: job.id, step: 10 } }), metric);
    const noStats = await db.prisma.jobMetric.create({ data: { jobId: job.id, step: 11 } });
    assert.equal(noStats.bnStats, null);

    const log = await db.prisma.jobLog.create({ data: { jobId: job.id, level: 'warn', message: 'attempt 1 failed', at } });
    assert.deepEqual(await db.prisma.jobLog.findUniqueOrThrow({ where: { id: log.id } }), log);

    const worker = await db.prisma.worker.create({
      data: { id: 'w0', address: '127.0.0.1:5001', deviceKind: 'gpu', deviceIndex: 0, deviceName: 'NVIDIA H100', backend: 'tensorflow', pid: 4242, rssBytes: 6_000_000_000n, deviceMemoryMiB: 81559, memoryLimitBytes: 85_520_809_984n, state: 'busy', currentJobId: job.id, lastSeenAt: at },
    });
    assert.deepEqual(await db.prisma.worker.findUniqueOrThrow({ where: { id: 'w0' } }), worker);

    const dataset = await db.prisma.dataset.create({
      data: { name: 'mnist', format: 'idx', path: '/data/mnist', bytes: 55_000_000_000n, samples: 60000, sampleShape: [28, 28, 1], createdAt: at },
    });
    assert.deepEqual(await db.prisma.dataset.findUniqueOrThrow({ where: { id: dataset.id } }), dataset);

    const model = await db.prisma.model.create({ data: { name: 'mnist-cnn' } });
    // Serving defaults: loaded, batches of up to 64 rows, no added queue delay.
    assert.deepEqual([model.servingLoaded, model.maxBatchSize, model.maxQueueDelayUs], [true, 64, 0]);
    const unloaded = await db.prisma.model.update({ where: { id: model.id }, data: { servingLoaded: false, maxBatchSize: 8, maxQueueDelayUs: 500 } });
    assert.deepEqual(await db.prisma.model.findUniqueOrThrow({ where: { id: model.id } }), unloaded);
    const v1 = await db.prisma.modelVersion.create({
      data: { modelId: model.id, version: 1, jobId: job.id, artifactPath: '/artifacts/x/model.safetensors', metadata: { format: 'tas-model', format_version: 1 } },
    });
    assert.deepEqual(await db.prisma.modelVersion.findUniqueOrThrow({ where: { modelId_version: { modelId: model.id, version: 1 } } }), v1);
    await assert.rejects(
      db.prisma.modelVersion.create({ data: { modelId: model.id, version: 1, artifactPath: 'y', metadata: {} } }),
      (err: unknown) => err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002',
    );
    await assert.rejects(
      db.prisma.model.create({ data: { name: 'mnist-cnn' } }),
      (err: unknown) => err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002',
    );

    // Tenants: `default` owns what was made without one; names, model names and
    // idempotency keys are unique per tenant; at most one live admin key.
    const unique = (err: unknown) => err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002';
    const def = await db.prisma.tenant.findUniqueOrThrow({ where: { name: 'default' } });
    assert.equal(def.id, '00000000-0000-0000-0000-000000000000');
    assert.deepEqual([job.tenantId, dataset.tenantId, model.tenantId], [def.id, def.id, def.id]);
    const acme = await db.prisma.tenant.create({ data: { name: 'acme', maxWorkers: 2, maxQueuedJobs: 10, requestsPerMinute: 60, createdAt: at } });
    assert.deepEqual(await db.prisma.tenant.findUniqueOrThrow({ where: { id: acme.id } }), acme);
    await assert.rejects(db.prisma.tenant.create({ data: { name: 'acme' } }), unique);
    const key = await db.prisma.apiKey.create({ data: { id: 'a1b2c3d4e5f6', tenantId: acme.id, salt: 's', hash: 'h', createdAt: at, revokedAt: at } });
    assert.deepEqual(await db.prisma.apiKey.findUniqueOrThrow({ where: { id: key.id } }), key);
    await db.prisma.model.create({ data: { tenantId: acme.id, name: 'mnist-cnn' } });
    await db.prisma.job.create({ data: { tenantId: acme.id, name: 'x', spec: {}, workers: 1, idempotencyKey: 'k' } });
    await assert.rejects(db.prisma.job.create({ data: { tenantId: acme.id, name: 'x', spec: {}, workers: 1, idempotencyKey: 'k' } }), unique);
    await db.prisma.apiKey.create({ data: { id: '000000000001', tenantId: def.id, admin: true, salt: 's', hash: 'h' } });
    await assert.rejects(db.prisma.apiKey.create({ data: { id: '000000000002', tenantId: def.id, admin: true, salt: 's', hash: 'h' } }), unique);
    // The database's identity: one row, made by the migration (queue names derive from it).
    const identities = await db.prisma.serviceIdentity.findMany();
    assert.equal(identities.length, 1);
    assert.match(identities[0]!.id, /^[0-9a-f-]{36}$/);

    // Deleting the job: its attempts, transitions and metrics go; the worker and the
    // model version stay, no longer pointing at it.
    await db.prisma.job.delete({ where: { id: job.id } });
    assert.equal(await db.prisma.jobAttempt.count(), 0);
    assert.equal(await db.prisma.jobTransition.count(), 0);
    assert.equal(await db.prisma.jobMetric.count(), 0);
    assert.equal((await db.prisma.worker.findUniqueOrThrow({ where: { id: 'w0' } })).currentJobId, null);
    assert.equal((await db.prisma.modelVersion.findUniqueOrThrow({ where: { id: v1.id } })).jobId, null);
  });

  test('the polling and listing indexes exist', async () => {
    const rows = await db.prisma.$queryRaw<Array<{ indexname: string; indexdef: string }>>`
      SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = ${db.schema.schema} ORDER BY indexname`;
    const byName = new Map(rows.map((r) => [r.indexname, r.indexdef]));
    assert.match(byName.get('jobs_status_created_at_id_idx') ?? '', /\(status, created_at, id\)/);
    assert.match(byName.get('jobs_created_at_id_idx') ?? '', /\(created_at, id\)/);
    assert.match(byName.get('job_metrics_job_id_step_idx') ?? '', /\(job_id, step\)/);
    assert.match(byName.get('jobs_tenant_id_idempotency_key_key') ?? '', /UNIQUE INDEX .*\(tenant_id, idempotency_key\)/);
    assert.match(byName.get('models_tenant_id_name_key') ?? '', /UNIQUE INDEX .*\(tenant_id, name\)/);
    assert.match(byName.get('api_keys_one_live_admin') ?? '', /UNIQUE INDEX .*\(admin\) WHERE \(admin AND \(revoked_at IS NULL\)\)/);
  });
});
