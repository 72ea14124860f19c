/**
 * One rank of a gRPC collective group in its own process, for the multi-process tests.
 *
 *   node --import tsx collective-child.ts <rank> <worldSize> <jobId> <timeoutMs> <mode>
 *
 * Binds 127.0.0.1:0 and prints {"event":"listening","port":N}; reads one JSON line
 * {"peers":["host:port",...]} from stdin; connects; runs a fixed set of collectives on
 * inputs derived from the rank (see `inputs`) and prints {"event":"results",...}. Then:
 * - mode "normal": closes and prints {"event":"closed"}, exit 0;
 * - mode "victim": prints {"event":"idle"} and waits (to be killed or stopped);
 * - mode "survivor": prints {"event":"waiting"}, calls allReduce (which the victim never
 *   joins) and prints {"event":"error","message","code","failedRank","elapsedMs"} when it
 *   rejects (or {"event":"unexpected-success"}), then exits.
 * Every line on stdout is one JSON object.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { CollectiveError, GrpcCollective, listenCollectiveServer } from '../grpc-collective.js';

/** The inputs of `rank` (shared with the test, which recomputes the expected results). */
export function inputs(rank: number): { gather: Float32Array; small: Float32Array; large: Float32Array; bcast: Float32Array } {
  const gather = Float32Array.from({ length: rank + 2 }, (_, i) => rank * 10 + i + 0.25);
  const small = Float32Array.from({ length: 37 }, (_, i) => Math.sin(i * 0.7 + rank) * (rank + 1));
  const large = Float32Array.from({ length: 100_003 }, (_, i) => Math.cos(i * 0.001 + rank * 0.5) / (rank + 1));
  const bcast = Float32Array.from({ length: 5 }, (_, i) => rank * 100 + i);
  return { gather, small, large, bcast };
}

function out(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** FNV-1a over the bytes: a compact fingerprint of a large result. */
export function fingerprint(a: Float32Array): string {
  const b = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  let h = 0x811c9dc5;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i], 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

async function main(): Promise<void> {
  const [rankS, worldS, jobId, timeoutS, mode] = process.argv.slice(2);
  const rank = Number(rankS), worldSize = Number(worldS), timeoutMs = Number(timeoutS);
  const { server, port } = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
  out({ event: 'listening', rank, port });
  const rl = createInterface({ input: process.stdin });
  const line = await new Promise<string>((resolve) => rl.once('line', resolve));
  rl.close();
  const { peers } = JSON.parse(line) as { peers: string[] };
  const c = await GrpcCollective.connect({ jobId, generation: 1, rank, worldSize, peers, server, timeoutMs, heartbeatMs: Math.min(500, timeoutMs / 5) });
  out({ event: 'connected', rank });
  const x = inputs(rank);
  const gathered = await c.allGather(x.gather);
  const small = await c.allReduce(x.small);
  const large = await c.allReduce(x.large);
  const bcast = await c.broadcast(x.bcast, worldSize - 1);
  await c.barrier();
  out({ event: 'results', rank, allGather: gathered.map((a) => Array.from(a)), allReduceSmall: Array.from(small), allReduceLarge: fingerprint(large), allReduceLargeHead: Array.from(large.subarray(0, 4)), broadcast: Array.from(bcast) });
  if (mode === 'victim') {
    out({ event: 'idle', rank });
    return; // the server keeps the process alive until it is killed
  }
  if (mode === 'survivor') {
    out({ event: 'waiting', rank });
    const t0 = performance.now();
    try {
      await c.allReduce(new Float32Array(512).fill(1));
      out({ event: 'unexpected-success', rank });
    } catch (e) {
      const err = e as CollectiveError;
      out({ event: 'error', rank, message: err.message, code: err.code, failedRank: err.failedRank, elapsedMs: performance.now() - t0 });
    }
    await c.destroy();
    process.exit(0);
  }
  await c.close();
  out({ event: 'closed', rank });
  process.exit(0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e) => {
    out({ event: 'fatal', message: (e as Error).message });
    process.exit(1);
  });
}
