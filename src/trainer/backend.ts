/**
 * Tensor backend selection (TAS_BACKEND=auto|tensorflow|wasm|cpu).
 *
 * auto: `@tensorflow/tfjs-node-gpu` when it is installed and a CUDA device is visible,
 * then `@tensorflow/tfjs-node`, then WebAssembly, then pure JS. The two native packages
 * are optional dependencies: their install script downloads libtensorflow, which fails
 * on offline machines, so they may be absent or broken, and importing them may throw.
 */
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from './errors.js';

export type BackendRequest = 'auto' | 'tensorflow' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** tfjs backend name in use: 'tensorflow' | 'wasm' | 'cpu'. */
  name: 'tensorflow' | 'wasm' | 'cpu';
  /** npm package that provides it. */
  package: string;
  /** 'gpu' only for tfjs-node-gpu with a visible CUDA device. */
  device: 'gpu' | 'cpu';
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

async function tryNative(pkg: '@tensorflow/tfjs-node-gpu' | '@tensorflow/tfjs-node'): Promise<string | null> {
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
      const err = await tryNative('@tensorflow/tfjs-node-gpu');
      if (err === null) info = { name: 'tensorflow', package: '@tensorflow/tfjs-node-gpu', device: 'gpu', reasons };
      else reasons.push(err);
    } else {
      reasons.push('@tensorflow/tfjs-node-gpu: no CUDA device visible');
    }
    if (!info) {
      const err = await tryNative('@tensorflow/tfjs-node');
      if (err === null) info = { name: 'tensorflow', package: '@tensorflow/tfjs-node', device: 'cpu', reasons };
      else reasons.push(err);
    }
    if (!info && request === 'tensorflow') {
      throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND=tensorflow but no native TensorFlow backend loads (${reasons.join('; ')})`);
    }
  }
  if (!info && (request === 'auto' || request === 'wasm')) {
    const err = await tryWasm();
    if (err === null) info = { name: 'wasm', package: '@tensorflow/tfjs-backend-wasm', device: 'cpu', reasons };
    else if (request === 'wasm') throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND=wasm failed: ${err}`);
    else reasons.push(err);
  }
  if (!info) {
    await useCpu();
    info = { name: 'cpu', package: '@tensorflow/tfjs-backend-cpu', device: 'cpu', reasons };
  }
  await tf.ready();
  current = info;
  log(`[tas] tensor backend: ${info.name} (${info.package}, ${info.device})${reasons.length ? `; skipped: ${reasons.join('; ')}` : ''}`);
  return info;
}

export function backendInfo(): BackendInfo {
  if (!current) throw new TrainerError('TAS_ERR_BACKEND', 'tensor backend not initialised: call initBackend() first');
  return current;
}

export function parseBackendRequest(value: string | undefined): BackendRequest {
  const v = (value ?? 'auto').trim().toLowerCase();
  if (v === 'auto' || v === 'tensorflow' || v === 'wasm' || v === 'cpu') return v;
  throw new TrainerError('TAS_ERR_BACKEND', `TAS_BACKEND must be one of auto, tensorflow, wasm, cpu (got '${value}')`, 'TAS_BACKEND');
}
