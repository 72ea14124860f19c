/**
 * A worker process: one device, one gRPC server hosting the Worker (control) and
 * Collective (data) services. Prints one JSON line `{"ready": {...}}` when it serves.
 *
 *   tsx src/gpu-pool/worker-main.ts [--host 127.0.0.1] [--port 0] [--device-kind gpu|cpu] [--device-index N]
 */
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { initBackend } from '../trainer/backend.js';
import { assignDevices, listGpus, type DeviceAssignment } from './device.js';
import { GrpcCollective, addCollectiveService } from './grpc-collective.js';
import { addWorkerService } from './worker-service.js';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'device-kind': { type: 'string' },
    'device-index': { type: 'string', default: '0' },
  },
});

function device(): DeviceAssignment {
  const index = Number(values['device-index']);
  if (values['device-kind'] === 'gpu') {
    const g = listGpus().find((x) => x.index === index);
    return { kind: 'gpu', index, name: g?.name ?? 'gpu', memoryMiB: g?.memoryMiB ?? 0, env: {} };
  }
  if (values['device-kind'] === 'cpu') return { ...assignDevices(1, [])[0], index };
  return assignDevices(1)[0];
}

const backend = await initBackend();
const dev = device();
const server = new grpc.Server({ 'grpc.max_send_message_length': -1, 'grpc.max_receive_message_length': -1 });
addCollectiveService(server);
addWorkerService(server, {
  device: dev,
  connectCollective: (req) => GrpcCollective.connect({ ...req, server, log: (m) => process.stderr.write(`[tas worker] ${m}\n`) }),
});
const host = values.host!;
const port = await new Promise<number>((resolve, reject) =>
  server.bindAsync(`${host}:${values.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
);
const address = `${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
process.stdout.write(`${JSON.stringify({ ready: { address, pid: process.pid, device: dev.kind, index: dev.index, backend: backend.name } })}\n`);

const stop = () => server.tryShutdown(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
