/**
 * What every fault case checks, on a real `tas serve` (test/service/harness.ts):
 *
 * - nothing lost: every job submitted ends `succeeded`;
 * - nothing run or published twice: a job's attempts never overlap (each ended before
 *   the next started; only the last succeeded), and its model has exactly one version;
 * - the same final weights: the artifact has the bits of an uninterrupted run of the same
 *   spec (the service's workers all run TAS_COMPUTE_THREADS=1, so bits repeat);
 * - healthy afterwards: /readyz answers 200, /v1/pool lists exactly the expected workers,
 *   all idle and holding no job, and a fresh job succeeds.
 *
 * Waits are bounded and event-driven: long polls (`?wait=`), process exits, connections
 * closing; where a state has no event to wait on (a process gone), a bounded poll.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { alive } from '../support/alive.js';
import { freePort } from '../support/ports.js';
import { Redis } from 'ioredis';
import { decodeSafetensors, type SafetensorsTensor } from '../../src/trainer/artifact/safetensors.js';
import { getJson, postJson, TERMINAL, waitFor, type JobStatusView, type Served } from '../service/harness.js';

const QUICKSTART = JSON.parse(readFileSync(new URL('../../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;

/**
 * The jobs of the suite: the quickstart's 2-worker SyncBN MLP, 20 epochs (380 steps, a few
 * seconds here), a checkpoint every 10 steps, each under its own model name.
 */
export function spec(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...QUICKSTART, name, epochs: 20, lr_schedule: { type: 'constant' }, checkpoint: { every_steps: 10 }, ...extra };
}

/** What every serve of the suite gets: one BLAS thread per worker (bits repeat across services), quick probes. */
export const FAULT_ENV: Record<string, string> = { TAS_COMPUTE_THREADS: '1' };

export const until = (served: Served, id: string, pred: (j: JobStatusView) => boolean, timeoutMs = 120_000) =>
  waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, pred, timeoutMs);

export async function submit(served: Served, body: Record<string, unknown>): Promise<string> {
  const r = await postJson<JobStatusView & { error?: unknown }>(`${served.url}/v1/jobs`, body);
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body.id;
}

export async function artifact(served: Served, model: { name: string; version: number }): Promise<Map<string, SafetensorsTensor>> {
  const r = await fetch(`${served.url}/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}/artifact`);
  assert.equal(r.status, 200);
  return decodeSafetensors(new Uint8Array(await r.arrayBuffer())).tensors;
}

/** Same tensor names, shapes and bits. */
export function assertSameTensors(a: Map<string, SafetensorsTensor>, b: Map<string, SafetensorsTensor>): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.deepEqual(t.shape, u.shape, name);
    assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength)), `tensor ${name} differs from the uninterrupted run's`);
  }
}

/** Runs `spec(name)` without interruption: the reference weights. */
export async function reference(served: Served, name: string, extra: Record<string, unknown> = {}): Promise<Map<string, SafetensorsTensor>> {
  const id = await submit(served, spec(name, extra));
  const job = await until(served, id, (j) => TERMINAL.has(j.status));
  assert.equal(job.status, 'succeeded', `${job.error}\n${served.log.join('\n')}`);
  return artifact(served, job.model!);
}

/**
 * The job ended `succeeded` (nothing lost), its attempts never overlapped and only the
 * last succeeded (nothing run twice), its model has exactly one version (nothing
 * published twice), and its weights are the reference's. Returns the job.
 */
export async function assertDoneOnce(served: Served, id: string, ref: Map<string, SafetensorsTensor>, attempts?: number): Promise<JobStatusView> {
  const job = await until(served, id, (j) => TERMINAL.has(j.status));
  assert.equal(job.status, 'succeeded', `${job.error}\n${served.log.join('\n')}`);
  if (attempts !== undefined) assert.equal(job.attempts, attempts, JSON.stringify(job.attempt_history));
  assert.equal(job.attempt_history.length, job.attempts);
  job.attempt_history.forEach((a, i) => {
    assert.ok(a.ended_at, `attempt ${a.number} never ended`);
    if (i === job.attempt_history.length - 1) assert.equal(a.status, 'succeeded', `the last attempt ${a.status}`);
    else assert.notEqual(a.status, 'succeeded', `attempt ${a.number} succeeded but another followed it`);
    const next = job.attempt_history[i + 1];
    if (next) assert.ok(Date.parse(a.ended_at!) <= Date.parse(next.started_at), `attempts ${a.number} and ${next.number} overlap`);
  });
  assert.equal(job.transitions.filter((t) => t.to === 'succeeded').length, 1);
  const models = (await getJson<{ models: Array<{ name: string; versions: number; latest_version: number }> }>(`${served.url}/v1/models`)).body.models;
  const model = models.find((m) => m.name === job.model?.name);
  assert.ok(model, `no model for job ${id}`);
  assert.equal(model.versions, 1, `model ${model.name} was published ${model.versions} times`);
  assertSameTensors(await artifact(served, job.model!), ref);
  return job;
}

interface PoolView {
  workers: Array<{ id: string; address: string; state: string; pid: number | null; current_job_id: string | null }>;
  summary: { total: number; idle: number; busy: number; offline: number };
}

export const pool = async (served: Served) => (await getJson<PoolView>(`${served.url}/v1/pool`)).body;

/** Healthy: ready; the pool lists exactly `workers` workers, all idle with no job; a fresh job succeeds. */
export async function assertHealthy(served: Served, workers: number, name = `after-${Date.now()}`): Promise<void> {
  const ready = await getJson<{ status: string; checks: unknown }>(`${served.url}/readyz`);
  assert.equal(ready.status, 200, JSON.stringify(ready.body));
  const p = await waitFor<PoolView>(`${served.url}/v1/pool`, (v) => v.summary.total === workers && v.summary.idle === workers && v.workers.every((w) => w.current_job_id === null), 30_000, 1);
  assert.deepEqual(p.summary, { total: workers, idle: workers, busy: 0, offline: 0 });
  const id = await submit(served, spec(name, { epochs: 2 }));
  const job = await until(served, id, (j) => TERMINAL.has(j.status));
  assert.equal(job.status, 'succeeded', `${job.error}\n${served.log.join('\n')}`);
}

export { alive };

/** Resolves when none of `pids` is alive; fails after `timeoutMs` (a bounded poll: a process gone is no event we can hear). */
export async function gone(pids: number[], timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (pids.some(alive)) {
    assert.ok(Date.now() < deadline, `still running after ${timeoutMs} ms: ${pids.filter(alive).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The service's exit: resolves with its code/signal and how long it took after `signal`. */
export async function stopWith(served: Served, signal: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
  const t0 = performance.now();
  const exited = once(served.process, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  served.process.kill(signal);
  const [code, sig] = await exited;
  return { code, signal: sig, ms: performance.now() - t0 };
}

export { freePort };

/** A redis-server this test owns (never the shared one on 6379), on `port`. */
export async function startRedis(port: number): Promise<{ url: string; process: ChildProcess; kill(): Promise<void> }> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--maxmemory-policy', 'noeviction'], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { maxRetriesPerRequest: null, retryStrategy: (n) => (n > 100 ? null : 50) });
  client.on('error', () => undefined);
  try {
    assert.equal(await client.ping(), 'PONG');
  } finally {
    client.disconnect();
  }
  return {
    url,
    process: child,
    kill: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The pid of the redis-server at `url` (INFO server). */
export async function redisPid(url: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => undefined);
  try {
    return Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
}

/** The service's log lines after `from` that match `re`. */
export const logLines = (served: Served, re: RegExp, from = 0) => served.log.slice(from).filter((l) => re.test(l));
