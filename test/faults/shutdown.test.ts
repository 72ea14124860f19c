// Fault: stopping the service mid-job. SIGTERM used to log "stopping" while the pool
// replaced the workers that a terminal's Ctrl-C had stopped, and the process lived on.
// Now SIGTERM and SIGINT (to the whole process group, as a terminal sends it) hand the
// running job back, stop the workers without replacing them, and exit within the bound
// the README states (TAS_SHUTDOWN_TIMEOUT_MS, 15 s); the next start resumes the job from
// its checkpoint to the uninterrupted run's weights, run and published once.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { serviceEnvironment, startServe, type Served } from '../service/harness.js';
import { assertDoneOnce, assertHealthy, FAULT_ENV, gone, logLines, pool, reference, spec, submit, until } from './fault-kit.js';
import { once } from 'node:events';

const unavailable = await databaseUnavailable();
/** The bound the README states. */
const SHUTDOWN_MS = 15_000;

/** Signal the service's whole process group (as a terminal's Ctrl-C or a service manager does); resolves at its exit. */
async function signalGroup(served: Served, signal: NodeJS.Signals): Promise<{ code: number | null; ms: number }> {
  const t0 = performance.now();
  const exited = once(served.process, 'exit') as Promise<[number | null]>;
  process.kill(-served.process.pid!, signal);
  const [code] = await exited;
  return { code, ms: performance.now() - t0 };
}

describe('stopping the service mid-job', { skip: unavailable ?? false }, () => {
  test('SIGTERM, then SIGINT to the process group: each hands the job back, stops the workers without replacing them, exits within 15 s; the job resumes to the same weights', async () => {
    const env = await serviceEnvironment();
    const start = () => startServe(env, { workers: 2, env: FAULT_ENV, detached: true });
    let served = await start();
    try {
      // 30 epochs (570 steps): time to stop it twice.
      const ref = await reference(served, 'shutdown-reference', { epochs: 30 });
      const id = await submit(served, spec('shutdown', { epochs: 30 }));
      for (const [i, signal] of (['SIGTERM', 'SIGINT'] as const).entries()) {
        await until(served, id, (j) => j.status === 'running' && j.progress.step >= 40 + 40 * i);
        const workers = (await pool(served)).workers.map((w) => w.pid!);
        const stopped = await signalGroup(served, signal);
        assert.equal(stopped.code, 0, served.log.join('\n'));
        assert.ok(stopped.ms < SHUTDOWN_MS, `${signal}: exited after ${Math.round(stopped.ms)} ms`);
        assert.deepEqual(logLines(served, /worker [\d.:]+ exited|starting a fresh one/), [], 'a worker stopped on its own (the signal reached it) or was replaced while stopping');
        await gone(workers);
        served = await start();
      }
      const job = await assertDoneOnce(served, id, ref, 3);
      const handedBack = job.transitions.filter((t) => t.to === 'retrying');
      assert.equal(handedBack.length, 2, JSON.stringify(job.transitions));
      assert.ok(handedBack.every((t) => /the scheduler stopped; the job resumes from its latest checkpoint/.test(t.reason ?? '')), JSON.stringify(handedBack));
      await assertHealthy(served, 2);
    } finally {
      await served.stop();
      await env.cleanup();
    }
  });
});
