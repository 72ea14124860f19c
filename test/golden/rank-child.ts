/**
 * One rank of a golden case in its own process: binds a gRPC collective server (on
 * GOLDEN_HOST, default loopback), reports
 * its port, receives every rank's address, then runs the case with a launcher that runs
 * only this rank and sends each result to the parent.
 *   rank-child.ts <fixture.json> <world> <rank>
 */
import { readFileSync } from 'node:fs';
import { initBackend } from '../../src/trainer/backend.js';
import { GrpcCollective, listenCollectiveServer } from '../../src/collective/grpc-collective.js';
import { caseFor } from './run-case.js';
import { useLauncher, type RankLauncher } from './cases.js';

const [fixturePath, worldArg, rankArg] = process.argv.slice(2);
const world = Number(worldArg);
const rank = Number(rankArg);
const send = (m: object) => new Promise<void>((resolve) => process.send!(m, () => resolve()));

try {
  await initBackend(undefined, () => {});
  const { server, port } = await listenCollectiveServer({ host: process.env.GOLDEN_HOST ?? '127.0.0.1', port: 0 });
  const peersMsg = new Promise<string[]>((resolve) => process.once('message', (m: { peers: string[] }) => resolve(m.peers)));
  await send({ type: 'port', port });
  const peers = await peersMsg;
  const collective = await GrpcCollective.connect({ jobId: `golden-${process.ppid}`, generation: 1, rank, worldSize: world, peers, server, timeoutMs: 10_000 });
  let index = 0;
  const onlyThisRank: RankLauncher = async (w, fn) => {
    const value = await fn(collective, rank);
    await send({ type: 'result', index: index++, value });
    return [value];
  };
  useLauncher(onlyThisRank);
  const fx = JSON.parse(readFileSync(fixturePath, 'utf8')) as Record<string, unknown>;
  await caseFor(fx)!.run(fx, world);
  await collective.close();
  server.forceShutdown();
  process.exit(0);
} catch (e) {
  await send({ type: 'error', message: `rank ${rank}: ${(e as Error).message}` });
  process.exit(1);
}
