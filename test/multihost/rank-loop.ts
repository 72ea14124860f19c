/**
 * One rank for the partition test: binds its collective on GOLDEN_HOST, reports the port,
 * receives every rank's address, then all-reduces until the collective fails, and reports
 * that failure (its message, the rank it names, and when it came).
 *   rank-loop.ts <world> <rank> <timeoutMs>
 */
import { GrpcCollective, listenCollectiveServer } from '../../src/collective/grpc-collective.js';
import { CollectiveError } from '../../src/collective/collective-error.js';

const [world, rank, timeoutMs] = process.argv.slice(2).map(Number) as [number, number, number];
const send = (m: object) => new Promise<void>((resolve) => process.send!(m, () => resolve()));

const { server, port } = await listenCollectiveServer({ host: process.env.GOLDEN_HOST ?? '127.0.0.1', port: 0 });
const peers = new Promise<string[]>((resolve) => process.once('message', (m: { peers: string[] }) => resolve(m.peers)));
await send({ type: 'port', port });
const collective = await GrpcCollective.connect({ jobId: 'partition', generation: 1, rank, worldSize: world, peers: await peers, server, timeoutMs });
const buf = new Float32Array(4096);
let calls = 0;
try {
  for (;;) {
    await collective.allReduce(buf);
    if (++calls === 20) await send({ type: 'running' });
  }
} catch (e) {
  await send({ type: 'failed', at: Date.now(), message: (e as Error).message, failedRank: e instanceof CollectiveError ? (e.failedRank ?? null) : null });
}
await collective.close().catch(() => undefined);
server.forceShutdown();
process.exit(0);
