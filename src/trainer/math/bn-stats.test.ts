/**
 * Per-channel statistics and their Chan merge: exactness against the two-pass statistics
 * of the concatenation, the worked numbers of the notes, float32 safety, and the wire packing.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  biasedVariance,
  emptyStats,
  mergeAll,
  mergeStats,
  packStats,
  statsOf,
  unbiasedVariance,
  unpackStats,
  type ChannelStats,
} from './bn-stats.js';
import { Rng } from './rng.js';

/** Rows [rows, channels] row-major of random values with a per-channel offset and scale. */
function randomRows(rng: Rng, rows: number, channels: number): Float64Array {
  const a = new Float64Array(rows * channels);
  for (let r = 0; r < rows; r++) for (let c = 0; c < channels; c++) a[r * channels + c] = 3 * c - 1 + (c + 1) * rng.normal();
  return a;
}

function assertStatsClose(got: ChannelStats, want: ChannelStats, rel = 1e-12): void {
  assert.equal(got.count, want.count);
  for (let c = 0; c < want.mean.length; c++) {
    assert.ok(Math.abs(got.mean[c] - want.mean[c]) <= rel * Math.max(1, Math.abs(want.mean[c])), `mean[${c}]: ${got.mean[c]} vs ${want.mean[c]}`);
    assert.ok(Math.abs(got.m2[c] - want.m2[c]) <= rel * Math.max(1, Math.abs(want.m2[c])), `m2[${c}]: ${got.m2[c]} vs ${want.m2[c]}`);
  }
}

function shuffled<T>(a: T[], rng: Rng): T[] {
  const b = a.slice();
  for (let i = b.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [b[i], b[j]] = [b[j], b[i]];
  }
  return b;
}

/** The shards' rows concatenated in the given order. */
function concatRows(shards: Float64Array[]): Float64Array {
  const out = new Float64Array(shards.reduce((a, s) => a + s.length, 0));
  let off = 0;
  for (const s of shards) {
    out.set(s, off);
    off += s.length;
  }
  return out;
}

/**
 * What kernels.channelMoments computes, in float32 arithmetic (Math.fround after every
 * operation): mean, then the sum of squared deviations.
 */
function twoPassFloat32(values: number[]): ChannelStats {
  const f = Math.fround;
  let sum = 0;
  for (const v of values) sum = f(sum + f(v));
  const mean = f(sum / values.length);
  let m2 = 0;
  for (const v of values) {
    const d = f(f(v) - mean);
    m2 = f(m2 + f(d * d));
  }
  return { count: values.length, mean: Float64Array.of(mean), m2: Float64Array.of(m2) };
}

/** The textbook one-pass formula E[x²] - E[x]² in float32: what we must never use. */
function naiveVarianceFloat32(values: number[]): number {
  const f = Math.fround;
  let sum = 0;
  let sumSq = 0;
  for (const v of values) {
    sum = f(sum + f(v));
    sumSq = f(sumSq + f(f(v) * f(v)));
  }
  const mean = f(sum / values.length);
  return f(f(sumSq / values.length) - f(mean * mean));
}

describe('Chan merge', () => {
  it('equals the two-pass statistics of the concatenation (random shards, empty ones included, several orders)', () => {
    const rng = new Rng(2024);
    const channels = 3;
    for (let trial = 0; trial < 20; trial++) {
      const sizes = Array.from({ length: 1 + rng.int(6) }, () => (rng.next() < 0.3 ? 0 : 1 + rng.int(9)));
      if (!sizes.some((s) => s > 0)) sizes.push(2);
      const shards = sizes.map((n) => randomRows(rng, n, channels));
      const orders = [shards, shards.slice().reverse(), shuffled(shards, rng), shuffled(shards, rng)];
      for (const order of orders) {
        const parts = order.map((s) => statsOf(s, s.length / channels, channels));
        const merged = mergeAll(parts);
        const cat = concatRows(order);
        assertStatsClose(merged, statsOf(cat, cat.length / channels, channels));
      }
    }
  });

  it('treats empty shards as the identity, on either side', () => {
    const s = statsOf([1, 10, 3, 30, 8, 80], 3, 2);
    const e = emptyStats(2);
    assert.deepEqual(mergeStats(s, e), s);
    assert.deepEqual(mergeStats(e, s), s);
    assert.deepEqual(mergeAll([e, s, e, e]), s);
    assert.deepEqual(mergeAll([e, e]), e);
  });

  it('returns new arrays: the inputs are never aliased or modified', () => {
    const a = statsOf([1, 2, 3], 3, 1);
    const b = statsOf([4, 6], 2, 1);
    const e = emptyStats(1);
    for (const m of [mergeStats(a, b), mergeStats(a, e), mergeStats(e, a)]) {
      m.mean[0] = 99;
      m.m2[0] = 99;
    }
    assert.deepEqual(a, statsOf([1, 2, 3], 3, 1));
    assert.deepEqual(b, statsOf([4, 6], 2, 1));
  });

  it('rejects mismatched channel counts and an empty list', () => {
    assert.throws(() => mergeStats(emptyStats(2), emptyStats(3)), RangeError);
    assert.throws(() => mergeAll([]), RangeError);
  });
});

describe('the worked example of the notes', () => {
  // Shards [1, 3], [2, 4, 9], [0, 5, 5, 6, 10]: 10 values, sum 45.
  const shards = [[1, 3], [2, 4, 9], [0, 5, 5, 6, 10]];
  const merged = mergeAll(shards.map((s) => statsOf(s, s.length, 1)));

  it('merges to mean 4.5, M2 94.5, biased variance 9.45, unbiased 10.5', () => {
    assert.equal(merged.count, 10);
    assert.ok(Math.abs(merged.mean[0] - 4.5) < 1e-12, String(merged.mean[0]));
    assert.ok(Math.abs(merged.m2[0] - 94.5) < 1e-12, String(merged.m2[0]));
    assert.ok(Math.abs(biasedVariance(merged)[0] - 9.45) < 1e-12);
    assert.ok(Math.abs(unbiasedVariance(merged)[0] - 10.5) < 1e-12);
  });

  it('gives the same numbers in every shard order', () => {
    for (const order of [[2, 1, 0], [1, 0, 2], [0, 2, 1]]) {
      const m = mergeAll(order.map((i) => statsOf(shards[i], shards[i].length, 1)));
      assert.ok(Math.abs(m.mean[0] - 4.5) < 1e-12 && Math.abs(m.m2[0] - 94.5) < 1e-12, `order ${order}`);
    }
  });

  it("is not Horovod's equal-weight average of the shard means (4.0667)", () => {
    const means = shards.map((s) => s.reduce((a, b) => a + b, 0) / s.length); // 2, 5, 5.2
    const equalWeight = means.reduce((a, b) => a + b, 0) / means.length;
    assert.ok(Math.abs(equalWeight - 4.0667) < 1e-4, String(equalWeight));
    assert.ok(Math.abs(merged.mean[0] - equalWeight) > 0.4);
  });
});

describe('float32 safety', () => {
  for (const [base, naiveWant] of [
    [1e4, -8],
    [1e5, 1024],
  ]) {
    it(`x = ${base} + [1, 2, 3, 4]: variance 1.25, where float32 E[x²] - E[x]² gives ${naiveWant}`, () => {
      const xs = [1, 2, 3, 4].map((v) => base + v);
      // The naive one-pass formula cancels catastrophically in float32.
      const naive = naiveVarianceFloat32(xs);
      assert.equal(naive, naiveWant);
      assert.ok(Math.abs(naive - 1.25) > 9);

      // Ours: two-pass per shard in float32 (as on the device), float32 on the wire, Chan
      // merge in float64.
      const whole = twoPassFloat32(xs);
      assert.equal(biasedVariance(whole)[0], 1.25);
      const shardsSplits = [[[xs[0], xs[1]], [xs[2], xs[3]]], [[xs[0]], [xs[1], xs[2], xs[3]]], [[], xs, []]];
      for (const split of shardsSplits) {
        const parts = split.map((s) => (s.length ? twoPassFloat32(s) : emptyStats(1)));
        const merged = mergeAll(parts.map((p) => unpackStats(packStats(p))));
        assert.equal(merged.count, 4);
        assert.equal(merged.mean[0], base + 2.5);
        assert.equal(biasedVariance(merged)[0], 1.25);
        assert.ok(Math.abs(unbiasedVariance(merged)[0] - 5 / 3) < 1e-12);
      }
    });
  }
});

describe('variances', () => {
  it('unbiasedVariance needs at least 2 values per channel', () => {
    assert.throws(() => unbiasedVariance(emptyStats(2)), RangeError);
    assert.throws(() => unbiasedVariance(statsOf([5, 6], 1, 2)), /more than 1 value/);
    assert.deepEqual(Array.from(unbiasedVariance(statsOf([1, 3], 2, 1))), [2]);
  });

  it('biasedVariance of no values is 0', () => {
    assert.deepEqual(Array.from(biasedVariance(emptyStats(3))), [0, 0, 0]);
  });

  it('clamps a (rounding-)negative M2 at 0', () => {
    const s: ChannelStats = { count: 4, mean: Float64Array.of(1, 2), m2: Float64Array.of(-1e-9, 2) };
    assert.deepEqual(Array.from(biasedVariance(s)), [0, 0.5]);
    assert.deepEqual(Array.from(unbiasedVariance(s)), [0, 2 / 3]);
  });
});

describe('wire packing', () => {
  it('packs [count, mean, m2] as 2C+1 float32 and unpacks to the same statistics', () => {
    const rng = new Rng(5);
    const rows = Float64Array.from(randomRows(rng, 7, 4), (v) => Math.fround(v));
    // Statistics whose values are float32-representable round-trip exactly.
    const s = statsOf(rows, 7, 4);
    const f32: ChannelStats = { count: s.count, mean: s.mean.map(Math.fround), m2: s.m2.map(Math.fround) };
    const packed = packStats(f32);
    assert.ok(packed instanceof Float32Array);
    assert.equal(packed.length, 2 * 4 + 1);
    assert.equal(packed[0], 7);
    assert.deepEqual(unpackStats(packed), f32);
    // Float64 statistics lose only float32 rounding.
    assertStatsClose(unpackStats(packStats(s)), s, 1e-7);
    // An empty rank sends zeros.
    assert.deepEqual(Array.from(packStats(emptyStats(2))), [0, 0, 0, 0, 0]);
    assert.deepEqual(unpackStats(packStats(emptyStats(2))), emptyStats(2));
  });

  it('rejects buffers that are not 2C+1 long', () => {
    assert.throws(() => unpackStats(new Float32Array(0)), RangeError);
    assert.throws(() => unpackStats(new Float32Array(4)), RangeError);
  });
});
