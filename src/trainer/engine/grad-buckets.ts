/**
 * The gradient all-reduce in buckets, started while backward still runs (as PyTorch's
 * DistributedDataParallel does): parameters are grouped, in the order backward finishes
 * them (last layer first), into buckets of about `bucketFloats` values; when the last
 * parameter of a bucket has its gradient, the bucket is copied into one flat array and
 * its all-reduce starts, and backward goes on with the earlier layers while it travels.
 * After backward, whatever is left starts, every bucket is awaited, and the global
 * gradients replace the local ones.
 *
 * Every rank forms the same buckets (from the model's structure) and starts them at the
 * same points of backward, so the collectives of a step keep one order on every rank:
 * SyncBN's backward all-reduces and the buckets, interleaved alike. A reduction sums
 * each value over ranks in rank order whatever bucket it is in, so the gradients have
 * the bits of one whole-model all-reduce. The step's loss sum and correct count ride in
 * the bucket that finishes last.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Collective } from '../collective/collective.js';
import { TrainerError } from '../errors.js';
import type { Param } from '../tensor-types.js';

interface Bucket {
  /** Its parameters and where each starts in `data`. */
  readonly params: readonly Param[];
  readonly offsets: readonly number[];
  /** Values, the loss sum and correct count included in the last bucket. */
  readonly size: number;
  data: Float32Array | null;
  waiting: number;
  reduced: Promise<void> | null;
}

export interface GradientBucketsOptions {
  /** Values per bucket (a bucket closes at the first parameter that reaches it). @defaultValue 1M (4 MB) */
  readonly bucketFloats?: number;
  /** Start each bucket's all-reduce during backward (false: all of them after backward). @defaultValue true */
  readonly overlap?: boolean;
}

export class GradientBuckets {
  private readonly buckets: Bucket[] = [];
  private readonly bucketOf = new Map<Param, number>();
  private readonly overlap: boolean;
  private lossSum = 0;
  private correct = 0;

  /** `params` in forward order (the model's). */
  constructor(
    params: readonly Param[],
    private readonly collective: Collective,
    options: GradientBucketsOptions = {},
  ) {
    const cap = options.bucketFloats ?? 1 << 20;
    this.overlap = options.overlap ?? true;
    let current: Param[] = [];
    let size = 0;
    const close = (last: boolean) => {
      const offsets: number[] = [];
      let at = 0;
      for (const p of current) {
        offsets.push(at);
        at += p.value.size;
      }
      this.buckets.push({ params: current, offsets, size: at + (last ? 2 : 0), data: null, waiting: 0, reduced: null });
      current = [];
      size = 0;
    };
    const backwardOrder = [...params].reverse();
    backwardOrder.forEach((p, i) => {
      this.bucketOf.set(p, this.buckets.length);
      current.push(p);
      size += p.value.size;
      if (size >= cap && i < backwardOrder.length - 1) close(false);
    });
    close(true);
  }

  get count(): number {
    return this.buckets.length;
  }

  /** A new step: every bucket waits for all its parameters again. */
  begin(lossSum: number, correct: number): void {
    this.lossSum = lossSum;
    this.correct = correct;
    for (const b of this.buckets) {
      b.data = null;
      b.reduced = null;
      b.waiting = b.params.length;
    }
  }

  /** Backward finished these parameters' gradients (Sequential's onGradients). */
  ready(params: readonly Param[]): void {
    for (const p of params) {
      const i = this.bucketOf.get(p);
      if (i === undefined) continue;
      const b = this.buckets[i]!;
      if (--b.waiting === 0 && this.overlap) this.start(b, i);
    }
  }

  /** After backward: start what has not started, wait for all, and install the global gradients. */
  async finish(): Promise<[number, number]> {
    this.buckets.forEach((b, i) => {
      if (!b.reduced) this.start(b, i);
    });
    await Promise.all(this.buckets.map((b) => b.reduced));
    for (const b of this.buckets) {
      b.params.forEach((p, k) => {
        p.grad?.dispose();
        p.grad = tf.tensor(b.data!.subarray(b.offsets[k], b.offsets[k]! + p.value.size), p.value.shape);
      });
    }
    const last = this.buckets[this.buckets.length - 1]!;
    return [last.data![last.size - 2]!, last.data![last.size - 1]!];
  }

  private start(b: Bucket, index: number): void {
    // A fresh array per step: the gradient tensors made from it in `finish` share its memory.
    const data = new Float32Array(b.size);
    b.params.forEach((p, k) => {
      if (p.grad) data.set(p.grad.dataSync() as Float32Array, b.offsets[k]);
    });
    if (index === this.buckets.length - 1) {
      data[b.size - 2] = this.lossSum;
      data[b.size - 1] = this.correct;
    }
    b.data = data;
    b.reduced = this.collective.allReduceInPlace(data);
    // Awaited in `finish`; a failure before then (a peer died) must not go unhandled.
    b.reduced.catch(() => undefined);
  }
}

/**
 * The bucketing of a process: TAS_GRAD_BUCKET_MB (default 4; megabytes of float32 per
 * bucket) and TAS_GRAD_OVERLAP (default 1; 0 starts every bucket after backward).
 */
export function gradientBucketsFromEnv(env: NodeJS.ProcessEnv = process.env): GradientBucketsOptions {
  const mb = env.TAS_GRAD_BUCKET_MB?.trim() ? Number(env.TAS_GRAD_BUCKET_MB) : 4;
  if (!(mb > 0) || !Number.isFinite(mb)) throw new TrainerError('TAS_ERR_INVALID_SPEC', `TAS_GRAD_BUCKET_MB must be a positive number, got '${env.TAS_GRAD_BUCKET_MB}'`, 'TAS_GRAD_BUCKET_MB');
  const overlap = env.TAS_GRAD_OVERLAP?.trim() ?? '1';
  if (overlap !== '0' && overlap !== '1') throw new TrainerError('TAS_ERR_INVALID_SPEC', `TAS_GRAD_OVERLAP must be 0 or 1, got '${overlap}'`, 'TAS_GRAD_OVERLAP');
  return { bucketFloats: Math.max(1, Math.round((mb * 1024 * 1024) / 4)), overlap: overlap === '1' };
}
