/**
 * What a worker runs on: a GPU (index from nvidia-smi, pinned with CUDA_VISIBLE_DEVICES,
 * tensorflow backend) or the CPU (wasm backend). Pure discovery; no tensors.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';

export interface GpuInfo {
  index: number;
  name: string;
  memoryMiB: number;
}

export interface DeviceAssignment {
  kind: 'gpu' | 'cpu';
  /** GPU index (nvidia-smi), or the worker's CPU slot. */
  index: number;
  name: string;
  memoryMiB: number;
  /** Environment for the worker process: pins the GPU and picks the backend. */
  env: Record<string, string>;
}

/** GPUs visible through nvidia-smi; [] where it is absent or fails. */
export function listGpus(): GpuInfo[] {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=index,name,memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    return out
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .map((l) => {
        const [index, name, mem] = l.split(',').map((s) => s.trim());
        return { index: Number(index), name, memoryMiB: Number(mem) };
      });
  } catch {
    return [];
  }
}

/**
 * Devices for `count` workers (default: one per GPU, else 2 CPU workers). GPU workers
 * see only their own device; CPU workers see no CUDA device (so `auto` picks a CPU
 * backend: tfjs-node, native or wasm) and share the host's cores for their BLAS threads.
 */
export function assignDevices(count?: number, gpus: GpuInfo[] = listGpus()): DeviceAssignment[] {
  if (gpus.length > 0) {
    const n = count ?? gpus.length;
    return Array.from({ length: n }, (_, i) => {
      const g = gpus[i % gpus.length];
      return { kind: 'gpu', index: g.index, name: g.name, memoryMiB: g.memoryMiB, env: { CUDA_VISIBLE_DEVICES: String(g.index), TAS_BACKEND: process.env.TAS_BACKEND ?? 'auto' } };
    });
  }
  const n = count ?? 2;
  const cpuName = cpus()[0]?.model ?? 'cpu';
  return Array.from({ length: n }, (_, i) => ({
    kind: 'cpu',
    index: i,
    name: cpuName,
    memoryMiB: Math.round(hostMemoryBytes() / 2 ** 20 / n),
    env: {
      CUDA_VISIBLE_DEVICES: '',
      TAS_BACKEND: process.env.TAS_BACKEND ?? 'auto',
      // The host's cores shared between its CPU workers, for the native backend's BLAS.
      TAS_COMPUTE_THREADS: process.env.TAS_COMPUTE_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / n))),
    },
  }));
}

/**
 * The memory this host gives its processes: the machine's, or less where a cgroup (a
 * container's memory limit) says so.
 */
export function hostMemoryBytes(): number {
  let limit = totalmem();
  for (const file of ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes']) {
    try {
      const v = Number(readFileSync(file, 'utf8').trim());
      if (Number.isSafeInteger(v) && v > 0) limit = Math.min(limit, v);
    } catch {
      // no such cgroup file ("max" reads as NaN: no limit)
    }
  }
  return limit;
}

/** The largest heap the wasm backend can have (a 32-bit WebAssembly memory). */
export const WASM_HEAP_LIMIT_BYTES = 4 * 2 ** 30;

/**
 * The memory a job may use on a worker: `TAS_WORKER_MEMORY_MIB` when set, else the
 * device's (a GPU's memory; the host's memory shared between its CPU workers), and never
 * more than the wasm backend's heap can hold.
 */
export function workerMemoryLimitBytes(device: Pick<DeviceAssignment, 'memoryMiB'>, backend: string, env: NodeJS.ProcessEnv = process.env): number {
  const set = Number(env.TAS_WORKER_MEMORY_MIB);
  const bytes = Number.isFinite(set) && set > 0 ? set * 2 ** 20 : device.memoryMiB * 2 ** 20;
  return backend === 'wasm' ? Math.min(bytes, WASM_HEAP_LIMIT_BYTES) : bytes;
}
