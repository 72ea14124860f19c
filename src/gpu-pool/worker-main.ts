/**
 * A spawned pool worker: one device, one gRPC server hosting the Worker (control) and
 * Collective (data) services. Prints one JSON line `{"ready": {...}}` when it serves.
 *
 *   tsx src/gpu-pool/worker-main.ts [--host 127.0.0.1] [--port 0] [--device-kind gpu|cpu] [--device-index N]
 *                                    [--tls-cert F --tls-key F --tls-ca F] [--exit-with-parent]
 */
import { parseArgs } from 'node:util';
import { startWorkerServer, tlsFrom } from './worker-server.js';
import { ENGINE_FAILURE_EXIT_CODE } from './worker-service.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'device-kind': { type: 'string' },
    'device-index': { type: 'string', default: '0' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    'tls-ca': { type: 'string' },
    // Exit when the parent's end of stdin closes: a pool that dies (even by SIGKILL)
    // takes its workers with it instead of leaving orphans holding devices.
    'exit-with-parent': { type: 'boolean', default: false },
  },
});

const kind = values['device-kind'];
const tls = tlsFrom(values);
// An engine that failed may be corrupt: answer what is in flight, then exit; the pool
// starts a fresh process in this one's place.
const restart = (reason: string) => {
  process.stderr.write(`[tas worker] exiting to be restarted: the tensor engine failed (${reason})\n`);
  void w.close().finally(() => process.exit(ENGINE_FAILURE_EXIT_CODE));
};
const w = await startWorkerServer({
  onEngineFailure: restart,
  host: values.host!,
  port: Number(values.port),
  ...(kind === 'gpu' || kind === 'cpu' ? { deviceKind: kind } : {}),
  deviceIndex: Number(values['device-index']),
  ...(tls ? { tls } : {}),
});
process.stdout.write(`${JSON.stringify({ ready: { address: w.address, pid: process.pid, device: w.device.kind, index: w.device.index, backend: w.backend.name } })}\n`);

const stop = () => void w.close().then(() => process.exit(0));
if (values['exit-with-parent']) {
  // A pool's worker is stopped by its pool, which closes this pipe (also when the pool
  // dies, even by SIGKILL). SIGINT and SIGTERM, which a terminal or a service manager
  // sends to every process of the service, are left to the pool: it stops its workers in
  // order and does not replace them, whereas a worker that stopped on its own would be.
  process.on('SIGTERM', () => undefined);
  process.on('SIGINT', () => undefined);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
} else {
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
