/**
 * The GPU pool: worker processes (one per device) and running a job's ranks on them.
 *
 * Local workers are spawned here (`src/gpu-pool/worker-main.ts`, one per device, GPU
 * pinned with CUDA_VISIBLE_DEVICES); workers on other machines join by address
 * (`tas worker --host 0.0.0.0 --port 7070` there, then their address here). Either way a
 * worker is one gRPC address serving the Worker and Collective services.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { TrainerError, type TrainerErrorCode } from '../trainer/errors.js';
import { assignDevices, type DeviceAssignment } from './device.js';
import type { DoneMsg, StepMsg, WorkerInfoMsg } from './messages.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import { WorkerClient } from './worker-client.js';
import { workerEnv, workerNodeFlags } from './worker-env.js';

const WORKER_MAIN = fileURLToPath(new URL('./worker-main.ts', import.meta.url));

export interface LocalWorker {
  address: string;
  device: DeviceAssignment;
  process: ChildProcess;
}

/** Spawn one worker process per device; resolves when every one serves its address. */
export async function startLocalWorkers(count?: number, opts: { host?: string; startTimeoutMs?: number; tls?: TlsFiles } = {}): Promise<LocalWorker[]> {
  const devices = assignDevices(count);
  const started = await Promise.allSettled(devices.map((device) => startLocalWorker(device, { ...opts, hostWorkers: devices.length })));
  const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const bad = started.find((s) => s.status === 'rejected');
  if (bad) {
    await stopLocalWorkers(ok); // all or none: no orphaned workers
    throw bad.reason;
  }
  return ok;
}

/**
 * Spawn one worker process for `device`; resolves when it serves its address.
 * `hostWorkers`: how many workers this host runs in all (it picks the GC flags; default 1).
 */
export function startLocalWorker(device: DeviceAssignment, opts: { host?: string; startTimeoutMs?: number; tls?: TlsFiles; hostWorkers?: number } = {}): Promise<LocalWorker> {
  const host = opts.host ?? '127.0.0.1';
  const timeoutMs = opts.startTimeoutMs ?? 60_000;
  const tls = opts.tls;
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key, '--tls-ca', tls.ca] : [];
  // Node flags and malloc settings for the collective's data path: see worker-env.ts.
  const child = spawn(process.execPath, [...workerNodeFlags(opts.hostWorkers ?? 1), '--import', 'tsx', WORKER_MAIN, '--host', host, '--port', '0', '--device-kind', device.kind, '--device-index', String(device.index), '--exit-with-parent', ...tlsArgs], {
    env: { ...workerEnv(process.env), ...device.env },
    // stdin stays open as the worker's lifeline (--exit-with-parent).
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new TrainerError('TAS_ERR_COLLECTIVE', `worker for ${device.kind} ${device.index} did not start within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new TrainerError('TAS_ERR_COLLECTIVE', `worker for ${device.kind} ${device.index} exited during start-up (${sig ?? code})`));
    });
    // The worker announces itself with one JSON line: {"ready": {"address": "host:port"}}.
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const msg = JSON.parse(line) as { ready?: { address: string } };
        if (msg.ready) {
          clearTimeout(timer);
          child.removeAllListeners('exit');
          resolve({ address: msg.ready.address, device, process: child });
        }
      } catch {
        process.stderr.write(`[worker ${device.index}] ${line}\n`);
      }
    });
  });
}

export async function stopLocalWorkers(workers: LocalWorker[]): Promise<void> {
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.process.exitCode !== null || w.process.signalCode !== null) return resolve();
          w.process.once('exit', () => resolve());
          w.process.kill('SIGTERM');
        }),
    ),
  );
}

export interface PoolJobOptions {
  outDir: string;
  dataDir?: string;
  jobId?: string;
  generation?: number;
  resume?: boolean;
  timeoutMs?: number;
  onStep?: (s: StepMsg) => void;
  /** Called once every worker answered Info, before the ranks start. */
  onStart?: (workers: WorkerInfoMsg[]) => void;
  /** Cancels every rank; the job then rejects with TAS_ERR_CANCELLED. */
  signal?: AbortSignal;
  /** Mutual TLS to the workers (they must serve with the same CA). */
  tls?: TlsFiles;
}

export interface PoolJobResult {
  jobId: string;
  workers: WorkerInfoMsg[];
  done: DoneMsg;
}

/**
 * The collective addresses rank `rank` dials, index = rank. A peer on the same host (the
 * same `host_id`) through its Collective server's Unix socket when the group's ranks on
 * that host outnumber its cores (or its cores are unknown): then CPU is what limits, and a
 * Unix socket costs 30-40% less kernel time than loopback TCP (4 ranks on 2 cores, 16 MB
 * all-reduce in place, p50: 28.9-32.0 ms against 34.8-43.8). Otherwise over loopback TCP,
 * whose socket buffers grow where a Unix socket's stay at 208 KiB: 2 ranks on 2 cores,
 * 12.0-16.0 ms against 17.5-23.0 (bench/collective.ts prints both; 4 runs). Any other peer at the
 * host the pool reached its worker at (so a worker bound to 0.0.0.0 on another machine is
 * dialed where it was found), on its Collective port; its own address when it reports none.
 */
export function collectivePeers(rank: number, infos: readonly WorkerInfoMsg[], addresses: readonly string[]): string[] {
  const me = infos[rank];
  const sameHost = (w: WorkerInfoMsg) => me.host_id !== '' && w.host_id === me.host_id;
  const onHost = infos.filter(sameHost).length;
  const unix = !(me.host_cores > 0) || onHost > me.host_cores;
  return infos.map((w, p) => {
    if (unix && sameHost(w) && w.collective_unix_path) return `unix:${w.collective_unix_path}`;
    const m = /^(.*):(\d+)$/u.exec(addresses[p]);
    return w.collective_port && m ? `${m[1]}:${w.collective_port}` : addresses[p];
  });
}

/**
 * Run a job with one rank per worker address (rank = index). Every rank gets every
 * peer's address; the first failure cancels the other ranks and is reported with the rank
 * it came from.
 */
export async function runJobOnWorkers(rawSpec: unknown, addresses: string[], options: PoolJobOptions): Promise<PoolJobResult> {
  const jobId = options.jobId ?? randomUUID();
  const clients = addresses.map((a) => new WorkerClient(a, options.tls));
  try {
    const infos = await Promise.all(clients.map((c) => c.info()));
    options.onStart?.(infos);
    const specJson = JSON.stringify(rawSpec);
    // This attempt's collective secret: its ranks admit no stream without it.
    const collectiveToken = randomBytes(16).toString('hex');
    // The first failure in time is the cause (a dead worker's dropped stream, say); the
    // other ranks then fail because of it, so it is the one reported.
    let first: { rank: number; error: Error & { details?: string; code?: number } } | null = null;
    const cancelAll = () => void Promise.all(clients.map((k) => k.cancel(jobId)));
    const runs = clients.map((c, rank) =>
      c
        .run(
          {
            job_id: jobId,
            generation: options.generation ?? 1,
            rank,
            world_size: clients.length,
            peers: collectivePeers(rank, infos, addresses),
            spec_json: specJson,
            out_dir: options.outDir,
            data_dir: options.dataDir ?? process.cwd(),
            resume: options.resume ?? true,
            timeout_ms: options.timeoutMs ?? 5000,
            collective_token: collectiveToken,
          },
          rank === 0 ? options.onStep : undefined,
        )
        .catch((e: Error) => {
          if (!first) {
            first = { rank, error: e };
            cancelAll();
          }
          throw e;
        }),
    );
    options.signal?.addEventListener('abort', cancelAll, { once: true });
    if (options.signal?.aborted) cancelAll();
    const settled = await Promise.allSettled(runs).finally(() => options.signal?.removeEventListener('abort', cancelAll));
    if (options.signal?.aborted) throw new TrainerError('TAS_ERR_CANCELLED', `job ${jobId} cancelled`);
    if (first) throw poolError(first, addresses);
    return { jobId, workers: infos, done: (settled[0] as PromiseFulfilledResult<DoneMsg>).value };
  } finally {
    clients.forEach((c) => c.close());
  }
}

/** A rank's failure as the pool reports it: the rank, its worker, and the worker's reason. */
function poolError(f: { rank: number; error: Error & { details?: string; code?: number } }, addresses: string[]): TrainerError {
  const why = f.error.details ?? f.error.message;
  // Worker errors arrive as "TAS_ERR_<CODE>: message"; keep the code, drop the prefix.
  const m = /^(TAS_ERR_[A-Z_]+): ([\s\S]*)$/.exec(why);
  const code = (m?.[1] ?? 'TAS_ERR_COLLECTIVE') as TrainerErrorCode;
  const reason = f.error.code === grpc.status.UNAVAILABLE && !m ? `worker unreachable or dead (${why})` : m?.[2] ?? why;
  return new TrainerError(code, `rank ${f.rank} (worker ${addresses[f.rank]}): ${reason}`);
}
