// Workers that join by URL (`tas worker --join`), on real processes, PostgreSQL and Redis,
// with keys on: joining needs the workers' token; a joined worker shares no filesystem
// with the service (its inputs come over HTTP into its own cache, by content; its
// checkpoints and artifact go back), heartbeats, and leaves the pool when it stops or
// falls silent. A job whose rank dies resumes, on other workers, from the checkpoint the
// service holds, to the bits of an uninterrupted run. `tas scheduler` alone answers its
// probes on TAS_HEALTH_PORT.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { decodeSafetensors } from '../../src/trainer/artifact/safetensors.js';
import { serviceEnvironment, startServe, waitFor, TERMINAL, type JobStatusView, type Served } from './harness.js';
import { startJoinedWorker, type JoinedWorker } from './joined-worker.js';
import { spiralsCsv } from './spirals-csv.js';
import { assertSameTensors } from '../faults/fault-kit.js';

const unavailable = await databaseUnavailable();
const ADMIN = 'admin-token-join-0123456789abcdef';
const WORKER_TOKEN = 'worker-token-join-0123456789abcdef';
const LEAVE_AFTER_MS = 2500;
const admin = { authorization: `Bearer ${ADMIN}` };
const asWorker = { authorization: `Bearer ${WORKER_TOKEN}` };

async function call(method: string, url: string, init: { body?: unknown; raw?: string | Uint8Array<ArrayBuffer>; headers?: Record<string, string> } = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...admin, ...init.headers };
  let body: string | Uint8Array<ArrayBuffer> | undefined;
  if (init.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = JSON.stringify(init.body);
  } else if (init.raw !== undefined) body = init.raw;
  const r = await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}) });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    /* not JSON */
  }
  return { status: r.status, body: parsed, headers: r.headers };
}

describe('workers that join by URL', { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  const workers: JoinedWorker[] = [];
  let data: Record<string, unknown>;
  let csvSha: string;
  /** The workers' own disks: nothing shared with the service's data directory. */
  let cacheRoot: string;

  const spec = (name: string, extra: Record<string, unknown> = {}) => ({
    name,
    model: { input_shape: [2], layers: [{ type: 'linear', out: 32, bias: false }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 2 }] },
    data,
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
    epochs: 30,
    workers: 2,
    batch_size: 40,
    seed: 3,
    checkpoint: { every_steps: 5 },
    ...extra,
  });
  const join_ = (i: number) =>
    startJoinedWorker(served.url, { advertise: '127.0.0.1', cacheDir: join(cacheRoot, `worker-${i}`), env: { TAS_WORKER_TOKEN: WORKER_TOKEN } });
  const pool = async () => (await call('GET', `${served.url}/v1/pool`)).body as { workers: Array<{ id: string; state: string }> };
  const untilPool = (pred: (ids: string[]) => boolean) =>
    waitFor<{ workers: Array<{ id: string }> }>(`${served.url}/v1/pool`, (p) => pred(p.workers.map((w) => w.id)), 60_000, 2, admin.authorization);
  const finished = (id: string) => waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => TERMINAL.has(j.status), 180_000, 5, admin.authorization);
  const artifact = async (model: { name: string; version: number }) => {
    const r = await fetch(`${served.url}/v1/models/${model.name}/versions/${model.version}/artifact`, { headers: admin });
    assert.equal(r.status, 200);
    return decodeSafetensors(new Uint8Array(await r.arrayBuffer())).tensors;
  };

  before(async () => {
    env = await serviceEnvironment();
    cacheRoot = await mkdtemp(join(tmpdir(), 'tas-join-cache-'));
    served = await startServe(env, {
      noWorkers: true,
      env: { TAS_AUTH: 'on', TAS_ADMIN_TOKEN: ADMIN, TAS_WORKER_TOKEN: WORKER_TOKEN, TAS_WORKER_HEARTBEAT_MS: '300', TAS_WORKER_LEAVE_AFTER_MS: String(LEAVE_AFTER_MS) },
    });
    const csv = spiralsCsv(400);
    csvSha = createHash('sha256').update(csv).digest('hex');
    const up = await call('POST', `${served.url}/v1/datasets?name=spirals&format=csv&label_column=y`, { raw: csv, headers: { 'content-type': 'text/csv' } });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    data = up.body.data;
  });

  after(async () => {
    for (const w of workers) await w.stop('SIGKILL');
    await served?.stop();
    await env?.cleanup();
    if (cacheRoot) await rm(cacheRoot, { recursive: true, force: true });
  });

  test('joining needs the workers token and an address the service can reach', async () => {
    // A worker with another token is refused and exits, saying why.
    const refused = startJoinedWorker(served.url, { advertise: '127.0.0.1', cacheDir: join(cacheRoot, 'refused'), env: { TAS_WORKER_TOKEN: 'not-the-token-0123456789' } });
    await assert.rejects(refused, (e: Error) => /exited \(1\)/.test(e.message) && /the service refuses this worker \(HTTP 401/.test(e.message) && /TAS_WORKER_TOKEN/.test(e.message));

    const post = (body: unknown, headers: Record<string, string>) => call('POST', `${served.url}/v1/workers`, { body, headers });
    const noKey = await fetch(`${served.url}/v1/workers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"address":"127.0.0.1:1"}' });
    assert.equal(noKey.status, 401);
    const unreachable = await post({ address: '127.0.0.1:1' }, asWorker);
    assert.equal(unreachable.status, 422, JSON.stringify(unreachable.body));
    assert.equal(unreachable.body.error.code, 'TAS_ERR_WORKER_UNREACHABLE');
    assert.match(unreachable.body.error.message, /cannot reach the worker at 127\.0\.0\.1:1 .*--advertise/);
    const bad = await post({ address: 'no port here' }, asWorker);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'address');
    assert.equal((await pool()).workers.length, 0, 'nothing joined');
  });

  test('joined workers train from the service over HTTP; a rank that dies resumes elsewhere from the checkpoint the service holds, to the same bits', async () => {
    for (const i of [0, 1, 2]) workers.push(await join_(i));
    await untilPool((ids) => ids.length === 3);
    assert.deepEqual((await pool()).workers.map((w) => w.state), ['idle', 'idle', 'idle']);

    // Uninterrupted.
    const ref = await call('POST', `${served.url}/v1/jobs`, { body: spec('joined-reference') });
    assert.equal(ref.status, 201, JSON.stringify(ref.body));
    const refJob = await finished(ref.body.id);
    assert.equal(refJob.status, 'succeeded', JSON.stringify(refJob));
    const refTensors = await artifact(refJob.model!);
    // Each worker that ran it holds the CSV in its cache, by content.
    for (const w of workers.filter((w) => refJob.attempt_history[0]!.workers.includes(w.address))) {
      const i = workers.indexOf(w);
      const blobs = await readdir(join(cacheRoot, `worker-${i}`, 'blobs'));
      assert.deepEqual(blobs, [csvSha]);
      assert.ok(w.log.some((l) => /inputs from the service: 1 fetched/.test(l)), w.log.join('\n'));
    }

    // The same job; its rank 0's worker is killed after a few checkpoints reached the service.
    const sub = await call('POST', `${served.url}/v1/jobs`, { body: spec('joined-resumed') });
    const id = sub.body.id as string;
    const running = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => j.status === 'running' && j.progress.step >= 30, 120_000, 5, admin.authorization);
    const rank0 = workers.find((w) => w.address === running.attempt_history.at(-1)!.workers[0])!;
    const checkpoint = join(env.dataDir, 'jobs', id, 'checkpoint.safetensors');
    assert.ok((await readFile(checkpoint)).length > 0, 'the service holds a checkpoint sent by rank 0');
    rank0.process.kill('SIGKILL');
    await once(rank0.process, 'exit');

    const job = await finished(id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job));
    assert.equal(job.attempts, 2, JSON.stringify(job.attempt_history));
    assert.ok(!job.attempt_history[1]!.workers.includes(rank0.address), 'the second attempt ran on the workers still there');
    const version = await call('GET', `${served.url}/v1/models/${job.model!.name}/versions/${job.model!.version}`);
    assert.ok(version.body.metadata.resumed_from_step > 0, `resumed from the service's checkpoint: ${JSON.stringify(version.body.metadata)}`);
    assertSameTensors(await artifact(job.model!), refTensors);
    // A worker that had the CSV read it from its cache the second time.
    assert.ok(workers.some((w) => w !== rank0 && w.log.some((l) => /inputs from the service: 0 fetched \(0 bytes\), 1 from the cache/.test(l))));

    // The killed worker stops heartbeating: it leaves the pool within the bound.
    const t0 = Date.now();
    await untilPool((ids) => !ids.includes(rank0.address));
    assert.ok(Date.now() - t0 < LEAVE_AFTER_MS + 5000, `left after ${Date.now() - t0} ms`);
    assert.ok(served.log.some((l) => l.includes(`worker ${rank0.address} left the pool: no heartbeat`)), served.log.join('\n'));

    // One that stops says goodbye: gone at once.
    const leaving = workers.find((w) => w !== rank0)!;
    assert.equal(await leaving.stop('SIGTERM'), 0);
    assert.ok(!(await pool()).workers.some((w) => w.id === leaving.address));
    assert.ok(served.log.some((l) => l.includes(`worker ${leaving.address} left the pool (it is stopping)`)));
  });

  test("a job's files: only the job's inputs are served, and a write must be whole and from the running attempt", async () => {
    const done = (await call('GET', `${served.url}/v1/jobs?limit=10`)).body.jobs.find((j: { name: string }) => j.name === 'joined-reference');
    const base = `${served.url}/v1/worker-files/jobs/${done.id}`;
    const inputs = await call('GET', `${base}/inputs`, { headers: asWorker });
    assert.equal(inputs.status, 200);
    assert.deepEqual(inputs.body.files.map((f: { sha256: string }) => f.sha256), [csvSha]);
    const other = await call('GET', `${base}/input?path=admin.key`, { headers: asWorker });
    assert.equal(other.status, 404, 'no file the job does not read');
    const escape = await call('GET', `${base}/input?path=${encodeURIComponent('../etc/passwd')}`, { headers: asWorker });
    assert.equal(escape.status, 404);
    const input = await fetch(`${base}/input?path=${encodeURIComponent(inputs.body.files[0].path)}`, { headers: asWorker });
    assert.equal(input.headers.get('x-tas-sha256'), csvSha);
    assert.equal(createHash('sha256').update(new Uint8Array(await input.arrayBuffer())).digest('hex'), csvSha);

    const bytes = new TextEncoder().encode('not a checkpoint');
    const sha = createHash('sha256').update(bytes).digest('hex');
    const put = (name: string, generation: number, hash: string) => call('PUT', `${base}/files/${name}?generation=${generation}`, { raw: bytes, headers: { ...asWorker, 'content-type': 'application/octet-stream', 'x-tas-sha256': hash } });
    // The job has finished: no attempt may write any more.
    const stale = await put('checkpoint.safetensors', 1, sha);
    assert.equal(stale.status, 409, JSON.stringify(stale.body));
    assert.equal(stale.body.error.code, 'TAS_ERR_CONFLICT');
    assert.equal((await put('other.bin', 1, sha)).status, 404);
    const tenantKey = await call('PUT', `${base}/files/checkpoint.safetensors?generation=1`, { raw: bytes, headers: { authorization: 'Bearer tas_000000000000_x', 'content-type': 'application/octet-stream', 'x-tas-sha256': sha } });
    assert.equal(tenantKey.status, 401);

    // A running job (on a fresh worker and the one left): a body that does not hash to its announced SHA-256 replaces nothing.
    workers.push(await join_(3));
    await untilPool((ids) => ids.length === 2);
    const sub = await call('POST', `${served.url}/v1/jobs`, { body: spec('joined-files', { epochs: 200 }) });
    const id = sub.body.id as string;
    const running = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => j.status === 'running' && j.progress.step >= 10, 120_000, 5, admin.authorization);
    const runningBase = `${served.url}/v1/worker-files/jobs/${id}/files/checkpoint.safetensors?generation=${running.attempts}`;
    const mismatch = await call('PUT', runningBase, { raw: bytes, headers: { ...asWorker, 'content-type': 'application/octet-stream', 'x-tas-sha256': 'f'.repeat(64) } });
    assert.equal(mismatch.status, 400, JSON.stringify(mismatch.body));
    assert.equal(mismatch.body.error.code, 'TAS_ERR_CHECKSUM_MISMATCH');
    assert.ok(!(await readFile(join(env.dataDir, 'jobs', id, 'checkpoint.safetensors'))).equals(Buffer.from(bytes)), 'the checkpoint was not replaced');
    const wrongAttempt = await call('PUT', runningBase.replace(/generation=\d+/, `generation=${running.attempts + 1}`), { raw: bytes, headers: { ...asWorker, 'content-type': 'application/octet-stream', 'x-tas-sha256': sha } });
    assert.equal(wrongAttempt.status, 409);
    assert.equal((await call('POST', `${served.url}/v1/jobs/${id}/cancel`)).status, 200);
    assert.equal((await finished(id)).status, 'cancelled');
  });

  test('tas scheduler alone answers /healthz and /readyz on TAS_HEALTH_PORT', async () => {
    const scheduler = await startServe(env, { command: 'scheduler', noWorkers: true, env: { TAS_HEALTH_PORT: '0', TAS_WORKER_TOKEN: WORKER_TOKEN } });
    try {
      assert.equal((await fetch(`${scheduler.url}/healthz`)).status, 200);
      const ready = await fetch(`${scheduler.url}/readyz`);
      assert.equal(ready.status, 200);
      assert.deepEqual(Object.keys(((await ready.json()) as { checks: object }).checks).sort(), ['database', 'redis']);
      assert.equal((await fetch(`${scheduler.url}/v1/jobs`)).status, 404, 'no API there');
    } finally {
      await scheduler.stop();
    }
  });
});
