/**
 * The GPU pool with real worker processes talking gRPC: a 2-worker SyncBN job gives the
 * same model as the in-process run; a worker killed with SIGKILL mid-training fails every
 * rank with an error naming it, never a hang; cancel stops the ranks and frees the workers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import './setup-backend.js';
import { parseArtifact } from '../src/trainer/artifact/artifact.js';
import { summariseBnBuffers } from '../src/trainer/math/bn-summary.js';
import { runLocalJob } from '../src/trainer/engine/local-job.js';
import { TrainerError } from '../src/trainer/errors.js';
import type { StepMsg } from '../src/gpu-pool/messages.js';
import { WorkerClient } from '../src/gpu-pool/worker-client.js';
import { hasOpenssl, makeTestCerts } from '../src/grpc/testing/tls.js';
import { runJobOnWorkers, startLocalWorkers, stopLocalWorkers, type LocalWorker } from '../src/gpu-pool/pool.js';

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'tas-pool-'));
  dirs.push(d);
  return d;
};

function spec(epochs: number): Record<string, unknown> {
  const q = JSON.parse(readFileSync(new URL('../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;
  return { ...q, epochs, lr_schedule: { type: 'constant' }, checkpoint: { every_steps: 5 }, local_batch_sizes: [24, 40], batch_size: undefined };
}

let workers: LocalWorker[] = [];
before(async () => {
  workers = await startLocalWorkers(2);
});
after(async () => {
  await stopLocalWorkers(workers);
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
});

describe('gpu pool over gRPC', () => {
  it('reports each worker device and backend', async () => {
    const info = await new WorkerClient(workers[0].address).info();
    assert.equal(info.device_kind, 'cpu');
    assert.ok(['native', 'wasm', 'cpu', 'tensorflow'].includes(info.backend), info.backend);
    assert.ok(info.rss_bytes > 0);
  });

  it('trains a 2-rank SyncBN job to the same model as the in-process run', async () => {
    const steps: StepMsg[] = [];
    const r = await runJobOnWorkers(spec(2), workers.map((w) => w.address), { outDir: tmp(), resume: false, onStep: (s) => steps.push(s) });
    assert.ok(r.done.completed);
    assert.equal(steps.length, r.done.global_steps);
    // A run this short (under 500 steps) reports both BN layers' running statistics on every step.
    assert.ok(steps.every((s) => s.bn_stats.map((l) => l.layer).join() === 'layers.1,layers.4' && s.bn_stats.every((l) => l.channels === 64 && l.var_mean > 0)));
    const local = await runLocalJob(spec(2), { outDir: tmp(), resume: false });
    const a = parseArtifact(new Uint8Array(readFileSync(r.done.artifact_path))).state;
    const b = parseArtifact(new Uint8Array(readFileSync(local.artifactPath!))).state;
    for (const [k, t] of b) assert.deepEqual(a.get(k)!.data, t.data, k);
    // Done's summary holds the final (recalibrated) BN statistics: the artifact's own.
    assert.deepEqual((JSON.parse(r.done.summary_json) as { bn_final: unknown }).bn_final, summariseBnBuffers(a));
  });

  it('fails every rank, naming the rank, when a worker is SIGKILLed mid-training', async () => {
    const victim = workers[1];
    let killedAt = 0;
    const started = runJobOnWorkers(spec(500), workers.map((w) => w.address), {
      outDir: tmp(),
      resume: false,
      timeoutMs: 2000,
      onStep: (s) => {
        if (s.global_step === 10 && !killedAt) {
          killedAt = performance.now();
          victim.process.kill('SIGKILL');
        }
      },
    });
    await assert.rejects(started, (e: Error) => /rank 1/.test(e.message));
    const failedAfterMs = performance.now() - killedAt;
    // A bound on a hang, not a speed target: the collective's timeout is 2 s.
    assert.ok(failedAfterMs < 15_000, `failed after ${failedAfterMs} ms`);
    // Replace the dead worker for the next test.
    const [fresh] = await startLocalWorkers(1);
    workers[1] = fresh;
    // The survivor is free again, and reports its Collective server's own port.
    const survivor = await new WorkerClient(workers[0].address).info();
    assert.equal(survivor.busy_job_id, '');
    assert.ok(survivor.collective_port > 0 && `127.0.0.1:${survivor.collective_port}` !== workers[0].address, `collective_port ${survivor.collective_port}`);
    assert.ok(survivor.collective_unix_path.endsWith('.sock') && survivor.host_id !== '' && survivor.host_cores > 0, JSON.stringify(survivor));
  });

  it('cancel stops all ranks and frees the workers', async () => {
    const clients = workers.map((w) => new WorkerClient(w.address));
    const ac = new AbortController();
    const run = runJobOnWorkers(spec(500), workers.map((w) => w.address), {
      outDir: tmp(),
      resume: false,
      signal: ac.signal,
      onStep: (s) => {
        if (s.global_step === 5) ac.abort();
      },
    });
    await assert.rejects(run, (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CANCELLED');
    for (const c of clients) assert.equal((await c.info()).busy_job_id, '');
    clients.forEach((c) => c.close());
  });

  it('a worker busy with a job refuses a second one (RESOURCE_EXHAUSTED), the first is unaffected', async () => {
    const ac = new AbortController();
    let second: Promise<unknown> | null = null; // settles to the second job's error (or null)
    const first = runJobOnWorkers(spec(500), workers.map((w) => w.address), {
      outDir: tmp(),
      resume: false,
      signal: ac.signal,
      onStep: (s) => {
        if (s.global_step === 3 && !second) {
          second = runJobOnWorkers(spec(1), [workers[1].address], { outDir: tmp(), resume: false }).then(
            () => null,
            (e: unknown) => e,
          );
          void second.finally(() => ac.abort());
        }
      },
    });
    await assert.rejects(first, (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CANCELLED');
    const err = await second!;
    assert.ok(err instanceof Error);
    assert.match(err.message, /rank 0 \(worker [^)]+\): worker busy with job/);
  });

  it('mutual TLS: workers started with certificates train a job; a plaintext client is refused', async (t) => {
    if (!hasOpenssl()) return t.skip('no openssl');
    const tls = makeTestCerts(tmp());
    const secure = await startLocalWorkers(2, { host: 'localhost', tls });
    try {
      const addresses = secure.map((w) => w.address);
      const r = await runJobOnWorkers(spec(1), addresses, { outDir: tmp(), resume: false, tls });
      assert.ok(r.done.completed);
      await assert.rejects(new WorkerClient(addresses[0]).info(1500), /unreachable/);
    } finally {
      await stopLocalWorkers(secure);
    }
  });
});
