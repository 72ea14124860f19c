// Faults: Redis goes away. The private redis-server (started when none answers) killed
// mid-job used to stay dead: /readyz 503 for good, submissions hanging, 43 ECONNREFUSED
// traces a minute, the job left `running`, SIGTERM not exiting, a restart refused (data
// directory locked), and a model published twice. An external Redis that went away hung
// submissions. Now the private one is restarted, an external one's absence is answered
// with 503s within a second or two, and when Redis is back everything resumes: nothing
// lost, nothing run or published twice, the same weights, and a bounded shutdown.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { getJson, serviceEnvironment, startServe, type Served } from '../service/harness.js';
import { alive, assertDoneOnce, assertHealthy, FAULT_ENV, freePort, gone, logLines, redisPid, reference, spec, startRedis, stopWith, submit, until } from './fault-kit.js';

const unavailable = await databaseUnavailable();

/** What the service says about Redis (and what it used to print once per reconnection attempt). */
const REDIS_LINES = /^\[tas\] redis|queue error|ECONNREFUSED/;

/** How long a request may take while Redis is away: "within a second or two", with room for a loaded machine. */
const ANSWER_WITHIN_MS = 5000;

async function timed(url: string, init?: RequestInit): Promise<{ status: number; ms: number; body: string }> {
  const t0 = performance.now();
  const r = await fetch(url, { ...init, signal: AbortSignal.timeout(ANSWER_WITHIN_MS) });
  return { status: r.status, ms: performance.now() - t0, body: await r.text() };
}

describe('Redis goes away', { skip: unavailable ?? false }, () => {
  test('the private redis-server SIGKILLed mid-job (embedded database): restarted; the job ends once, published once; SIGTERM exits and the data directory reopens', async () => {
    const env = await serviceEnvironment();
    // No Redis at REDIS_URL and no DATABASE_URL: a private redis-server and the embedded PostgreSQL, as `npm start` runs.
    const noRedis = `redis://127.0.0.1:${await freePort()}`;
    const serveEnv = { ...FAULT_ENV, DATABASE_URL: '', REDIS_URL: noRedis };
    let served = await startServe({ ...env, redisUrl: noRedis }, { workers: 2, env: serveEnv });
    try {
      assert.notEqual(served.redis, noRedis, 'a private redis-server was started');
      const ref = await reference(served, 'private-redis-reference');
      const id = await submit(served, spec('private-redis'));
      // Behind it, a job that waits for the gang: it must not be lost with the queue.
      const queued = await submit(served, spec('private-redis-queued', { epochs: 2 }));
      await until(served, id, (j) => j.status === 'running' && j.progress.step >= 40);
      const logFrom = served.log.length;
      const pid = await redisPid(served.redis);
      process.kill(pid, 'SIGKILL');

      const job = await assertDoneOnce(served, id, ref, 1);
      assert.equal(job.attempt_history[0]!.status, 'succeeded', 'the running attempt carried on: Redis is not on the training path');
      const second = await until(served, queued, (j) => j.status === 'succeeded' || j.status === 'failed');
      assert.equal(second.status, 'succeeded', 'the job that was waiting in the lost queue ran');
      assert.ok((await redisPid(served.redis)) !== pid, 'a new redis-server answers at the same URL');
      const redisLines = logLines(served, REDIS_LINES, logFrom);
      assert.ok(redisLines.some((l) => /private redis-server on port \d+ exited \(killed by signal 9\)/.test(l)), redisLines.join('\n'));
      assert.ok(redisLines.some((l) => /private redis-server restarted on port/.test(l)), redisLines.join('\n'));
      // BullMQ may report once, per job it held, that it could not renew that job's lock.
      const lockLines = redisLines.filter((l) => /could not renew lock for job/.test(l));
      assert.ok(redisLines.length - lockLines.length <= 6 && lockLines.length <= 2, `one line per change of state, not per retry:\n${redisLines.join('\n')}`);
      await assertHealthy(served, 2);

      // SIGTERM exits within the bound; its workers and its redis-server go with it; the data directory opens again.
      const workerPids = (await getJson<{ workers: Array<{ pid: number }> }>(`${served.url}/v1/pool`)).body.workers.map((w) => w.pid);
      const redisNow = await redisPid(served.redis);
      const stopped = await stopWith(served, 'SIGTERM');
      assert.equal(stopped.code, 0, served.log.join('\n'));
      assert.ok(stopped.ms < 15_000, `exited after ${stopped.ms} ms`);
      await gone([...workerPids, redisNow]);
      served = await startServe({ ...env, redisUrl: noRedis }, { workers: 2, env: serveEnv });
      await assertHealthy(served, 2, 'after-restart');
    } finally {
      await served.stop();
      await env.cleanup();
    }
  });

  test('an external Redis that goes away: /readyz and submissions answer 503 at once, one log line; back empty: both jobs end once, same weights; SIGTERM with Redis down exits', async () => {
    const env = await serviceEnvironment();
    const port = await freePort();
    let redis = await startRedis(port);
    const served = await startServe({ ...env, redisUrl: redis.url }, { workers: 2, env: FAULT_ENV });
    let again: Served | undefined;
    try {
      const ref = await reference(served, 'external-redis-reference');
      const id = await submit(served, spec('external-redis'));
      const queued = await submit(served, spec('external-redis-queued'));
      await until(served, id, (j) => j.status === 'running' && j.progress.step >= 40);
      const logFrom = served.log.length;
      await redis.kill();

      // Readiness says so, and a submission is refused at once: nothing hangs, nothing is written.
      const ready = await timed(`${served.url}/readyz`);
      assert.equal(ready.status, 503, ready.body);
      assert.match(ready.body, /"redis":\{"ok":false/);
      const refused = await timed(`${served.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec('while-redis-is-down')) });
      assert.equal(refused.status, 503, refused.body);
      assert.match(refused.body, /"code":"TAS_ERR_UNAVAILABLE"/);
      const listed = (await getJson<{ jobs: Array<{ name: string }> }>(`${served.url}/v1/jobs?limit=50`)).body.jobs;
      assert.ok(!listed.some((j) => j.name === 'while-redis-is-down'), 'a refused submission left a job behind');
      // The running job carries on while Redis is away.
      await until(served, id, (j) => j.progress.step >= 200 || j.status === 'succeeded');

      redis = await startRedis(port); // back, empty
      await assertDoneOnce(served, id, ref, 1);
      await assertDoneOnce(served, queued, ref);
      const redisLines = logLines(served, REDIS_LINES, logFrom);
      assert.ok(redisLines.some((l) => /redis: unreachable/.test(l)) && redisLines.some((l) => /redis: reachable again/.test(l)), redisLines.join('\n'));
      // BullMQ may report once, per job it held, that it could not renew that job's lock.
      const lockLines = redisLines.filter((l) => /could not renew lock for job/.test(l));
      assert.ok(redisLines.length - lockLines.length <= 6 && lockLines.length <= 2, `one line per change of state, not per retry:\n${redisLines.join('\n')}`);
      assert.equal((await timed(`${served.url}/readyz`)).status, 200);
      await assertHealthy(served, 2);

      // A job running when Redis goes again, and SIGTERM meanwhile: the job is handed
      // back in PostgreSQL and the process exits within the bound.
      const last = await submit(served, spec('external-redis-stopped'));
      await until(served, last, (j) => j.status === 'running' && j.progress.step >= 20);
      await redis.kill();
      const workerPids = served.workers.map((w) => w.pid).filter(alive);
      const stopped = await stopWith(served, 'SIGTERM');
      assert.equal(stopped.code, 0, served.log.join('\n'));
      assert.ok(stopped.ms < 15_000, `exited after ${stopped.ms} ms`);
      await gone(workerPids);
      // Redis back (empty) and the service again: the job resumes from its checkpoint and ends once, with the same weights.
      redis = await startRedis(port);
      again = await startServe({ ...env, redisUrl: redis.url }, { workers: 2, env: FAULT_ENV });
      const resumed = await assertDoneOnce(again, last, ref, 2);
      assert.ok(resumed.transitions.some((t) => t.to === 'retrying' && /the scheduler stopped/.test(t.reason ?? '')), JSON.stringify(resumed.transitions));
      await assertHealthy(again, 2);
    } finally {
      await served.stop();
      await again?.stop();
      await redis.kill();
      await env.cleanup();
    }
  });
});

