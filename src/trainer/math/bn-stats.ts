/**
 * Per-channel batch statistics and their exact merge (Chan et al., 1979).
 *
 * Pure math on host arrays, no tensors and no I/O: SyncBN's forward all-gathers one
 * `ChannelStats` per rank and every rank merges them here in rank order, so all ranks
 * get bit-identical global statistics. Recalibration merges batches the same way.
 *
 * Never `E[x^2] - E[x]^2`: in float32 it cancels catastrophically (tensorflow#3290,
 * keras PR #18795). Means and M2 (sum of squared deviations) merge without
 * cancellation, and variances are clamped at 0.
 */
export interface ChannelStats {
  /** Values per channel (N for [N,C], N*H*W for [N,C,H,W]). The same for every channel. */
  count: number;
  /** Per-channel mean. */
  mean: Float64Array;
  /** Per-channel sum of squared deviations from the mean. */
  m2: Float64Array;
}

export function emptyStats(channels: number): ChannelStats {
  return { count: 0, mean: new Float64Array(channels), m2: new Float64Array(channels) };
}

/**
 * Merge two sets of statistics. Ranks with count 0 contribute nothing (they still take
 * part in the all-gather, sending zeros, so nobody blocks: pytorch#44957).
 */
export function mergeStats(a: ChannelStats, b: ChannelStats): ChannelStats {
  if (a.mean.length !== b.mean.length) {
    throw new RangeError(`cannot merge statistics of ${a.mean.length} and ${b.mean.length} channels`);
  }
  if (b.count === 0) return { count: a.count, mean: a.mean.slice(), m2: a.m2.slice() };
  if (a.count === 0) return { count: b.count, mean: b.mean.slice(), m2: b.m2.slice() };
  const n = a.count + b.count;
  const wb = b.count / n;
  const cross = (a.count * b.count) / n;
  const mean = new Float64Array(a.mean.length);
  const m2 = new Float64Array(a.mean.length);
  for (let c = 0; c < mean.length; c++) {
    const delta = b.mean[c] - a.mean[c];
    // mean_a + delta * n_b / n is the numerically stable form of (n_a*mean_a + n_b*mean_b)/n.
    mean[c] = a.mean[c] + delta * wb;
    m2[c] = a.m2[c] + b.m2[c] + delta * delta * cross;
  }
  return { count: n, mean, m2 };
}

/** Merge in the given (rank) order. The order is fixed so every rank computes the same bits. */
export function mergeAll(parts: readonly ChannelStats[]): ChannelStats {
  if (parts.length === 0) throw new RangeError('mergeAll needs at least one part');
  let acc = parts[0];
  for (let i = 1; i < parts.length; i++) acc = mergeStats(acc, parts[i]);
  return acc;
}

/** Biased variance M2/n (what BatchNorm normalises with), clamped at 0. */
export function biasedVariance(s: ChannelStats): Float64Array {
  const v = new Float64Array(s.mean.length);
  if (s.count === 0) return v;
  for (let c = 0; c < v.length; c++) v[c] = Math.max(0, s.m2[c] / s.count);
  return v;
}

/**
 * Unbiased variance M2/(n-1) with the GLOBAL n (what the running variance is updated
 * with, pytorch#22192). Needs n > 1: one value per channel divides by zero
 * (tensorflow#34062), which BatchNorm rejects before it gets here.
 */
export function unbiasedVariance(s: ChannelStats): Float64Array {
  if (s.count < 2) throw new RangeError(`unbiased variance needs more than 1 value per channel, got ${s.count}`);
  const v = new Float64Array(s.mean.length);
  for (let c = 0; c < v.length; c++) v[c] = Math.max(0, s.m2[c] / (s.count - 1));
  return v;
}

/** Two-pass statistics of a row-major [rows, channels] block (reference and tests). */
export function statsOf(data: ArrayLike<number>, rows: number, channels: number): ChannelStats {
  const mean = new Float64Array(channels);
  const m2 = new Float64Array(channels);
  if (rows === 0) return { count: 0, mean, m2 };
  for (let r = 0; r < rows; r++) for (let c = 0; c < channels; c++) mean[c] += data[r * channels + c];
  for (let c = 0; c < channels; c++) mean[c] /= rows;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < channels; c++) {
      const d = data[r * channels + c] - mean[c];
      m2[c] += d * d;
    }
  }
  return { count: rows, mean, m2 };
}

/**
 * Wire packing for the SyncBN all-gather: `[count, mean[0..C), m2[0..C)]` as float32
 * (C, C, 1 -> 2C + 1). float32 keeps the message half the size; the merge itself runs in
 * float64 on every rank.
 */
export function packStats(s: ChannelStats): Float32Array {
  const c = s.mean.length;
  const out = new Float32Array(2 * c + 1);
  out[0] = s.count;
  out.set(s.mean, 1);
  out.set(s.m2, 1 + c);
  return out;
}

export function unpackStats(buf: Float32Array): ChannelStats {
  if (buf.length < 1 || (buf.length - 1) % 2 !== 0) throw new RangeError(`packed stats must have 2C+1 values, got ${buf.length}`);
  const c = (buf.length - 1) / 2;
  return {
    count: buf[0],
    mean: Float64Array.from(buf.subarray(1, 1 + c)),
    m2: Float64Array.from(buf.subarray(1 + c, 1 + 2 * c)),
  };
}
