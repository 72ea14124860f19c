/**
 * How a pool worker process is started: the Node flags and environment that the gRPC
 * collective's data path is tuned for (docs/ARCHITECTURE.md, "What it costs").
 * `startLocalWorker` spawns workers with them, and bench/collective.ts spawns its rank
 * processes with the same, so that the bench measures what the pool runs. They are
 * deployment settings only: results are the same bits without them, just slower. A worker
 * started by hand (`tas worker` on another machine) should get them too.
 *
 * Why (16 MB allReduce, 2-core VM, p50 per call; without them: W=2 ~74 ms, W=4 ~215 ms),
 * measured when the collective ran on grpc-js: a large call allocated ~64 MB of
 * short-lived ArrayBuffers per rank (grpc-js's framing copy and message reassembly, Node's
 * HTTP/2 socket reads, the result). grpc-h2.ts (socket reads into reused and pooled
 * buffers) and allReduceInPlace allocate almost nothing per call now; the settings stay
 * for the rest of a worker's allocations (training's tensors, fresh allReduce results).
 * - `--initial-old-space-size=64` (V8): a worker's heap is small, ~10 MB, just above V8's
 *   8 MB threshold for incremental marking, and with the default old-generation limit of
 *   such a heap V8 starts marking again right after each Mark-Compact while that much is
 *   allocated: bare grpc-js streams exchanging 16 MB, 2 ranks, ran a Mark-Compact every
 *   20-30 ms (150 in 60 exchanges; 2 with the flag) and cost 36 ms CPU per rank per
 *   exchange (19 with the flag, as in a process without tsx). Garbage may now reach 64 MB
 *   of old space before a full collection.
 * - `--single-threaded-gc` (V8), only when the host's workers leave no core free
 *   (`workerNodeFlags`): V8's helper threads (concurrent marking, parallel scavenge) then
 *   only wait for a busy core. W=2 on 2 cores: 43 -> 38 ms (41 -> 33 ms CPU per rank);
 *   W=4: 138 -> 127 ms.
 * - `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` (glibc): keep freed buffers in the
 *   malloc heap instead of unmapping (from 128 KiB up) or trimming them, so that the next
 *   buffer of that size is not fresh memory: a fresh 4 KiB page costs ~13 us on that VM
 *   (16 MB: ~55 ms). With the V8 flags: W=2 42 -> 34 ms (1194 -> 407 page faults per call
 *   per rank).
 * - `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35; older ones ignore it): malloc
 *   asks for transparent huge pages (kernel THP mode "madvise"), so what the heap does grow
 *   by is faulted in 2 MiB at a time: W=2 34 -> 28 ms (407 -> ~3 faults), W=4 161 -> 126 ms.
 *
 * Values already in the parent's environment win (an operator's explicit setting).
 */
import { availableParallelism } from 'node:os';

/** Node/V8 flags for every worker process (before the script). */
export const WORKER_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=64'];

/**
 * The Node/V8 flags of a worker on a host that runs `hostWorkers` of them: WORKER_NODE_FLAGS,
 * plus `--single-threaded-gc` when the workers leave no core free for V8's helper threads.
 */
export function workerNodeFlags(hostWorkers: number, cores: number = availableParallelism()): string[] {
  return hostWorkers >= cores ? [...WORKER_NODE_FLAGS, '--single-threaded-gc'] : [...WORKER_NODE_FLAGS];
}

/** glibc malloc settings for a worker process. */
export const WORKER_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_THRESHOLD_: String(64 << 20),
  MALLOC_TRIM_THRESHOLD_: String(1 << 30),
};

const HUGETLB = 'glibc.malloc.hugetlb=1';

/** The environment of a worker process: `base` (default: this process's) plus the settings above. */
export function workerEnv(base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...WORKER_MALLOC_ENV, ...base };
  const tunables = env.GLIBC_TUNABLES;
  if (!tunables) env.GLIBC_TUNABLES = HUGETLB;
  else if (!/(^|:)glibc\.malloc\.hugetlb=/.test(tunables)) env.GLIBC_TUNABLES = `${tunables}:${HUGETLB}`;
  return env;
}
