/**
 * BatchNorm semantics: the single-value error, eval with running statistics,
 * track_running_stats=false, SyncBN over uneven (and empty) shares equal to one rank on
 * the whole batch, and the running-statistics conventions (PyTorch, Keras, cumulative).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { InProcessGroup } from '../collective/in-process.js';
import { collectiveBnSync } from '../engine/bn-sync.js';
import { TrainerError } from '../errors.js';
import { Rng } from '../math/rng.js';
import { Model } from '../model/model.js';
import type { LayerSpec, ModelSpec } from '../model/spec.js';
import type { BatchNorm } from './batchnorm.js';
import type { BnSync, ForwardContext } from './layer.js';

before(async () => {
  await tf.setBackend('cpu');
});

function ctx(training: boolean, o: Partial<ForwardContext> = {}): ForwardContext {
  return { training, record: false, bnSync: null, updateRunningStats: false, rng: new Rng(0), ...o };
}

function bnModel(inputShape: number[], bn: Omit<Extract<LayerSpec, { type: 'batchnorm' }>, 'type'> = {}, convention?: ModelSpec['bn_convention']): { model: Model; bn: BatchNorm } {
  const spec: ModelSpec = { input_shape: inputShape, layers: [{ type: 'batchnorm', ...bn }] };
  if (convention) spec.bn_convention = convention;
  const model = Model.build(spec, 0);
  return { model, bn: model.batchNorms()[0] };
}

function normals(n: number, rng: Rng, scale = 1, shift = 0): Float32Array {
  return Float32Array.from({ length: n }, () => shift + scale * rng.normal());
}

function setAffine(bn: BatchNorm, gamma: ArrayLike<number>, beta: ArrayLike<number>): void {
  bn.gamma!.value.assign(tf.tensor1d(Float32Array.from(gamma)));
  bn.beta!.value.assign(tf.tensor1d(Float32Array.from(beta)));
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: got ${got[i]}, want ${want[i]}`);
}

/** Per-channel mean and biased variance of channels-last data (float64). */
function channelStats(x: ArrayLike<number>, c: number): { mean: number[]; varB: number[] } {
  const rows = x.length / c;
  const mean = new Array<number>(c).fill(0);
  const varB = new Array<number>(c).fill(0);
  for (let i = 0; i < x.length; i++) mean[i % c] += x[i] / rows;
  for (let i = 0; i < x.length; i++) varB[i % c] += (x[i] - mean[i % c]) ** 2 / rows;
  return { mean, varB };
}

describe('BatchNorm: one value per channel', () => {
  it('rejects a [1, C] batch in training with PyTorch\'s message', async () => {
    const { model } = bnModel([3]);
    const x = tf.tensor2d([[1, 2, 3]]);
    try {
      await assert.rejects(model.forward(x, ctx(true)), (e: unknown) => {
        assert.ok(e instanceof TrainerError);
        assert.equal(e.code, 'TAS_ERR_BN_SINGLE_VALUE');
        assert.match(e.message, /Expected more than 1 value per channel when training, got input size \[1, 3\]/);
        return true;
      });
    } finally {
      x.dispose();
      model.dispose();
    }
  });

  it('rejects (1, C, 1, 1) in training too: one value per channel', async () => {
    const { model } = bnModel([2, 1, 1]);
    const x = tf.tensor4d([1, 2], [1, 1, 1, 2]);
    try {
      await assert.rejects(model.forward(x, ctx(true)), /Expected more than 1 value per channel when training/);
    } finally {
      x.dispose();
      model.dispose();
    }
  });

  it('accepts (1, C, H, W) with H*W > 1 in training: the statistics are over H*W values', async () => {
    const { model } = bnModel([2, 2, 3]);
    const xd = normals(12, new Rng(3), 2, 1);
    const x = tf.tensor4d(xd, [1, 2, 3, 2]);
    const y = await model.forward(x, ctx(true));
    const { mean, varB } = channelStats(y.dataSync(), 2);
    assertClose(mean, [0, 0], 1e-6, 'output mean');
    const eps = 1e-5;
    const inVar = channelStats(xd, 2).varB;
    assertClose(varB, inVar.map((v) => v / (v + eps)), 1e-5, 'output variance');
    [x, y].forEach((t) => t.dispose());
    model.dispose();
  });

  it('accepts a [1, C] batch in eval mode (running statistics)', async () => {
    const { model } = bnModel([3]);
    const x = tf.tensor2d([[1, 2, 3]]);
    const y = await model.forward(x, ctx(false));
    assertClose(y.dataSync(), [1, 2, 3].map((v) => v / Math.sqrt(1 + 1e-5)), 1e-6, 'y');
    [x, y].forEach((t) => t.dispose());
    model.dispose();
  });
});

describe('BatchNorm: which statistics normalise', () => {
  it('eval mode uses the running statistics (and leaves them alone)', async () => {
    for (const shape of [[3], [3, 2, 2]]) {
      const { model, bn } = bnModel(shape, { eps: 1e-3 });
      const rm = [0.5, -1, 2];
      const rv = [4, 0.25, 1.5];
      const g = [1.5, -0.5, 2];
      const b = [0.1, 0.2, -0.3];
      bn.setRunningStats(rm, rv);
      setAffine(bn, g, b);
      const rows = 4 * (shape.length === 3 ? 4 : 1);
      const xd = normals(rows * 3, new Rng(1), 3);
      const xShape = shape.length === 3 ? [4, 2, 2, 3] : [4, 3];
      const x = tf.tensor(xd, xShape);
      const y = await model.forward(x, ctx(false, { updateRunningStats: true }));
      const want = Array.from(xd, (v, i) => ((v - rm[i % 3]) / Math.sqrt(rv[i % 3] + 1e-3)) * g[i % 3] + b[i % 3]);
      assertClose(y.dataSync(), want, 1e-5, `y for [${shape}]`);
      const st = bn.exportState();
      assertClose(st.get('running_mean')!.data, rm, 0, 'running_mean');
      assertClose(st.get('running_var')!.data, rv, 0, 'running_var');
      assert.equal(bn.numBatchesTracked, 0);
      [x, y].forEach((t) => t.dispose());
      model.dispose();
    }
  });

  it('frozen eval passes keep the scale and shift, and drop them when statistics or state change', async () => {
    const { model, bn } = bnModel([3], { eps: 1e-3 });
    bn.setRunningStats([0.5, -1, 2], [4, 0.25, 1.5]);
    setAffine(bn, [1.5, -0.5, 2], [0.1, 0.2, -0.3]);
    const xd = normals(12, new Rng(2), 3);
    const run = async (frozen: boolean) => {
      const x = tf.tensor(xd, [4, 3]);
      const y = await model.forward(x, ctx(false, { frozen }));
      const out = Array.from(y.dataSync());
      [x, y].forEach((t) => t.dispose());
      return out;
    };
    const want = (rm: number[], rv: number[], g: number[], b: number[]) => Array.from(xd, (v, i) => ((v - rm[i % 3]) / Math.sqrt(rv[i % 3] + 1e-3)) * g[i % 3] + b[i % 3]);
    // The same bits frozen or not, twice over (the second frozen pass uses the kept constants).
    const plain = await run(false);
    assert.deepEqual(await run(true), plain);
    assert.deepEqual(await run(true), plain);
    // New statistics: a frozen pass sees them.
    bn.setRunningStats([0, 0, 0], [1, 1, 1]);
    assertClose(await run(true), want([0, 0, 0], [1, 1, 1], [1.5, -0.5, 2], [0.1, 0.2, -0.3]), 1e-5, 'after setRunningStats');
    // A loaded state: a frozen pass sees it.
    const st = bn.exportState();
    st.set('running_mean', { shape: [3], data: Float32Array.of(1, 2, 3) });
    st.set('weight', { shape: [3], data: Float32Array.of(2, 2, 2) });
    bn.importState(st);
    assertClose(await run(true), want([1, 2, 3], [1, 1, 1], [2, 2, 2], [0.1, 0.2, -0.3]), 1e-5, 'after importState');
    model.dispose();
  });

  it('track_running_stats false: eval mode uses the batch statistics, as training does', async () => {
    const { model, bn } = bnModel([3], { track_running_stats: false });
    assert.equal(bn.runningMean, null);
    assert.equal(bn.runningVar, null);
    setAffine(bn, [2, 1, 0.5], [0, 1, -1]);
    const xd = normals(15, new Rng(2), 2, 3);
    const x = tf.tensor2d(xd, [5, 3]);
    const yEval = await model.forward(x, ctx(false));
    const yTrain = await model.forward(x, ctx(true, { updateRunningStats: true }));
    const { mean, varB } = channelStats(xd, 3);
    const want = Array.from(xd, (v, i) => ((v - mean[i % 3]) / Math.sqrt(varB[i % 3] + 1e-5)) * [2, 1, 0.5][i % 3] + [0, 1, -1][i % 3]);
    assertClose(yEval.dataSync(), want, 1e-5, 'eval y');
    assertClose(yTrain.dataSync(), yEval.dataSync(), 1e-6, 'train y');
    // No buffers in the state: only the affine parameters.
    assert.deepEqual([...bn.exportState().keys()], ['weight', 'bias']);
    [x, yEval, yTrain].forEach((t) => t.dispose());
    model.dispose();
  });
});

describe('SyncBN', () => {
  /** Forward + backward of one BN layer on one rank's rows; returns host copies. */
  async function step(inputShape: number[], xd: Float32Array, dyd: Float32Array, rows: number, sync: BnSync | null, affine: { g: number[]; b: number[] }) {
    const { model, bn } = bnModel(inputShape, { momentum: 0.1 });
    setAffine(bn, affine.g, affine.b);
    const sample = inputShape.length === 3 ? [inputShape[1], inputShape[2], inputShape[0]] : inputShape;
    const x = tf.tensor(xd, [rows, ...sample]);
    const y = await model.forward(x, ctx(true, { record: true, bnSync: sync, updateRunningStats: true }));
    const dy = tf.tensor(dyd, y.shape);
    const dx = (await model.net.backward(dy, true))!;
    const st = bn.exportState();
    const out = {
      y: Float32Array.from(y.dataSync()),
      dx: Float32Array.from(dx.dataSync()),
      dgamma: Float32Array.from(bn.gamma!.grad!.dataSync()),
      dbeta: Float32Array.from(bn.beta!.grad!.dataSync()),
      runningMean: st.get('running_mean')!.data,
      runningVar: st.get('running_var')!.data,
    };
    [x, y, dy, dx].forEach((t) => t.dispose());
    model.dispose();
    return out;
  }

  for (const inputShape of [[3], [2, 2, 3]]) {
    it(`over 3 ranks with shares [0, 2, 5] equals one rank on the 7 rows (input [${inputShape}])`, async () => {
      const shares = [0, 2, 5];
      const c = inputShape[0];
      const per = inputShape.reduce((a, b) => a * b, 1);
      const rng = new Rng(11);
      const xd = normals(7 * per, rng, 2, 0.5);
      const dyd = normals(7 * per, rng);
      const affine = { g: Array.from(normals(c, rng, 0.5, 1)), b: Array.from(normals(c, rng)) };

      const single = await step(inputShape, xd, dyd, 7, null, affine);

      const group = new InProcessGroup(3);
      const calls = shares.map(() => ({ gather: 0, reduce: 0 }));
      const syncOf = (r: number): BnSync => {
        const s = collectiveBnSync(group.member(r));
        return {
          gatherStats: (l) => (calls[r].gather++, s.gatherStats(l)),
          reduceSums: (l) => (calls[r].reduce++, s.reduceSums(l)),
        };
      };
      const offs = [0, 0, 2]; // where each rank's share starts
      const ranks = await Promise.all(
        shares.map((n, r) =>
          step(inputShape, xd.slice(offs[r] * per, (offs[r] + n) * per), dyd.slice(offs[r] * per, (offs[r] + n) * per), n, syncOf(r), affine).catch((e: Error) => {
            group.abort(e);
            throw e;
          }),
        ),
      );
      const cat = (k: 'y' | 'dx') => Float32Array.from(ranks.flatMap((o) => Array.from(o[k])));
      assert.equal(ranks[0].y.length, 0, 'the empty rank returns an empty output');
      assertClose(cat('y'), single.y, 2e-6, 'y');
      assertClose(cat('dx'), single.dx, 2e-6, 'dx');
      // dγ and dβ stay local sums: their sum over ranks is the single-rank gradient.
      const sum = (k: 'dgamma' | 'dbeta') => Array.from({ length: c }, (_, i) => ranks.reduce((a, o) => a + o[k][i], 0));
      assertClose(sum('dgamma'), single.dgamma, 2e-5, 'dgamma');
      assertClose(sum('dbeta'), single.dbeta, 2e-5, 'dbeta');
      assert.deepEqual(Array.from(ranks[0].dgamma), new Array(c).fill(0), 'the empty rank contributes nothing');
      // Running statistics from the global batch, the same bits on every rank.
      assertClose(ranks[0].runningMean, single.runningMean, 1e-6, 'running_mean');
      assertClose(ranks[0].runningVar, single.runningVar, 1e-6, 'running_var');
      for (const o of ranks.slice(1)) {
        assert.deepEqual(o.runningMean, ranks[0].runningMean);
        assert.deepEqual(o.runningVar, ranks[0].runningVar);
      }
      // Every rank joined both collectives once, the empty one included.
      assert.deepEqual(calls, shares.map(() => ({ gather: 1, reduce: 1 })));
    });
  }
});

describe('BatchNorm running statistics', () => {
  // One channel; batches [1,2,3,4], [0,0,2,6], [5,5,7,7]; running stats start at (0, 1).
  const batches = [[1, 2, 3, 4], [0, 0, 2, 6], [5, 5, 7, 7]];

  async function runBatches(bn: Omit<Extract<LayerSpec, { type: 'batchnorm' }>, 'type'>, convention?: ModelSpec['bn_convention'], o: Partial<ForwardContext> = {}): Promise<{ mean: number; variance: number; tracked: number }> {
    const { model, bn: layer } = bnModel([1], bn, convention);
    for (const b of batches) {
      const x = tf.tensor2d(b, [4, 1]);
      const y = await model.forward(x, ctx(true, { updateRunningStats: true, ...o }));
      [x, y].forEach((t) => t.dispose());
    }
    const st = layer.exportState();
    const out = { mean: st.get('running_mean')!.data[0], variance: st.get('running_var')!.data[0], tracked: st.get('num_batches_tracked')!.data[0] };
    model.dispose();
    return out;
  }

  it('pytorch, momentum 0.1: unbiased variance, new-value weight 0.1 -> (0.9825, 1.717333)', async () => {
    const r = await runBatches({ momentum: 0.1 });
    assert.ok(Math.abs(r.mean - 0.9825) < 1e-6, String(r.mean));
    assert.ok(Math.abs(r.variance - 1.717333) < 1e-5, String(r.variance));
    assert.equal(r.tracked, 3);
  });

  it('keras: biased variance, momentum 0.99 the weight of the OLD value -> (0.1043025, 1.051950)', async () => {
    const r = await runBatches({}, 'keras'); // the Keras default momentum is 0.99
    assert.ok(Math.abs(r.mean - 0.1043025) < 1e-6, String(r.mean));
    assert.ok(Math.abs(r.variance - 1.0519503) < 1e-6, String(r.variance));
    // With the unbiased variance it would be 1.07917: the convention matters.
    assert.ok(Math.abs(r.variance - 1.07917) > 0.02);
  });

  it('momentum null: the cumulative average of the batch statistics -> (3.5, 3.666667)', async () => {
    const r = await runBatches({ momentum: null });
    assert.ok(Math.abs(r.mean - 3.5) < 1e-6, String(r.mean));
    assert.ok(Math.abs(r.variance - 11 / 3) < 1e-5, String(r.variance));
  });

  it('a schedule\'s momentum override (null) replaces the layer\'s own', async () => {
    const r = await runBatches({ momentum: 0.1 }, undefined, { bnMomentum: null });
    assert.ok(Math.abs(r.mean - 3.5) < 1e-6, String(r.mean));
    assert.ok(Math.abs(r.variance - 11 / 3) < 1e-5, String(r.variance));
  });

  it('updateRunningStats false leaves them untouched', async () => {
    const r = await runBatches({ momentum: 0.1 }, undefined, { updateRunningStats: false });
    assert.deepEqual([r.mean, r.variance, r.tracked], [0, 1, 0]);
  });
});
