// Inference serving against the real pieces: models published in a fresh PostgreSQL
// schema, the gRPC server on port 0 called by a client built at run time from the
// protocol's .proto, and the REST routes on a real HTTP port. Outputs are checked against
// PyTorch's eval-mode logits of the golden fixtures.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { FastifyInstance } from 'fastify';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { Registry } from 'prom-client';
import { createBaseApp } from '../../src/api/rest/app.js';
import { createPrismaClient, type PrismaClient } from '../../src/service/db/client.js';
import { migrate } from '../../src/service/db/migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from '../../src/service/db/testing/fresh-schema.js';
import { ModelStore } from '../../src/service/models/model-store.js';
import { INFERENCE_PROTO } from '../../src/api/grpc/inference-server.js';
import { startInferenceService, type InferenceService } from '../../src/api/inference-service.js';
import { fixtureArtifactBytes, type TrainingFixture } from '../golden/artifact.js';
import { checkMaxAbs } from '../golden/fixture.js';
import { adminPrincipal } from '../../src/service/tenants/principal.js';

const unavailable = await databaseUnavailable();
// The repository's copy of the PyTorch fixtures (these two by name, whatever GOLDEN_DIR says).
const GOLDEN = new URL('../golden/fixtures/pytorch', import.meta.url).pathname;
const fixture = (name: string) => JSON.parse(readFileSync(join(GOLDEN, `${name}.json`), 'utf8')) as TrainingFixture;

/* eslint-disable @typescript-eslint/no-explicit-any -- proto-loader clients are untyped */
type Client = grpc.Client & Record<string, any>;

function clientOf(file: string, pkgPath: string, address: string, includeDirs: string[] = []): Client {
  const def = protoLoader.loadSync(file, { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs });
  let ctor: any = grpc.loadPackageDefinition(def);
  for (const p of pkgPath.split('.')) ctor = ctor[p];
  return new ctor(address, grpc.credentials.createInsecure()) as Client;
}

function unary<T>(client: Client, method: string, request: unknown): Promise<T> {
  return new Promise((ok, fail) => client[method](request, (e: grpc.ServiceError | null, r: T) => (e ? fail(e) : ok(r))));
}

async function grpcFails(p: Promise<unknown>, code: grpc.status, message: string | RegExp): Promise<void> {
  await assert.rejects(p, (e: grpc.ServiceError) => {
    assert.equal(e.code, code, `${grpc.status[e.code]}: ${e.details}`);
    if (typeof message === 'string') assert.equal(e.details, message);
    else assert.match(e.details, message);
    return true;
  });
}

interface InferResponseMsg {
  model_name: string;
  model_version: string;
  id: string;
  outputs: Array<{ name: string; datatype: string; shape: number[]; contents: { fp32_contents: number[] } | null }>;
  raw_output_contents: Buffer[];
}

const typedRequest = (model: string, x: { shape: number[]; data: number[] }, extra: Record<string, unknown> = {}) => ({
  model_name: model,
  inputs: [{ name: 'input', datatype: 'FP32', shape: x.shape, contents: { fp32_contents: x.data } }],
  ...extra,
});

const rawRequest = (model: string, shape: number[], data: Float32Array, extra: Record<string, unknown> = {}) => ({
  model_name: model,
  inputs: [{ name: 'input', datatype: 'FP32', shape }],
  raw_input_contents: [Buffer.from(data.buffer, data.byteOffset, data.byteLength)],
  ...extra,
});

function rawFloats(b: Buffer): Float32Array {
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return new Float32Array(copy.buffer);
}

interface Harness {
  schema: FreshSchema;
  prisma: PrismaClient;
  store: ModelStore;
  dir: string;
  registry: Registry;
  service: InferenceService;
  app: FastifyInstance;
  url: string;
  grpc: Client;
}

async function startServing(h: Pick<Harness, 'store'>, registry: Registry, maxRequestRows = 64): Promise<Pick<Harness, 'service' | 'app' | 'url' | 'grpc'>> {
  const service = await startInferenceService({ source: h.store, registry, grpc: { host: '127.0.0.1', port: 0 }, maxRequestRows, maxMessageBytes: 1024 * 1024, refreshMs: 60_000 });
  const app = createBaseApp();
  app.get('/metrics', async (_q, reply) => reply.header('content-type', registry.contentType).send(await registry.metrics()));
  await service.registerRoutes(app);
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { service, app, url, grpc: clientOf(INFERENCE_PROTO, 'inference.GRPCInferenceService', service.grpc!.address) };
}

async function stopServing(h: Partial<Pick<Harness, 'service' | 'app' | 'grpc'>>): Promise<void> {
  h.grpc?.close();
  await h.app?.close();
  await h.service?.close();
}

async function rest<T>(url: string, method: 'GET' | 'POST', body?: unknown): Promise<{ status: number; body: T }> {
  const r = await fetch(url, { method, ...(body !== undefined ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}) });
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : null) as T };
}

describe('inference serving', { skip: unavailable ?? false }, () => {
  const h = {} as Harness;
  const mlp = fixture('syncbn_mlp_train');
  const cnn = fixture('syncbn_cnn_train');

  before(async () => {
    h.schema = await createFreshSchema();
    await migrate(h.schema.url);
    h.prisma = createPrismaClient(h.schema.url);
    h.store = new ModelStore(h.prisma);
    h.dir = await mkdtemp(join(tmpdir(), 'tas-serving-'));
    const publish = async (name: string, file: string, bytes: Uint8Array) => {
      await writeFile(join(h.dir, file), bytes);
      return h.store.publish({ name, jobId: null, artifactPath: join(h.dir, file), metadata: {} });
    };
    await publish('mlp', 'mlp-v1.safetensors', fixtureArtifactBytes(mlp));
    await publish('cnn', 'cnn-v1.safetensors', fixtureArtifactBytes(cnn));
    h.registry = new Registry();
    Object.assign(h, await startServing(h, h.registry));
  });

  after(async () => {
    await stopServing(h);
    await h.prisma?.$disconnect();
    await h.schema?.drop();
    if (h.dir) await rm(h.dir, { recursive: true, force: true });
  });

  test('health: live, ready, the standard gRPC health service, and reflection lists the services', async () => {
    assert.deepEqual(await unary(h.grpc, 'ServerLive', {}), { live: true });
    assert.deepEqual(await unary(h.grpc, 'ServerReady', {}), { ready: true });
    const health = clientOf(healthProtoPath, 'grpc.health.v1.Health', h.service.grpc!.address);
    assert.deepEqual(await unary(health, 'Check', { service: '' }), { status: 'SERVING' });
    assert.deepEqual(await unary(health, 'Check', { service: 'inference.GRPCInferenceService' }), { status: 'SERVING' });
    health.close();

    const reflectionProto = join(resolve('node_modules/@grpc/reflection/build/proto'), 'grpc/reflection/v1/reflection.proto');
    const reflection = clientOf(reflectionProto, 'grpc.reflection.v1.ServerReflection', h.service.grpc!.address);
    const services = await new Promise<string[]>((ok, fail) => {
      const call = reflection.ServerReflectionInfo();
      call.on('data', (r: { list_services_response?: { service: Array<{ name: string }> } }) => {
        ok((r.list_services_response?.service ?? []).map((s) => s.name).sort());
        call.end();
      });
      call.on('error', fail);
      call.write({ list_services: '' });
    });
    reflection.close();
    assert.ok(services.includes('inference.GRPCInferenceService'), services.join());
    assert.ok(services.includes('grpc.health.v1.Health'), services.join());

    assert.deepEqual((await rest(`${h.url}/v2/health/live`, 'GET')).body, { live: true });
    assert.deepEqual(await rest(`${h.url}/v2/health/ready`, 'GET'), { status: 200, body: { ready: true } });
  });

  test('metadata: server and model, over gRPC and REST', async () => {
    const server = await unary<{ name: string; version: string; extensions: string[] }>(h.grpc, 'ServerMetadata', {});
    assert.equal(server.name, 'tas');
    assert.deepEqual(server.extensions, ['model_repository']);
    assert.deepEqual((await rest(`${h.url}/v2`, 'GET')).body, server);

    const expected = {
      name: 'cnn',
      versions: ['1'],
      platform: 'tas_safetensors',
      inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, ...cnn.data.x.shape.slice(1)] }],
      outputs: [{ name: 'logits', datatype: 'FP32', shape: [-1, cnn.eval.logits.shape[1]!] }],
    };
    assert.deepEqual(await unary(h.grpc, 'ModelMetadata', { name: 'cnn', version: '' }), expected);
    assert.deepEqual((await rest(`${h.url}/v2/models/cnn`, 'GET')).body, expected);
    assert.deepEqual((await rest(`${h.url}/v2/models/cnn/versions/1`, 'GET')).body, expected);
    assert.deepEqual(await unary(h.grpc, 'ModelReady', { name: 'cnn', version: '1' }), { ready: true });
    assert.deepEqual(await unary(h.grpc, 'ModelReady', { name: 'cnn', version: '7' }), { ready: false });
    assert.equal((await rest(`${h.url}/v2/models/cnn/ready`, 'GET')).status, 200);
    assert.equal((await rest(`${h.url}/v2/models/nope/ready`, 'GET')).status, 400);
  });

  test("infer equals PyTorch's eval-mode logits: typed and raw contents over gRPC, JSON over REST", async () => {
    for (const [name, fx] of [['mlp', mlp], ['cnn', cnn]] as const) {
      const typed = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', typedRequest(name, fx.eval.x, { id: 'req-1' }));
      assert.equal(typed.model_name, name);
      assert.equal(typed.model_version, '1');
      assert.equal(typed.id, 'req-1');
      assert.deepEqual(typed.outputs[0]!.shape, fx.eval.logits.shape);
      assert.deepEqual(typed.raw_output_contents, []);
      const c1 = checkMaxAbs(`${name} typed`, typed.outputs[0]!.contents!.fp32_contents, fx.eval.logits.data);
      assert.ok(c1.ok, c1.detail);

      const raw = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', rawRequest(name, fx.eval.x.shape, Float32Array.from(fx.eval.x.data)));
      assert.equal(raw.outputs[0]!.contents, null, 'raw requests get raw outputs');
      const c2 = checkMaxAbs(`${name} raw`, rawFloats(raw.raw_output_contents[0]!), fx.eval.logits.data);
      assert.ok(c2.ok, c2.detail);

      const r = await rest<{ model_name: string; model_version: string; outputs: Array<{ name: string; shape: number[]; datatype: string; data: number[] }> }>(
        `${h.url}/v2/models/${name}/infer`,
        'POST',
        { inputs: [{ name: 'input', shape: fx.eval.x.shape, datatype: 'FP32', data: fx.eval.x.data }], outputs: [{ name: 'logits' }] },
      );
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual([r.body.model_name, r.body.model_version, r.body.outputs[0]!.name, r.body.outputs[0]!.datatype], [name, '1', 'logits', 'FP32']);
      const c3 = checkMaxAbs(`${name} rest`, r.body.outputs[0]!.data, fx.eval.logits.data);
      assert.ok(c3.ok, c3.detail);
    }
  });

  test('integer inputs (a classifier\'s uint8 pixels, int64 ids) give the same outputs as the same values in FP32', async () => {
    const shape = [2, ...mlp.data.x.shape.slice(1)];
    const n = shape.reduce((a, b) => a * b, 1);
    const ints = Array.from({ length: n }, (_, i) => (i * 37) % 11);
    const asFloat = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', typedRequest('mlp', { shape, data: ints }));
    const asUint8 = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', {
      model_name: 'mlp',
      inputs: [{ name: 'input', datatype: 'UINT8', shape }],
      raw_input_contents: [Buffer.from(Uint8Array.from(ints))],
    });
    const asInt64 = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', { model_name: 'mlp', inputs: [{ name: 'input', datatype: 'INT64', shape, contents: { int64_contents: ints } }] });
    const viaRest = await rest<{ outputs: Array<{ data: number[] }> }>(`${h.url}/v2/models/mlp/infer`, 'POST', { inputs: [{ name: 'input', shape, datatype: 'INT32', data: ints }] });
    const reference = asFloat.outputs[0]!.contents!.fp32_contents;
    assert.deepEqual([...rawFloats(asUint8.raw_output_contents[0]!)], reference);
    assert.deepEqual(asInt64.outputs[0]!.contents!.fp32_contents, reference);
    assert.deepEqual(viaRest.body.outputs[0]!.data, reference);
  });

  test('errors: gRPC status codes and Triton-style messages; REST {"error"} bodies', async () => {
    const x = mlp.eval.x;
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('nope', x)), grpc.status.NOT_FOUND, "Request for unknown model: 'nope' is not found");
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('mlp', x, { model_version: '9' })), grpc.status.NOT_FOUND, "Request for unknown model: 'mlp' version 9 is not found");
    await grpcFails(unary(h.grpc, 'ModelMetadata', { name: 'mlp', version: 'v1' }), grpc.status.NOT_FOUND, /version v1 is not found/);
    await grpcFails(
      unary(h.grpc, 'ModelInfer', { model_name: 'mlp', inputs: [{ name: 'input', datatype: 'BYTES', shape: [1, 12], contents: { bytes_contents: [Buffer.from('a')] } }] }),
      grpc.status.INVALID_ARGUMENT,
      "inference input data-type is 'BYTES', model expects 'FP32' for 'mlp'",
    );
    await grpcFails(
      unary(h.grpc, 'ModelInfer', typedRequest('mlp', { shape: [3, 5], data: new Array(15).fill(0) })),
      grpc.status.INVALID_ARGUMENT,
      "unexpected shape for input 'input' for model 'mlp'. Expected [-1,12], got [3,5]",
    );
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('mlp', { shape: [2, 12], data: new Array(23).fill(0) })), grpc.status.INVALID_ARGUMENT, /Expected 24, got 23/);
    await grpcFails(
      unary(h.grpc, 'ModelInfer', { ...typedRequest('mlp', x), inputs: [{ name: 'pixels', datatype: 'FP32', shape: x.shape, contents: { fp32_contents: x.data } }] }),
      grpc.status.INVALID_ARGUMENT,
      "unexpected inference input 'pixels' for model 'mlp'",
    );
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('mlp', x, { outputs: [{ name: 'probs' }] })), grpc.status.INVALID_ARGUMENT, "unexpected inference output 'probs' for model 'mlp'");
    await grpcFails(
      unary(h.grpc, 'ModelInfer', { model_name: 'mlp', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, 12], contents: { fp32_contents: new Array(12).fill(0) } }], raw_input_contents: [Buffer.alloc(48)] }),
      grpc.status.INVALID_ARGUMENT,
      /contents field must not be specified when using raw_input_contents/,
    );
    // Too large: more rows than one request may carry, and a message over the size limit.
    await grpcFails(unary(h.grpc, 'ModelInfer', rawRequest('mlp', [65, 12], new Float32Array(65 * 12))), grpc.status.INVALID_ARGUMENT, "inference request batch-size must be <= 64 for 'mlp'");
    await grpcFails(unary(h.grpc, 'ModelInfer', rawRequest('mlp', [30000, 12], new Float32Array(30000 * 12))), grpc.status.RESOURCE_EXHAUSTED, /larger than max/);

    const r1 = await rest<{ error: string }>(`${h.url}/v2/models/mlp/infer`, 'POST', { inputs: [{ name: 'input', shape: [3, 5], datatype: 'FP32', data: new Array(15).fill(0) }] });
    assert.deepEqual(r1, { status: 400, body: { error: "unexpected shape for input 'input' for model 'mlp'. Expected [-1,12], got [3,5]" } });
    const r2 = await rest<{ error: string }>(`${h.url}/v2/models/mlp/infer`, 'POST', { inputs: [{ name: 'input', shape: [1, 12], datatype: 'BOOL', data: new Array(12).fill(true) }] });
    assert.deepEqual(r2, { status: 400, body: { error: "inference input data-type is 'BOOL', model expects 'FP32' for 'mlp'" } });
    const r3 = await rest<{ error: string }>(`${h.url}/v2/models/nope/infer`, 'POST', { inputs: [{ name: 'input', shape: [1, 12], datatype: 'FP32', data: new Array(12).fill(0) }] });
    assert.deepEqual(r3, { status: 404, body: { error: "Request for unknown model: 'nope' is not found" } });
    const r4 = await rest<{ error: string }>(`${h.url}/v2/models/mlp/infer`, 'POST', { inputs: [{ name: 'input', shape: [1, 12], datatype: 'FP32' }] });
    assert.equal(r4.status, 400);
    assert.match(r4.body.error, /data/);
    const big = await fetch(`${h.url}/v2/models/mlp/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [{ name: 'input', shape: [1, 12], datatype: 'FP32', data: new Array(300_000).fill(0.5) }] }) });
    assert.equal(big.status, 413);
    assert.match(((await big.json()) as { error: string }).error, /larger than/);
  });

  test("Triton's ModelStreamInfer: many requests on one stream, answered by id with their own rows, a bad one with error_message", async () => {
    const stream = h.grpc.ModelStreamInfer() as grpc.ClientDuplexStream<unknown, { error_message: string; infer_response: InferResponseMsg }>;
    const answers: Array<{ error_message: string; infer_response: InferResponseMsg }> = [];
    const done = new Promise<void>((ok, fail) => {
      stream.on('data', (m) => answers.push(m));
      stream.on('end', ok);
      stream.on('error', fail);
    });
    // Request i carries row i % N of the fixture's eval input: answers batched together
    // and written out together must each hold the logits of their own row.
    const x = mlp.eval.x;
    const n = x.shape[0]!, per = x.data.length / n, outPer = mlp.eval.logits.data.length / n;
    const rowOf = <T>(data: ArrayLike<T>, r: number, width: number): T[] => Array.from({ length: width }, (_, j) => data[r * width + j]!);
    for (let i = 0; i < 60; i++) stream.write(typedRequest('mlp', { shape: [1, per], data: rowOf(x.data, i % n, per) }, { id: `s${i}`, model_version: '1' }));
    stream.write(typedRequest('mlp', { shape: [1, 3], data: [1, 2, 3] }, { id: 'bad' }));
    stream.end();
    await done;
    assert.equal(answers.length, 61);
    const bad = answers.find((a) => a.infer_response.id === 'bad')!;
    assert.equal(bad.error_message, "unexpected shape for input 'input' for model 'mlp'. Expected [-1,12], got [1,3]");
    const good = answers.filter((a) => a.infer_response.id !== 'bad');
    assert.deepEqual(good.map((a) => a.infer_response.id).sort(), Array.from({ length: 60 }, (_, i) => `s${i}`).sort());
    for (const a of good) {
      assert.equal(a.error_message, '');
      const i = Number(a.infer_response.id.slice(1));
      const c = checkMaxAbs(a.infer_response.id, a.infer_response.outputs[0]!.contents!.fp32_contents, rowOf(mlp.eval.logits.data, i % n, outPer));
      assert.ok(c.ok, c.detail);
    }
  });

  test('dynamic batching under concurrency: every caller gets exactly its own rows', async () => {
    const reload = await rest(`${h.url}/v2/repository/models/cnn/load`, 'POST', { parameters: { config: JSON.stringify({ max_batch_size: 16, dynamic_batching: { max_queue_delay_microseconds: 2000 } }) } });
    assert.equal(reload.status, 200, JSON.stringify(reload.body));
    const per = cnn.eval.x.shape.slice(1).reduce((a, b) => a * b, 1);
    const rowsOf = (seed: number, rows: number) => Float32Array.from({ length: rows * per }, (_, i) => Math.sin(seed * 7.3 + i * 0.37));
    const requests = Array.from({ length: 120 }, (_, i) => ({ seed: i, rows: 1 + (i % 4) }));
    // References one at a time (each its own batch), then all at once over both bindings.
    const alone: Float32Array[] = [];
    for (const r of requests) {
      const res = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', rawRequest('cnn', [r.rows, ...cnn.data.x.shape.slice(1)], rowsOf(r.seed, r.rows)));
      alone.push(rawFloats(res.raw_output_contents[0]!));
    }
    const before = await batchSizeSum(h.registry);
    const together = await Promise.all(
      requests.map(async (r, i) => {
        const input = rowsOf(r.seed, r.rows);
        if (i % 2 === 0) {
          const res = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', rawRequest('cnn', [r.rows, ...cnn.data.x.shape.slice(1)], input));
          return rawFloats(res.raw_output_contents[0]!);
        }
        const res = await rest<{ outputs: Array<{ data: number[]; shape: number[] }> }>(`${h.url}/v2/models/cnn/infer`, 'POST', {
          inputs: [{ name: 'input', shape: [r.rows, ...cnn.data.x.shape.slice(1)], datatype: 'FP32', data: Array.from(input) }],
        });
        assert.deepEqual(res.body.outputs[0]!.shape[0], r.rows);
        return Float32Array.from(res.body.outputs[0]!.data);
      }),
    );
    for (const [i, out] of together.entries()) {
      const c = checkMaxAbs(`request ${i}`, out, alone[i]!, 1e-5);
      assert.ok(c.ok, c.detail);
    }
    // Batches did form: fewer batches than requests.
    const after = await batchSizeSum(h.registry);
    const batches = after.count - before.count;
    assert.equal(after.sum - before.sum, requests.reduce((n, r) => n + r.rows, 0));
    assert.ok(batches < requests.length, `${batches} batches for ${requests.length} requests`);
  });

  test('versions: a new version becomes the default, older ones stay callable', async () => {
    await writeFile(join(h.dir, 'mlp-v2.safetensors'), fixtureArtifactBytes(mlp, 'initial_state'));
    assert.equal(await h.store.publish({ name: 'mlp', jobId: null, artifactPath: join(h.dir, 'mlp-v2.safetensors'), metadata: {} }), 2);
    await h.service.repository.refresh();
    const meta = await unary<{ versions: string[] }>(h.grpc, 'ModelMetadata', { name: 'mlp', version: '' });
    assert.deepEqual(meta.versions, ['1', '2']);
    const dflt = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', typedRequest('mlp', mlp.eval.x));
    const v1 = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', typedRequest('mlp', mlp.eval.x, { model_version: '1' }));
    assert.equal(dflt.model_version, '2');
    assert.equal(v1.model_version, '1');
    assert.notDeepEqual(dflt.outputs[0]!.contents!.fp32_contents, v1.outputs[0]!.contents!.fp32_contents);
    assert.ok(checkMaxAbs('v1', v1.outputs[0]!.contents!.fp32_contents, mlp.eval.logits.data).ok);
    const viaRest = await rest<{ model_version: string }>(`${h.url}/v2/models/mlp/versions/1/infer`, 'POST', { inputs: [{ name: 'input', shape: mlp.eval.x.shape, datatype: 'FP32', data: mlp.eval.x.data }] });
    assert.equal(viaRest.body.model_version, '1');
  });

  test('unload and load on request; a restarted server serves the same models', async () => {
    assert.equal((await rest(`${h.url}/v2/repository/models/cnn/unload`, 'POST')).status, 200);
    assert.deepEqual(await unary(h.grpc, 'ModelReady', { name: 'cnn', version: '' }), { ready: false });
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('cnn', cnn.eval.x)), grpc.status.UNAVAILABLE, /model 'cnn' version 1 is not ready: unloaded on request/);
    const index = await rest<Array<{ name: string; version: string; state: string }>>(`${h.url}/v2/repository/index`, 'POST');
    assert.deepEqual(index.body.map((e) => `${e.name}/${e.version}:${e.state}`), ['cnn/1:UNLOADED', 'mlp/1:READY', 'mlp/2:READY']);
    assert.equal((await rest(`${h.url}/v2/repository/models/nope/load`, 'POST')).status, 404);

    // Restart: the new server reads what is served from the database.
    await stopServing(h);
    Object.assign(h, await startServing(h, new Registry()));
    assert.deepEqual(await unary(h.grpc, 'ModelReady', { name: 'cnn', version: '' }), { ready: false });
    assert.deepEqual(await unary(h.grpc, 'ModelReady', { name: 'mlp', version: '2' }), { ready: true });
    assert.equal((await rest(`${h.url}/v2/repository/models/cnn/load`, 'POST', {})).status, 200);
    const out = await unary<InferResponseMsg>(h.grpc, 'ModelInfer', typedRequest('cnn', cnn.eval.x));
    assert.ok(checkMaxAbs('cnn after reload', out.outputs[0]!.contents!.fp32_contents, cnn.eval.logits.data).ok);
    // The batching settings set before the restart were kept.
    assert.deepEqual((await h.store.list(adminPrincipal())).find((m) => m.name === 'cnn')!.serving, { loaded: true, maxBatchSize: 16, maxQueueDelayUs: 2000 });
  });

  test('metrics: requests, failures, queue and compute time, batch sizes, pending, per model', async () => {
    const registry = new Registry();
    await stopServing(h);
    Object.assign(h, await startServing(h, registry));
    h.registry = registry;
    await unary(h.grpc, 'ModelInfer', typedRequest('mlp', mlp.eval.x));
    await rest(`${h.url}/v2/models/mlp/infer`, 'POST', { inputs: [{ name: 'input', shape: mlp.eval.x.shape, datatype: 'FP32', data: mlp.eval.x.data }] });
    await grpcFails(unary(h.grpc, 'ModelInfer', typedRequest('mlp', { shape: [1, 3], data: [1, 2, 3] })), grpc.status.INVALID_ARGUMENT, /unexpected shape/);
    // A check only the gRPC binding makes counts too (version as the request named it).
    await grpcFails(unary(h.grpc, 'ModelInfer', { ...rawRequest('mlp', [1, 12], new Float32Array(12)), raw_input_contents: [Buffer.alloc(48), Buffer.alloc(48)] }), grpc.status.INVALID_ARGUMENT, /expected 1 raw input contents but got 2/);
    const text = await (await fetch(`${h.url}/metrics`)).text();
    assert.match(text, /tas_inference_request_success_total\{model="mlp",version="2",protocol="grpc"\} 1/);
    assert.match(text, /tas_inference_request_success_total\{model="mlp",version="2",protocol="rest"\} 1/);
    assert.match(text, /tas_inference_request_failure_total\{model="mlp",version="2",protocol="grpc",reason="SHAPE_MISMATCH"\} 1/);
    assert.match(text, /tas_inference_request_failure_total\{model="mlp",version="",protocol="grpc",reason="INVALID_INPUT"\} 1/);
    assert.match(text, /tas_inference_queue_duration_seconds_count\{model="mlp",version="2"\} 2/);
    assert.match(text, /tas_inference_compute_duration_seconds_count\{model="mlp",version="2"\} 2/);
    assert.match(text, new RegExp(`tas_inference_batch_size_sum\\{model="mlp",version="2"\\} ${2 * mlp.eval.x.shape[0]!}`));
    assert.match(text, /tas_inference_pending_requests\{model="mlp",version="2"\} 0/);
  });
});

/** Sum and count of the batch-size histogram over every model. */
async function batchSizeSum(registry: Registry): Promise<{ sum: number; count: number }> {
  const m = await registry.getSingleMetric('tas_inference_batch_size')!.get();
  let sum = 0;
  let count = 0;
  for (const v of m.values as Array<{ value: number; metricName?: string }>) {
    if (v.metricName === 'tas_inference_batch_size_sum') sum += v.value;
    if (v.metricName === 'tas_inference_batch_size_count') count += v.value;
  }
  return { sum, count };
}
