/**
 * bench:collective — the gRPC Collective between processes on loopback, one process per
 * rank, for world sizes 2 and 4: all-reduce latency (p50/p99, 512 float32), algorithm
 * bandwidth (bytes / p50 time, 256K and 4M float32), allGather latency of SyncBN-sized
 * stats; a raw TCP round trip (node:net, 2 KB ping-pong) as the floor; and, when
 * /usr/bin/python3 has torch, torch.distributed over gloo on the same machine
 * (bench/peers/gloo_allreduce.py) with our/gloo ratios. Every result is one JSON line.
 *
 * Transports (BENCH_TRANSPORTS=tcp,unix, default both): `tcp`, loopback TCP, as ranks on
 * different hosts dial each other; `unix`, the same gRPC over Unix sockets, as pool
 * workers on one host do (pool.ts `collectivePeers`). gloo runs over loopback TCP (its
 * transport here); ratios are printed for each of ours.
 * BENCH_WORLDS=2,4 (default) picks the world sizes; BENCH_GLOO=0 skips gloo;
 * BENCH_FRAME_BYTES sets the collective's frameBytes and BENCH_WINDOW_KB its
 * crossHostWindowBytes in KiB (0: unbounded; default: the collective's own).
 * The rank processes start exactly as the pool starts its workers: the same Node flags
 * and malloc environment (src/gpu-pool/worker-env.ts; the first JSON line says which);
 * BENCH_WORKER_ENV=0 starts them as plain `node --import tsx` instead.
 * Namespace mode (BENCH_NETNS=1, needs root): each rank on a host of its own (a network
 * namespace, test/netns/hosts.ts) behind a link rate-limited to BENCH_LINK_MBIT (default
 * 1000) both ways, and gloo's ranks on the same hosts; lines give the all-reduce's bus
 * bandwidth (algorithm bandwidth x 2(W-1)/W, the share of each link an all-reduce uses)
 * against the link rate, from the p50 of 30 calls (min and p90 beside it).
 * Internally re-runs this file as `rank` and `tcp-echo` child processes.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SUM_BACKEND } from '../src/collective/collective-math.js';
import { GrpcCollective, listenCollectiveServer } from '../src/collective/grpc-collective.js';
import { WORKER_MALLOC_ENV, workerEnv, workerNodeFlags } from '../src/gpu-pool/worker-env.js';
import { makeNetwork, netnsUnavailable, type Network } from '../test/netns/hosts.js';

const SELF = fileURLToPath(import.meta.url);
const GLOO = join(import.meta.dirname, 'peers/gloo_allreduce.py');
const GLOO_RANK = join(import.meta.dirname, 'peers/gloo_allreduce_rank.py');

function quantile(xs: number[], q: number): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * q))];
}

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// ---- child roles ------------------------------------------------------------------------

/** One rank: bind, report the port, read the peers, connect, measure; rank 0 prints results. */
async function rankMain(world: number, rank: number, transport: string): Promise<void> {
  const unixPath = join(tmpdir(), `tas-bench-${process.pid}.sock`);
  const { server, port } = await listenCollectiveServer({ host: process.env.BENCH_LISTEN_HOST ?? '127.0.0.1', port: 0, unixPath });
  process.stdout.write(JSON.stringify({ port, unixPath }) + '\n');
  const rl = createInterface({ input: process.stdin });
  const line = await new Promise<string>((r) => rl.once('line', r));
  rl.close();
  const { peers } = JSON.parse(line) as { peers: string[] };
  // Generous timeout: W=4 processes share 2 cores.
  const frameBytes = process.env.BENCH_FRAME_BYTES ? { frameBytes: Number(process.env.BENCH_FRAME_BYTES) } : {};
  const window = process.env.BENCH_WINDOW_KB ? { crossHostWindowBytes: Number(process.env.BENCH_WINDOW_KB) * 1024 } : {};
  const c = await GrpcCollective.connect({ jobId: 'bench', generation: 1, rank, worldSize: world, peers, server, timeoutMs: 30_000, heartbeatMs: 500, ...frameBytes, ...window });
  const report = (o: Record<string, unknown>) => rank === 0 && emit({ bench: 'collective', impl: 'grpc', transport, world, ...o });

  const time = async (f: () => Promise<unknown>, warm: number, iters: number): Promise<number[]> => {
    for (let i = 0; i < warm; i++) await f();
    await c.barrier();
    const ts: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t = performance.now();
      await f();
      ts.push(performance.now() - t);
    }
    return ts;
  };

  {
    const x = new Float32Array(512).fill(1);
    const ts = await time(() => c.allReduce(x), 50, 200);
    report({ op: 'allReduce', floats: 512, iters: ts.length, p50_us: round(quantile(ts, 0.5) * 1000, 1), p99_us: round(quantile(ts, 0.99) * 1000, 1) });
  }
  {
    // SyncBN forward: (n, mean, M2) for 128 channels.
    const x = new Float32Array(2 * 128 + 1).fill(1);
    const ts = await time(() => c.allGather(x), 50, 200);
    report({ op: 'allGather', floats: x.length, iters: ts.length, p50_us: round(quantile(ts, 0.5) * 1000, 1), p99_us: round(quantile(ts, 0.99) * 1000, 1) });
  }
  for (const [n, iters] of [
    [262_144, 50],
    [4_194_304, transport === 'netns' ? 30 : 10],
  ] as const) {
    // allReduceInPlace is torch.distributed.all_reduce's form, which gloo's script times;
    // allReduce also allocates the result array.
    // Across hosts, the trainer's form only (the link, not allocation, is the question there).
    for (const op of transport === 'netns' ? (['allReduceInPlace'] as const) : (['allReduceInPlace', 'allReduce'] as const)) {
      const x = new Float32Array(n).fill(1);
      const ts = await time(() => (op === 'allReduce' ? c.allReduce(x) : c.allReduceInPlace(x)), 5, iters);
      const p50 = quantile(ts, 0.5);
      report({ op, floats: n, iters, p50_us: round(p50 * 1000, 1), min_us: round(Math.min(...ts) * 1000, 1), p90_us: round(quantile(ts, 0.9) * 1000, 1), algbw_GBps: round((n * 4) / (p50 / 1000) / 1e9) });
    }
  }
  if (transport !== 'netns') {
    // One direction only (root 0 to the others): the transport's own throughput, the
    // ceiling under the all-reduce's (which also adds and copies).
    const n = 4_194_304;
    const x = new Float32Array(n).fill(1);
    const ts = await time(() => c.broadcast(x, 0), 3, 10);
    const p50 = quantile(ts, 0.5);
    report({ op: 'broadcast', floats: n, iters: ts.length, p50_us: round(p50 * 1000, 1), algbw_GBps: round((n * 4) / (p50 / 1000) / 1e9) });
  }
  await c.close();
  server.forceShutdown();
}

/** TCP echo server for the round-trip floor. */
function tcpEcho(): void {
  const srv = createServer((s) => {
    s.setNoDelay(true);
    s.pipe(s);
  });
  srv.listen(0, '127.0.0.1', () => {
    const a = srv.address();
    process.stdout.write(JSON.stringify({ port: typeof a === 'object' && a ? a.port : 0 }) + '\n');
  });
}

// ---- parent -----------------------------------------------------------------------------

/** Rank processes start as the pool starts its workers (worker-env.ts), unless BENCH_WORKER_ENV=0. */
const AS_WORKER = process.env.BENCH_WORKER_ENV !== '0';

/** `hostWorkers`: start it as the pool starts one of that many workers on this host; 0: plain node. */
function spawnChild(args: string[], hostWorkers = 0): { child: ChildProcess; lines: AsyncIterator<string> } {
  const asWorker = hostWorkers > 0;
  const flags = asWorker ? workerNodeFlags(hostWorkers) : [];
  const child = spawn(process.execPath, [...flags, '--import', 'tsx', SELF, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env: asWorker ? workerEnv(process.env) : process.env });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return { child, lines };
}

/** A rank on host `r` of a namespace network, started as a pool worker of a one-worker host. */
function spawnOnHost(net: Network, r: number, args: string[]): { child: ChildProcess; lines: AsyncIterator<string> } {
  const host = net.hosts[r]!;
  const flags = AS_WORKER ? workerNodeFlags(1) : [];
  const env = { ...(AS_WORKER ? workerEnv(process.env) : process.env), BENCH_LISTEN_HOST: host.ip };
  const child = host.spawn(process.execPath, [...flags, '--import', 'tsx', SELF, ...args], { stdio: ['pipe', 'pipe', 'inherit'], env });
  return { child, lines: createInterface({ input: child.stdout! })[Symbol.asyncIterator]() };
}

/** gloo's ranks on the same hosts (one process each); rank 0's lines. */
async function glooOnHosts(net: Network, world: number, port: number): Promise<Record<string, unknown>[]> {
  const env = { ...process.env, MASTER_ADDR: net.hosts[0]!.ip, MASTER_PORT: String(port), GLOO_SOCKET_IFNAME: 'eth0' };
  const procs = net.hosts.slice(0, world).map((h, r) => h.spawn('/usr/bin/python3', [GLOO_RANK, String(world), String(r)], { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const lines: string[] = [];
  createInterface({ input: procs[0]!.stdout! }).on('line', (l) => lines.push(l));
  const guard = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), 300_000);
  try {
    await Promise.all(procs.map((p) => new Promise((r) => p.once('exit', r))));
  } finally {
    clearTimeout(guard);
  }
  return lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Namespace mode: the 16 MB all-reduce's bus bandwidth over rate-limited links, ours and gloo's. */
async function acrossHosts(worlds: number[]): Promise<void> {
  const why = netnsUnavailable();
  if (why) {
    emit({ bench: 'collective', mode: 'netns', skipped: why });
    return;
  }
  const rate = Number(process.env.BENCH_LINK_MBIT ?? 1000);
  const linkGBps = (rate * 1e6) / 8 / 1e9;
  const torch = hasTorch();
  for (const w of worlds) {
    const net = await makeNetwork(w, { rateMbit: rate });
    try {
      // From the p50 itself: the lines' algbw_GBps is rounded to 0.001 GB/s, a step of
      // 1.2% of a 1 Gbit/s link's bus bandwidth.
      const busbw = (p50us: number) => ((4_194_304 * 4) / (p50us / 1e6) / 1e9) * ((2 * (w - 1)) / w);
      const ours = (await grpcWorld(w, 'netns', net)).find((r) => r.op === 'allReduceInPlace' && r.floats === 4_194_304);
      const oursBus = ours ? busbw(Number(ours.p50_us)) : NaN;
      emit({ bench: 'collective', mode: 'netns', impl: 'grpc', world: w, link_mbit: rate, floats: 4_194_304, busbw_GBps: round(oursBus, 4), ratio_to_link: round(oursBus / linkGBps), target: '>= 0.9', met: oursBus / linkGBps >= 0.9 });
      if (!torch) {
        emit({ bench: 'collective', mode: 'netns', impl: 'gloo', skipped: 'no torch in /usr/bin/python3 (or BENCH_GLOO=0)' });
        continue;
      }
      const g = (await glooOnHosts(net, w, 29_500 + Math.floor(Math.random() * 400) * 10)).find((r) => r.floats === 4_194_304);
      const glooBus = g ? busbw(Number(g.p50_us)) : NaN;
      emit({ bench: 'collective', mode: 'netns', impl: 'gloo', world: w, link_mbit: rate, floats: 4_194_304, busbw_GBps: round(glooBus, 4), ratio_to_link: round(glooBus / linkGBps), ours_over_gloo: round(oursBus / glooBus) });
    } finally {
      await net.close();
    }
  }
}

async function nextJson(lines: AsyncIterator<string>): Promise<Record<string, unknown> | null> {
  const r = await lines.next();
  return r.done ? null : (JSON.parse(r.value) as Record<string, unknown>);
}

async function tcpRoundTrip(): Promise<void> {
  const { child, lines } = spawnChild(['tcp-echo']);
  const { port } = (await nextJson(lines)) as { port: number };
  const sock = connect(port, '127.0.0.1');
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.setNoDelay(true);
  const msg = Buffer.alloc(2048, 7);
  let got = 0;
  let done: (() => void) | null = null;
  sock.on('data', (d) => {
    got += d.length;
    if (got >= msg.length && done) {
      got -= msg.length;
      const f = done;
      done = null;
      f();
    }
  });
  const ts: number[] = [];
  for (let i = 0; i < 2200; i++) {
    const t = performance.now();
    await new Promise<void>((r) => {
      done = r;
      sock.write(msg);
    });
    if (i >= 200) ts.push(performance.now() - t);
  }
  sock.destroy();
  child.kill();
  emit({ bench: 'tcp_rtt', impl: 'node:net', bytes: 2048, iters: ts.length, p50_us: round(quantile(ts, 0.5) * 1000, 1), p99_us: round(quantile(ts, 0.99) * 1000, 1) });
}

async function grpcWorld(world: number, transport: string, net?: Network): Promise<Record<string, unknown>[]> {
  const ranks = Array.from({ length: world }, (_, r) => (net ? spawnOnHost(net, r, ['rank', String(world), String(r), transport]) : spawnChild(['rank', String(world), String(r), transport], AS_WORKER ? world : 0)));
  const kill = () => ranks.forEach((x) => x.child.kill('SIGKILL'));
  const guard = setTimeout(() => {
    process.stderr.write(`bench: world ${world} timed out\n`);
    kill();
  }, 300_000);
  try {
    const addrs = await Promise.all(ranks.map(async (x) => (await nextJson(x.lines)) as { port: number; unixPath: string }));
    const peers = addrs.map((a, r) => (transport === 'unix' ? `unix:${a.unixPath}` : `${net ? net.hosts[r]!.ip : '127.0.0.1'}:${a.port}`));
    for (const x of ranks) x.child.stdin!.write(JSON.stringify({ peers }) + '\n');
    const results: Record<string, unknown>[] = [];
    for (let o = await nextJson(ranks[0].lines); o; o = await nextJson(ranks[0].lines)) {
      emit(o);
      results.push(o);
    }
    await Promise.all(ranks.map((x) => (x.child.exitCode !== null ? undefined : new Promise((r) => x.child.once('exit', r)))));
    return results;
  } finally {
    clearTimeout(guard);
  }
}

function glooWorld(world: number, port: number): Record<string, unknown>[] {
  try {
    const out = execFileSync('/usr/bin/python3', [GLOO, String(world)], { env: { ...process.env, MASTER_PORT: String(port) }, encoding: 'utf8', timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
    const rows = out
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const r of rows) emit({ bench: 'collective', impl: 'gloo', world: r.world, op: 'allReduce', floats: r.floats, p50_us: round(Number(r.p50_us), 1), algbw_GBps: round(Number(r.algbw_GBps)) });
    return rows;
  } catch (e) {
    emit({ bench: 'collective', impl: 'gloo', world, error: (e as Error).message.split('\n')[0] });
    return [];
  }
}

function hasTorch(): boolean {
  if (process.env.BENCH_GLOO === '0' || !existsSync(GLOO)) return false;
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import torch'], { stdio: 'ignore', timeout: 60_000 });
    return true;
  } catch {
    return false;
  }
}

async function main(): Promise<void> {
  const [role, a, b, c] = process.argv.slice(2);
  if (role === 'rank') return rankMain(Number(a), Number(b), c);
  if (role === 'tcp-echo') return tcpEcho();

  const worlds = (process.env.BENCH_WORLDS ?? '2,4').split(',').map(Number);
  if (process.env.BENCH_NETNS === '1') return acrossHosts(worlds);
  const transports = (process.env.BENCH_TRANSPORTS ?? 'tcp,unix').split(',');
  const env = workerEnv(process.env);
  emit({
    bench: 'collective',
    impl: 'grpc',
    sums: SUM_BACKEND === 'native' ? 'native/sum.c' : 'JS (native/sum.c not built)',
    rank_processes: AS_WORKER ? 'as pool workers (src/gpu-pool/worker-env.ts)' : 'plain node (BENCH_WORKER_ENV=0)',
    node_flags: Object.fromEntries(worlds.map((w) => [`world ${w}`, AS_WORKER ? workerNodeFlags(w) : []])),
    env: AS_WORKER ? Object.fromEntries([...Object.keys(WORKER_MALLOC_ENV), 'GLIBC_TUNABLES'].map((k) => [k, env[k]])) : {},
  });
  await tcpRoundTrip();
  const ours = new Map<string, Record<string, unknown>[]>();
  for (const w of worlds) for (const t of transports) ours.set(`${t}/${w}`, await grpcWorld(w, t));
  if (!hasTorch()) {
    emit({ bench: 'collective', impl: 'gloo', skipped: 'no torch in /usr/bin/python3 (or BENCH_GLOO=0)' });
    return;
  }
  const base = 29_500 + Math.floor(Math.random() * 400) * 10;
  for (const w of worlds) {
    const gloo = glooWorld(w, base + w);
    const g512 = gloo.find((r) => r.floats === 512);
    const g4m = gloo.find((r) => r.floats === 4_194_304);
    for (const t of transports) {
      const o512 = ours.get(`${t}/${w}`)!.find((r) => r.op === 'allReduce' && r.floats === 512);
      const o4m = ours.get(`${t}/${w}`)!.find((r) => r.op === 'allReduceInPlace' && r.floats === 4_194_304);
      if (g512 && o512) {
        const ratio = Number(o512.p50_us) / Number(g512.p50_us);
        emit({ bench: 'ratio', world: w, transport: t, metric: 'allReduce_512_p50_ours_over_gloo', value: round(ratio), target: '<= 0.5', met: ratio <= 0.5 });
      }
      if (g4m && o4m) {
        const ratio = Number(o4m.algbw_GBps) / Number(g4m.algbw_GBps);
        emit({ bench: 'ratio', world: w, transport: t, metric: 'allReduce_4M_algbw_ours_over_gloo', ours: 'allReduceInPlace', value: round(ratio), target: '>= 1.0', met: ratio >= 1.0 });
      }
    }
  }
}

await main();
