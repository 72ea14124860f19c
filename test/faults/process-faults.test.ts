// Faults handled before, held to the suite's standard: a worker SIGKILLed mid-job, the
// whole service SIGKILLed mid-job, and a collective peer that hangs (SIGSTOP). Each ends
// with nothing lost, nothing run or published twice, the uninterrupted run's weights, and
// a healthy service.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { serviceEnvironment, startServe, waitFor, type Served } from '../service/harness.js';
import { alive, assertDoneOnce, assertHealthy, FAULT_ENV, gone, pool, reference, spec, submit, until } from './fault-kit.js';

const unavailable = await databaseUnavailable();

describe('process faults', { skip: unavailable ?? false }, () => {
  test('a worker SIGKILLed mid-job, then the whole service SIGKILLed mid-job: resumed from checkpoints, same weights, once', async () => {
    const env = await serviceEnvironment();
    let served = await startServe(env, { workers: 2, env: FAULT_ENV, lockDurationMs: 3000 });
    try {
      const ref = await reference(served, 'process-reference', { epochs: 30 });

      const id = await submit(served, spec('worker-killed', { epochs: 30 }));
      const running = await until(served, id, (j) => j.status === 'running' && j.progress.step >= 40);
      const victim = (await pool(served)).workers.find((w) => w.address === running.devices[1]?.worker)!;
      process.kill(victim.pid!, 'SIGKILL');
      const job = await assertDoneOnce(served, id, ref, 2);
      assert.match(job.attempt_history[0]!.error ?? '', /rank \d \(worker 127\.0\.0\.1:\d+\)/);
      await assertHealthy(served, 2);

      // The whole service: its workers die with it (their lifeline), the next one takes the job over.
      const id2 = await submit(served, spec('service-killed', { epochs: 30 }));
      await until(served, id2, (j) => j.status === 'running' && j.progress.step >= 40);
      const workers = (await pool(served)).workers.map((w) => w.pid!);
      served.process.kill('SIGKILL');
      await gone(workers);
      served = await startServe(env, { workers: 2, env: FAULT_ENV, lockDurationMs: 3000 });
      const job2 = await assertDoneOnce(served, id2, ref, 2);
      assert.ok(job2.transitions.some((t) => t.to === 'retrying' && /scheduler/.test(t.reason ?? '')), JSON.stringify(job2.transitions));
      // The dead service's workers left the pool's table (pruned, or never counted once stale).
      await assertHealthy(served, 2);
    } finally {
      await served.stop();
      await env.cleanup();
    }
  });

  test('a collective peer that hangs (SIGSTOP): the attempt fails within the timeout, the retry runs elsewhere; the peer comes back healthy', async () => {
    const env = await serviceEnvironment();
    // Three workers: the retry has two that answer. A short collective timeout for speed.
    const served: Served = await startServe(env, { workers: 3, env: { ...FAULT_ENV, TAS_COLLECTIVE_TIMEOUT_MS: '2000' } });
    let stopped: number | null = null;
    try {
      const ref = await reference(served, 'hang-reference', { epochs: 30 });
      const id = await submit(served, spec('peer-hangs', { epochs: 30 }));
      const running = await until(served, id, (j) => j.status === 'running' && j.progress.step >= 40);
      const hung = (await pool(served)).workers.find((w) => w.address === running.devices[1]?.worker)!;
      process.kill(hung.pid!, 'SIGSTOP');
      stopped = hung.pid!;
      const job = await assertDoneOnce(served, id, ref, 2);
      assert.match(job.attempt_history[0]!.error ?? '', /no heartbeat|unreachable|timed out|rank \d/);
      assert.ok(!job.attempt_history[1]!.workers.includes(hung.address), 'the retry ran on the hung worker');
      // While stopped it shows offline; continued, it answers again and is idle.
      await waitFor<{ workers: Array<{ address: string; state: string }> }>(`${served.url}/v1/pool`, (p) => p.workers.some((w) => w.address === hung.address && w.state === 'offline'), 30_000, 1);
      process.kill(hung.pid!, 'SIGCONT');
      stopped = null;
      assert.ok(alive(hung.pid!));
      await assertHealthy(served, 3);
    } finally {
      if (stopped !== null) process.kill(stopped, 'SIGCONT');
      await served.stop();
      await env.cleanup();
    }
  });
});
