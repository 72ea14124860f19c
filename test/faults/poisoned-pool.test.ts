// Fault: a poisoned pool. A job too large for the workers used to be accepted and leave
// them corrupt (every later job failed with 'memory access out of bounds' while
// /v1/pool showed them idle, and every retry landed on them). Now it is refused at
// submission; and a worker whose engine does fail (a real WebAssembly trap, injected with
// TAS_FAILPOINTS) is restarted before it is offered again, the retry going to other
// workers. Also here: inference inputs that are not finite.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { INFERENCE_PROTO } from '../../src/api/grpc/inference-server.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { getJson, postJson, serviceEnvironment, startServe, type JobStatusView, type Served } from '../service/harness.js';
import { assertDoneOnce, assertHealthy, FAULT_ENV, gone, logLines, pool, reference, spec, submit, until } from './fault-kit.js';

const unavailable = await databaseUnavailable();

describe('a poisoned pool', { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  before(async () => {
    env = await serviceEnvironment();
    // Four workers: a 2-worker job's retry has two others to go to.
    served = await startServe(env, { workers: 4, env: { ...FAULT_ENV, TAS_FAILPOINTS: 'wasm-trap:job=engine-trap,rank=1,step=60' } });
  });
  after(async () => {
    await served?.stop();
    await env?.cleanup();
  });

  test('a job too large for the workers is refused at submission, naming the layer; nothing is written, the workers are untouched', async () => {
    const huge = spec('huge', { model: { ...(spec('x').model as { layers: Array<Record<string, unknown>> }), layers: (spec('x').model as { layers: Array<Record<string, unknown>> }).layers.map((l, i) => (i === 0 ? { ...l, out: 10_000_000 } : l)) } });
    const r = await postJson<{ error: { code: string; field: string; message: string } }>(`${served.url}/v1/jobs`, huge);
    assert.equal(r.status, 400, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'TAS_ERR_OUT_OF_MEMORY');
    assert.equal(r.body.error.field, 'model.layers[0]');
    assert.match(r.body.error.message, /^model\.layers\[0\]: the job needs about \d+(\.\d)? GiB per worker .* more than the .* a cpu worker \(\w+ backend\) has/);
    assert.equal((await getJson<{ jobs: unknown[] }>(`${served.url}/v1/jobs`)).body.jobs.length, 0);
    const p = await pool(served);
    assert.equal(p.summary.idle, 4);
    // Each worker says how much memory a job may use there (what the refusal compared with).
    const limits = (await getJson<{ workers: Array<{ memory_limit_bytes: number | null }> }>(`${served.url}/v1/pool`)).body.workers.map((w) => w.memory_limit_bytes);
    assert.ok(limits.every((l) => typeof l === 'number' && l > 0), JSON.stringify(limits));
  });

  test('an engine that traps mid-job: that worker is restarted before it is offered again, the retry avoids the failed gang; same weights, run and published once', async () => {
    const ref = await reference(served, 'engine-reference');
    const before = await pool(served);
    const id = await submit(served, spec('engine-trap'));

    // Watch the pool while the job runs (long polls: each answer is a change).
    const seen: Array<{ at: number; workers: Array<{ address: string; state: string }> }> = [];
    let done = false;
    const watching = (async () => {
      let etag = '';
      while (!done) {
        const r = await fetch(`${served.url}/v1/pool?wait=1`, { headers: etag ? { 'if-none-match': etag } : {} });
        if (r.status === 200) {
          etag = r.headers.get('etag') ?? '';
          seen.push({ at: Date.now(), workers: ((await r.json()) as { workers: Array<{ address: string; state: string }> }).workers });
        } else await r.arrayBuffer();
      }
    })();
    const job = await assertDoneOnce(served, id, ref, 2).finally(() => (done = true));
    await watching;

    const [first, retry] = job.attempt_history as [JobStatusView['attempt_history'][0], JobStatusView['attempt_history'][0]];
    assert.match(first.error ?? '', /rank 1 \(worker 127\.0\.0\.1:\d+\): the worker's tensor engine failed \(WebAssembly trap: memory access out of bounds\)/);
    assert.ok(retry.workers.every((w) => !first.workers.includes(w)), `the retry ran on ${retry.workers} after ${first.workers} failed, with two other workers free`);
    // The trapped worker (rank 1's) was replaced by a fresh process: its own is gone, its address left the pool.
    const trapped = first.workers[1]!;
    const trappedPid = before.workers.find((w) => w.address === trapped)?.pid;
    assert.ok(trappedPid, JSON.stringify(before));
    await gone([trappedPid]);
    assert.ok(logLines(served, new RegExp(`worker ${trapped.replace(/\./g, '\\.')} exited \\(its tensor engine failed\\); starting a fresh one`)).length === 1, served.log.join('\n'));
    // /v1/pool never showed it idle once its engine had failed.
    const failedAt = Date.parse(first.ended_at!);
    const lies = seen.filter((s) => s.at >= failedAt && s.workers.some((w) => w.address === trapped && w.state === 'idle'));
    assert.deepEqual(lies, [], 'the broken worker was shown idle');

    await assertHealthy(served, 4);
    // And no job ran on it afterwards.
    const jobs = (await getJson<{ jobs: Array<{ id: string }> }>(`${served.url}/v1/jobs?limit=50`)).body.jobs;
    for (const j of jobs) {
      const full = (await getJson<JobStatusView>(`${served.url}/v1/jobs/${j.id}`)).body;
      for (const a of full.attempt_history) if (Date.parse(a.started_at) > failedAt) assert.ok(!a.workers.includes(trapped), `job ${j.id} ran on the broken worker`);
    }
  });

  test('inference: NaN, infinite or out-of-range FP32 inputs are 400 / INVALID_ARGUMENT naming the input, not null outputs', async () => {
    const id = (await getJson<{ jobs: Array<{ id: string; status: string; model: { name: string } | null }> }>(`${served.url}/v1/jobs?status=succeeded&limit=1`)).body.jobs[0]!;
    const model = (await until(served, id.id, (j) => j.model !== null)).model!.name;
    const rest = await postJson<{ error: string }>(`${served.url}/v2/models/${model}/infer`, { inputs: [{ name: 'input', shape: [1, 2], datatype: 'FP32', data: [0.5, 1e300] }] });
    assert.equal(rest.status, 400);
    assert.match(rest.body.error, /input 'input' for model '.*': element 1 \(1e\+300\) is out of the FP32 range/);
    // /* eslint-disable-next-line */ a client built from the .proto at run time is untyped
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(INFERENCE_PROTO, { keepCase: true, longs: Number, defaults: true })) as unknown as {
      inference: { GRPCInferenceService: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & { ModelInfer(r: unknown, cb: (e: grpc.ServiceError | null) => void): void } };
    };
    const client = new pkg.inference.GRPCInferenceService(served.grpc, grpc.credentials.createInsecure());
    try {
      const e = await new Promise<grpc.ServiceError | null>((resolve) =>
        client.ModelInfer({ model_name: model, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [Number.NaN, 1] } }] }, (err) => resolve(err)),
      );
      assert.equal(e?.code, grpc.status.INVALID_ARGUMENT);
      assert.match(e?.details ?? '', /input 'input' for model '.*': element 0 is NaN; inputs must be finite/);
    } finally {
      client.close();
    }
  });
});
