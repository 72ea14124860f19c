/**
 * Checkpoints: everything a run needs to continue as if it had never stopped.
 * - model state (PyTorch names, BN buffers and num_batches_tracked), prefixed `model/`;
 * - optimizer slots (momentum buffers, Adam moments), prefixed `optim/`, and its step;
 * - the data position (epoch, step within the epoch, global step);
 * - RNG state: data order and dropout masks are pure functions of (seed, epoch) and
 *   (seed, rank, global step), so the seed and position ARE the RNG state.
 * One safetensors file; metadata carries the format version and a spec fingerprint so a
 * checkpoint is never resumed into a different job.
 */
import { createHash } from 'node:crypto';
import { TrainerError } from '../errors.js';
import type { HostTensorMap } from '../tensor-types.js';
import { decodeStateDict, encodeStateDict } from './artifact.js';

export const CHECKPOINT_FORMAT_VERSION = 1;

export interface Checkpoint {
  /** Optimizer steps done (all epochs). */
  globalStep: number;
  /** Epoch to continue in, and the step within it to continue from. */
  epoch: number;
  stepInEpoch: number;
  seed: number;
  specHash: string;
  model: HostTensorMap;
  optimizer: { step: number; slots: HostTensorMap };
}

export function specFingerprint(spec: unknown): string {
  return createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 16);
}

export function encodeCheckpoint(c: Checkpoint): Uint8Array {
  const all: HostTensorMap = new Map();
  for (const [k, v] of c.model) all.set(`model/${k}`, v);
  for (const [k, v] of c.optimizer.slots) all.set(`optim/${k}`, v);
  return encodeStateDict(all, {
    format: 'tas-checkpoint',
    format_version: String(CHECKPOINT_FORMAT_VERSION),
    position: JSON.stringify({ globalStep: c.globalStep, epoch: c.epoch, stepInEpoch: c.stepInEpoch, seed: c.seed, optimizerStep: c.optimizer.step }),
    spec_hash: c.specHash,
  });
}

export function decodeCheckpoint(buf: Uint8Array, expectedSpecHash?: string): Checkpoint {
  const { state, metadata } = decodeStateDict(buf);
  if (metadata.format !== 'tas-checkpoint') throw new TrainerError('TAS_ERR_CHECKPOINT', `not a tas checkpoint (format = ${metadata.format ?? 'missing'})`);
  if (Number(metadata.format_version) > CHECKPOINT_FORMAT_VERSION) throw new TrainerError('TAS_ERR_CHECKPOINT', `checkpoint format_version ${metadata.format_version} is newer than ${CHECKPOINT_FORMAT_VERSION}`);
  if (expectedSpecHash && metadata.spec_hash !== expectedSpecHash) throw new TrainerError('TAS_ERR_CHECKPOINT', `checkpoint belongs to another job spec (${metadata.spec_hash} != ${expectedSpecHash})`);
  const pos = JSON.parse(metadata.position) as { globalStep: number; epoch: number; stepInEpoch: number; seed: number; optimizerStep: number };
  const model: HostTensorMap = new Map();
  const slots: HostTensorMap = new Map();
  for (const [k, v] of state) {
    if (k.startsWith('model/')) model.set(k.slice(6), v);
    else if (k.startsWith('optim/')) slots.set(k.slice(6), v);
  }
  return { ...pos, specHash: metadata.spec_hash, model, optimizer: { step: pos.optimizerStep, slots } };
}
