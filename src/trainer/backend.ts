/**
 * Tensor backend selection (TAS_BACKEND=auto|tensorflow|native|wasm|cpu).
 *
 * auto: `@tensorflow/tfjs-node-gpu` when it is installed and a CUDA device is visible,
 * then `@tensorflow/tfjs-node`, then `native` (tfjs's cpu backend with the heavy kernels
 * in this repository's addon over OpenBLAS, kernels/native-backend.ts), then
 * WebAssembly, then pure JS. The two TensorFlow packages are optional dependencies:
 * their install script downloads libtensorflow, which fails on offline machines, so they
 * may be absent or broken, and importing them may throw. The addon is built by `npm ci`
 * where a C compiler and OpenBLAS are installed.
 *
 * Threads: TAS_COMPUTE_THREADS (default: every core) is the native backend's BLAS
 * threads; the pool gives each local worker its share of the cores.
 */
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from './errors.js';
import { NATIVE_COMPUTE_MISSING, nativeCompute } from './kernels/native-addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from './kernels/native-backend.js';

export type BackendRequest = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
const REQUESTS: readonly BackendRequest[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

export interface BackendInfo {
  /** tfjs backend name in use. */
  name: 'tensorflow' | 'native' | 'wasm' | 'cpu';
  /** npm package (or repository path) that provides it. */
  package: string;
  /** 'gpu' only for tfjs-node-gpu with a visible CUDA device. */
  device: 'gpu' | 'cpu';
  /** Compute threads: the native backend's BLAS threads; 1 for wasm and cpu; the TensorFlow runtime's own choice (0). */
  threads: number;
  /** Why this backend was chosen, and why earlier candidates were not. */
  reasons: string[];
}

let current: BackendInfo | null = null;

/** True when a CUDA device is visible to this process (respects CUDA_VISIBLE_DEVICES). */
export function cudaDeviceVisible(): boolean {
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible !== undefined && (visible.trim() === '' || visible.trim() === '-1')) return false;
  if (!existsSync('/dev/nvidiactl') && !existsSync('/dev/nvidia0')) {
    try {
      execFileSync('nvidia-smi', ['-L'], { stdio: 'ignore', timeout: 5000 });
      return true;
    } catch {
      return false;
    }
  }
  return true;
}

async function tryTensorflow(pkg: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node'): Promise<string | null> {
  try {
    await import(pkg);
    if (!(await tf.setBackend('tensorflow'))) return `${pkg}: backend 'tensorflow' failed to initialise`;
    return null;
  } catch (err) {
    return `${pkg}: ${(err as Error).message.split('\n')[0]}`;
  }
}

async function tryWasm(): Promise<string | null> {
  try {
    await import('@tensorflow/tfjs-backend-wasm');
    if (!(await tf.setBackend('wasm'))) return 'wasm: failed to initialise';
    return null;
  } catch (err) {
    return `wasm: ${(err as Error).message.split('\n')[0]}`;
  }
}

async function tryNative(threads: number): Promise<string | null> {
  if (!nativeCompute) return `native: ${NATIVE_COMPUTE_MISSING}`;
  try {
    await import('@tensorflow/tfjs-backend-cpu');
    registerNativeBackend(nativeCompute);
    if (!(await tf.setBackend(NATIVE_BACKEND))) return 'native: failed to initialise';
    nativeCompute.setThreads(threads);
    return null;
  } catch (err) {
    return `native: ${(err as Error).message.split('\n')[0]}`;
  }
}

/** TAS_COMPUTE_THREADS, else every core this process may use. */
export function computeThreads(value: string | undefined = process.env.TAS_COMPUTE_THREADS): number {
  if (value === undefined || value.trim() === '') return availableParallelism();
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw new TrainerError('TAS_ERR_BACKEND', `TAS_COMPUTE_THREADS must be an integer from 1 to 1024 (got '${value}')`, 'TAS_COMPUTE_THREADS');
  }
  return n;
}

async function useCpu(): Promise<void> {
  await import('@tensorflow/tfjs-backend-cpu');
  await tf.setBackend('cpu');
}

/**
 * Initialise the tensor backend once per process. Later calls return the first result
 * (a process has one backend; workers are one process per device).
 */
export async function initBackend(
  request: BackendRequest = parseBackendRequest(process.env.TAS_BACKEND),
  log: (msg: string) => void = (m) => process.stderr.write(`${m}\n`),
): Promise<BackendInfo> {
  if (current) return current;
  const reasons: string[] = [];
  let info: BackendInfo | null = null;
  if (request === 'auto' || request === 'tensorflow') {
    const gpu = cudaDeviceVisible();
    if (gpu) {
      const err = await tryTensorflow('@tensorflow/tfjs-node-gpu');
      if (err === null) info = { name: 'tensorflow', package: '@tensorflow/tfjs-node-gpu', device: 'gpu', threads: 0, reasons };
      else reasons.push(err);
    } else {
      reasons.push('@tensorflow/tfjs-node-gpu: no CUDA device visible');
    }
    if (!info) {
      const err = await tryTensorflow('@tensorflow/tfjs-node');
      if (err === null) info = { name: 'tensorflow', package: '@tensorflow/tfjs-node', device: 'cpu', threads: 0, reasons };
      else reasons.push(err);
    }
    if (!info && request === 'tensorflow') {
      throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND=tensorflow but no native TensorFlow backend loads (${reasons.join('; ')})`);
    }
  }
  if (!info && (request === 'auto' || request === 'native')) {
    const threads = computeThreads();
    const err = await tryNative(threads);
    if (err === null) info = { name: 'native', package: 'native/compute (OpenBLAS)', device: 'cpu', threads, reasons };
    else if (request === 'native') throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND=native failed: ${err}`);
    else reasons.push(err);
  }
  if (!info && (request === 'auto' || request === 'wasm')) {
    const err = await tryWasm();
    if (err === null) info = { name: 'wasm', package: '@tensorflow/tfjs-backend-wasm', device: 'cpu', threads: 1, reasons };
    else if (request === 'wasm') throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND=wasm failed: ${err}`);
    else reasons.push(err);
  }
  if (!info) {
    await useCpu();
    info = { name: 'cpu', package: '@tensorflow/tfjs-backend-cpu', device: 'cpu', threads: 1, reasons };
  }
  await tf.ready();
  current = info;
  const threads = info.threads > 0 ? `, ${info.threads} thread${info.threads === 1 ? '' : 's'}` : '';
  log(`[tas] tensor backend: ${info.name} (${info.package}, ${info.device}${threads})${reasons.length ? `; skipped: ${reasons.join('; ')}` : ''}`);
  return info;
}

export function backendInfo(): BackendInfo {
  if (!current) throw new TrainerError('TAS_ERR_BACKEND', 'tensor backend not initialised: call initBackend() first');
  return current;
}

export function parseBackendRequest(value: string | undefined): BackendRequest {
  const v = (value ?? 'auto').trim().toLowerCase();
  const known = REQUESTS.find((r) => r === v);
  if (known) return known;
  throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND must be one of ${REQUESTS.join(', ')} (got '${value}')`, 'TAS_BACKEND');
}
