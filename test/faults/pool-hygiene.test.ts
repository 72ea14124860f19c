// Fault: workers that die. Dead workers used to stay listed as offline for ever, and the
// pool's totals grew with every respawn. Now a replaced local worker leaves the table at
// once, and a remote worker that stays gone is pruned after TAS_WORKER_PRUNE_AFTER_MS.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { assignDevices } from '../../src/gpu-pool/device.js';
import { startLocalWorker, stopLocalWorkers, type LocalWorker } from '../../src/gpu-pool/pool.js';
import { serviceEnvironment, startServe, waitFor } from '../service/harness.js';
import { assertHealthy, FAULT_ENV, gone, logLines, pool } from './fault-kit.js';

const unavailable = await databaseUnavailable();
const remote: LocalWorker[] = [];
after(() => stopLocalWorkers(remote));

interface PoolView {
  workers: Array<{ address: string; state: string; pid: number | null }>;
  summary: { total: number; idle: number; busy: number; offline: number };
}

describe('the pool after workers die', { skip: unavailable ?? false }, () => {
  test('replaced local workers leave the table at once; a remote one that stays gone is pruned; the counts stay right', async () => {
    // A worker on "another machine" (TAS_WORKERS_AT), beside two local ones.
    const other = await startLocalWorker(assignDevices(1)[0]!);
    remote.push(other);
    const env = await serviceEnvironment();
    const served = await startServe(env, { workers: 2, env: { ...FAULT_ENV, TAS_WORKERS_AT: other.address, TAS_WORKER_PRUNE_AFTER_MS: '3000' } });
    try {
      const first = await pool(served);
      assert.equal(first.summary.total, 3, JSON.stringify(first));

      // Three respawns of a local worker: still 3 workers, none offline.
      for (let i = 0; i < 3; i++) {
        const victim = (await pool(served)).workers.find((w) => w.address !== other.address)!;
        process.kill(victim.pid!, 'SIGKILL');
        await gone([victim.pid!]);
        const after = await waitFor<PoolView>(`${served.url}/v1/pool`, (p) => !p.workers.some((w) => w.address === victim.address) && p.summary.idle === 3, 30_000, 1);
        assert.deepEqual(after.summary, { total: 3, idle: 3, busy: 0, offline: 0 });
      }
      assert.equal(logLines(served, /starting a fresh one in its place/).length, 3);

      // The remote worker goes away for good: offline at once, gone from the table after 3 s.
      other.process.kill('SIGKILL');
      await gone([other.process.pid!]);
      await waitFor<PoolView>(`${served.url}/v1/pool`, (p) => p.workers.some((w) => w.address === other.address && w.state === 'offline'), 30_000, 1);
      const pruned = await waitFor<PoolView>(`${served.url}/v1/pool`, (p) => !p.workers.some((w) => w.address === other.address), 30_000, 1);
      assert.deepEqual(pruned.summary, { total: 2, idle: 2, busy: 0, offline: 0 });
      assert.equal(logLines(served, new RegExp(`pruned 1 worker\\(s\\) unseen for 3 s: ${other.address.replace(/\./g, '\\.')}`)).length, 1, served.log.join('\n'));
      // /metrics counts the same.
      const metrics = await (await fetch(`${served.url}/metrics`)).text();
      assert.match(metrics, /tas_workers\{state="idle",device_kind="cpu"\} 2/);
      assert.match(metrics, /tas_workers\{state="offline",device_kind="cpu"\} 0/);
      await assertHealthy(served, 2);
    } finally {
      await served.stop();
      await env.cleanup();
    }
  });
});
