/**
 * Deterministic data order and sharding, identical on every rank. Pure functions.
 *
 * A step takes the next global batch of the epoch's order and cuts it into contiguous
 * shares in rank order, of the ranks' local batch sizes (the seed's batch_size_g: ranks
 * may have different shares). A smaller last batch is cut proportionally (largest
 * remainder, ties to the lower rank), so a share may be 0; that rank still joins every
 * collective.
 */
import { Rng } from './rng.js';

/** Order of the samples in an epoch: seeded Fisher-Yates, or identity without shuffling. */
export function epochOrder(n: number, seed: number, epoch: number, shuffle: boolean): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  if (!shuffle) return order;
  // One stream per (seed, epoch): resuming at an epoch needs no RNG state beyond the seed.
  const rng = new Rng((Math.imul(seed, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

export function stepsPerEpoch(n: number, globalBatch: number, dropLast: boolean): number {
  return dropLast ? Math.floor(n / globalBatch) : Math.ceil(n / globalBatch);
}

/** Shares of `rows` rows for ranks with local batch sizes `local` (Σ local = full batch). */
export function shareSizes(rows: number, local: readonly number[]): number[] {
  const full = local.reduce((a, b) => a + b, 0);
  if (rows === full) return local.slice();
  const exact = local.map((b) => (rows * b) / full);
  const sizes = exact.map(Math.floor);
  let left = rows - sizes.reduce((a, b) => a + b, 0);
  const byFraction = exact.map((e, r) => ({ r, f: e - Math.floor(e) })).sort((a, b) => b.f - a.f || a.r - b.r);
  for (const { r } of byFraction) {
    if (left === 0) break;
    sizes[r]++;
    left--;
  }
  return sizes;
}

export interface StepShard {
  /** Rows of the whole global batch. */
  globalRows: number;
  /** Dataset indices of this rank's rows. */
  indices: Uint32Array;
}

/** This rank's rows of step `step` (0-based within the epoch). */
export function shardOf(order: Uint32Array, step: number, local: readonly number[], rank: number): StepShard {
  const full = local.reduce((a, b) => a + b, 0);
  const start = step * full;
  const globalRows = Math.min(full, order.length - start);
  const sizes = shareSizes(globalRows, local);
  let off = start;
  for (let r = 0; r < rank; r++) off += sizes[r];
  return { globalRows, indices: order.subarray(off, off + sizes[rank]) };
}
