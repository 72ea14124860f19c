// Fault: two services with separate databases on one Redis. They used to share the queue
// `tas-jobs`: one silently took the other's jobs, which then sat queued until the owner's
// reconciliation. Now each service's queue and channels are named after its database's
// identity, so each runs exactly its own jobs on its own workers.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { getJson, serviceEnvironment, startServe, type JobStatusView, type Served } from '../service/harness.js';
import { assertDoneOnce, assertHealthy, FAULT_ENV, reference, spec, submit } from './fault-kit.js';

const unavailable = await databaseUnavailable();

describe('two services on one Redis', { skip: unavailable ?? false }, () => {
  test('with separate databases and no TAS_QUEUE_PREFIX, each runs only its own jobs, on its own workers', async () => {
    const envs = [await serviceEnvironment(), await serviceEnvironment()];
    const services: Served[] = [];
    try {
      // The same Redis (the shared one), no prefix: the names come from each database.
      for (const env of envs) services.push(await startServe(env, { workers: 2, env: { ...FAULT_ENV, TAS_QUEUE_PREFIX: '' } }));
      const [a, b] = services as [Served, Served];
      assert.equal(a.redis, b.redis);
      for (const s of services) assert.match(s.queue, /^tas-[0-9a-f]{16}-jobs$/);
      assert.notEqual(a.queue, b.queue);

      // One uninterrupted run: both services' workers run one BLAS thread, so their bits agree.
      const ref = await reference(a, 'ns-reference');
      // Two jobs each, submitted at once: each service's scheduler sees only its own.
      const ids = await Promise.all(services.flatMap((s, i) => [submit(s, spec(`ns-${i}-a`)), submit(s, spec(`ns-${i}-b`))]));
      for (const [k, id] of ids.entries()) {
        const s = services[Math.floor(k / 2)]!;
        const job: JobStatusView = await assertDoneOnce(s, id, ref, 1);
        const own = s.workers.map((w) => w.address);
        assert.ok(job.attempt_history[0]!.workers.every((w) => own.includes(w)), `job ${id} ran on ${job.attempt_history[0]!.workers}, not on its service's ${own}`);
        // The other service never recorded it.
        const other = services[1 - Math.floor(k / 2)]!;
        assert.equal((await getJson(`${other.url}/v1/jobs/${id}`)).status, 404);
      }
      for (const s of services) await assertHealthy(s, 2);
    } finally {
      for (const s of services) await s.stop();
      for (const env of envs) await env.cleanup();
    }
  });
});
