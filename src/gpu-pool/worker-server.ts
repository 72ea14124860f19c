/**
 * One worker's gRPC servers, bound to one device: the Worker (control) service on the
 * worker's address (grpc-js), and the Collective (data) service on its own server
 * (grpc-h2.ts: our own HTTP/2, payloads sent uncopied) on another port of the same host and
 * on a Unix socket in the temp directory, for ranks on the same host; Info reports both.
 * `worker-main.ts` (a spawned pool worker) and `tas worker` (a worker on another machine)
 * both start it.
 */
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { initBackend, type BackendInfo } from '../trainer/backend.js';
import { assignDevices, listGpus, workerMemoryLimitBytes, type DeviceAssignment } from './device.js';
import { parseFailpoints } from './failpoints.js';
import { GrpcCollective, listenCollectiveServer } from '../collective/grpc-collective.js';
import { serverCredentials, type TlsFiles } from '../grpc/tls-files.js';
import { hostId } from './host-id.js';
import { addWorkerService } from './worker-service.js';
import type { ServiceFiles } from './service-files.js';

export interface WorkerServerOptions {
  host?: string;
  /** 0: any free port. */
  port?: number;
  /** Port of the Collective server, on the same host (default 0: any free port). */
  collectivePort?: number;
  deviceKind?: 'gpu' | 'cpu';
  deviceIndex?: number;
  /** Mutual TLS for both services (and for the collective streams it opens). */
  tls?: TlsFiles;
  log?: (message: string) => void;
  /** Told when the worker's tensor engine failed and it must be restarted (worker-service.ts). */
  onEngineFailure?: (reason: string) => void;
  /** A worker that joined by URL: its jobs' files come from and go to the service (service-files.ts). */
  files?: ServiceFiles;
}

export interface WorkerServer {
  address: string;
  port: number;
  device: DeviceAssignment;
  backend: BackendInfo;
  server: grpc.Server;
  /** Port of the Collective server (on `address`'s host). */
  collectivePort: number;
  /** The memory a job may use here (Info reports it). */
  memoryLimitBytes: number;
  /** Stop accepting work and close the server (running calls are cancelled). */
  close(): Promise<void>;
}

function deviceFor(options: WorkerServerOptions): DeviceAssignment {
  const index = options.deviceIndex ?? 0;
  if (options.deviceKind === 'gpu') {
    const g = listGpus().find((x) => x.index === index);
    return { kind: 'gpu', index, name: g?.name ?? 'gpu', memoryMiB: g?.memoryMiB ?? 0, env: {} };
  }
  if (options.deviceKind === 'cpu') return { ...assignDevices(1, [])[0], index };
  return assignDevices(1)[0];
}

/**
 * TAS_COLLECTIVE_WINDOW_KB: how many KiB a rank on another host may have in flight to
 * this worker's ranks at once (the collective's `crossHostWindowBytes`; 0: unbounded).
 * Unset: the collective's default (512 KiB).
 */
export function collectiveWindowFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.TAS_COLLECTIVE_WINDOW_KB?.trim();
  if (!raw) return undefined;
  const kb = Number(raw);
  if (!Number.isInteger(kb) || kb < 0 || kb > 2 ** 21) throw new RangeError(`TAS_COLLECTIVE_WINDOW_KB must be an integer from 0 (unbounded) to 2097152, got '${raw}'`);
  return kb * 1024;
}

export async function startWorkerServer(options: WorkerServerOptions = {}): Promise<WorkerServer> {
  const log = options.log ?? ((m: string) => process.stderr.write(`[tas worker] ${m}\n`));
  const backend = await initBackend(undefined, log);
  const device = deviceFor(options);
  const host = options.host ?? '127.0.0.1';
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host;
  const unixPath = join(tmpdir(), `tas-collective-${process.pid}-${randomBytes(4).toString('hex')}.sock`);
  const coll = await listenCollectiveServer({ host, port: options.collectivePort ?? 0, unixPath, tls: options.tls });
  const server = new grpc.Server({ 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
  const memoryLimitBytes = workerMemoryLimitBytes(device, backend.name);
  const failpoints = parseFailpoints(process.env.TAS_FAILPOINTS);
  const windowBytes = collectiveWindowFromEnv(process.env);
  if (failpoints.length > 0) log(`failpoints armed (TAS_FAILPOINTS): ${process.env.TAS_FAILPOINTS}`);
  addWorkerService(server, {
    device,
    collective: { port: coll.port, unixPath: coll.unixPath, hostId: hostId() },
    connectCollective: (req) => GrpcCollective.connect({ ...req, server: coll.server, log, ...(windowBytes !== undefined ? { crossHostWindowBytes: windowBytes } : {}), ...(options.tls ? { tls: options.tls } : {}) }),
    memoryLimitBytes,
    ...(options.onEngineFailure ? { onEngineFailure: options.onEngineFailure } : {}),
    ...(failpoints.length > 0 ? { failpoints } : {}),
    ...(options.files ? { files: options.files } : {}),
    log,
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${options.port ?? 0}`, serverCredentials(options.tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `${shown}:${port}`;
  return {
    address,
    port,
    device,
    backend,
    server,
    collectivePort: coll.port,
    memoryLimitBytes,
    close: () =>
      new Promise<void>((resolve) => {
        // Give running calls a moment to send their status, then force.
        const t = setTimeout(() => {
          server.forceShutdown();
          coll.server.forceShutdown();
        }, 2000);
        let left = 2;
        const one = () => {
          if (--left > 0) return;
          clearTimeout(t);
          resolve();
        };
        server.tryShutdown(one);
        coll.server.tryShutdown(one);
      }),
  };
}

/** TLS files from flags or TAS_TLS_CERT / TAS_TLS_KEY / TAS_TLS_CA; all three or none. */
export function tlsFrom(v: { 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string }, env: NodeJS.ProcessEnv = process.env): TlsFiles | undefined {
  const cert = v['tls-cert'] ?? env.TAS_TLS_CERT;
  const key = v['tls-key'] ?? env.TAS_TLS_KEY;
  const ca = v['tls-ca'] ?? env.TAS_TLS_CA;
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key || !ca) throw new Error('TLS needs all three of --tls-cert, --tls-key and --tls-ca (or TAS_TLS_CERT, TAS_TLS_KEY, TAS_TLS_CA)');
  return { cert, key, ca };
}
