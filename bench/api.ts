/**
 * bench:api: the cost of dashboards following jobs. The REST API runs here on the
 * real PostgreSQL (a fresh schema) and Redis; 50 pollers in a child process (its own event
 * loop and core, so the client does not queue behind the server) GET one running job's status for
 * a few seconds: back to back with If-None-Match (304s while nothing changes), back to
 * back without (a full 200 each time), and as dashboards do, each poller every 100 ms;
 * meanwhile the job's progress row is updated 10 times a second as a training job's
 * would be. Prints one JSON line per case. Back to back, 50 pollers are a closed loop:
 * latency is about 50 / throughput, so that case measures the server's capacity.
 *
 * The dashboard case: 10,000 jobs in the database, one of them running (its progress row
 * written every 500 ms, as the scheduler's progress sink does), and 1,000 dashboards,
 * each long-polling that job's status and the first page of the job list (50 jobs) with
 * the dashboard's own policy (ui/src/poll-policy.ts: ETag, ?wait=25, at most one poll a
 * second per resource after a change, jittered), 2,000 keep-alive connections from a
 * child process. The figure is each answer's delay: how long after the news existed the
 * dashboard had it (for an answer the change woke, from the change, stamped by the job's
 * updated_at; for one the news was already there, the round trip), over the
 * `--dashboard-seconds` that follow the dashboards opening. They open over 2 s, a herd
 * of 500 a second (2,000 new connections: the server sets up about one a millisecond
 * here, so the last first answers come 1-3 s late); the opening phase, until every
 * dashboard has had its first answer and polled again (at least 4 s), is reported
 * apart: each dashboard's first answer (its connection opened with it) as `opening`,
 * every other answer then as `while_opening`.
 * Refused: any answer but 200/304, or a connection error, in any phase.
 *
 * Then followers: 100 clients each following the job alone and polling again as soon as
 * an answer comes, so every answer waits for the next progress write: the figure is the
 * time from the write to the answer. BENCH_CHANGE_FEED=0 runs the API without the
 * database's change announcements (long polls then find changes by reading every 25 ms).
 *
 *   npm run bench:api [-- --concurrency 50 --seconds 5 --dashboards 1000 --dashboard-seconds 20 --followers 100 --followers-seconds 10 --jobs 10000 --only poll|dashboard]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/api/rest/app.js';
import { JobQueue, redisConnection } from '../src/service/scheduling/job-queue.js';
import { createPrismaClient } from '../src/service/db/client.js';
import { migrate } from '../src/service/db/migrate.js';
import { ChangeFeed } from '../src/service/db/change-feed.js';
import { createFreshSchema } from '../src/service/db/testing/fresh-schema.js';
import { JobService } from '../src/service/jobs/job-service.js';
import { ModelStore } from '../src/service/models/model-store.js';
import { delayAfterChange, JITTER, MIN_INTERVAL_MS, WAIT_S } from '../ui/src/poll-policy.js';

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

interface DashboardArgs {
  base: string;
  jobId: string;
  dashboards: number;
  seconds: number;
  /** Dashboards open over this many seconds; each one's first answer (connecting included) is reported apart. */
  openingS: number;
  /**
   * The opening phase lasts at least this long, and until every dashboard has had its
   * first answer and polled again; its answers are reported apart from the `seconds` of
   * open dashboards that follow.
   */
  settleS: number;
  /** Followers instead of dashboards: each follows the job alone and polls again as soon as an answer comes (as `tas status --follow` or a script would), so every answer is woken by a change. */
  followers?: boolean;
}

/** One resource's answers: delays (ms) of open dashboards, of each first answer, of the answers while dashboards open; woken ones. */
interface Followed {
  delays: number[];
  opening: number[];
  openingPhase: number[];
  woken: number[];
  answers: number;
  notModified: number;
}

interface DashboardResult {
  status: Followed;
  list: Followed;
  refused: number;
  refusals: string[];
  seconds: number;
  /** When the last dashboard had its first answer, and when the measured seconds began (s from the start). */
  openedS: number | null;
  measuredFromS: number | null;
  /** The load generator's own event-loop stalls (a busy client delays answers too). */
  clientLoopDelayP99Ms: number;
  clientCpuShare: number;
}

/** Epoch milliseconds with sub-millisecond precision (comparable with the server's timestamps on this machine). */
const nowMs = () => performance.timeOrigin + performance.now();

/** The latest updated_at in a job or a job page, by scanning the JSON (the client must not cost more than a browser would). */
function latestUpdate(body: string): number {
  let latest = 0;
  const key = '"updated_at":"';
  for (let i = body.indexOf(key); i >= 0; i = body.indexOf(key, i + 1)) {
    const t = Date.parse(body.slice(i + key.length, body.indexOf('"', i + key.length)));
    if (t > latest) latest = t;
  }
  return latest;
}

function getBody(agent: http.Agent, url: URL, etag: string | null): Promise<{ status: number; etag: string | null; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent, headers: etag ? { 'if-none-match': etag } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, etag: (res.headers.etag as string | undefined) ?? null, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

/** A thousand dashboards, each following the job and the job list as the dashboard does. */
async function dashboardLoad(a: DashboardArgs): Promise<DashboardResult> {
  const result: DashboardResult = {
    status: { delays: [], opening: [], openingPhase: [], woken: [], answers: 0, notModified: 0 },
    list: { delays: [], opening: [], openingPhase: [], woken: [], answers: 0, notModified: 0 },
    refused: 0,
    refusals: [],
    seconds: 0,
    openedS: null,
    measuredFromS: null,
    clientLoopDelayP99Ms: 0,
    clientCpuShare: 0,
  };
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  const cpu0 = process.cpuUsage();
  // One kept-alive connection per poll loop, as a browser keeps its own (the default of
  // 256 idle sockets would close the rest, and each poll would connect again).
  const agent = new http.Agent({ keepAlive: true, maxSockets: a.dashboards * 2 + 10, maxFreeSockets: a.dashboards * 2 + 10 });
  // At the end the agent's sockets are destroyed, which ends the polls still held.
  let stopped = false;
  const started = performance.now();
  // The dashboards are open once every one has had its first answer and polled again
  // (one poll interval later), and `settleS` has passed; the measured seconds follow.
  // Until then it is the opening phase (bounded, should some never open).
  const loops = a.dashboards * (a.followers ? 1 : 2);
  let firstAnswers = 0;
  let settled = Infinity;
  const latest = started + (a.settleS + a.seconds + 30) * 1000;
  let end = latest;
  const opened = () => {
    if (++firstAnswers < loops) return;
    settled = Math.max(started + a.settleS * 1000, performance.now() + MIN_INTERVAL_MS * (1 + JITTER) + 300);
    end = Math.min(latest, settled + a.seconds * 1000);
    result.openedS = +((performance.now() - started) / 1000).toFixed(2);
    result.measuredFromS = +((settled - started) / 1000).toFixed(2);
  };
  /** Where an answer's delay goes: each first answer apart, then by phase. */
  const delaysFor = (into: Followed, first: boolean, at: number) => (first ? into.opening : at < settled ? into.openingPhase : into.delays);
  const follow = async (url: URL, into: Followed) => {
    // Dashboards open over the first seconds, not all in the same millisecond.
    await new Promise((r) => setTimeout(r, Math.random() * a.openingS * 1000));
    let etag: string | null = null;
    while (performance.now() < end) {
      const sentAt = nowMs();
      const polling = etag !== null;
      const target = polling ? new URL(`${url.href}${url.search ? '&' : '?'}wait=${WAIT_S}`) : url;
      let r;
      try {
        r = await getBody(agent, target, etag);
      } catch (e) {
        if (stopped) return;
        result.refused++;
        if (result.refusals.length < 5) result.refusals.push((e as Error).message);
        await new Promise((res) => setTimeout(res, 1000));
        continue;
      }
      const at = nowMs();
      const delays = delaysFor(into, etag === null, performance.now());
      if (r.status === 304) {
        into.notModified++;
        // Held the whole wait: late by what exceeds it.
        delays.push(Math.max(0, at - sentAt - WAIT_S * 1000));
        continue;
      }
      if (r.status !== 200) {
        result.refused++;
        if (result.refusals.length < 5) result.refusals.push(`HTTP ${r.status}: ${r.body.slice(0, 200)}`);
        continue;
      }
      into.answers++;
      if (etag === null) opened();
      etag = r.etag;
      const changedAt = polling ? latestUpdate(r.body) : 0;
      delays.push(at - Math.max(sentAt, changedAt));
      // Held until the change (rather than answered at once with news already there).
      if (changedAt > sentAt && delays === into.delays) into.woken.push(at - changedAt);
      if (!a.followers) await new Promise((res) => setTimeout(res, delayAfterChange(nowMs() - sentAt)));
    }
  };
  const stop = setInterval(() => {
    if (performance.now() < end + 100) return;
    stopped = true;
    agent.destroy();
  }, 100);
  await Promise.all(
    Array.from({ length: a.dashboards }, () => [
      follow(new URL(`${a.base}/v1/jobs/${a.jobId}`), result.status),
      ...(a.followers ? [] : [follow(new URL(`${a.base}/v1/jobs?limit=50`), result.list)]),
    ]).flat(),
  );
  clearInterval(stop);
  stopped = true;
  agent.destroy();
  result.seconds = (performance.now() - started) / 1000;
  loop.disable();
  result.clientLoopDelayP99Ms = +(loop.percentile(99) / 1e6).toFixed(1);
  const cpu = process.cpuUsage(cpu0);
  result.clientCpuShare = +((cpu.user + cpu.system) / 1e6 / result.seconds).toFixed(2);
  return result;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

if (process.env.TAS_BENCH_LOAD) {
  // Disconnect only once the result is written: a large message would be cut off.
  const result = await load(JSON.parse(process.env.TAS_BENCH_LOAD) as LoadArgs);
  process.send!(result, () => process.disconnect());
} else if (process.env.TAS_BENCH_DASHBOARDS) {
  const result = await dashboardLoad(JSON.parse(process.env.TAS_BENCH_DASHBOARDS) as DashboardArgs);
  process.send!(result, () => process.disconnect());
} else {
  const { values } = parseArgs({
    options: {
      concurrency: { type: 'string', default: '50' },
      seconds: { type: 'string', default: '5' },
      dashboards: { type: 'string', default: '1000' },
      'dashboard-seconds': { type: 'string', default: '20' },
      followers: { type: 'string', default: '100' },
      'followers-seconds': { type: 'string', default: '10' },
      jobs: { type: 'string', default: '10000' },
      only: { type: 'string' },
    },
  });
  const concurrency = Number(values.concurrency);
  const seconds = Number(values.seconds);
  const only = values.only;
  if (only !== undefined && only !== 'poll' && only !== 'dashboard') throw new Error(`--only: poll or dashboard, got ${only}`);

  const schema = await createFreshSchema();
  await migrate(schema.url);
  const prisma = createPrismaClient(schema.url);
  const dataDir = await mkdtemp(join(tmpdir(), 'tas-bench-api-'));
  const redis = redisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const queueConnection = redisConnection(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
  const queue = new JobQueue(queueConnection, `tas-bench-${process.pid}`);
  // As the service: long polls hear of committed changes (BENCH_CHANGE_FEED=0: they read every 25 ms).
  const changes = process.env.BENCH_CHANGE_FEED === '0' ? null : new ChangeFeed(schema.url);
  await changes?.start();
  const app = await buildApp({
    prisma,
    jobs: new JobService({ prisma, queue, redis, cancelChannel: `tas-bench-${process.pid}:cancel`, dataDir, probeIntervalMs: 2000, ...(changes ? { changes } : {}) }),
    models: new ModelStore(prisma),
    queue,
    probeIntervalMs: 2000,
    checks: [],
    ...(changes ? { changes } : {}),
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

    const cases =
      only === 'dashboard'
        ? []
        : [
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

    if (only !== 'poll') {
      // 10,000 jobs (finished, older than the running one, so it heads the list).
      const total = Number(values.jobs);
      const t0 = job.createdAt.getTime() - total * 1000;
      const statuses = ['succeeded', 'failed', 'cancelled'] as const;
      for (let i = 0; i < total; i += 2000) {
        await prisma.job.createMany({
          data: Array.from({ length: Math.min(2000, total - i) }, (_, k) => ({ name: `old-${i + k}`, spec: { epochs: 1 }, workers: 2, status: statuses[(i + k) % 3]!, step: 100, totalSteps: 100, createdAt: new Date(t0 + (i + k) * 1000) })),
        });
      }
      const inDb = await prisma.job.count();
      // Progress as the scheduler's sink writes it: every 500 ms.
      let written = 0;
      const writer = setInterval(() => {
        prisma.job.update({ where: { id: job.id }, data: { step: ++step, loss: 1 / step, updatedAt: new Date() } }).then(() => written++, () => undefined);
      }, 500);
      // The load in a child process, with the server's CPU and event-loop stalls meanwhile.
      const play = async (args: DashboardArgs) => {
        const loop = monitorEventLoopDelay({ resolution: 5 });
        loop.enable();
        const cpu0 = process.cpuUsage();
        const child = fork(fileURLToPath(import.meta.url), [], { execArgv: ['--import', 'tsx'], env: { ...process.env, TAS_BENCH_DASHBOARDS: JSON.stringify(args) } });
        const r = await new Promise<DashboardResult>((resolve, reject) => {
          child.once('message', (m) => resolve(m as DashboardResult));
          child.once('error', reject);
        });
        const cpu = process.cpuUsage(cpu0);
        loop.disable();
        const answers = r.status.answers + r.list.answers;
        const server = {
          server_cpu_ms_per_answer: +((cpu.user + cpu.system) / 1000 / Math.max(1, answers)).toFixed(3),
          server_cpu_share: +((cpu.user + cpu.system) / 1e6 / r.seconds).toFixed(2),
          server_loop_delay_p99_ms: +(loop.percentile(99) / 1e6).toFixed(1),
          server_loop_delay_max_ms: +(loop.max / 1e6).toFixed(1),
          client_cpu_share: r.clientCpuShare,
          client_loop_delay_p99_ms: r.clientLoopDelayP99Ms,
        };
        return { r, answers, server };
      };
      const dashboards = Number(values.dashboards);
      const args: DashboardArgs = { base, jobId: job.id, dashboards, seconds: Number(values['dashboard-seconds']), openingS: 2, settleS: 4 };
      const { r, server } = await play(args);
      const stats = (delays: number[]) => {
        const sorted = [...delays].sort((x, y) => x - y);
        return sorted.length === 0 ? { n: 0 } : { n: sorted.length, p50_ms: +quantile(sorted, 0.5).toFixed(2), p99_ms: +quantile(sorted, 0.99).toFixed(2), max_ms: +sorted[sorted.length - 1]!.toFixed(2) };
      };
      const all = [...r.status.delays, ...r.list.delays].sort((x, y) => x - y);
      const p99 = all.length > 0 ? quantile(all, 0.99) : Infinity;
      console.log(
        JSON.stringify({
          bench: 'api_dashboards',
          change_feed: changes !== null,
          dashboards,
          connections: dashboards * 2,
          jobs_in_db: inDb,
          list_page: 50,
          progress_writes_per_s: +(written / r.seconds).toFixed(1),
          seconds: +r.seconds.toFixed(2),
          answers: r.status.answers + r.list.answers,
          answers_per_s: Math.round((r.status.answers + r.list.answers) / r.seconds),
          not_modified: r.status.notModified + r.list.notModified,
          refused: r.refused,
          ...(r.refusals.length > 0 ? { refusals: r.refusals } : {}),
          p50_ms: all.length > 0 ? +quantile(all, 0.5).toFixed(2) : null,
          p99_ms: +p99.toFixed(2),
          status: stats(r.status.delays),
          list: stats(r.list.delays),
          woken_by_change: stats([...r.status.woken, ...r.list.woken]),
          // Before the figures above: the dashboards opening (each one's first answer,
          // its connection opened with it), and every other answer while they open.
          all_open_after_s: r.openedS,
          measured_from_s: r.measuredFromS,
          opening: stats([...r.status.opening, ...r.list.opening]),
          while_opening: stats([...r.status.openingPhase, ...r.list.openingPhase]),
          // The server's own CPU and event-loop stalls, to tell its cost from the client's and the machine's.
          ...server,
          target_p99_ms: 50,
          met: p99 < 50 && r.refused === 0,
        }),
      );

      // Followers: every poll waits for the next progress write, so each answer measures
      // the way from a committed change to the waiting client (announced, or found by
      // the next periodic read).
      const followers = Number(values.followers);
      const writtenBefore = written;
      const f = await play({ base, jobId: job.id, dashboards: followers, seconds: Number(values['followers-seconds']), openingS: 1, settleS: 2, followers: true });
      console.log(
        JSON.stringify({
          bench: 'api_long_poll_followers',
          change_feed: changes !== null,
          followers,
          progress_writes_per_s: +((written - writtenBefore) / f.r.seconds).toFixed(1),
          seconds: +f.r.seconds.toFixed(2),
          answers: f.answers,
          refused: f.r.refused,
          // From the change's write (its updated_at) to the answer's arrival.
          woken_by_change: stats(f.r.status.woken),
          ...f.server,
        }),
      );
      clearInterval(writer);
    }
  } finally {
    await app.close();
    await changes?.close();
    await queue.close();
    // BullMQ leaves a connection it was given open.
    queueConnection.disconnect();
    redis.disconnect();
    await prisma.$disconnect();
    await schema.drop();
    await rm(dataDir, { recursive: true, force: true });
  }
}
