// API keys, tenants and quotas end to end: `tas serve` with auth on, and a second API
// process (`tas api`) on the same PostgreSQL, Redis and data directory, as a deployment
// with several API processes runs. Every route and RPC is called as six principals; then
// quotas, rate limits shared between the processes, revocation heard by both, cross-site
// requests, the admin key's file and the workers' token.
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { INFERENCE_PROTO } from '../../src/api/grpc/inference-server.js';
import { workerProto } from '../../src/grpc/proto.js';
import pg from 'pg';
import { databaseUrlFromEnv } from '../../src/service/db/client.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { serviceEnvironment, startServe, waitFor, type JobStatusView, type Served } from './harness.js';

const unavailable = await databaseUnavailable();
const QUICKSTART = JSON.parse(await readFile(new URL('../../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;
/** A short job (a second or two of training). */
const short = (name: string, workers = 2) => ({ ...QUICKSTART, name, workers, epochs: 2, lr_schedule: { type: 'constant' }, checkpoint: { every_steps: 1000 } });
/** A job that runs until it is cancelled. */
const endless = (name: string) => ({ ...short(name, 1), epochs: 100000 });

type Who = 'none' | 'malformed' | 'revoked' | 'other' | 'own' | 'admin';
const WHO: readonly Who[] = ['none', 'malformed', 'revoked', 'other', 'own', 'admin'];

interface Reply {
  status: number;
  body: unknown;
  headers: Headers;
}

/* eslint-disable @typescript-eslint/no-explicit-any -- clients built from the .proto at run time are untyped */
function inferenceClient(address: string): any {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(INFERENCE_PROTO, { keepCase: true, longs: Number, defaults: true })) as any;
  return new pkg.inference.GRPCInferenceService(address, grpc.credentials.createInsecure());
}

function rpc<T>(client: any, method: string, request: unknown, key?: string): Promise<T> {
  const md = new grpc.Metadata();
  if (key !== undefined) md.set('authorization', key);
  return new Promise((ok, fail) => client[method](request, md, (e: Error | null, r: T) => (e ? fail(e) : ok(r))));
}

/** The gRPC status name of a call: OK, or the error's code. */
async function grpcStatus(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return grpc.status[(e as grpc.ServiceError).code] ?? String(e);
  }
}

describe('API keys, tenants and quotas', { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  /** A second API process: same database, Redis and data directory; CORS for one origin. */
  let second: Served;
  let grpcClient: any;
  const auth: Record<Who, string | undefined> = { none: undefined, malformed: 'Bearer not-a-key', revoked: '', other: '', own: '', admin: '' };
  let acmeJob: JobStatusView;
  let acmeDataset: string;
  let acmeData: Record<string, unknown>;

  const call = async (method: string, url: string, who: Who, init: { body?: unknown; headers?: Record<string, string>; raw?: string } = {}): Promise<Reply> => {
    const headers: Record<string, string> = { ...init.headers };
    if (auth[who] !== undefined) headers.authorization = auth[who]!;
    let body: string | undefined;
    if (init.raw !== undefined) body = init.raw;
    else if (init.body !== undefined) {
      body = JSON.stringify(init.body);
      headers['content-type'] ??= 'application/json';
    }
    const r = await fetch(url, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: artifact bytes, Prometheus text, the docs page
    }
    return { status: r.status, body: parsed, headers: r.headers };
  };

  before(async () => {
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2, env: { TAS_AUTH: 'on' } });
    second = await startServe(env, { command: 'api', env: { TAS_AUTH: 'on', TAS_CORS_ORIGINS: 'https://dash.example' } });
    grpcClient = inferenceClient(served.grpc);
    auth.admin = `Bearer ${(await readFile(join(env.dataDir, 'admin.key'), 'utf8')).trim()}`;
    const tenant = async (body: Record<string, unknown>) => {
      const r = await call('POST', `${served.url}/v1/tenants`, 'admin', { body });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      return `Bearer ${(r.body as { api_key: string }).api_key}`;
    };
    auth.own = await tenant({ name: 'acme' });
    auth.other = await tenant({ name: 'beta' });
    const extra = await call('POST', `${served.url}/v1/tenants/acme/keys`, 'admin');
    assert.equal(extra.status, 201);
    const revoked = extra.body as { key_id: string; api_key: string };
    assert.equal((await call('DELETE', `${served.url}/v1/tenants/acme/keys/${revoked.key_id}`, 'admin')).status, 204);
    auth.revoked = `Bearer ${revoked.api_key}`;

    // acme's dataset, and a job that trains and publishes its model `acme-model`.
    const upload = await call('POST', `${served.url}/v1/datasets?name=tiny&format=csv&label_column=y`, 'own', {
      raw: 'a,b,y\n0.1,0.2,0\n0.3,0.1,1\n0.5,0.9,0\n0.7,0.3,1\n',
      headers: { 'content-type': 'text/csv' },
    });
    assert.equal(upload.status, 201, JSON.stringify(upload.body));
    acmeDataset = (upload.body as { id: string }).id;
    acmeData = (upload.body as { data: Record<string, unknown> }).data;
    const submitted = await call('POST', `${served.url}/v1/jobs`, 'own', { body: short('acme-model') });
    assert.equal(submitted.status, 201, JSON.stringify(submitted.body));
    acmeJob = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${(submitted.body as { id: string }).id}`, (j) => ['succeeded', 'failed', 'cancelled'].includes(j.status), 120_000, 5, auth.own);
    assert.equal(acmeJob.status, 'succeeded', JSON.stringify(acmeJob));
  });

  after(async () => {
    grpcClient?.close();
    await second?.stop();
    await served?.stop();
    await env?.cleanup();
  });

  test('the admin key is made once, written to <data>/admin.key (0600), and only its hash is stored', async () => {
    const file = join(env.dataDir, 'admin.key');
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const key = auth.admin!.slice('Bearer '.length);
    assert.equal(served.log.filter((l) => l.includes(key)).length, 1, 'printed once, at the first start');
    assert.ok(!second.log.some((l) => /made the admin key/.test(l)), 'a second API process makes none');
    const db = new pg.Client({ connectionString: databaseUrlFromEnv() });
    await db.connect();
    const rows = (await db.query<{ hash: string; salt: string; admin: boolean }>(`SELECT hash, salt, admin FROM "${env.schema.schema}".api_keys WHERE admin`).finally(() => db.end())).rows;
    assert.equal(rows.length, 1);
    assert.ok(!JSON.stringify(rows).includes(key.split('_')[2]!), 'the secret itself is not stored');
    assert.deepEqual((await call('GET', `${second.url}/v1/auth/whoami`, 'admin')).body, { role: 'admin', tenant: 'default', key_id: key.split('_')[1], limits: { max_workers: null, max_queued_jobs: null, requests_per_minute: null } });
    assert.ok(served.log.some((l) => /REST API listening on http:\/\/127\.0\.0\.1:\d+/.test(l)), served.log.join('\n'));
    assert.ok(served.log.some((l) => /gRPC inference .* listening on 127\.0\.0\.1:\d+/.test(l)), served.log.join('\n'));
  });

  test('every route and RPC, as no key, a malformed key, a revoked key, another tenant, its owner and the admin', async () => {
    const u = served.url;
    const job = acmeJob.id;
    const model = 'acme-model';
    const infer = { inputs: [{ name: 'input', shape: [1, 2], datatype: 'FP32', data: [0.5, -1.2] }] };
    const denied = { none: 401, malformed: 401, revoked: 401 } as const;
    // status per principal; 'other' sees another tenant's things as if they did not exist.
    const cases: Array<{ what: string; run: (w: Who) => Promise<Reply>; expect: Record<Who, number>; check?: (w: Who, r: Reply) => void }> = [
      { what: 'GET /healthz', run: (w) => call('GET', `${u}/healthz`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /readyz', run: (w) => call('GET', `${u}/readyz`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /v2/health/live', run: (w) => call('GET', `${u}/v2/health/live`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /v2/health/ready', run: (w) => call('GET', `${u}/v2/health/ready`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /v2', run: (w) => call('GET', `${u}/v2`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /docs/json', run: (w) => call('GET', `${u}/docs/json`, w), expect: { none: 200, malformed: 200, revoked: 200, other: 200, own: 200, admin: 200 } },
      { what: 'GET /metrics', run: (w) => call('GET', `${u}/metrics`, w), expect: { ...denied, other: 403, own: 403, admin: 200 } },
      { what: 'GET /v1/auth/whoami', run: (w) => call('GET', `${u}/v1/auth/whoami`, w), expect: { ...denied, other: 200, own: 200, admin: 200 }, check: (w, r) => w !== 'none' && r.status === 200 && assert.equal((r.body as { tenant: string }).tenant, { other: 'beta', own: 'acme', admin: 'default' }[w as 'other']) },
      { what: 'GET /v1/tenants', run: (w) => call('GET', `${u}/v1/tenants`, w), expect: { ...denied, other: 403, own: 403, admin: 200 } },
      { what: 'POST /v1/tenants', run: (w) => call('POST', `${u}/v1/tenants`, w, { body: { name: 'Not A Name' } }), expect: { ...denied, other: 403, own: 403, admin: 400 } },
      { what: 'POST /v1/tenants/acme/keys', run: (w) => call('POST', `${u}/v1/tenants/acme/keys`, w), expect: { ...denied, other: 403, own: 403, admin: 201 } },
      { what: 'DELETE /v1/tenants/acme/keys/:id', run: (w) => call('DELETE', `${u}/v1/tenants/acme/keys/000000000000`, w), expect: { ...denied, other: 403, own: 403, admin: 404 } },
      { what: 'POST /v1/jobs', run: (w) => call('POST', `${u}/v1/jobs`, w, { body: { model: 'not a model' } }), expect: { ...denied, other: 400, own: 400, admin: 400 } },
      {
        what: 'GET /v1/jobs',
        run: (w) => call('GET', `${u}/v1/jobs`, w),
        expect: { ...denied, other: 200, own: 200, admin: 200 },
        check: (w, r) => r.status === 200 && assert.equal((r.body as { jobs: Array<{ id: string }> }).jobs.some((j) => j.id === job), w !== 'other', `${w} lists acme's job`),
      },
      { what: 'GET /v1/jobs/:id', run: (w) => call('GET', `${u}/v1/jobs/${job}`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'GET /v1/jobs/:id/metrics', run: (w) => call('GET', `${u}/v1/jobs/${job}/metrics`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'GET /v1/jobs/:id/logs', run: (w) => call('GET', `${u}/v1/jobs/${job}/logs`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'POST /v1/jobs/:id/cancel (finished)', run: (w) => call('POST', `${u}/v1/jobs/${job}/cancel`, w), expect: { ...denied, other: 404, own: 409, admin: 409 } },
      {
        what: 'GET /v1/datasets',
        run: (w) => call('GET', `${u}/v1/datasets`, w),
        expect: { ...denied, other: 200, own: 200, admin: 200 },
        check: (w, r) => r.status === 200 && assert.equal((r.body as { datasets: Array<{ id: string }> }).datasets.some((d) => d.id === acmeDataset), w !== 'other'),
      },
      { what: 'GET /v1/datasets/:id', run: (w) => call('GET', `${u}/v1/datasets/${acmeDataset}`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'POST /v1/datasets', run: (w) => call('POST', `${u}/v1/datasets?format=csv`, w, { raw: 'a,y\n1,0\n', headers: { 'content-type': 'text/csv' } }), expect: { ...denied, other: 400, own: 400, admin: 400 } },
      {
        what: 'GET /v1/models',
        run: (w) => call('GET', `${u}/v1/models`, w),
        expect: { ...denied, other: 200, own: 200, admin: 200 },
        check: (w, r) => r.status === 200 && assert.equal((r.body as { models: Array<{ name: string }> }).models.some((m) => m.name === model), w !== 'other'),
      },
      { what: 'GET /v1/models/:m/versions/latest', run: (w) => call('GET', `${u}/v1/models/${model}/versions/latest`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'GET /v1/models/:m/versions/latest?tenant=acme', run: (w) => call('GET', `${u}/v1/models/${model}/versions/latest?tenant=acme`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'GET /v1/models/:m/versions/1/artifact', run: (w) => call('GET', `${u}/v1/models/${model}/versions/1/artifact`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'GET /v1/models/:m/versions/1/onnx', run: (w) => call('GET', `${u}/v1/models/${model}/versions/1/onnx`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      {
        what: 'GET /v1/pool',
        run: (w) => call('GET', `${u}/v1/pool`, w),
        expect: { ...denied, other: 200, own: 200, admin: 200 },
      },
      { what: 'GET /v2/models/:m', run: (w) => call('GET', `${u}/v2/models/${model}`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'GET /v2/models/:m?tenant=acme', run: (w) => call('GET', `${u}/v2/models/${model}?tenant=acme`, w), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      { what: 'GET /v2/models/:m/versions/1', run: (w) => call('GET', `${u}/v2/models/${model}/versions/1`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'GET /v2/models/:m/ready', run: (w) => call('GET', `${u}/v2/models/${model}/ready`, w), expect: { ...denied, other: 400, own: 200, admin: 400 } },
      { what: 'GET /v2/models/:m/versions/1/ready', run: (w) => call('GET', `${u}/v2/models/${model}/versions/1/ready`, w), expect: { ...denied, other: 400, own: 200, admin: 400 } },
      { what: 'POST /v2/models/:m/infer', run: (w) => call('POST', `${u}/v2/models/${model}/infer`, w, { body: infer }), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'POST /v2/models/:m/versions/1/infer?tenant=acme', run: (w) => call('POST', `${u}/v2/models/${model}/versions/1/infer?tenant=acme`, w, { body: infer }), expect: { ...denied, other: 404, own: 200, admin: 200 } },
      {
        what: 'POST /v2/repository/index',
        run: (w) => call('POST', `${u}/v2/repository/index`, w),
        expect: { ...denied, other: 200, own: 200, admin: 200 },
        check: (w, r) => r.status === 200 && assert.equal((r.body as Array<{ name: string }>).some((m) => m.name === model), w !== 'other'),
      },
      // Unloaded by its owner, then loaded again (the rows below run in this order).
      { what: 'POST /v2/repository/models/:m/unload', run: (w) => call('POST', `${u}/v2/repository/models/${model}/unload`, w), expect: { ...denied, other: 404, own: 200, admin: 404 } },
      { what: 'POST /v2/repository/models/:m/load', run: (w) => call('POST', `${u}/v2/repository/models/${model}/load`, w, { body: {} }), expect: { ...denied, other: 404, own: 200, admin: 404 } },
    ];
    const failures: string[] = [];
    for (const c of cases) {
      for (const w of WHO) {
        const r = await c.run(w);
        if (r.status !== c.expect[w]) failures.push(`${c.what} as ${w}: ${r.status}, expected ${c.expect[w]} (${JSON.stringify(r.body).slice(0, 200)})`);
        else c.check?.(w, r);
        if (r.status === 401) assert.equal(r.headers.get('www-authenticate'), 'Bearer', `${c.what} as ${w}`);
      }
    }
    // The pool shows every worker to every tenant, but a job's id only to its owner.
    const acmeRunning = await call('POST', `${u}/v1/jobs`, 'own', { body: endless('acme-endless') });
    const id = (acmeRunning.body as { id: string }).id;
    try {
      await waitFor<JobStatusView>(`${u}/v1/jobs/${id}`, (j) => j.status === 'running', 60_000, 5, auth.own);
      const jobsOnPool = async (w: Who) => ((await call('GET', `${u}/v1/pool`, w)).body as { workers: Array<{ current_job_id: string | null }> }).workers.map((x) => x.current_job_id);
      assert.ok((await jobsOnPool('own')).includes(id));
      assert.ok((await jobsOnPool('admin')).includes(id));
      assert.ok(!(await jobsOnPool('other')).includes(id));
      assert.equal((await call('POST', `${u}/v1/jobs/${id}/cancel`, 'other')).status, 404);
    } finally {
      assert.equal((await call('POST', `${u}/v1/jobs/${id}/cancel`, 'own')).status, 200);
    }

    // gRPC: the same principals, from the `authorization` metadata.
    const typed = { model_name: model, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 2], contents: { fp32_contents: [0.5, -1.2] } }] };
    const grpcCases: Array<{ what: string; run: (key: string | undefined) => Promise<unknown>; expect: Record<Who, string> }> = [
      { what: 'ServerLive', run: (k) => rpc(grpcClient, 'ServerLive', {}, k), expect: { none: 'OK', malformed: 'OK', revoked: 'OK', other: 'OK', own: 'OK', admin: 'OK' } },
      { what: 'ServerReady', run: (k) => rpc(grpcClient, 'ServerReady', {}, k), expect: { none: 'OK', malformed: 'OK', revoked: 'OK', other: 'OK', own: 'OK', admin: 'OK' } },
      { what: 'ServerMetadata', run: (k) => rpc(grpcClient, 'ServerMetadata', {}, k), expect: { none: 'OK', malformed: 'OK', revoked: 'OK', other: 'OK', own: 'OK', admin: 'OK' } },
      {
        what: 'ModelStreamInfer',
        run: (k) =>
          new Promise<void>((ok, fail) => {
            const md = new grpc.Metadata();
            if (k !== undefined) md.set('authorization', k);
            const stream = grpcClient.ModelStreamInfer(md);
            stream.on('data', (m: { error_message: string }) => {
              stream.end();
              if (!m.error_message) return ok();
              const code = /API key|Bearer/.test(m.error_message) ? grpc.status.UNAUTHENTICATED : /unknown model/.test(m.error_message) ? grpc.status.NOT_FOUND : grpc.status.UNKNOWN;
              fail(Object.assign(new Error(m.error_message), { code }));
            });
            stream.on('error', fail);
            stream.write({ ...typed, id: 's1' });
          }),
        expect: { none: 'UNAUTHENTICATED', malformed: 'UNAUTHENTICATED', revoked: 'UNAUTHENTICATED', other: 'NOT_FOUND', own: 'OK', admin: 'NOT_FOUND' },
      },
      { what: 'ModelMetadata', run: (k) => rpc(grpcClient, 'ModelMetadata', { name: model, version: '' }, k), expect: { none: 'UNAUTHENTICATED', malformed: 'UNAUTHENTICATED', revoked: 'UNAUTHENTICATED', other: 'NOT_FOUND', own: 'OK', admin: 'NOT_FOUND' } },
      { what: 'ModelInfer', run: (k) => rpc(grpcClient, 'ModelInfer', typed, k), expect: { none: 'UNAUTHENTICATED', malformed: 'UNAUTHENTICATED', revoked: 'UNAUTHENTICATED', other: 'NOT_FOUND', own: 'OK', admin: 'NOT_FOUND' } },
      { what: 'ModelReady', run: (k) => rpc(grpcClient, 'ModelReady', { name: model, version: '' }, k), expect: { none: 'UNAUTHENTICATED', malformed: 'UNAUTHENTICATED', revoked: 'UNAUTHENTICATED', other: 'OK', own: 'OK', admin: 'OK' } },
    ];
    for (const c of grpcCases) {
      for (const w of WHO) {
        const got = await grpcStatus(c.run(auth[w]));
        if (got !== c.expect[w]) failures.push(`gRPC ${c.what} as ${w}: ${got}, expected ${c.expect[w]}`);
      }
    }
    // ModelReady answers, and says ready only to the owner.
    for (const [w, ready] of [['other', false], ['own', true], ['admin', false]] as const) {
      assert.deepEqual(await rpc(grpcClient, 'ModelReady', { name: model, version: '' }, auth[w]), { ready }, w);
    }
    assert.deepEqual(failures, []);
  });

  test("a tenant's job reads only its own datasets", async () => {
    const spec = { ...short('data', 1000), batch_size: 1000, data: acmeData };
    const stolen = await call('POST', `${served.url}/v1/jobs`, 'other', { body: spec });
    assert.equal(stolen.status, 400);
    assert.deepEqual([(stolen.body as any).error.field, (stolen.body as any).error.message], ['data.path', `data.path: "${acmeData.path}" is not one of your datasets (upload it with POST /v1/datasets)`]);
    // Its owner's passes that check (and meets the next: 1000 workers is more than the pool).
    const own = await call('POST', `${served.url}/v1/jobs`, 'own', { body: spec });
    assert.equal((own.body as any).error.code, 'TAS_ERR_POOL_TOO_SMALL');
  });

  test("quotas: over max_workers is refused; within it waits while the tenant's jobs hold the rest; max_queued_jobs", async () => {
    const made = await call('POST', `${served.url}/v1/tenants`, 'admin', { body: { name: 'quota', max_workers: 1, max_queued_jobs: 1 } });
    const key = `Bearer ${(made.body as { api_key: string }).api_key}`;
    const as = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      fetch(`${served.url}${path}`, { method, headers: { authorization: key, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));

    const tooBig = await as('POST', '/v1/jobs', short('two-workers', 2));
    assert.equal(tooBig.status, 403);
    assert.equal(tooBig.body.error.code, 'TAS_ERR_QUOTA');
    assert.equal(tooBig.body.error.field, 'workers');
    assert.match(tooBig.body.error.message, /at most 1 \(max_workers\)/);

    const first = await as('POST', '/v1/jobs', endless('q-endless'));
    assert.equal(first.status, 201);
    // The endless job is cancelled whatever happens below (it holds a worker).
    const cancelFirst = () => as('POST', `/v1/jobs/${first.body.id}/cancel`);
    let second_: { status: number; body: any };
    try {
      await waitFor<JobStatusView>(`${served.url}/v1/jobs/${first.body.id}`, (j) => j.status === 'running', 60_000, 5, key);
      second_ = await as('POST', '/v1/jobs', short('q-second', 1), { 'idempotency-key': 'q-second' });
      assert.equal(second_.status, 201);
      // A worker is free, yet the job waits: its tenant holds its one worker.
      const waiting = await waitFor<JobStatusView & { waiting_for: { reason: string; free_workers: number } | null }>(
        `${served.url}/v1/jobs/${second_.body.id}`,
        (j) => /max_workers/.test(j.waiting_for?.reason ?? ''),
        30_000,
        5,
        key,
      );
      assert.equal(waiting.status, 'queued');
      assert.ok(waiting.waiting_for!.free_workers >= 1, JSON.stringify(waiting.waiting_for));
      assert.match(waiting.waiting_for!.reason, /tenant quota holds 1 of its 1 workers/);

      const third = await as('POST', '/v1/jobs', short('q-third', 1));
      assert.equal(third.status, 429);
      assert.equal(third.body.error.code, 'TAS_ERR_QUEUE_FULL');
      const replay = await as('POST', '/v1/jobs', short('q-second', 1), { 'idempotency-key': 'q-second' });
      assert.equal(replay.status, 200, 'a retried submission gets its job back, full queue or not');
      assert.equal(replay.body.id, second_.body.id);
    } finally {
      assert.equal((await cancelFirst()).status, 200);
    }
    const done = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${second_!.body.id}`, (j) => ['succeeded', 'failed', 'cancelled'].includes(j.status), 120_000, 5, key);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
  });

  test('rate limits: a key gets its requests per minute across both API processes, REST and gRPC together', async () => {
    const made = await call('POST', `${served.url}/v1/tenants`, 'admin', { body: { name: 'slow', requests_per_minute: 4 } });
    const key = `Bearer ${(made.body as { api_key: string }).api_key}`;
    const whoami = (url: string) => fetch(`${url}/v1/auth/whoami`, { headers: { authorization: key } });
    const statuses = [];
    for (const url of [served.url, second.url, served.url]) statuses.push((await whoami(url)).status);
    statuses.push(await grpcStatus(rpc(grpcClient, 'ModelReady', { name: 'x', version: '' }, key)));
    assert.deepEqual(statuses, [200, 200, 200, 'OK']);
    const over = await whoami(second.url);
    assert.equal(over.status, 429);
    assert.equal(((await over.json()) as { error: { code: string } }).error.code, 'TAS_ERR_RATE_LIMITED');
    assert.ok(Number(over.headers.get('retry-after')) > 0, `Retry-After: ${over.headers.get('retry-after')}`);
    assert.equal(await grpcStatus(rpc(grpcClient, 'ModelReady', { name: 'x', version: '' }, key)), 'RESOURCE_EXHAUSTED');
    // Another tenant's key and the admin's are not held back.
    assert.equal((await call('GET', `${second.url}/v1/auth/whoami`, 'own')).status, 200);
    assert.equal((await call('GET', `${second.url}/v1/auth/whoami`, 'admin')).status, 200);
  });

  test('a revoked key is refused at once by every API process', async () => {
    const made = await call('POST', `${served.url}/v1/tenants/beta/keys`, 'admin');
    const { key_id, api_key } = made.body as { key_id: string; api_key: string };
    const whoami = () => fetch(`${second.url}/v1/auth/whoami`, { headers: { authorization: `Bearer ${api_key}` } }).then((r) => r.status);
    assert.equal(await whoami(), 200, 'the second process knows (and caches) the key');
    assert.equal((await call('DELETE', `${served.url}/v1/tenants/beta/keys/${key_id}`, 'admin')).status, 204);
    // The notice reaches the second process within moments; its cache alone would keep the
    // key 30 s, so this deadline only passes through the notice.
    const deadline = Date.now() + 3000;
    let status = await whoami();
    while (status !== 401 && Date.now() < deadline) status = await whoami();
    assert.equal(status, 401);
    const listed = (await call('GET', `${served.url}/v1/tenants`, 'admin')).body as { tenants: Array<{ name: string; keys: Array<{ id: string; revoked_at: string | null }> }> };
    assert.ok(listed.tenants.find((t) => t.name === 'beta')!.keys.find((k) => k.id === key_id)!.revoked_at);
  });

  test('cross-site requests cannot change anything; CORS only for the listed origins', async () => {
    const u = served.url;
    const cancel = (headers: Record<string, string>) => call('POST', `${u}/v1/jobs/${acmeJob.id}/cancel`, 'own', { headers });
    for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }] as Array<Record<string, string>>) {
      const r = await cancel(headers);
      assert.equal(r.status, 403, JSON.stringify(headers));
      assert.equal((r.body as { error: { code: string } }).error.code, 'TAS_ERR_CROSS_SITE');
    }
    assert.equal((await cancel({ origin: new URL(u).origin })).status, 409, 'same origin: through to the job (finished)');
    for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
      const r = await call('POST', `${u}/v1/jobs`, 'own', { raw: JSON.stringify(short('form')), headers: { 'content-type': type } });
      assert.equal(r.status, 403, type);
      assert.equal((r.body as { error: { code: string } }).error.code, 'TAS_ERR_CROSS_SITE');
    }
    const upload = await call('POST', `${u}/v1/datasets?name=x&format=csv`, 'own', { raw: 'a,y\n1,0\n', headers: { 'content-type': 'text/plain' } });
    assert.equal(upload.status, 403);
    // CORS: off on the first process, on for https://dash.example on the second.
    const preflight = (url: string) => fetch(`${url}/v1/jobs`, { method: 'OPTIONS', headers: { origin: 'https://dash.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
    assert.equal((await preflight(u)).headers.get('access-control-allow-origin'), null);
    const allowed = await preflight(second.url);
    assert.equal(allowed.headers.get('access-control-allow-origin'), 'https://dash.example');
    const fromDash = await call('POST', `${second.url}/v1/jobs/${acmeJob.id}/cancel`, 'own', { headers: { origin: 'https://dash.example' } });
    assert.equal(fromDash.status, 409);
    assert.equal((await call('POST', `${second.url}/v1/jobs/${acmeJob.id}/cancel`, 'own', { headers: { origin: 'https://other.example' } })).status, 403);
  });

  test("workers take work only from their scheduler: calls without the workers' token are refused", async () => {
    const token = (await readFile(join(env.dataDir, 'worker.key'), 'utf8')).trim();
    assert.equal((await stat(join(env.dataDir, 'worker.key'))).mode & 0o777, 0o600);
    const { Client } = workerProto();
    const client = new Client(served.workers[0]!.address, grpc.credentials.createInsecure()) as any;
    const info = (md: grpc.Metadata) => new Promise<string>((ok) => client.Info({}, md, (e: grpc.ServiceError | null) => ok(e ? grpc.status[e.code]! : 'OK')));
    try {
      assert.equal(await info(new grpc.Metadata()), 'UNAUTHENTICATED');
      const wrong = new grpc.Metadata();
      wrong.set('authorization', 'Bearer guessed');
      assert.equal(await info(wrong), 'UNAUTHENTICATED');
      const right = new grpc.Metadata();
      right.set('authorization', `Bearer ${token}`);
      assert.equal(await info(right), 'OK');
      const run = client.Run({ job_id: 'intruder', generation: 1, rank: 0, world_size: 1, peers: [], spec_json: '{}', out_dir: '/tmp', data_dir: '/tmp', resume: false, timeout_ms: 0, collective_token: '' }, new grpc.Metadata());
      const status = await new Promise<string>((ok) => {
        run.on('error', (e: grpc.ServiceError) => ok(grpc.status[e.code]!));
        run.on('end', () => ok('OK'));
      });
      assert.equal(status, 'UNAUTHENTICATED');
    } finally {
      client.close();
    }
  });
});
