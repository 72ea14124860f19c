/**
 * `tas` command line.
 *
 *   tas train <spec.json> [--out DIR] [--data-dir DIR] [--no-resume] [--quiet]
 *                         [--processes | --workers-at HOST:PORT,...] [--timeout-ms MS] [--tls-*]
 *       Train a job. Default: the spec's N ranks in this process (in-process collective).
 *       --processes: spawn N local worker processes, ranks talk gRPC (the real pool path).
 *       --workers-at: run rank i on the i-th worker address (workers from `tas pool` / `tas worker`).
 *   tas pool [--workers N] [--host H] [--tls-*]
 *       Start N local workers (default: one per GPU, else 2 CPU workers); print their addresses.
 *   tas worker [--join URL [--advertise HOST] [--cache-dir DIR] [--cache-max-mb N]] [--host H] [--port P]
 *              [--collective-port P] [--device-kind gpu|cpu] [--device-index I] [--tls-*]
 *       Run one worker here. --join: join the pool of the service at URL (with its
 *       TAS_WORKER_TOKEN when its keys are on) and heartbeat; the service and the other
 *       ranks reach it at --advertise (default: --host, else this machine's first
 *       non-loopback IPv4); it shares no filesystem with the service: it fetches its jobs'
 *       inputs into --cache-dir and sends checkpoints and artifacts back. Without --join,
 *       a scheduler adds it by address (TAS_WORKERS_AT). The rank-to-rank collective
 *       listens on --collective-port (default: any free port).
 *   tas validate <spec.json>
 *   tas serve [--no-workers]
 *       The service in one command: REST API (TAS_HTTP_PORT, default 8000), scheduler, and
 *       local workers (TAS_WORKERS, default one per GPU else 2 CPU workers; --no-workers:
 *       only the remote ones of TAS_WORKERS_AT). PostgreSQL from DATABASE_URL, else an
 *       embedded one under TAS_DATA_DIR (default ./data); Redis from REDIS_URL, else a
 *       private redis-server. Prints one JSON line {"listening": ...} when it serves.
 *   tas api | tas scheduler [--no-workers]
 *       One part alone, for several machines (they share DATABASE_URL, REDIS_URL and the data dir).
 *   tas submit | jobs | status | logs | cancel | models | infer ...
 *       A client of a running service (TAS_URL): see ./client-commands.ts.
 *
 * TLS (optional, mutual): --tls-cert F --tls-key F --tls-ca F, or TAS_TLS_CERT/KEY/CA.
 */
import { readFile } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { runJobOnWorkers, startLocalWorkers, stopLocalWorkers, type LocalWorker } from '../gpu-pool/pool.js';
import { startWorkerServer, tlsFrom } from '../gpu-pool/worker-server.js';
import { PoolMembership } from '../gpu-pool/join.js';
import { ServiceFiles } from '../gpu-pool/service-files.js';
import { workerToken } from '../gpu-pool/worker-token.js';
import { ENGINE_FAILURE_EXIT_CODE } from '../gpu-pool/worker-service.js';
import { ConfigError, loadConfig } from '../service/startup/config.js';
import { ServiceStartError } from '../service/startup/start-errors.js';
import { startService, type ServiceParts } from './serve.js';
import { CLIENT_COMMANDS, CLIENT_USAGE, ClientUsageError, runClientCommand } from './client-commands.js';
import { initBackend } from '../trainer/backend.js';
import { resolveTrainSpec } from '../trainer/engine/job-spec.js';
import { runLocalJob } from '../trainer/engine/local-job.js';
import { TrainerError } from '../trainer/errors.js';

const USAGE = `usage:
  tas train <spec.json> [--out DIR] [--data-dir DIR] [--no-resume] [--quiet]
                        [--processes | --workers-at HOST:PORT,...] [--timeout-ms MS] [--tls-cert F --tls-key F --tls-ca F]
  tas pool [--workers N] [--host H] [--tls-cert F --tls-key F --tls-ca F]
  tas worker [--join URL [--advertise HOST] [--cache-dir DIR] [--cache-max-mb N]] [--host H] [--port P] [--collective-port P]
             [--device-kind gpu|cpu] [--device-index I] [--tls-cert F --tls-key F --tls-ca F]
  tas validate <spec.json>
  tas serve [--no-workers]          API + scheduler + local workers (env: TAS_HTTP_PORT, TAS_DATA_DIR, DATABASE_URL, REDIS_URL, TAS_WORKERS, TAS_WORKERS_AT)
  tas api                           the REST API alone
  tas scheduler [--no-workers]      the scheduler and its local workers alone
${CLIENT_USAGE}`;

const OPTIONS = {
  out: { type: 'string' },
  'data-dir': { type: 'string' },
  'no-resume': { type: 'boolean' },
  quiet: { type: 'boolean' },
  processes: { type: 'boolean' },
  'workers-at': { type: 'string' },
  'timeout-ms': { type: 'string' },
  workers: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  'collective-port': { type: 'string' },
  'device-kind': { type: 'string' },
  'device-index': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-ca': { type: 'string' },
  'no-workers': { type: 'boolean' },
  join: { type: 'string' },
  advertise: { type: 'string' },
  'cache-dir': { type: 'string' },
  'cache-max-mb': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

class UsageError extends Error {}

async function readSpec(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${path}: ${(e as Error).message}`);
  }
}

function intOption(v: Values, name: 'workers' | 'port' | 'collective-port' | 'device-index' | 'timeout-ms' | 'cache-max-mb', min: number): number | undefined {
  const s = v[name];
  if (s === undefined) return undefined;
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name}: must be an integer >= ${min}, got ${JSON.stringify(s)}`);
  return n;
}

/** Resolves with the first SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
}

interface StepLine {
  step: number;
  of: number;
  epoch: number;
  loss: number;
  accuracy: number;
  lr: number;
  samplesPerSec: number;
  computeMs: number;
  bnFwdMs: number;
  bnBwdMs: number;
  gradMs: number;
}

function stepPrinter(quiet: boolean | undefined): (s: StepLine) => void {
  let last = 0;
  return (s) => {
    const now = performance.now();
    if (quiet || (now - last < 1000 && s.step !== s.of)) return;
    last = now;
    const r = (x: number) => +x.toFixed(2);
    console.log(
      JSON.stringify({
        step: s.step,
        of: s.of,
        epoch: s.epoch + 1,
        loss: +s.loss.toFixed(5),
        accuracy: +s.accuracy.toFixed(4),
        lr: s.lr,
        samples_per_s: Math.round(s.samplesPerSec),
        ms: { compute: r(s.computeMs), bn_sync_fwd: r(s.bnFwdMs), bn_sync_bwd: r(s.bnBwdMs), grad_sync: r(s.gradMs) },
      }),
    );
  };
}

async function train(specPath: string, v: Values): Promise<number> {
  const raw = await readSpec(specPath);
  const spec = resolveTrainSpec(raw);
  const outDir = resolve(v.out ?? join(process.env.TAS_DATA_DIR ?? 'data', 'runs', basename(specPath).replace(/\.json$/, '')));
  const dataDir = resolve(v['data-dir'] ?? dirname(resolve(specPath)));
  const resume = !v['no-resume'];
  const print = stepPrinter(v.quiet);
  const started = performance.now();
  const seconds = () => +((performance.now() - started) / 1000).toFixed(2);

  if (v.processes || v['workers-at']) {
    if (v.processes && v['workers-at']) throw new UsageError('--processes and --workers-at exclude each other');
    const tls = tlsFrom(v);
    let local: LocalWorker[] = [];
    let addresses: string[];
    if (v['workers-at']) {
      addresses = v['workers-at'].split(',').map((a) => a.trim()).filter(Boolean);
      if (addresses.length !== spec.workers) throw new UsageError(`--workers-at: the job needs ${spec.workers} workers (spec.workers), ${addresses.length} addresses given`);
    } else {
      local = await startLocalWorkers(spec.workers, tls ? { tls } : {});
      addresses = local.map((w) => w.address);
    }
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    process.once('SIGINT', onSignal);
    try {
      const timeoutMs = intOption(v, 'timeout-ms', 100);
      const r = await runJobOnWorkers(raw, addresses, {
        outDir,
        dataDir,
        resume,
        signal: ac.signal,
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(tls ? { tls } : {}),
        onStep: (s) =>
          print({ step: s.global_step, of: s.total_steps, epoch: s.epoch, loss: s.loss, accuracy: s.accuracy, lr: s.lr, samplesPerSec: s.samples_per_sec, computeMs: s.compute_ms, bnFwdMs: s.bn_forward_sync_ms, bnBwdMs: s.bn_backward_sync_ms, gradMs: s.grad_sync_ms }),
      });
      const summary = JSON.parse(r.done.summary_json || '{}') as Record<string, unknown>;
      console.log(
        JSON.stringify({
          done: r.done.completed,
          job_id: r.jobId,
          workers: r.workers.map((w) => ({ id: w.worker_id, device: `${w.device_kind}:${w.device_index}`, backend: w.backend })),
          steps: r.done.global_steps,
          ...summary,
          artifact: r.done.artifact_path,
          seconds: seconds(),
        }),
      );
      return 0;
    } finally {
      process.off('SIGINT', onSignal);
      await stopLocalWorkers(local);
    }
  }

  const backend = await initBackend();
  const result = await runLocalJob(raw, {
    outDir,
    dataDir,
    resume,
    onStep: (m) =>
      print({ step: m.globalStep, of: m.totalSteps, epoch: m.epoch, loss: m.loss, accuracy: m.accuracy, lr: m.lr, samplesPerSec: m.samplesPerSec, computeMs: m.timings.computeMs, bnFwdMs: m.timings.bnForwardSyncMs, bnBwdMs: m.timings.bnBackwardSyncMs, gradMs: m.timings.gradSyncMs }),
  });
  console.log(
    JSON.stringify({
      done: result.rank0.completed,
      backend: backend.name,
      workers: result.spec.workers,
      steps: result.rank0.globalSteps,
      resumed_from_step: result.resumedFrom,
      evaluation: result.rank0.evaluation,
      recalibration: result.rank0.recalibration?.mode ?? null,
      artifact: result.artifactPath,
      seconds: seconds(),
    }),
  );
  return 0;
}

async function pool(v: Values): Promise<number> {
  const tls = tlsFrom(v);
  const n = intOption(v, 'workers', 1);
  const workers = await startLocalWorkers(n, { ...(v.host ? { host: v.host } : {}), ...(tls ? { tls } : {}) });
  for (const w of workers) console.log(JSON.stringify({ worker: { address: w.address, device: w.device.kind, index: w.device.index, name: w.device.name, pid: w.process.pid } }));
  console.log(JSON.stringify({ pool: { addresses: workers.map((w) => w.address), tls: Boolean(tls) } }));
  console.error(`[tas pool] ${workers.length} workers ready; train on them with: tas train <spec.json> --workers-at ${workers.map((w) => w.address).join(',')}  (Ctrl-C stops the pool)`);
  // A worker that dies is reported (it is not restarted here; the service's scheduler does that).
  for (const w of workers) w.process.once('exit', (code, sig) => console.error(`[tas pool] worker ${w.address} exited (${sig ?? code})`));
  await untilSignal();
  await stopLocalWorkers(workers);
  return 0;
}

async function worker(v: Values): Promise<number> {
  const tls = tlsFrom(v);
  const kind = v['device-kind'];
  if (kind !== undefined && kind !== 'gpu' && kind !== 'cpu') throw new UsageError(`--device-kind: must be gpu or cpu, got ${JSON.stringify(kind)}`);
  const port = intOption(v, 'port', 0);
  const collectivePort = intOption(v, 'collective-port', 0);
  const index = intOption(v, 'device-index', 0);
  const service = v.join === undefined ? null : joinUrl(v.join);
  if (service === null) for (const flag of ['advertise', 'cache-dir', 'cache-max-mb'] as const) if (v[flag] !== undefined) throw new UsageError(`--${flag}: only with --join`);
  // Joining from another machine: listen on every interface unless told otherwise.
  const host = v.host ?? (service ? '0.0.0.0' : '127.0.0.1');
  const log = (m: string) => console.error(`[tas worker] ${m}`);
  const files = service
    ? new ServiceFiles({
        baseUrl: service,
        token: workerToken(),
        cacheDir: resolve(v['cache-dir'] ?? process.env.TAS_WORKER_CACHE_DIR ?? join(tmpdir(), 'tas-worker-cache')),
        ...(v['cache-max-mb'] !== undefined ? { maxCacheBytes: intOption(v, 'cache-max-mb', 1)! * 1024 * 1024 } : {}),
        log,
      })
    : null;
  // A failed engine may be corrupt: exit so that the service manager (systemd's
  // Restart=, Docker's restart policy) starts a fresh worker; the pool retries the job
  // elsewhere meanwhile.
  const restart = (reason: string) => {
    console.error(`[tas worker] the tensor engine failed (${reason}); exiting with status ${ENGINE_FAILURE_EXIT_CODE} to be restarted`);
    void (membership?.leave() ?? Promise.resolve()).then(() => w.close()).finally(() => process.exit(ENGINE_FAILURE_EXIT_CODE));
  };
  let membership: PoolMembership | null = null;
  const w = await startWorkerServer({
    onEngineFailure: restart,
    host,
    ...(port !== undefined ? { port } : {}),
    ...(collectivePort !== undefined ? { collectivePort } : {}),
    ...(kind ? { deviceKind: kind } : {}),
    ...(index !== undefined ? { deviceIndex: index } : {}),
    ...(tls ? { tls } : {}),
    ...(files ? { files } : {}),
    log,
  });
  const advertised = service ? `${formatHost(v.advertise ?? advertiseDefault(host, log))}:${w.port}` : null;
  console.log(JSON.stringify({ ready: { address: w.address, collective_port: w.collectivePort, pid: process.pid, device: w.device.kind, index: w.device.index, backend: w.backend.name, tls: Boolean(tls), ...(advertised ? { advertised, join: service } : {}) } }));
  if (service && advertised) {
    membership = new PoolMembership({ url: service, address: advertised, token: workerToken(), log });
    const refused = membership.joined.then(
      () => null,
      (e: Error) => e,
    );
    const first = await Promise.race([refused, untilSignal().then(() => 'signal' as const)]);
    if (first instanceof Error) {
      await w.close();
      return 1;
    }
    if (first !== 'signal') await untilSignal();
    await membership.leave();
  } else {
    await untilSignal();
  }
  await w.close();
  return 0;
}

/** The URL of --join, checked. */
function joinUrl(raw: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError(`--join: expected the service's URL (http://host:8000), got ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--join: expected an http(s) URL, got ${JSON.stringify(raw)}`);
  return u.toString().replace(/\/+$/, '');
}

/** The host other machines reach this worker at: --host when it names one, else the first non-loopback IPv4 address. */
function advertiseDefault(host: string, log: (m: string) => void): string {
  if (host !== '0.0.0.0' && host !== '::') return host;
  const ip = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
  if (!ip) throw new UsageError('--advertise: this machine has no non-loopback IPv4 address; say where the service reaches this worker');
  log(`advertising ${ip} (the first non-loopback IPv4 address; --advertise sets another)`);
  return ip;
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

async function serve(v: Values, parts: ServiceParts): Promise<number> {
  const config = loadConfig();
  const tls = tlsFrom(v);
  const log = (m: string) => console.error(`[tas] ${m}`);
  const svc = await startService(config, parts, { log, ...(tls ? { tls } : {}) });
  console.log(
    JSON.stringify({
      listening: {
        http: svc.httpUrl,
        grpc: svc.grpcAddress,
        database: svc.embeddedDatabase ? 'embedded' : 'external',
        redis: svc.redisUrl,
        queue: svc.names.queue,
        data_dir: config.dataDir,
        workers: svc.localPool?.list().map((w) => ({ address: w.address, device: w.device.kind, index: w.device.index, pid: w.process.pid })) ?? [],
      },
    }),
  );
  const signal = await untilSignal();
  // Bounded: whatever hangs (a Redis that is gone, a worker that does not answer), the
  // process exits within TAS_SHUTDOWN_TIMEOUT_MS; a second signal exits at once.
  const seconds = config.shutdownTimeoutMs / 1000;
  log(`${signal}: stopping within ${seconds} s: no new work; running jobs go back to the queue and resume from their latest checkpoints at the next start`);
  const now = (why: string, code: number) => {
    log(why);
    process.exit(code);
  };
  setTimeout(() => now(`stop did not finish within ${seconds} s; exiting anyway`, 1), config.shutdownTimeoutMs).unref();
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, () => now(`${s} again: exiting now`, 130));
  await svc.stop();
  log('stopped');
  // Nothing is left to do: leave now rather than wait for what a part left behind.
  process.exit(0);
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] !== undefined && CLIENT_COMMANDS.has(argv[0]) && !argv.includes('--help') && !argv.includes('-h')) return runClientCommand(argv);
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  const [cmd, specPath] = positionals;
  if (v.help || !cmd) {
    console.log(USAGE);
    return v.help ? 0 : 2;
  }
  switch (cmd) {
    case 'serve':
      return serve(v, { api: true, scheduler: true, localWorkers: !v['no-workers'] });
    case 'api':
      return serve(v, { api: true, scheduler: false, localWorkers: false });
    case 'scheduler':
      return serve(v, { api: false, scheduler: true, localWorkers: !v['no-workers'] });
    case 'pool':
      return pool(v);
    case 'worker':
      return worker(v);
    case 'validate':
    case 'train': {
      if (!specPath) throw new UsageError(`tas ${cmd} needs a spec file`);
      if (cmd === 'train') return train(specPath, v);
      const s = resolveTrainSpec(await readSpec(specPath));
      console.log(JSON.stringify({ valid: true, workers: s.workers, local_batch_sizes: s.localBatchSizes, epochs: s.epochs }));
      return 0;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    if (e instanceof UsageError || e instanceof ClientUsageError) {
      console.error(`${e.message}\n${USAGE}`);
      process.exitCode = 2;
    } else if (e instanceof TrainerError) {
      console.error(`error ${e.code}${e.field ? ` (${e.field})` : ''}: ${e.message}`);
      process.exitCode = 1;
    } else if (e instanceof ConfigError || e instanceof ServiceStartError) {
      // Configuration and start-up problems say what to do; no stack trace.
      console.error(`error ${e.code}: ${e.message}`);
      process.exitCode = 1;
    } else {
      console.error(e);
      process.exitCode = 70;
    }
  },
);
