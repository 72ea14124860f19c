// The service end to end: `tas serve` as a child process with real PostgreSQL and Redis;
// jobs submitted over REST, followed by long polls, models downloaded and checked; and
// the faults: a worker SIGKILLed mid-job, the scheduler SIGKILLed mid-job, cancel.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { decodeSafetensors, type SafetensorsTensor } from '../../src/trainer/artifact/safetensors.js';
import { parseArtifact } from '../../src/trainer/artifact/artifact.js';
import { INFERENCE_PROTO } from '../../src/api/grpc/inference-server.js';
import { predict, servable } from '../../src/inference/predict.js';
import '../setup-backend.js';
import { summariseBnBuffers } from '../../src/trainer/math/bn-summary.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import type { JobMetricsView } from '../../src/service/jobs/metrics-view.js';
import { getJson, postJson, serviceEnvironment, startServe, TERMINAL, waitFor, type JobStatusView, type Served } from './harness.js';

const unavailable = await databaseUnavailable();
const QUICKSTART = JSON.parse(await readFile(new URL('../../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;

/** A short 2-worker SyncBN job (a few hundred ms of training). */
const SHORT = { ...QUICKSTART, name: 'short', epochs: 2, lr_schedule: { type: 'constant' } };

async function artifactBytes(url: string, model: { name: string; version: number }): Promise<Uint8Array> {
  const r = await fetch(`${url}/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}/artifact`);
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('content-type'), 'application/octet-stream');
  return new Uint8Array(await r.arrayBuffer());
}

async function artifact(url: string, model: { name: string; version: number }): Promise<Map<string, SafetensorsTensor>> {
  return decodeSafetensors(await artifactBytes(url, model)).tensors;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- a client built from the .proto at run time is untyped */
function inferenceClient(address: string): any {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(INFERENCE_PROTO, { keepCase: true, longs: Number, defaults: true })) as any;
  return new pkg.inference.GRPCInferenceService(address, grpc.credentials.createInsecure());
}

function call<T>(client: any, method: string, request: unknown): Promise<T> {
  return new Promise((ok, fail) => client[method](request, (e: Error | null, r: T) => (e ? fail(e) : ok(r))));
}

/** The step the final attempt resumed from (from the model version's record). */
async function resumedFrom(url: string, model: { name: string; version: number }): Promise<number> {
  const v = await getJson<{ metadata: { resumed_from_step: number | null } }>(`${url}/v1/models/${encodeURIComponent(model.name)}/versions/${model.version}`);
  return v.body.metadata.resumed_from_step ?? 0;
}

/** Same tensor names, shapes and bits. */
function assertSameTensors(a: Map<string, SafetensorsTensor>, b: Map<string, SafetensorsTensor>): void {
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [name, t] of a) {
    const u = b.get(name)!;
    assert.deepEqual(t.shape, u.shape, name);
    assert.deepEqual(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength), `tensor ${name} differs`);
  }
}

const until = (served: Served, id: string, pred: (j: JobStatusView) => boolean, timeoutMs?: number) => waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, pred, timeoutMs);

describe('service end to end', { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  /** The uninterrupted quickstart's artifact: the reference for the restarted runs. */
  let reference: Map<string, SafetensorsTensor>;

  before(async () => {
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2 });
  });
  after(async () => {
    await served?.stop();
    await env?.cleanup();
  });

  test('the quickstart: submit, follow, download; the artifact holds the BN statistics the API reported', async () => {
    const submitted = await postJson<JobStatusView>(`${served.url}/v1/jobs`, QUICKSTART);
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    assert.equal(submitted.body.status, 'queued');
    const job = await until(served, submitted.body.id, (j) => TERMINAL.has(j.status));
    assert.equal(job.status, 'succeeded', `${job.error}\n${served.log.join('\n')}`);
    assert.equal(job.attempts, 1);
    assert.equal(job.progress.step, job.progress.total_steps);
    assert.deepEqual(job.transitions.map((t) => t.to), ['queued', 'scheduled', 'running', 'succeeded']);
    assert.ok(job.model);

    const metrics = (await getJson<JobMetricsView>(`${served.url}/v1/jobs/${job.id}/metrics`)).body;
    assert.equal(metrics.steps_recorded, job.progress.total_steps);
    assert.ok(metrics.time_split && metrics.time_split.compute_ms > 0 && metrics.time_split.bn_forward_sync_ms > 0);
    reference = await artifact(served.url, job.model);
    // The final statistics the API reports are the artifact's own (after recalibration).
    const fromArtifact = summariseBnBuffers(reference);
    assert.equal(fromArtifact.length, 2);
    assert.deepEqual(
      metrics.bn_layers.map((l) => l.final),
      fromArtifact.map(({ num_batches_tracked: _n, ...s }) => s),
    );
    // And each layer's series has every step, ending at the last one.
    for (const l of metrics.bn_layers) {
      assert.equal(l.points[l.points.length - 1]!.step, job.progress.total_steps);
      assert.ok(l.last && l.last.var.mean > 0);
    }

    const version = (await getJson<{ version: number; metadata: { evaluation: { accuracy: number } } }>(`${served.url}/v1/models/${job.model.name}/versions/latest`)).body;
    assert.equal(version.version, job.model.version);
    assert.ok(version.metadata.evaluation.accuracy > 0.9, `eval accuracy ${version.metadata.evaluation.accuracy}`);
    const logs = (await getJson<{ lines: Array<{ message: string }> }>(`${served.url}/v1/jobs/${job.id}/logs`)).body.lines;
    assert.match(logs[logs.length - 1]!.message, /published model/);

    // The published model is served at once (the scheduler notifies the API's repository
    // before the job shows succeeded, and a request for a model it has not loaded yet
    // re-reads the index), in eval mode with the artifact's BN statistics: the same
    // outputs as the trainer's eval forward of the downloaded artifact.
    const client = inferenceClient(served.grpc);
    try {
      const x = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i * 1.3) * 2);
      const res = await call<{ model_version: string; outputs: Array<{ shape: number[] }>; raw_output_contents: Buffer[] }>(client, 'ModelInfer', {
        model_name: job.model.name,
        inputs: [{ name: 'input', datatype: 'FP32', shape: [8, 2] }],
        raw_input_contents: [Buffer.from(x.buffer)],
      });
      assert.equal(res.model_version, String(job.model.version));
      assert.deepEqual(res.outputs[0]!.shape, [8, 3]);
      const got = new Float32Array(Uint8Array.from(res.raw_output_contents[0]!).buffer);
      const local = servable(parseArtifact(await artifactBytes(served.url, job.model)));
      const expected = await predict(local, x, 8);
      local.model.dispose();
      for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(got[i]! - expected[i]!) <= 1e-5 * Math.max(1, Math.abs(expected[i]!)), `logit ${i}: ${got[i]} vs ${expected[i]}`);
      const viaRest = await postJson<{ outputs: Array<{ data: number[] }> }>(`${served.url}/v2/models/${job.model.name}/infer`, { inputs: [{ name: 'input', shape: [8, 2], datatype: 'FP32', data: Array.from(x) }] });
      assert.deepEqual(viaRest.body.outputs[0]!.data, Array.from(got));
    } finally {
      client.close();
    }
  });

  test('a worker SIGKILLed mid-job: the attempt fails fast, the job resumes on a fresh gang and ends with the same model', async () => {
    assert.ok(reference, 'needs the quickstart reference');
    const submitted = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...QUICKSTART, name: 'quickstart-worker-fault' });
    const running = await until(served, submitted.body.id, (j) => j.status === 'running' && j.progress.step >= 150);
    const pool = (await getJson<{ workers: Array<{ address: string; pid: number; current_job_id: string | null }> }>(`${served.url}/v1/pool`)).body.workers;
    const victim = pool.find((w) => w.current_job_id === running.id && w.address === running.devices[1]?.worker);
    assert.ok(victim, JSON.stringify(pool));
    process.kill(victim.pid, 'SIGKILL');

    const job = await until(served, running.id, (j) => TERMINAL.has(j.status));
    assert.equal(job.status, 'succeeded', `${job.error}\n${served.log.join('\n')}`);
    assert.equal(job.attempts, 2);
    assert.equal(job.attempt_history[0]!.status, 'failed');
    assert.match(job.attempt_history[0]!.error ?? '', /rank \d \(worker 127\.0\.0\.1:\d+\)/);
    assert.ok(job.attempt_history[1]!.workers.every((a) => a !== victim.address), 'the dead worker is not in the new gang');
    assert.deepEqual(job.transitions.map((t) => t.to), ['queued', 'scheduled', 'running', 'retrying', 'scheduled', 'running', 'succeeded']);
    // It resumed (a run from scratch would end with the same model too, so check both).
    assert.ok((await resumedFrom(served.url, job.model!)) > 0);
    assertSameTensors(await artifact(served.url, job.model!), reference);
  });

  test('cancel stops every rank and frees the workers', async () => {
    const submitted = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...QUICKSTART, name: 'to-cancel' });
    await until(served, submitted.body.id, (j) => j.status === 'running' && j.progress.step >= 20);
    const cancelled = await postJson<JobStatusView>(`${served.url}/v1/jobs/${submitted.body.id}/cancel`, {});
    assert.equal(cancelled.status, 200);
    assert.equal(cancelled.body.status, 'cancelled');
    const pool = await waitFor<{ workers: Array<{ state: string; current_job_id: string | null }> }>(
      `${served.url}/v1/pool`,
      (p) => p.workers.filter((w) => w.state === 'idle').length === 2 && p.workers.every((w) => w.current_job_id === null),
      10_000,
    );
    assert.equal(pool.workers.length >= 2, true);
    const logs = (await getJson<{ lines: Array<{ message: string }> }>(`${served.url}/v1/jobs/${submitted.body.id}/logs`)).body.lines;
    assert.ok(logs.some((l) => /every rank stopped/.test(l.message)), JSON.stringify(logs));
    // Cancelling again is a conflict, not a silent success.
    const again = await postJson<{ error: { code: string } }>(`${served.url}/v1/jobs/${submitted.body.id}/cancel`, {});
    assert.equal(again.status, 409);
  });

  test('gang scheduling: a job larger than the pool is refused; two jobs for the same workers run one after the other', async () => {
    const tooBig = await postJson<{ error: { code: string; field: string; message: string } }>(`${served.url}/v1/jobs`, { ...SHORT, workers: 3 });
    assert.equal(tooBig.status, 400);
    assert.equal(tooBig.body.error.code, 'TAS_ERR_POOL_TOO_SMALL');
    assert.equal(tooBig.body.error.field, 'workers');

    const a = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...SHORT, name: 'gang-a' });
    const b = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...SHORT, name: 'gang-b' });
    const [ja, jb] = await Promise.all([until(served, a.body.id, (j) => TERMINAL.has(j.status)), until(served, b.body.id, (j) => TERMINAL.has(j.status))]);
    assert.equal(ja.status, 'succeeded');
    assert.equal(jb.status, 'succeeded');
    const [first, second] = Date.parse(ja.started_at!) < Date.parse(jb.started_at!) ? [ja, jb] : [jb, ja];
    assert.ok(Date.parse(second.attempt_history[0]!.started_at) >= Date.parse(first.attempt_history[0]!.ended_at!), 'the gangs overlapped');
  });

  test('on loopback auth is off: every request is the admin, with no key', async () => {
    assert.ok(served.log.some((l) => /auth: off/.test(l)), served.log.join('\n'));
    const who = await getJson<{ role: string; tenant: string }>(`${served.url}/v1/auth/whoami`);
    assert.deepEqual([who.status, who.body.role, who.body.tenant], [200, 'admin', 'default']);
  });

  test('submission errors name the field; an Idempotency-Key returns the same job', async () => {
    const bad = await postJson<{ error: { code: string; field: string; message: string } }>(`${served.url}/v1/jobs`, { ...SHORT, optimizer: { type: 'sgd', lr: -1 } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'TAS_ERR_INVALID_SPEC');
    assert.match(bad.body.error.field, /^optimizer/);
    const missing = await postJson<{ error: { field: string } }>(`${served.url}/v1/jobs`, { ...SHORT, data: { type: 'csv', path: 'nope.csv' } });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.error.field, 'data.path');
    const escape = await postJson<{ error: { message: string } }>(`${served.url}/v1/jobs`, { ...SHORT, data: { type: 'csv', path: '../../etc/passwd' } });
    assert.equal(escape.status, 400);
    assert.match(escape.body.error.message, /outside the data directory/);
    const malformed = await fetch(`${served.url}/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":' });
    assert.equal(malformed.status, 400);
    assert.equal(((await malformed.json()) as { error: { code: string } }).error.code, 'TAS_ERR_BAD_REQUEST');

    const key = { 'idempotency-key': `key-${Date.now()}` };
    const first = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...SHORT, name: 'idem' }, key);
    const again = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...SHORT, name: 'idem' }, key);
    assert.equal(first.status, 201);
    assert.equal(again.status, 200);
    assert.equal(again.body.id, first.body.id);
    const conflict = await postJson<{ error: { code: string } }>(`${served.url}/v1/jobs`, { ...SHORT, name: 'other' }, key);
    assert.equal(conflict.status, 409);
    await until(served, first.body.id, (j) => TERMINAL.has(j.status));
  });

  test('status polls: ETag and 304; list filters by status with a cursor', async () => {
    const list = await getJson<{ jobs: JobStatusView[]; next_cursor: string | null }>(`${served.url}/v1/jobs?status=succeeded&limit=2`);
    assert.equal(list.status, 200);
    assert.equal(list.body.jobs.length, 2);
    assert.ok(list.body.jobs.every((j) => j.status === 'succeeded'));
    assert.ok(list.body.next_cursor);
    const next = await getJson<{ jobs: JobStatusView[] }>(`${served.url}/v1/jobs?status=succeeded&limit=2&cursor=${list.body.next_cursor}`);
    assert.ok(next.body.jobs.every((j) => !list.body.jobs.some((k) => k.id === j.id)));

    const id = list.body.jobs[0]!.id;
    const one = await getJson<JobStatusView>(`${served.url}/v1/jobs/${id}`);
    const etag = one.headers.get('etag')!;
    const again = await fetch(`${served.url}/v1/jobs/${id}`, { headers: { 'if-none-match': etag } });
    assert.equal(again.status, 304);
    assert.equal((await getJson(`${served.url}/v1/jobs/${'0'.repeat(8)}-0000-0000-0000-${'0'.repeat(12)}`)).status, 404);
    assert.equal((await getJson<{ error: { field: string } }>(`${served.url}/v1/jobs?status=bogus`)).body.error.field, 'status');
    assert.equal((await getJson(`${served.url}/readyz`)).status, 200);
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    assert.match(metrics, /tas_jobs\{status="succeeded"\} [1-9]/);
    assert.match(metrics, /tas_http_requests_total\{route="\/v1\/jobs\/:id",method="GET",status="304"\}/);
  });
});

describe('a scheduler SIGKILLed mid-job', { skip: unavailable ?? false }, () => {
  test('the next scheduler resumes the job from its checkpoint and it ends with the uninterrupted model', async () => {
    const env = await serviceEnvironment();
    let second: Served | null = null;
    const first = await startServe(env, { workers: 2, lockDurationMs: 3000 });
    try {
      // Long enough (about 2,300 steps) that the kill lands mid-job on the fastest backend.
      const spec = { ...SHORT, name: 'scheduler-fault', epochs: 120, checkpoint: { every_steps: 50 } };
      // The reference: the same spec run without interruption.
      const ref = await postJson<JobStatusView>(`${first.url}/v1/jobs`, { ...spec, name: 'scheduler-fault-reference' });
      const refDone = await until(first, ref.body.id, (j) => TERMINAL.has(j.status));
      assert.equal(refDone.status, 'succeeded');

      const submitted = await postJson<JobStatusView>(`${first.url}/v1/jobs`, spec);
      await until(first, submitted.body.id, (j) => j.status === 'running' && j.progress.step >= 60);
      first.process.kill('SIGKILL');

      second = await startServe(env, { workers: 2, lockDurationMs: 3000 });
      const job = await until(second, submitted.body.id, (j) => TERMINAL.has(j.status));
      assert.equal(job.status, 'succeeded', `${job.error}\n${second.log.join('\n')}`);
      assert.equal(job.attempts, 2);
      assert.ok(job.transitions.some((t) => t.to === 'retrying' && /scheduler/.test(t.reason ?? '')), JSON.stringify(job.transitions));
      assert.ok((await resumedFrom(second.url, job.model!)) >= 10);
      assertSameTensors(await artifact(second.url, job.model!), await artifact(second.url, refDone.model!));
    } finally {
      await first.stop();
      await second?.stop();
      await env.cleanup();
    }
  });
});
