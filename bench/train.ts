/**
 * bench:train — training throughput of each tensor backend present, beside PyTorch in
 * the same run (JSON lines).
 *
 * Models (bench/train/models.ts, twins of bench/peers/torch_mlp.py and torch_cnn.py):
 * an MLP 784-512-512-10 with BatchNorm1d, batch 256, and a CNN on 32x32x3 (three 3x3
 * convolutions with BatchNorm2d and ReLU, global average pooling, a linear head), batch
 * 64; SGD lr 0.01. For each thread count (1, then every core) PyTorch runs first with
 * that many threads (torch.set_num_threads and OPENBLAS_NUM_THREADS: OpenBLAS otherwise
 * uses every core even when torch is told 1), then each backend in a process of its own
 * (TAS_COMPUTE_THREADS); wasm and cpu run single-threaded, so only in the 1-thread round.
 * Each line: model, backend, threads, samples/s, step ms (median), GFLOP/s, peak RSS,
 * ratio to PyTorch at the same thread count. Then a memory line per model on the first
 * fast backend: resident set after warm-up and after BENCH_MEMORY_STEPS more steps.
 *
 *   BENCH_BACKENDS   default tensorflow,native,wasm,cpu (absent ones print why)
 *   BENCH_MODELS     default mlp,cnn
 *   BENCH_STEPS      timed steps (default 40 MLP / 15 CNN; the cpu backend 3)
 *   BENCH_CPU_CNN=1  also the CNN on the pure-JS cpu backend (minutes per step)
 *   BENCH_MEMORY_STEPS  default 1000; 0 skips the memory lines
 * PyTorch comes from /usr/bin/python3 (Debian python3-torch, libopenblas0-pthread).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { flopsPerStep, MODELS, type BenchModel } from './train/models.js';

const CHILD = join(import.meta.dirname, 'train/child.ts');
const PEERS = join(import.meta.dirname, 'peers');
const PYTHON = '/usr/bin/python3';
const backends = (process.env.BENCH_BACKENDS ?? 'tensorflow,native,wasm,cpu').split(',').map((s) => s.trim());
const models = (process.env.BENCH_MODELS ?? 'mlp,cnn').split(',').map((s) => MODELS[s.trim()]).filter((m): m is BenchModel => m !== undefined);
const memorySteps = Number(process.env.BENCH_MEMORY_STEPS ?? 1000);
const cores = availableParallelism();
const threadCounts = cores > 1 ? [1, cores] : [1];

function stepsFor(m: BenchModel, backend: string): number {
  if (process.env.BENCH_STEPS) return Number(process.env.BENCH_STEPS);
  if (backend === 'cpu') return 3;
  return m.name === 'mlp' ? 40 : 15;
}

interface Run {
  unavailable?: string;
  backend: string;
  threads: number;
  step_ms: number;
  step_ms_min: number;
  peak_rss_mb: number;
  memory?: Record<string, number>;
}

function ours(m: BenchModel, backend: string, threads: number, memory = 0): Run {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CHILD, m.name, String(stepsFor(m, backend)), String(memory)], {
    env: { ...process.env, TAS_BACKEND: backend, TAS_COMPUTE_THREADS: String(threads) },
    encoding: 'utf8',
    maxBuffer: 16 << 20,
  });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (r.status !== 0 || !last.startsWith('{')) return { unavailable: `exit ${r.status}: ${(r.stderr ?? '').trim().split('\n').pop()}`, backend, threads, step_ms: NaN, step_ms_min: NaN, peak_rss_mb: NaN };
  return JSON.parse(last) as Run;
}

interface Peer {
  step_ms: number;
  samples_per_s: number;
  peak_rss_mb: number;
  torch: string;
}

/** The PyTorch twin at `threads`, peak RSS read by the wrapper around the unchanged script. */
function peer(m: BenchModel, threads: number): Peer | string {
  if (!existsSync(PYTHON)) return `no ${PYTHON}`;
  const wrapper = [
    'import json, resource, runpy, sys',
    `sys.argv = [${JSON.stringify(join(PEERS, m.peer))}, ${JSON.stringify(String(stepsFor(m, 'native')))}, ${JSON.stringify(String(threads))}]`,
    'runpy.run_path(sys.argv[0], run_name="__main__")',
    'print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))',
  ].join('\n');
  try {
    const t = String(threads);
    const out = execFileSync(PYTHON, ['-c', wrapper], { encoding: 'utf8', env: { ...process.env, OPENBLAS_NUM_THREADS: t, OMP_NUM_THREADS: t, MKL_NUM_THREADS: t } }).trim().split('\n');
    const [result, rss] = out.slice(-2).map((l) => JSON.parse(l) as Record<string, unknown>);
    return { step_ms: result.step_ms as number, samples_per_s: result.samples_per_s as number, torch: result.torch as string, peak_rss_mb: +(rss.peak_rss_mb as number).toFixed(1) };
  } catch (e) {
    return `torch not usable: ${(e as Error).message.split('\n')[0]}`;
  }
}

const round = (v: number, d = 1): number => +v.toFixed(d);
const print = (o: Record<string, unknown>): void => console.log(JSON.stringify({ bench: 'train', ...o }));
const absent = new Map<string, string>();

for (const m of models) {
  for (const threads of threadCounts) {
    const p = peer(m, threads);
    if (typeof p === 'string') print({ model: m.name, backend: 'pytorch-cpu', threads, skipped: p });
    else print({ model: m.name, backend: 'pytorch-cpu', torch: p.torch, threads, samples_per_s: round(p.samples_per_s), step_ms: round(p.step_ms, 2), gflops: round(flopsPerStep(m) / p.step_ms / 1e6), peak_rss_mb: p.peak_rss_mb });
    for (const b of backends) {
      if (absent.has(b)) continue;
      if (threads > 1 && (b === 'wasm' || b === 'cpu')) continue;
      if (b === 'cpu' && m.name === 'cnn' && process.env.BENCH_CPU_CNN !== '1') {
        print({ model: m.name, backend: b, threads, skipped: 'the pure-JS cpu backend takes minutes per CNN step (BENCH_CPU_CNN=1 runs it)' });
        continue;
      }
      const r = ours(m, b, threads);
      if (r.unavailable) {
        absent.set(b, r.unavailable);
        print({ backend: b, skipped: r.unavailable });
        continue;
      }
      print({
        model: m.name,
        backend: r.backend,
        threads: r.threads,
        samples_per_s: round((m.batch / r.step_ms) * 1000),
        step_ms: round(r.step_ms, 2),
        gflops: round(flopsPerStep(m) / r.step_ms / 1e6),
        peak_rss_mb: r.peak_rss_mb,
        ratio_to_pytorch: typeof p === 'string' ? null : round(p.step_ms / r.step_ms, 3),
        target: m.name === 'mlp' ? 1.0 : 0.7,
      });
    }
  }
}

if (memorySteps > 0) {
  const fast = backends.find((b) => !absent.has(b) && b !== 'cpu');
  for (const m of fast ? models : []) {
    const r = ours(m, fast!, cores, memorySteps);
    print({ model: m.name, backend: r.backend, threads: r.threads, memory: r.memory ?? r.unavailable });
  }
}
