/**
 * Admission by memory: a job's estimated memory per worker (trainer/engine/memory.ts),
 * for the workers that may run it. The submission refuses a job that no gang of one kind
 * can hold (TAS_ERR_OUT_OF_MEMORY, naming the layer), and the scheduler reserves only
 * workers that can hold it; the worker checks again before it allocates.
 */
import { checkMemoryFits, estimateJobMemory, type MemoryEstimate } from '../../trainer/engine/memory.js';
import type { ResolvedTrainSpec } from '../../trainer/engine/job-spec.js';
import { dataFileBytes } from '../../trainer/data/load.js';
import { holds, type ReservedWorker } from './worker-registry.js';

type Candidate = Pick<ReservedWorker, 'deviceKind' | 'backend' | 'memoryLimitBytes'>;

/** The job's estimate on a worker of a backend (the largest share of its batch: every worker of the gang must hold it). */
export async function jobMemory(spec: ResolvedTrainSpec, dataDir: string): Promise<(backend: string | null) => MemoryEstimate> {
  const sized = spec.data.type === 'synthetic' ? { samples: spec.data.n } : { dataBytes: await dataFileBytes(spec.data, dataDir) };
  const byBackend = new Map<string | null, MemoryEstimate>();
  return (backend) => {
    let e = byBackend.get(backend);
    if (!e) byBackend.set(backend, (e = estimateJobMemory(spec, { ...sized, backend })));
    return e;
  };
}

/**
 * Throws TAS_ERR_OUT_OF_MEMORY when no device kind has `n` online workers that can each
 * hold the job; the message compares the estimate with the best such gang's smallest
 * worker. (The pool's size was checked before: some kind has `n` online workers.)
 */
export function admitByMemory(estimate: (backend: string | null) => MemoryEstimate, n: number, workers: readonly Candidate[]): void {
  const need = (backend: string | null) => estimate(backend).bytes;
  for (const kind of ['gpu', 'cpu'] as const) {
    if (workers.filter((w) => w.deviceKind === kind && holds(w, need)).length >= n) return;
  }
  const kind = (['gpu', 'cpu'] as const).find((k) => workers.filter((w) => w.deviceKind === k).length >= n);
  if (!kind) return;
  // The n workers of that kind with the most room; the last of them is the one that cannot hold it.
  const room = (w: Candidate) => (w.memoryLimitBytes ?? Infinity) - need(w.backend);
  const w = workers.filter((x) => x.deviceKind === kind).sort((a, b) => room(b) - room(a))[n - 1]!;
  checkMemoryFits(estimate(w.backend), w.memoryLimitBytes ?? Infinity, `a ${kind} worker${w.backend ? ` (${w.backend} backend)` : ''} has`);
}
