/**
 * bench:infer: serving the quickstart model (trained here first: examples/quickstart.json).
 *
 * The inference server runs in this process as the service runs it (model repository on
 * the real PostgreSQL, a fresh schema; metrics on; one inference thread; gRPC and REST);
 * the load comes from a child process (its own event loop and core, as perf_analyzer
 * would), with C requests in flight, each one row, for a few seconds per case:
 *   - gRPC ModelInfer, ModelStreamInfer and REST at concurrency 1, 16 and 64 with dynamic
 *     batching (the model's defaults: max batch 64, no added queue delay);
 *   - the same at concurrency 64 with batching off (max batch 1): the speedup;
 *   - the peer: the same model exported to ONNX (GET .../onnx's exporter) and run by
 *     onnxruntime-node in this process, one row per `run`, C runs in flight; at c=64 once
 *     before and once after the server cases (this machine's speed drifts within a run;
 *     the checks use the mean).
 * Unary ModelInfer and REST load comes from nghttp2's h2load where it is installed
 * (Debian nghttp2-client; Node's HTTP clients cost as much CPU per call as the server on
 * the same 2 cores), else from lean Node clients; the Node clients also run at c=64.
 * Each case also reports the CPU time per request of the server (this process, every
 * thread) and of the load generator, the average rows per batch the server ran, and the
 * requests the server answered and failed (its own counters, warm-up included: h2load
 * cannot read gRPC trailers, so server_failed = 0 is what shows its calls succeeded).
 * Prints one JSON line per case, then the checks against the serving targets: gRPC at
 * c=64 at least half the rate of onnxruntime in-process, dynamic batching at least 3x.
 *
 *   npm run bench:infer [-- --seconds 3]
 *
 * For profiling: BENCH_CASES=grpc-stream/64,rest/16 runs only those cases (and no
 * checks); BENCH_PEER=0 skips the peer; BENCH_PROFILE=DIR (existing) writes a CPU profile
 * of the server's main thread over each case's measured window; BENCH_PERF=1 runs `perf stat`
 * (events from BENCH_PERF_EVENTS, default syscalls and context switches) on the server
 * over the window, BENCH_PERF=record `perf record -g` to /tmp/perf.data;
 * BENCH_QUEUE_DELAY_MS sets the batched cases' max queue delay (default 0).
 * Last, the tensor backends side by side on a larger model (BENCH_BACKENDS, default
 * native,wasm; empty skips them; BENCH_CASES=backends runs only them): see backendCases.
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import inspector from 'node:inspector';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Registry } from 'prom-client';
import protobuf from 'protobufjs';
import { createBaseApp } from '../src/api/rest/app.js';
import { createPrismaClient } from '../src/service/db/client.js';
import { migrate } from '../src/service/db/migrate.js';
import { createFreshSchema } from '../src/service/db/testing/fresh-schema.js';
import { ModelStore } from '../src/service/models/model-store.js';
import { INFERENCE_PROTO, PROTO_OPTIONS } from '../src/api/grpc/inference-server.js';
import { startInferenceService } from '../src/api/inference-service.js';
import { exportOnnx } from '../src/inference/onnx-export.js';
import { readArtifact } from '../src/trainer/artifact/artifact.js';
import { initBackend } from '../src/trainer/backend.js';
import { runLocalJob } from '../src/trainer/engine/local-job.js';
import { MLP } from './train/models.js';
import { DEFAULT_TENANT_ID } from '../src/service/tenants/principal.js';

interface LoadArgs {
  /**
   * grpc: ModelInfer from a lean HTTP/2 gRPC client (pre-encoded requests, as h2load
   * drives a gRPC server); grpc-h2load: the same from nghttp2's h2load (C; used where
   * installed, Debian nghttp2-client), which costs a fraction of Node's HTTP/2 client; grpc-js: ModelInfer from @grpc/grpc-js's client; grpc-stream:
   * Triton's ModelStreamInfer, C requests in flight on one stream, from a lean HTTP/2
   * client (as perf_analyzer --streaming, a C++ client, drives Triton); grpc-js-stream: the
   * same from grpc-js's client; rest: HTTP/1.1 keep-alive (node:http); rest-h2load: the
   * same from h2load.
   */
  transport: 'grpc' | 'grpc-h2load' | 'grpc-js' | 'grpc-stream' | 'grpc-js-stream' | 'rest' | 'rest-h2load';
  target: string;
  model: string;
  concurrency: number;
  seconds: number;
  features: number;
  /** Output floats per row. */
  outFloats: number;
}

interface LoadResult {
  requests: number;
  errors: number;
  firstError: string | null;
  latenciesMs: number[];
  seconds: number;
  /** CPU time (user + system, every thread) the load generator spent in the measured window. */
  cpuMs: number;
}

/** C closed loops, one row per request; returns every latency. */
async function closedLoop(concurrency: number, seconds: number, once: (i: number) => Promise<void>): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | null = null;
  // Warm-up (connections, JIT on both sides): one second of the same load, not measured.
  const warmEnd = performance.now() + 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      for (let i = lane; performance.now() < warmEnd; i += concurrency) await once(i).catch(() => undefined);
    }),
  );
  process.send?.({ mark: 'start' });
  const started = performance.now();
  const cpu0 = process.cpuUsage();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      for (let i = lane; performance.now() < end; i += concurrency) {
        const t0 = performance.now();
        try {
          await once(i);
          latencies.push(performance.now() - t0);
        } catch (e) {
          errors++;
          firstError ??= (e as Error).message;
        }
      }
    }),
  );
  const cpu = process.cpuUsage(cpu0);
  return { requests: latencies.length, errors, firstError, latenciesMs: latencies, seconds: (performance.now() - started) / 1000, cpuMs: (cpu.user + cpu.system) / 1000 };
}

/** Rows of the spirals' input range, different per request. */
function row(i: number, features: number): Float32Array {
  return Float32Array.from({ length: features }, (_, j) => Math.sin(i * 0.61 + j * 1.7));
}

interface StreamAnswer {
  error_message: string;
  infer_response: { id: string } | null;
}

/** error_message and infer_response.id of a ModelStreamInferResponse, read off the wire. */
function peekStreamAnswer(msg: Uint8Array): { errorMessage: string; inferResponse?: { id: string } } {
  const r = protobuf.Reader.create(msg);
  let errorMessage = '';
  let id: string | undefined;
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === ((1 << 3) | 2)) errorMessage = r.string();
    else if (tag === ((2 << 3) | 2)) {
      const end = r.uint32() + r.pos;
      while (r.pos < end) {
        const t = r.uint32();
        if (t === ((3 << 3) | 2)) id = r.string();
        else r.skipType(t & 7);
      }
    } else r.skipType(tag & 7);
  }
  return { errorMessage, ...(id === undefined ? {} : { inferResponse: { id } }) };
}

/** A gRPC message on the wire: 1-byte compressed flag, 4-byte big-endian length, the protobuf. */
function grpcFrame(message: Uint8Array): Buffer {
  const b = Buffer.alloc(5 + message.length);
  b.writeUInt32BE(message.length, 1);
  b.set(message, 5);
  return b;
}

async function load(a: LoadArgs): Promise<LoadResult> {
  if (a.transport === 'grpc-h2load' || a.transport === 'rest-h2load') {
    // h2load sends one pre-encoded request, C at a time, for `seconds` after a second of
    // warm-up, and logs each response (HTTP status, microseconds): gRPC on one HTTP/2
    // connection, REST on C HTTP/1.1 keep-alive connections. It cannot read gRPC
    // trailers: the server's own success and failure counters, which the bench prints
    // beside every case, show that every request succeeded.
    const dir = await mkdtemp(join(tmpdir(), 'tas-h2load-'));
    try {
      let args: string[];
      if (a.transport === 'grpc-h2load') {
        const root = await protobuf.load(INFERENCE_PROTO);
        const Req = root.lookupType('inference.ModelInferRequest');
        writeFileSync(join(dir, 'req.bin'), grpcFrame(Req.encode(Req.fromObject({ modelName: a.model, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, a.features] }], rawInputContents: [Buffer.from(row(0, a.features).buffer)] })).finish()));
        args = ['-c', '1', '-m', String(a.concurrency), '-H', 'content-type: application/grpc', '-H', 'te: trailers', `http://${a.target}/inference.GRPCInferenceService/ModelInfer`];
      } else {
        writeFileSync(join(dir, 'req.bin'), JSON.stringify({ inputs: [{ name: 'input', shape: [1, a.features], datatype: 'FP32', data: Array.from(row(0, a.features)) }] }));
        args = ['--h1', '-c', String(a.concurrency), '-m', '1', '-H', 'content-type: application/json', `${a.target}/v2/models/${a.model}/infer`];
      }
      args.unshift('-D', String(a.seconds), '--warm-up-time=1', '-d', join(dir, 'req.bin'), `--log-file=${join(dir, 'log')}`);
      // bash's `times` prints the CPU time of its children (h2load) on its second line.
      const child = spawn('bash', ['-c', 'h2load "$@" > /dev/null && times', 'h2load', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const warm = setTimeout(() => process.send?.({ mark: 'start' }), 1000);
      const code = await new Promise<number | null>((r) => child.once('exit', r));
      clearTimeout(warm);
      if (code !== 0) throw new Error(`h2load exited with ${code}`);
      const [user, sys] = (out.trim().split('\n')[1] ?? '').split(' ').map((t) => {
        const m = /(\d+)m([\d.]+)s/.exec(t);
        return m ? Number(m[1]) * 60_000 + Number(m[2]) * 1000 : Number.NaN;
      });
      const latenciesMs: number[] = [];
      let errors = 0;
      let firstError: string | null = null;
      for (const line of readFileSync(join(dir, 'log'), 'utf8').split('\n')) {
        const [, status, us] = line.split('\t');
        if (status === undefined) continue;
        if (status === '200') latenciesMs.push(Number(us) / 1000);
        else {
          errors++;
          firstError ??= `HTTP status ${status} after ${us} us`;
        }
      }
      return { requests: latenciesMs.length, errors, firstError, latenciesMs, seconds: a.seconds, cpuMs: user! + sys! };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (a.transport === 'grpc') {
    // The load generator's own cost must stay below the server's: grpc-js's client costs
    // more per call than its server (it would measure itself), so requests are encoded
    // once and sent as raw HTTP/2 streams; every answer is checked (grpc-status 0).
    const root = await protobuf.load(INFERENCE_PROTO);
    const Req = root.lookupType('inference.ModelInferRequest');
    const bodies = Array.from({ length: 256 }, (_, i) =>
      grpcFrame(Req.encode(Req.fromObject({ modelName: a.model, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, a.features] }], rawInputContents: [Buffer.from(row(i, a.features).buffer)] })).finish()),
    );
    const session = http2.connect(`http://${a.target}`);
    const headers = { ':method': 'POST', ':path': '/inference.GRPCInferenceService/ModelInfer', 'content-type': 'application/grpc', te: 'trailers' };
    const once = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const req = session.request(headers);
        let status: string | undefined;
        req.on('response', (h) => (status = h['grpc-status'] as string | undefined));
        req.on('trailers', (t) => (status = (t['grpc-status'] as string | undefined) ?? status));
        req.on('data', () => undefined);
        req.on('end', () => (status === '0' ? resolve() : reject(new Error(`grpc-status ${status}`))));
        req.on('error', reject);
        req.end(bodies[i % bodies.length]);
      });
    const r = await closedLoop(a.concurrency, a.seconds, once);
    session.close();
    return r;
  }
  if (a.transport === 'grpc-stream') {
    // One ModelStreamInfer stream. Each lane has at most one request in flight, so the
    // lane number is the request id: requests are encoded once per lane; what the lanes
    // write in one turn of the event loop leaves in one HTTP/2 write (as a C++ client's
    // completion queue batches them). Every answer is decoded far enough to check it: no
    // error_message, a known id, one FP32 output of `outBytes` raw bytes.
    const root = await protobuf.load(INFERENCE_PROTO);
    const Req = root.lookupType('inference.ModelInferRequest');
    const Res = root.lookupType('inference.ModelStreamInferResponse');
    const bodies = Array.from({ length: a.concurrency }, (_, lane) =>
      Array.from({ length: 4 }, (_, k) =>
        grpcFrame(Req.encode(Req.fromObject({ modelName: a.model, id: String(lane), inputs: [{ name: 'input', datatype: 'FP32', shape: [1, a.features] }], rawInputContents: [Buffer.from(row(lane * 4 + k, a.features).buffer)] })).finish()),
      ),
    );
    const session = http2.connect(`http://${a.target}`);
    const stream = session.request({ ':method': 'POST', ':path': '/inference.GRPCInferenceService/ModelStreamInfer', 'content-type': 'application/grpc', te: 'trailers' });
    const waiting: Array<{ resolve(): void; reject(e: Error): void } | undefined> = new Array(a.concurrency);
    const failAll = (e: Error) => {
      for (let i = 0; i < waiting.length; i++) {
        waiting[i]?.reject(e);
        waiting[i] = undefined;
      }
    };
    let pending: Buffer = Buffer.alloc(0);
    let checked = 0;
    stream.on('data', (chunk: Buffer) => {
      let buf = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      while (buf.length >= 5) {
        const len = buf.readUInt32BE(1);
        if (buf.length < 5 + len) break;
        const msg = buf.subarray(5, 5 + len);
        buf = buf.subarray(5 + len);
        // Every 64th answer decoded in full (one raw output of the right size); the id
        // and error read off the others.
        let m: { errorMessage: string; inferResponse?: { id: string } };
        if ((checked++ & 63) === 0) {
          const full = Res.decode(msg) as unknown as { errorMessage: string; inferResponse?: { id: string; rawOutputContents: Uint8Array[] } };
          const raw = full.inferResponse?.rawOutputContents ?? [];
          if (!full.errorMessage && (raw.length !== 1 || raw[0]!.length !== a.outFloats * 4)) return failAll(new Error(`unexpected output: ${JSON.stringify(full.inferResponse)}`));
          m = full;
        } else {
          m = peekStreamAnswer(msg);
        }
        const lane = Number(m.inferResponse?.id);
        const w = waiting[lane];
        if (!w) return failAll(new Error(`answer for unknown id ${m.inferResponse?.id}`));
        waiting[lane] = undefined;
        if (m.errorMessage) w.reject(new Error(m.errorMessage));
        else w.resolve();
      }
      pending = buf;
    });
    stream.on('error', failAll);
    stream.on('close', () => failAll(new Error(`stream closed (HTTP/2 code ${stream.rstCode})`)));
    let out: Buffer[] = [];
    const flush = () => {
      const b = out.length === 1 ? out[0]! : Buffer.concat(out);
      out = [];
      stream.write(b);
    };
    const once = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const lane = i % a.concurrency;
        waiting[lane] = { resolve, reject };
        if (out.length === 0) process.nextTick(flush);
        out.push(bodies[lane]![(i / a.concurrency) & 3]!);
      });
    const r = await closedLoop(a.concurrency, a.seconds, once);
    stream.end();
    session.close();
    return r;
  }
  if (a.transport === 'grpc-js-stream') {
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(INFERENCE_PROTO, PROTO_OPTIONS)) as unknown as {
      inference: { GRPCInferenceService: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & { ModelStreamInfer: () => grpc.ClientDuplexStream<unknown, StreamAnswer> } };
    };
    const client = new pkg.inference.GRPCInferenceService(a.target, grpc.credentials.createInsecure());
    const stream = client.ModelStreamInfer();
    // Answers come as requests complete: match them by id.
    const waiting = new Map<string, { resolve(): void; reject(e: Error): void }>();
    stream.on('data', (m: StreamAnswer) => {
      const w = waiting.get(m.infer_response?.id ?? '');
      if (!w) return;
      waiting.delete(m.infer_response!.id);
      if (m.error_message) w.reject(new Error(m.error_message));
      else w.resolve();
    });
    stream.on('error', (e: Error) => {
      for (const w of waiting.values()) w.reject(e);
    });
    let next = 0;
    const once = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const id = String(next++);
        waiting.set(id, { resolve, reject });
        stream.write({ model_name: a.model, id, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, a.features] }], raw_input_contents: [Buffer.from(row(i, a.features).buffer)] });
      });
    const r = await closedLoop(a.concurrency, a.seconds, once);
    stream.end();
    client.close();
    return r;
  }
  if (a.transport === 'grpc-js') {
    const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(INFERENCE_PROTO, PROTO_OPTIONS)) as unknown as {
      inference: { GRPCInferenceService: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & { ModelInfer: (req: unknown, cb: (e: Error | null) => void) => void } };
    };
    const client = new pkg.inference.GRPCInferenceService(a.target, grpc.credentials.createInsecure());
    const once = (i: number) =>
      new Promise<void>((resolve, reject) => {
        const x = row(i, a.features);
        client.ModelInfer(
          { model_name: a.model, inputs: [{ name: 'input', datatype: 'FP32', shape: [1, a.features] }], raw_input_contents: [Buffer.from(x.buffer)] },
          (e) => (e ? reject(e) : resolve()),
        );
      });
    const r = await closedLoop(a.concurrency, a.seconds, once);
    client.close();
    return r;
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: a.concurrency });
  const url = new URL(`${a.target}/v2/models/${a.model}/infer`);
  const once = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, a.features], datatype: 'FP32', data: Array.from(row(i, a.features)) }] });
      const req = http.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  const r = await closedLoop(a.concurrency, a.seconds, once);
  agent.destroy();
  return r;
}

const CLIENT: Readonly<Record<LoadArgs['transport'], string>> = { 'grpc-h2load': 'h2load', 'rest-h2load': 'h2load', grpc: 'raw-http2', 'grpc-js': 'grpc-js', 'grpc-stream': 'raw-http2', 'grpc-js-stream': 'grpc-js', rest: 'http1-keepalive' };

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
}

function summary(r: LoadResult & { serverCpuMs?: number }) {
  const sorted = r.latenciesMs.sort((a, b) => a - b);
  const perRequest = (ms: number) => (r.requests > 0 ? +((ms * 1000) / r.requests).toFixed(1) : null);
  return {
    rps: Math.round(r.requests / r.seconds),
    p50_ms: +quantile(sorted, 0.5).toFixed(3),
    p99_ms: +quantile(sorted, 0.99).toFixed(3),
    requests: r.requests,
    errors: r.errors,
    ...(r.firstError ? { first_error: r.firstError } : {}),
    // CPU per request (µs, user + system, every thread): where the 2 cores go.
    ...(r.serverCpuMs === undefined ? {} : { server_cpu_us_per_req: perRequest(r.serverCpuMs), client_cpu_us_per_req: perRequest(r.cpuMs) }),
  };
}

/**
 * Runs the load in a child process; `serverCpuMs` is this process's CPU time (every thread)
 * over the child's measured window. BENCH_PROFILE=DIR writes a CPU profile of this
 * process's main thread over that window to DIR (one file per case).
 */
let profiles = 0;
async function runLoad(args: LoadArgs): Promise<LoadResult & { serverCpuMs: number }> {
  const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], env: { ...process.env, TAS_BENCH_LOAD: JSON.stringify(args) } });
  const profileDir = process.env.BENCH_PROFILE;
  const profiler = profileDir ? new inspector.Session() : null;
  profiler?.connect();
  const post = (method: string) => new Promise<unknown>((res, rej) => profiler!.post(method, (e, r) => (e ? rej(e) : res(r))));
  let cpu0 = process.cpuUsage();
  let perfProc: ReturnType<typeof spawn> | undefined;
  return new Promise((resolve, reject) => {
    child.on('message', (m: LoadResult | { mark: 'start' }) => {
      if ('mark' in m) {
        cpu0 = process.cpuUsage();
        if (process.env.BENCH_PERF) perfProc = spawn('perf', process.env.BENCH_PERF === 'record' ? ['record', '-F', '2000', '-g', '-o', '/tmp/perf.data', '-p', String(process.pid)] : ['stat', '-e', process.env.BENCH_PERF_EVENTS ?? 'raw_syscalls:sys_enter,context-switches', '--per-thread', '-p', String(process.pid)], { stdio: ['ignore', 'inherit', 'inherit'] });
        if (profiler) void post('Profiler.enable').then(() => post('Profiler.start'));
        return;
      }
      const cpu = process.cpuUsage(cpu0);
      perfProc?.kill('SIGINT');
      const done = { ...m, serverCpuMs: (cpu.user + cpu.system) / 1000 };
      if (!profiler) return resolve(done);
      void post('Profiler.stop').then((r) => {
        writeFileSync(join(profileDir!, `${++profiles}-${args.transport}-${args.concurrency}.cpuprofile`), JSON.stringify((r as { profile: unknown }).profile));
        profiler.disconnect();
        resolve(done);
      }, reject);
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`load generator exited (${code}) without a result`)));
  });
}

/**
 * The same serving path on each tensor backend (BENCH_BACKENDS, default native,wasm),
 * with a model whose forward is compute, not bookkeeping: bench:train's MLP
 * 784-512-512-10 with BatchNorm. The inference threads take the backend from
 * TAS_BACKEND when they start, so each backend gets a service of its own. ModelStreamInfer
 * (the least per-request overhead) at concurrency 1 and 64, dynamic batching on.
 */
async function backendCases(store: ModelStore, seconds: number, dir: string): Promise<void> {
  const name = 'bench-mlp-784';
  const trained = await runLocalJob(
    {
      name,
      model: MLP.spec,
      data: { type: 'synthetic', generator: 'blobs', features: 784, n: 512, classes: 10, seed: 1 },
      optimizer: { type: 'sgd', lr: 0.01 },
      epochs: 1,
      workers: 1,
      batch_size: 256,
    },
    { outDir: join(dir, 'train-mlp'), resume: false },
  );
  await store.publish({ name, jobId: null, artifactPath: trained.artifactPath!, metadata: {} });
  const requested = (process.env.BENCH_BACKENDS ?? 'native,wasm').split(',').map((b) => b.trim());
  const before = process.env.TAS_BACKEND;
  for (const b of requested) {
    process.env.TAS_BACKEND = b;
    let service: Awaited<ReturnType<typeof startInferenceService>>;
    try {
      service = await startInferenceService({ source: store, registry: new Registry(), grpc: { host: '127.0.0.1', port: 0 } });
    } catch (e) {
      console.log(JSON.stringify({ bench: 'infer', model: name, backend: b, skipped: (e as Error).message.split('\n')[0] }));
      continue;
    }
    try {
      await service.repository.configure(DEFAULT_TENANT_ID, name, { maxBatchSize: 64, maxQueueDelayMs: 0 });
      for (const concurrency of [1, 64]) {
        const s = summary(await runLoad({ transport: 'grpc-stream', target: service.grpc!.address, model: name, concurrency, seconds, features: 784, outFloats: 10 }));
        console.log(JSON.stringify({ bench: 'infer', case: 'backend', model: name, rpc: 'ModelStreamInfer', backend: service.engine.backend, dynamic_batching: true, concurrency, ...s }));
      }
    } finally {
      await service.close();
    }
  }
  if (before === undefined) delete process.env.TAS_BACKEND;
  else process.env.TAS_BACKEND = before;
}

if (process.env.TAS_BENCH_LOAD) {
  // Disconnect only once the result is written: a large message would be cut off.
  const result = await load(JSON.parse(process.env.TAS_BENCH_LOAD) as LoadArgs);
  process.send!(result, () => process.disconnect());
} else {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '3' } } });
  const seconds = Number(values.seconds);
  const backend = await initBackend(undefined, () => undefined);
  const dir = await mkdtemp(join(tmpdir(), 'tas-bench-infer-'));
  const schema = await createFreshSchema();
  await migrate(schema.url);
  const prisma = createPrismaClient(schema.url);
  try {
    // The quickstart model, trained here (a few seconds).
    const spec = JSON.parse(readFileSync(new URL('../examples/quickstart.json', import.meta.url), 'utf8')) as { name: string; model: { input_shape: number[] } };
    const trained = await runLocalJob(spec, { outDir: join(dir, 'train'), resume: false });
    const store = new ModelStore(prisma);
    await store.publish({ name: spec.name, jobId: null, artifactPath: trained.artifactPath!, metadata: {} });
    const features = spec.model.input_shape.reduce((a, b) => a * b, 1);

    // The peer first, alone on the machine: onnxruntime-node in this process.
    const ort = await import('onnxruntime-node');
    const onnx = exportOnnx(await readArtifact(trained.artifactPath!), { name: spec.name, version: 1 });
    const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
    const peerRun = async (concurrency: number) =>
      summary(
        await closedLoop(concurrency, seconds, async (i) => {
          await session.run({ input: new ort.Tensor('float32', row(i, features), [1, features]) });
        }),
      );
    const peer = new Map<number, ReturnType<typeof summary>>();
    for (const concurrency of process.env.BENCH_PEER === '0' ? [] : [1, 16, 64]) {
      const s = await peerRun(concurrency);
      peer.set(concurrency, s);
      console.log(JSON.stringify({ bench: 'infer', peer: 'onnxruntime-node', in_process: true, model: spec.name, concurrency, ...s }));
    }

    // With a metrics registry, as the service runs it (every request updates its metrics).
    const registry = new Registry();
    const service = await startInferenceService({ source: store, registry, grpc: { host: '127.0.0.1', port: 0 } });
    /** Batches run so far and their rows (tas_inference_batch_size). */
    /** Batches run and their rows (tas_inference_batch_size), requests answered and failed, so far. */
    const counters = async () => {
      const values = async (name: string) => ((await registry.getSingleMetric(name)?.get())?.values ?? []) as Array<{ metricName?: string; value: number }>;
      const h = await values('tas_inference_batch_size');
      const total = async (name: string) => (await values(name)).reduce((n, v) => n + v.value, 0);
      return {
        count: h.find((v) => v.metricName === 'tas_inference_batch_size_count')?.value ?? 0,
        rows: h.find((v) => v.metricName === 'tas_inference_batch_size_sum')?.value ?? 0,
        ok: await total('tas_inference_request_success_total'),
        failed: await total('tas_inference_request_failure_total'),
      };
    };
    const app = createBaseApp({ bodyLimit: 1024 * 1024 });
    await service.registerRoutes(app);
    const restUrl = await app.listen({ port: 0, host: '127.0.0.1' });
    const results = new Map<string, ReturnType<typeof summary>>();
    // Unary ModelInfer load from h2load where installed (Node's HTTP/2 client costs as much
    // CPU per call as the server, on the same 2 cores), else from the lean Node client.
    const h2load = spawnSync('h2load', ['--version']).status === 0;
    const unary: LoadArgs['transport'] = h2load ? 'grpc-h2load' : 'grpc';
    const rest: LoadArgs['transport'] = h2load ? 'rest-h2load' : 'rest';
    const outFloats = (await service.repository.metadata(DEFAULT_TENANT_ID, spec.name, '')).served.output.shape.slice(1).reduce((a, b) => a * b, 1);
    // BENCH_CASES=grpc-stream/64,rest/16 runs only those (transport/concurrency), for profiling.
    const only = process.env.BENCH_CASES?.split(',');
    try {
      const cases: Array<{ batching: boolean; transport: LoadArgs['transport']; concurrency: number }> = [];
      for (const transport of [unary, rest] as const) for (const concurrency of [1, 16, 64]) cases.push({ batching: true, transport, concurrency });
      // The same load from Node clients (the lean one where h2load drives the others, and
      // grpc-js's own, what a Node user would call it with), and on Triton's streaming RPC
      // (no HTTP/2 stream per request).
      if (unary !== 'grpc') cases.push({ batching: true, transport: 'grpc', concurrency: 64 });
      if (rest !== 'rest') cases.push({ batching: true, transport: 'rest', concurrency: 64 });
      cases.push({ batching: true, transport: 'grpc-js', concurrency: 64 });
      for (const concurrency of [1, 16, 64]) cases.push({ batching: true, transport: 'grpc-stream', concurrency });
      cases.push({ batching: true, transport: 'grpc-js-stream', concurrency: 64 });
      for (const transport of [unary, 'grpc-stream', rest] as const) cases.push({ batching: false, transport, concurrency: 64 });
      for (const c of cases) {
        if (only && !only.includes(`${c.transport}/${c.concurrency}`)) continue;
        await service.repository.configure(DEFAULT_TENANT_ID, spec.name, c.batching ? { maxBatchSize: 64, maxQueueDelayMs: Number(process.env.BENCH_QUEUE_DELAY_MS ?? 0) } : { maxBatchSize: 1, maxQueueDelayMs: 0 });
        const isRest = c.transport.startsWith('rest');
        const target = isRest ? restUrl : service.grpc!.address;
        const b0 = await counters();
        const s = summary(await runLoad({ transport: c.transport, target, model: spec.name, concurrency: c.concurrency, seconds, features, outFloats }));
        const b1 = await counters();
        results.set(`${c.transport}/${c.concurrency}/${c.batching}`, s);
        console.log(JSON.stringify({ bench: 'infer', transport: isRest ? 'rest' : 'grpc', client: CLIENT[c.transport], rpc: isRest ? 'POST /v2/models/{m}/infer' : c.transport.endsWith('stream') ? 'ModelStreamInfer' : 'ModelInfer', dynamic_batching: c.batching, model: spec.name, backend: backend.name, inference_threads: service.engine.threadCount, concurrency: c.concurrency, ...s, avg_batch_rows: +((b1.rows - b0.rows) / Math.max(1, b1.count - b0.count)).toFixed(1), server_answered: b1.ok - b0.ok, server_failed: b1.failed - b0.failed }));
      }
    } finally {
      await app.close();
      await service.close();
    }
    if ((!only || only.includes('backends')) && process.env.BENCH_BACKENDS !== '') await backendCases(store, seconds, dir);
    if (!only) {
      // The peer again, now that the server is closed: this machine's speed drifts over a
      // run, so the checks compare with the mean of the two peer measurements.
      const again = await peerRun(64);
      console.log(JSON.stringify({ bench: 'infer', peer: 'onnxruntime-node', in_process: true, model: spec.name, concurrency: 64, measured: 'after the server cases', ...again }));
      const peer64 = Math.round((peer.get(64)!.rps + again.rps) / 2);
      for (const [transport, rpc] of [
        ['grpc-stream', 'ModelStreamInfer'],
        [unary, 'ModelInfer'],
      ] as const) {
        const rps = results.get(`${transport}/64/true`)!.rps;
        console.log(JSON.stringify({ bench: 'infer', check: 'grpc_rps_c64_vs_onnxruntime_in_process', rpc, grpc_rps: rps, peer_rps: peer64, ratio: +(rps / peer64).toFixed(3), target: 0.5, met: rps / peer64 >= 0.5 }));
      }
      for (const [transport, label] of [
        ['grpc-stream', 'grpc_ModelStreamInfer'],
        [unary, 'grpc_ModelInfer'],
        [rest, 'rest'],
      ] as const) {
        const on = results.get(`${transport}/64/true`)!.rps;
        const off = results.get(`${transport}/64/false`)!.rps;
        console.log(JSON.stringify({ bench: 'infer', check: `${label}_dynamic_batching_speedup_c64`, batched_rps: on, unbatched_rps: off, ratio: +(on / off).toFixed(2), target: 3, met: on / off >= 3 }));
      }
    }
    await session.release();
  } finally {
    await prisma.$disconnect();
    await schema.drop();
    await rm(dir, { recursive: true, force: true });
  }
}
