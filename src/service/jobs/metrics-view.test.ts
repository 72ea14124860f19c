// The metrics view's downsampling: bounded, first and last kept, and every window's
// extremes kept for every series, so a spike is never thinned away.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { downsampleIndices, summariseMetrics, type MetricRow } from './metrics-view.js';

function rows(n: number, f: (step: number) => Partial<MetricRow> = () => ({})): MetricRow[] {
  return Array.from({ length: n }, (_, i) => ({
    step: i + 1,
    loss: 1 / (i + 1),
    accuracy: i / n,
    lr: 0.1,
    samplesPerSec: 1000,
    computeMs: 2,
    bnFwdMs: 0.5,
    bnBwdMs: 0.4,
    gradMs: 0.3,
    bnStats: null,
    ...f(i + 1),
  }));
}

describe('downsampleIndices', () => {
  test('every index when the rows fit', () => {
    assert.deepEqual(downsampleIndices(5, [(i) => i], 10), [0, 1, 2, 3, 4]);
    assert.deepEqual(downsampleIndices(0, [(i) => i], 10), []);
  });

  test('at most maxPoints, sorted, distinct, with the first and the last', () => {
    for (const [n, max, k] of [[10_000, 100, 3], [1001, 1000, 9], [777, 10, 1], [50_000, 2, 2], [12_345, 300, 0]] as const) {
      const series = Array.from({ length: k }, (_, s) => (i: number) => Math.sin(i * (s + 1) * 0.01));
      const idx = downsampleIndices(n, series, max);
      assert.ok(idx.length <= max, `${idx.length} > ${max} (n=${n}, series=${k})`);
      assert.equal(idx[0], 0);
      assert.equal(idx[idx.length - 1], n - 1);
      for (let i = 1; i < idx.length; i++) assert.ok(idx[i]! > idx[i - 1]!, 'ascending and distinct');
      // Not wastefully few: overlaps are used to add windows.
      if (max >= 100) assert.ok(idx.length >= max / 4, `only ${idx.length} of ${max} points used`);
    }
  });

  test("a single-step spike and dip in different series both survive, and each window's extremes are kept", () => {
    const n = 100_000;
    const loss = (i: number) => (i === 73_123 ? 50 : 1);
    const speed = (i: number) => (i === 4_567 ? 1 : 1000 + (i % 7));
    const idx = downsampleIndices(n, [loss, speed], 200);
    assert.ok(idx.includes(73_123), 'the loss spike');
    assert.ok(idx.includes(4_567), 'the throughput dip');
    // Over any run of consecutive kept rows, the plotted max of `speed` equals the true
    // max of the rows between the first and the last kept one of its window: check it
    // globally, as a plot's y-range would show it.
    assert.equal(Math.max(...idx.map(speed)), 1006);
    assert.equal(Math.min(...idx.map(speed)), 1);
  });

  test('nulls and NaN are skipped, not taken as extremes', () => {
    const idx = downsampleIndices(1000, [(i) => (i % 2 === 0 ? null : i === 501 ? -5 : Number.NaN)], 10);
    assert.ok(idx.includes(501));
    assert.ok(idx.length <= 10);
  });
});

describe('summariseMetrics', () => {
  test('downsamples the curves and each BN layer, keeps a loss spike, reports lr and the recalibration', () => {
    const bn = (step: number) => [{ layer: 'bn1', channels: 4, mean: { mean: step === 3333 ? 9 : 0.1, min: 0, max: 0.2, l2: 0.3 }, var: { mean: 1, min: 0.9, max: 1.1 } }];
    const all = rows(5000, (step) => ({ loss: step === 4000 ? 99 : 0.5, bnStats: bn(step) }));
    const v = summariseMetrics('j', all, [{ layer: 'bn1', channels: 4, mean: { mean: 0, min: 0, max: 0, l2: 0 }, var: { mean: 1, min: 1, max: 1 } }], 100, { mode: 'exact', batches: 3 });
    assert.equal(v.steps_recorded, 5000);
    assert.ok(v.points.length <= 100 && v.points.length > 10);
    assert.equal(v.points[0]!.step, 1);
    assert.equal(v.points[v.points.length - 1]!.step, 5000);
    assert.ok(v.points.some((p) => p.step === 4000 && p.loss === 99), 'the loss spike is kept');
    assert.equal(v.points[0]!.lr, 0.1);
    const layer = v.bn_layers[0]!;
    assert.ok(layer.points.length <= 100);
    assert.ok(layer.points.some((p) => p.step === 3333 && p.mean.mean === 9), "the BN layer's outlier is kept");
    assert.deepEqual(v.recalibration, { mode: 'exact', after_step: 5000 });
    assert.equal(layer.final?.mean.mean, 0);
  });

  test('rows recorded before lr was stored read as null; no model, no recalibration', () => {
    const old = rows(3).map(({ lr: _lr, ...r }) => r);
    const v = summariseMetrics('j', old, null, 1000);
    assert.equal(v.points.length, 3);
    assert.equal(v.points[0]!.lr, null);
    assert.equal(v.recalibration, null);
  });
});
