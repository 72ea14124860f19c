/**
 * BN running-statistics summaries: hand-checked numbers (values exact in float32, so the
 * expected summaries are exact), nested residual names, a model without BN, the float64
 * compensated mean, NaN and corrupt states; and the step-recording rule.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BN_STATS_MAX_POINTS, recordsBnStatsAt, summariseBnBuffers, type BnStateLike } from './bn-summary.js';

function state(entries: Array<[string, number[]]>): BnStateLike {
  return new Map(entries.map(([k, v]) => [k, { shape: [v.length], data: Float32Array.from(v) }]));
}

describe('summariseBnBuffers', () => {
  it('summarises each layer, nested residual names included, in state-dict order', () => {
    const s = state([
      ['0.weight', [9, 9, 9, 9]],
      ['1.weight', [1, 1, 1, 1]],
      ['1.bias', [0, 0, 0, 0]],
      ['1.running_mean', [1, 2, 3, -2]],
      ['1.running_var', [0.5, 1.5, 2, 4]],
      ['1.num_batches_tracked', [7]],
      ['3.body.0.weight', [1, 1]],
      ['3.body.0.running_mean', [0.25, -0.25]],
      ['3.body.0.running_var', [1, 3]],
      ['3.body.0.num_batches_tracked', [12]],
      ['3.body.1.weight', [5, 5]], // a GroupNorm: parameters, no buffers
      ['3.shortcut.1.running_mean', [-1, -1, -4]],
      ['3.shortcut.1.running_var', [0, 0.25, 0.5]], // no num_batches_tracked (some exporters)
    ]);
    assert.deepEqual(summariseBnBuffers(s), [
      // mean: 4/4; l2: sqrt(1 + 4 + 9 + 4) = sqrt(18); var: 8/4
      { layer: '1', channels: 4, mean: { mean: 1, min: -2, max: 3, l2: Math.sqrt(18) }, var: { mean: 2, min: 0.5, max: 4 }, num_batches_tracked: 7 },
      // means cancel, the L2 norm does not: sqrt(1/16 + 1/16)
      { layer: '3.body.0', channels: 2, mean: { mean: 0, min: -0.25, max: 0.25, l2: Math.sqrt(0.125) }, var: { mean: 2, min: 1, max: 3 }, num_batches_tracked: 12 },
      // mean -6/3; l2 sqrt(1 + 1 + 16); var 0.75/3
      { layer: '3.shortcut.1', channels: 3, mean: { mean: -2, min: -4, max: -1, l2: Math.sqrt(18) }, var: { mean: 0.25, min: 0, max: 0.5 } },
    ]);
  });

  it('uses the full prefix of the trainer\'s names (layers.N...)', () => {
    const s = state([
      ['layers.2.body.0.running_mean', [2]],
      ['layers.2.body.0.running_var', [3]],
    ]);
    assert.deepEqual(summariseBnBuffers(s).map((l) => l.layer), ['layers.2.body.0']);
  });

  it('a bare BN module state (no prefix) is the layer ""', () => {
    const s = state([
      ['running_mean', [1, 3]],
      ['running_var', [2, 2]],
    ]);
    assert.deepEqual(summariseBnBuffers(s), [{ layer: '', channels: 2, mean: { mean: 2, min: 1, max: 3, l2: Math.sqrt(10) }, var: { mean: 2, min: 2, max: 2 } }]);
  });

  it('a model without BN (or with track_running_stats false) gives []', () => {
    assert.deepEqual(summariseBnBuffers(new Map()), []);
    const s = state([
      ['0.weight', [1, 2, 3, 4]],
      ['0.bias', [1, 2]],
      ['1.weight', [1, 1]], // BN with affine but no running stats
      ['1.bias', [0, 0]],
    ]);
    assert.deepEqual(summariseBnBuffers(s), []);
  });

  it('reads a decoded safetensors state (int64 num_batches_tracked as BigInt64Array)', () => {
    const s = new Map<string, { data: Float32Array | BigInt64Array }>([
      ['layers.1.running_mean', { data: Float32Array.of(1, 3) }],
      ['layers.1.running_var', { data: Float32Array.of(1, 2) }],
      ['layers.1.num_batches_tracked', { data: BigInt64Array.of(42n) }],
    ]);
    assert.deepEqual(summariseBnBuffers(s), [{ layer: 'layers.1', channels: 2, mean: { mean: 2, min: 1, max: 3, l2: Math.sqrt(10) }, var: { mean: 1.5, min: 1, max: 2 }, num_batches_tracked: 42 }]);
  });

  it('ignores a running_mean without its running_var', () => {
    assert.deepEqual(summariseBnBuffers(state([['foo.running_mean', [1, 2]]])), []);
  });

  it('accumulates in float64 with compensation (a naive float64 sum loses these bits)', () => {
    // Exact float32 values: 2^53 + 1 rounds to 2^53 in a naive float64 sum, giving 1 instead of 2.
    const big = 2 ** 53;
    let naive = 0;
    for (const x of [big, 1, -big, 1]) naive += x;
    assert.equal(naive, 1);
    const [l] = summariseBnBuffers(state([
      ['bn.running_mean', [big, 1, -big, 1]],
      ['bn.running_var', [1, 1, 1, 1]],
    ]));
    assert.equal(l.mean.mean, 2 / 4);
    assert.equal(l.mean.min, -big);
    assert.equal(l.mean.max, big);
  });

  it('agrees with a direct float64 computation on random float32 buffers', () => {
    let seed = 12345;
    const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) * 10 - 3;
    const m = Float32Array.from({ length: 513 }, rnd);
    const v = Float32Array.from({ length: 513 }, () => Math.abs(rnd()));
    const [l] = summariseBnBuffers(new Map([
      ['x.running_mean', { data: m }],
      ['x.running_var', { data: v }],
    ]));
    const sum = (a: Float32Array, f = (x: number) => x) => a.reduce((s, x) => s + f(x), 0);
    const close = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)), `${a} vs ${b}`);
    close(l.mean.mean, sum(m) / 513);
    close(l.mean.l2, Math.sqrt(sum(m, (x) => x * x)));
    close(l.var.mean, sum(v) / 513);
    assert.equal(l.mean.min, Math.min(...m));
    assert.equal(l.var.max, Math.max(...v));
  });

  it('a NaN channel makes the layer\'s summary NaN (a diverged layer must not look finite)', () => {
    const [l] = summariseBnBuffers(state([
      ['b.running_mean', [1, Number.NaN, 3]],
      ['b.running_var', [1, 1, 1]],
    ]));
    assert.ok(Number.isNaN(l.mean.mean) && Number.isNaN(l.mean.min) && Number.isNaN(l.mean.max) && Number.isNaN(l.mean.l2));
    assert.equal(l.var.mean, 1);
  });

  it('refuses a layer whose running_mean and running_var disagree on channels', () => {
    assert.throws(() => summariseBnBuffers(state([
      ['b.running_mean', [1, 2, 3]],
      ['b.running_var', [1, 1]],
    ])), /'b': running_mean has 3 channels but running_var has 2/);
  });
});

describe('recordsBnStatsAt', () => {
  const recorded = (total: number, max = BN_STATS_MAX_POINTS) => {
    const steps: number[] = [];
    for (let s = 1; s <= total; s++) if (recordsBnStatsAt(s, total, max)) steps.push(s);
    return steps;
  };

  it('records every step of a run of up to 500 steps', () => {
    assert.deepEqual(recorded(1), [1]);
    assert.deepEqual(recorded(7), [1, 2, 3, 4, 5, 6, 7]);
    assert.equal(recorded(500).length, 500);
  });

  it('records on a stride of total/500 beyond 500 steps, exactly 500 points, always the last step', () => {
    assert.deepEqual(recorded(1000).slice(0, 4), [2, 4, 6, 8]);
    assert.deepEqual(recorded(100_000).slice(0, 3), [200, 400, 600]);
    for (const total of [501, 749, 1000, 1001, 12_345, 100_000]) {
      const steps = recorded(total);
      assert.equal(steps.length, 500, `total ${total}`);
      assert.equal(steps[steps.length - 1], total, `total ${total}`);
      // Evenly spread: every gap is floor or ceil of total/500.
      const gaps = steps.slice(1).map((s, i) => s - steps[i]);
      assert.ok(gaps.every((g) => g === Math.floor(total / 500) || g === Math.ceil(total / 500)), `total ${total}`);
    }
  });

  it('a smaller budget of points, and steps outside the run', () => {
    assert.deepEqual(recorded(10, 3), [4, 7, 10]);
    assert.equal(recordsBnStatsAt(0, 10), false);
    assert.equal(recordsBnStatsAt(11, 10), false);
    assert.throws(() => recordsBnStatsAt(1.5, 10), RangeError);
    assert.throws(() => recordsBnStatsAt(1, 10, 0), RangeError);
  });
});
