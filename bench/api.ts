/**
 * bench:api: the cost of a dashboard polling job status. The REST API runs here on the
 * real PostgreSQL (a fresh schema) and Redis; 50 pollers in a child process (its own event
 * loop and core, so the client does not queue behind the server) GET one running job's status for
 * a few seconds: back to back with If-None-Match (304s while nothing changes), back to
 * back without (a full 200 each time), and as dashboards do, each poller every 100 ms;
 * meanwhile the job's progress row is updated 10 times a second as a training job's
 * would be. Prints one JSON line per case. Back to back, 50 pollers are a closed loop:
 * latency is about 50 / throughput, so that case measures the server's capacity.
 *
 *   npm run bench:api [-- --concurrency 50 --seconds 5]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/api/rest/app.js';
import { JobQueue, redisConnection } from '../src/service/scheduling/job-queue.js';
import { createPrismaClient } from '../src/service/db/client.js';
import { migrate } from '../src/service/db/migrate.js';
import { createFreshSchema } from '../src/service/db/testing/fresh-schema.js';
import { JobService } from '../src/service/jobs/job-service.js';
import { ModelStore } from '../src/service/models/model-store.js';

interface LoadArgs {
  url: string;
  concurrency: number;
  seconds: number;
  conditional: boolean;
  /** Time between one poller's requests (0: next request as soon as the answer arrives). */
  intervalMs: number;
}

interface LoadResult {
  requests: number;
  notModified: number;
  errors: number;
  latenciesMs: number[];
  seconds: number;
}

/** One GET over a keep-alive connection: status, ETag, body drained. */
function get(agent: http.Agent, url: URL, etag: string | null): Promise<{ status: number; etag: string | null }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: etag ? { 'if-none-match': etag } : {} }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: (res.headers.etag as string | undefined) ?? null }));
    });
    req.on('error', reject);
  });
}

async function load(a: LoadArgs): Promise<LoadResult> {
  const latencies: number[] = [];
  let notModified = 0;
  let errors = 0;
  // node:http with keep-alive, one connection per poller, as a browser dashboard holds
  // them (fetch's own per-request cost would be measured otherwise: about 3 ms at p50).
  const agent = new http.Agent({ keepAlive: true, maxSockets: a.concurrency });
  const url = new URL(a.url);
  const end = performance.now() + a.seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: a.concurrency }, async () => {
      let etag: string | null = null;
      while (performance.now() < end) {
        const t0 = performance.now();
        const r = await get(agent, url, a.conditional ? etag : null);
        latencies.push(performance.now() - t0);
        if (r.status === 304) notModified++;
        else if (r.status === 200) etag = r.etag;
        else errors++;
        // A dashboard's poll interval (think time), when one is set.
        if (a.intervalMs > 0) await new Promise((res) => setTimeout(res, a.intervalMs));
      }
    }),
  );
  agent.destroy();
  return { requests: latencies.length, notModified, errors, latenciesMs: latencies, seconds: (performance.now() - started) / 1000 };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

if (process.env.TAS_BENCH_LOAD) {
  // Disconnect only once the result is written: a large message would be cut off.
  const result = await load(JSON.parse(process.env.TAS_BENCH_LOAD) as LoadArgs);
  process.send!(result, () => process.disconnect());
} else {
  const { values } = parseArgs({ options: { concurrency: { type: 'string', default: '50' }, seconds: { type: 'string', default: '5' } } });
  const concurrency = Number(values.concurrency);
  const seconds = Number(values.seconds);

  const schema = await createFreshSchema();
  await migrate(schema.url);
  const prisma = createPrismaClient(schema.url);
  const dataDir = await mkdtemp(join(tmpdir(), 'tas-bench-api-'));
  const redis = redisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const queue = new JobQueue(redisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'), `tas-bench-${process.pid}`);
  const app = await buildApp({
    prisma,
    jobs: new JobService({ prisma, queue, redis, cancelChannel: `tas-bench-${process.pid}:cancel`, dataDir, probeIntervalMs: 2000 }),
    models: new ModelStore(prisma),
    queue,
    probeIntervalMs: 2000,
    checks: [],
  });
  // Server-side time of each status request (routing to the last byte handed to the
  // socket), beside the client's round trip, to tell server cost from client overhead.
  const serverMs: number[] = [];
  app.addHook('onResponse', async (request, reply) => {
    if (request.routeOptions.url === '/v1/jobs/:id') serverMs.push(reply.elapsedTime);
  });
  const base = await app.listen({ port: 0, host: '127.0.0.1' });
  try {
    // A job as a dashboard sees it mid-run: an attempt on two workers, progress moving.
    const job = await prisma.job.create({ data: { name: 'bench', spec: { epochs: 1 }, workers: 2, status: 'running', attempts: 1, totalSteps: 100000, startedAt: new Date() } });
    await prisma.worker.createMany({
      data: [0, 1].map((i) => ({ id: `127.0.0.1:${7000 + i}`, address: `127.0.0.1:${7000 + i}`, deviceKind: 'cpu', deviceIndex: i, state: 'busy' as const, currentJobId: job.id })),
    });
    await prisma.jobAttempt.create({ data: { jobId: job.id, number: 1, generation: 1, workerIds: ['127.0.0.1:7000', '127.0.0.1:7001'], addresses: ['127.0.0.1:7000', '127.0.0.1:7001'] } });
    let step = 0;
    // (A Prisma query runs only once awaited or then-ed: `void query` would never run.)
    let updates = 0;
    const progress = setInterval(() => {
      prisma.job.update({ where: { id: job.id }, data: { step: ++step, loss: 1 / step, updatedAt: new Date() } }).then(() => updates++, () => undefined);
    }, 100);

    const cases = [
      { conditional: true, intervalMs: 0 },
      { conditional: false, intervalMs: 0 },
      { conditional: true, intervalMs: 100 },
    ];
    for (const { conditional, intervalMs } of cases) {
      const args: LoadArgs = { url: `${base}/v1/jobs/${job.id}`, concurrency, seconds, conditional, intervalMs };
      updates = 0;
      serverMs.length = 0;
      const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], env: { ...process.env, TAS_BENCH_LOAD: JSON.stringify(args) } });
      const r = await new Promise<LoadResult>((resolve, reject) => {
        child.once('message', (m) => resolve(m as LoadResult));
        child.once('error', reject);
      });
      const sorted = r.latenciesMs.sort((a, b) => a - b);
      const updatesDuring = updates;
      updates = 0;
      const p99 = quantile(sorted, 0.99);
      const server = serverMs.sort((a, b) => a - b);
      console.log(
        JSON.stringify({
          bench: 'api_status_poll',
          conditional,
          concurrency,
          poll_interval_ms: intervalMs,
          seconds: +r.seconds.toFixed(2),
          requests: r.requests,
          not_modified: r.notModified,
          progress_updates_per_s: +(updatesDuring / r.seconds).toFixed(1),
          errors: r.errors,
          rps: Math.round(r.requests / r.seconds),
          p50_ms: +quantile(sorted, 0.5).toFixed(2),
          p99_ms: +p99.toFixed(2),
          server_p50_ms: +quantile(server, 0.5).toFixed(2),
          server_p99_ms: +quantile(server, 0.99).toFixed(2),
          target_p99_ms: 20,
          met: p99 <= 20 && r.errors === 0,
        }),
      );
    }
    clearInterval(progress);
  } finally {
    await app.close();
    await queue.close();
    redis.disconnect();
    await prisma.$disconnect();
    await schema.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
