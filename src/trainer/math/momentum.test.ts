/**
 * BatchNorm momentum: schedules, the two conventions' weight of the new value, and the
 * worked running-statistics numbers (with the batch statistics from bn-stats).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { biasedVariance, statsOf, unbiasedVariance } from './bn-stats.js';
import { momentumAt, newValueWeight, scheduleProblem, updateRunning, type BnConvention, type MomentumSchedule } from './momentum.js';

const close = (got: number | null, want: number, tol = 1e-12) => {
  assert.ok(got !== null && Math.abs(got - want) <= tol, `got ${got}, want ${want}`);
};

describe('momentumAt', () => {
  it('constant: the value, null included', () => {
    assert.equal(momentumAt({ type: 'constant', value: 0.1 }, 0), 0.1);
    assert.equal(momentumAt({ type: 'constant', value: 0.1 }, 1000), 0.1);
    assert.equal(momentumAt({ type: 'constant', value: null }, 7), null);
  });

  it('linear 0.9 -> 0.1 over 40 steps: 0.88 at t=1, 0.5 halfway, held at 0.1 after', () => {
    const s: MomentumSchedule = { type: 'linear', start: 0.9, end: 0.1, total: 40 };
    close(momentumAt(s, 0), 0.9);
    close(momentumAt(s, 1), 0.88);
    close(momentumAt(s, 20), 0.5);
    close(momentumAt(s, 39), 0.12);
    assert.equal(momentumAt(s, 40), 0.1);
    assert.equal(momentumAt(s, 1000), 0.1);
  });

  it('exponential: 0.9 * 0.8^t, floored at min', () => {
    const s: MomentumSchedule = { type: 'exponential', start: 0.9, rate: 0.8 };
    for (let t = 0; t < 6; t++) close(momentumAt(s, t), 0.9 * 0.8 ** t);
    close(momentumAt(s, 2), 0.576);
    const floored: MomentumSchedule = { type: 'exponential', start: 0.9, rate: 0.5, min: 0.2 };
    close(momentumAt(floored, 1), 0.45);
    assert.equal(momentumAt(floored, 3), 0.2); // 0.1125 < min
  });

  it('list: one value per t, the last repeated after the list ends', () => {
    const s: MomentumSchedule = { type: 'list', values: [0.3, 0.2, null, 0.05] };
    assert.deepEqual([0, 1, 2, 3, 4, 100].map((t) => momentumAt(s, t)), [0.3, 0.2, null, 0.05, 0.05, 0.05]);
    assert.equal(momentumAt({ type: 'list', values: [0.5, null] }, 9), null);
  });
});

describe('newValueWeight', () => {
  it('pytorch: momentum is the weight of the new value', () => {
    assert.equal(newValueWeight('pytorch', 0.1, 1), 0.1);
    assert.equal(newValueWeight('pytorch', 0.1, 50), 0.1);
  });
  it('keras: momentum is the weight of the old value', () => {
    close(newValueWeight('keras', 0.99, 1), 0.01);
    close(newValueWeight('keras', 0.9, 12), 0.1);
  });
  it('null: the cumulative average 1/num_batches_tracked, in both conventions', () => {
    for (const c of ['pytorch', 'keras'] as BnConvention[]) {
      assert.deepEqual([1, 2, 3, 4].map((n) => newValueWeight(c, null, n)), [1, 1 / 2, 1 / 3, 1 / 4]);
    }
  });
});

describe('running statistics, worked numbers (one channel)', () => {
  // Batches [1,2,3,4], [0,0,2,6], [5,5,7,7]: means 2.5, 2, 6; M2 5, 24, 4.
  const batches = [[1, 2, 3, 4], [0, 0, 2, 6], [5, 5, 7, 7]];

  /** Running (mean, var) after the three batches, from (0, 1), as BatchNorm updates them. */
  function run(convention: BnConvention, momentum: number | null): [number, number] {
    const mean = Float64Array.of(0);
    const variance = Float64Array.of(1);
    batches.forEach((b, i) => {
      const s = statsOf(b, b.length, 1);
      const w = newValueWeight(convention, momentum, i + 1);
      updateRunning(mean, s.mean, w);
      // PyTorch updates with the unbiased variance, Keras with the biased one.
      updateRunning(variance, convention === 'pytorch' ? unbiasedVariance(s) : biasedVariance(s), w);
    });
    return [mean[0], variance[0]];
  }

  it('pytorch, momentum 0.1: (0.9825, 1.717333)', () => {
    const [m, v] = run('pytorch', 0.1);
    close(m, 0.9825);
    close(v, 1.717333, 1e-6);
    close(v, 0.9 ** 3 + 0.1 * (0.81 * (5 / 3) + 0.9 * 8 + 4 / 3)); // exactly 1.7173333...
  });

  it('momentum null (cumulative average): (3.5, 3.666667)', () => {
    const [m, v] = run('pytorch', null);
    close(m, 3.5);
    close(v, 11 / 3);
  });

  it('keras, momentum 0.99, biased variance: (0.1043025, 1.051950)', () => {
    const [m, v] = run('keras', 0.99);
    close(m, 0.1043025);
    close(v, 1.05195025);
  });

  it('updateRunning works per channel and on float32 buffers', () => {
    const r = Float32Array.of(0, 1, 2);
    updateRunning(r, [1, 1, 1], 0.25);
    assert.deepEqual(Array.from(r), [0.25, 1, 1.75]);
    updateRunning(r, [5, 6, 7], 1); // w = 1: the batch value (first step of a cumulative average)
    assert.deepEqual(Array.from(r), [5, 6, 7]);
  });
});

describe('scheduleProblem', () => {
  it('accepts valid schedules', () => {
    const ok: MomentumSchedule[] = [
      { type: 'constant', value: 0.1 },
      { type: 'constant', value: null },
      { type: 'constant', value: 0 },
      { type: 'constant', value: 1 },
      { type: 'linear', start: 0.9, end: 0.1, total: 40 },
      { type: 'exponential', start: 0.9, rate: 0.8 },
      { type: 'exponential', start: 0.9, rate: 1, min: 0.1 },
      { type: 'list', values: [0.1, null, 0.01] },
    ];
    for (const s of ok) assert.equal(scheduleProblem(s), null, JSON.stringify(s));
  });

  it('names the field of a bad schedule', () => {
    const bad: Array<[MomentumSchedule, string]> = [
      [{ type: 'constant', value: 1.5 }, 'value'],
      [{ type: 'constant', value: -0.1 }, 'value'],
      [{ type: 'constant', value: Number.NaN }, 'value'],
      [{ type: 'linear', start: -0.1, end: 0.1, total: 10 }, 'start'],
      [{ type: 'linear', start: 0.9, end: 2, total: 10 }, 'start'],
      [{ type: 'linear', start: 0.9, end: 0.1, total: 0 }, 'total'],
      [{ type: 'exponential', start: 1.2, rate: 0.5 }, 'start'],
      [{ type: 'exponential', start: 0.9, rate: 0 }, 'rate'],
      [{ type: 'exponential', start: 0.9, rate: 1.5 }, 'rate'],
      [{ type: 'list', values: [] }, 'values'],
      [{ type: 'list', values: [0.1, 3] }, 'values'],
    ];
    for (const [s, field] of bad) {
      const p = scheduleProblem(s);
      assert.ok(p !== null, `${JSON.stringify(s)} should be rejected`);
      assert.equal(p[0], field, JSON.stringify(s));
      assert.ok(p[1].length > 0);
    }
  });
});
