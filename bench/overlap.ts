/**
 * bench:overlap — the step time of a data-parallel job with the gradient all-reduce
 * overlapped with backward (buckets started as backward finishes them) and without (every
 * bucket started after backward), ranks on different hosts behind rate-limited links.
 *
 * BENCH_WORLD (default 4) `tas worker` processes, each in a network namespace of its own
 * (test/netns/hosts.ts) behind a link limited to BENCH_LINK_MBIT (default 1000) both
 * ways, started as the pool starts its workers (worker-env.ts) with TAS_GRAD_OVERLAP=1 or
 * 0 (the workers read it, so each mode gets fresh workers). This process reaches them
 * through the namespaces' gateway and runs each job as `tas train --workers-at` does
 * (runJobOnWorkers); the ranks all-reduce with each other over TCP across their links.
 *
 * Models: `examples/cnn-images.json` at W workers (its global batch split evenly), and the
 * bench:train MLP (784-512-512-10 with BatchNorm, batch 64 per rank, 2.7 MB of gradients:
 * the case where the all-reduce's bytes matter), both with TAS_GRAD_BUCKET_MB=BENCH_BUCKET_MB
 * (default 1, PyTorch DDP's first bucket; the MLP then has two buckets). BENCH_MODELS=cnn,mlp
 * picks; BENCH_ROUNDS (default 3) alternates the modes that many times.
 *
 * A step's time is the time between two of rank 0's step reports as they arrive here
 * (the first BENCH_SKIP=3 steps are warm-up); grad_sync_ms is what a rank waited for the
 * gradients after its backward, as the worker reports it. One JSON line per run, then one
 * per model comparing the medians. Workers run one compute thread each (W processes
 * share this machine's cores).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { runJobOnWorkers } from '../src/gpu-pool/pool.js';
import type { StepMsg } from '../src/gpu-pool/messages.js';
import { workerEnv, workerNodeFlags } from '../src/gpu-pool/worker-env.js';
import { makeNetwork, netnsUnavailable, type Host, type Network } from '../test/netns/hosts.js';
import { MLP } from './train/models.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../examples/cnn-images.json', import.meta.url));

const world = Number(process.env.BENCH_WORLD ?? 4);
const linkMbit = Number(process.env.BENCH_LINK_MBIT ?? 1000);
const bucketMb = process.env.BENCH_BUCKET_MB ?? '1';
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const skip = Number(process.env.BENCH_SKIP ?? 3);
const models = (process.env.BENCH_MODELS ?? 'cnn,mlp').split(',').map((s) => s.trim());

function emit(obj: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function median(xs: readonly number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** The jobs: the example as given, on `world` workers; the MLP on synthetic blobs. */
function specs(): Record<string, Record<string, unknown>> {
  const example = JSON.parse(readFileSync(EXAMPLE, 'utf8')) as Record<string, unknown> & { local_batch_sizes?: number[] };
  const globalBatch = (example.local_batch_sizes ?? []).reduce((a, b) => a + b, 0);
  const cnn = { ...example, local_batch_sizes: undefined, workers: world, batch_size: globalBatch };
  const mlp = {
    name: 'bench-overlap-mlp',
    model: MLP.spec,
    data: { type: 'synthetic', generator: 'blobs', n: 64 * world * 12, features: 784, classes: MLP.classes, seed: 1 },
    optimizer: { type: 'sgd', lr: MLP.lr, momentum: 0.9 },
    epochs: 4,
    workers: world,
    batch_size: 64 * world,
  };
  return { cnn: JSON.parse(JSON.stringify(cnn)) as Record<string, unknown>, mlp };
}

interface Worker {
  child: ChildProcess;
  address: string;
}

/** `tas worker` on a host, resolved with its address once it prints that it is ready. */
async function startWorker(host: Host, overlap: boolean): Promise<Worker> {
  const args = [...workerNodeFlags(1), '--import', 'tsx', MAIN, 'worker', '--host', host.ip, '--port', '0'];
  const env = { ...workerEnv(), TAS_COMPUTE_THREADS: '1', TAS_GRAD_OVERLAP: overlap ? '1' : '0', TAS_GRAD_BUCKET_MB: bucketMb };
  const child = host.spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const log: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => log.push(l));
  const exited = once(child, 'exit');
  const address = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        const m = JSON.parse(l) as { ready?: { address?: string } };
        if (m.ready?.address) resolve(m.ready.address);
      } catch {
        log.push(l);
      }
    });
    void exited.then(() => reject(new Error(`tas worker on ${host.ns} exited before it was ready:\n${log.join('\n')}`)));
  });
  return { child, address };
}

async function stopWorkers(ws: readonly Worker[]): Promise<void> {
  await Promise.all(
    ws.map(async (w) => {
      if (w.child.exitCode !== null || w.child.signalCode !== null) return;
      const gone = once(w.child, 'exit');
      w.child.kill('SIGTERM');
      await gone;
    }),
  );
}

interface Run {
  stepMs: number;
  gradSyncMs: number;
  computeMs: number;
  bnSyncMs: number;
  steps: number;
}

async function runOnce(net: Network, name: string, spec: Record<string, unknown>, overlap: boolean): Promise<Run> {
  const workers = await Promise.all(net.hosts.slice(0, world).map((h) => startWorker(h, overlap)));
  const outDir = mkdtempSync(join(tmpdir(), 'tas-bench-overlap-'));
  try {
    const arrivals: number[] = [];
    const reports: StepMsg[] = [];
    await runJobOnWorkers(spec, workers.map((w) => w.address), {
      outDir,
      jobId: `bench-overlap-${name}-${overlap ? 1 : 0}-${process.pid}`,
      timeoutMs: 30_000,
      onStep: (s) => {
        arrivals.push(performance.now());
        reports.push(s);
      },
    });
    const gaps = arrivals.slice(skip + 1).map((t, i) => t - arrivals[skip + i]!);
    const kept = reports.slice(skip + 1);
    if (gaps.length < 3) throw new Error(`${name}: only ${arrivals.length} step reports; the job is too short to time`);
    return {
      stepMs: median(gaps),
      gradSyncMs: median(kept.map((s) => s.grad_sync_ms)),
      computeMs: median(kept.map((s) => s.compute_ms)),
      bnSyncMs: median(kept.map((s) => s.bn_forward_sync_ms + s.bn_backward_sync_ms)),
      steps: gaps.length,
    };
  } finally {
    await stopWorkers(workers);
    rmSync(outDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const why = netnsUnavailable();
  if (why) {
    emit({ bench: 'overlap', skipped: why });
    process.exitCode = 1;
    return;
  }
  const all = specs();
  const net = await makeNetwork(world, { rateMbit: linkMbit, gateway: true });
  const stop = () => void net.close().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    emit({ bench: 'overlap', world, link_mbit: linkMbit, bucket_mb: Number(bucketMb), rounds, compute_threads_per_worker: 1 });
    for (const name of models) {
      const spec = all[name];
      if (!spec) throw new Error(`BENCH_MODELS: unknown model '${name}' (cnn, mlp)`);
      const by: Record<'on' | 'off', Run[]> = { on: [], off: [] };
      for (let r = 0; r < rounds; r++) {
        // Alternate which mode goes first, so drift on a shared machine falls on both.
        for (const overlap of r % 2 === 0 ? [true, false] : [false, true]) {
          const run = await runOnce(net, name, spec, overlap);
          by[overlap ? 'on' : 'off'].push(run);
          emit({ bench: 'overlap', model: name, world, link_mbit: linkMbit, overlap, round: r, step_ms: round3(run.stepMs), grad_sync_ms: round3(run.gradSyncMs), compute_ms: round3(run.computeMs), bn_sync_ms: round3(run.bnSyncMs), steps: run.steps });
        }
      }
      const on = median(by.on.map((x) => x.stepMs));
      const off = median(by.off.map((x) => x.stepMs));
      emit({
        bench: 'overlap',
        model: name,
        world,
        link_mbit: linkMbit,
        summary: true,
        step_ms_overlap: round3(on),
        step_ms_after_backward: round3(off),
        speedup: round3(off / on),
        grad_sync_ms_overlap: round3(median(by.on.map((x) => x.gradSyncMs))),
        grad_sync_ms_after_backward: round3(median(by.off.map((x) => x.gradSyncMs))),
      });
    }
  } finally {
    await net.close();
  }
}

await main();
