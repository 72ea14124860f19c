/**
 * One worker's gRPC server: the Worker (control) and Collective (data) services on one
 * address, bound to one device. `worker-main.ts` (a spawned pool worker) and `tas worker`
 * (a worker on another machine) both start it.
 */
import * as grpc from '@grpc/grpc-js';
import { initBackend, type BackendInfo } from '../trainer/backend.js';
import { assignDevices, listGpus, type DeviceAssignment } from './device.js';
import { GrpcCollective, addCollectiveService, serverCredentials, type TlsFiles } from './grpc-collective.js';
import { addWorkerService } from './worker-service.js';

export interface WorkerServerOptions {
  host?: string;
  /** 0: any free port. */
  port?: number;
  deviceKind?: 'gpu' | 'cpu';
  deviceIndex?: number;
  /** Mutual TLS for both services (and for the collective streams it opens). */
  tls?: TlsFiles;
  log?: (message: string) => void;
}

export interface WorkerServer {
  address: string;
  port: number;
  device: DeviceAssignment;
  backend: BackendInfo;
  server: grpc.Server;
  /** Stop accepting work and close the server (running calls are cancelled). */
  close(): Promise<void>;
}

function deviceFor(o: WorkerServerOptions): DeviceAssignment {
  const index = o.deviceIndex ?? 0;
  if (o.deviceKind === 'gpu') {
    const g = listGpus().find((x) => x.index === index);
    return { kind: 'gpu', index, name: g?.name ?? 'gpu', memoryMiB: g?.memoryMiB ?? 0, env: {} };
  }
  if (o.deviceKind === 'cpu') return { ...assignDevices(1, [])[0], index };
  return assignDevices(1)[0];
}

export async function startWorkerServer(o: WorkerServerOptions = {}): Promise<WorkerServer> {
  const log = o.log ?? ((m: string) => process.stderr.write(`[tas worker] ${m}\n`));
  const backend = await initBackend(undefined, log);
  const device = deviceFor(o);
  const server = new grpc.Server({ 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
  addCollectiveService(server);
  addWorkerService(server, {
    device,
    connectCollective: (req) => GrpcCollective.connect({ ...req, server, log, ...(o.tls ? { tls: o.tls } : {}) }),
  });
  const host = o.host ?? '127.0.0.1';
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${o.port ?? 0}`, serverCredentials(o.tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  return {
    address,
    port,
    device,
    backend,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        // Give running calls a moment to send their status, then force.
        const t = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
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
