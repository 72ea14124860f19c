import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { Sgd, type SgdOptions } from './sgd.js';
import { createOptimizer } from './index.js';
import { TrainerError } from '../errors.js';
import type { Param } from '../tensor-types.js';
import { assertNoLeak, assertResumesBitForBit, disposeParams, makeParam, setGrads as setGradsWith, type GradFn } from './testing.js';

before(async () => {
  await tf.setBackend('cpu');
});

/** Gradient used by every test: of loss sum(p^3/3 + 0.5 * p), i.e. g = p^2 + 0.5 (nonlinear, so errors compound). */
const gradOf = (p: number): number => p * p + 0.5;

const grad: GradFn = (p) => tf.add(tf.square(p), 0.5);
const setGrads = (params: Param[]) => setGradsWith(params, grad);

/** Plain-JS float64 reference of torch.optim.SGD for one scalar parameter. */
function referenceSgd(p0: number, steps: number, lr: number, o: Required<SgdOptions>): number[] {
  let p = p0;
  let buf: number | null = null;
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    let dp = gradOf(p) + o.weightDecay * p;
    if (o.momentum !== 0) {
      buf = buf === null ? dp : o.momentum * buf + (1 - o.dampening) * dp;
      dp = o.nesterov ? dp + o.momentum * buf : buf;
    }
    p -= lr * dp;
    out.push(p);
  }
  return out;
}

const configs: Array<Required<SgdOptions>> = [
  { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false },
  { momentum: 0, dampening: 0, weightDecay: 0.1, nesterov: false },
  { momentum: 0.9, dampening: 0, weightDecay: 0, nesterov: false },
  { momentum: 0.9, dampening: 0.3, weightDecay: 0.05, nesterov: false },
  { momentum: 0.8, dampening: 0, weightDecay: 0.01, nesterov: true },
  { momentum: 0.5, dampening: 0, weightDecay: 0, nesterov: true },
];

test('SGD matches a float64 scalar reference for 5 steps (momentum, dampening, nesterov, weight decay)', () => {
  const init = [0.7, -1.2, 0.05, 1.5, -0.3, 0.9];
  const lr = 0.05;
  for (const cfg of configs) {
    const params = [makeParam('a.weight', init.slice(0, 4), [2, 2]), makeParam('a.bias', init.slice(4), [2])];
    const opt = new Sgd(cfg);
    const expected = init.map((x) => referenceSgd(x, 5, lr, cfg));
    for (let s = 0; s < 5; s++) {
      setGrads(params);
      opt.step(params, lr);
      const got = [...params[0].value.dataSync(), ...params[1].value.dataSync()];
      got.forEach((v, i) => {
        const e = expected[i][s];
        assert.ok(Math.abs(v - e) <= 1e-5 * Math.max(1, Math.abs(e)), `${JSON.stringify(cfg)} step ${s + 1} [${i}]: ${v} vs ${e}`);
      });
    }
    opt.dispose();
    disposeParams(params);
  }
});

test('SGD hand-computed 2 steps: lr 0.1, momentum 0.9, weight decay 0.1, grad = p', () => {
  // step 1: d = 1 + 0.1*1 = 1.1; buf = 1.1; p = 1 - 0.11 = 0.89
  // step 2: d = 0.89 + 0.089 = 0.979; buf = 0.9*1.1 + 0.979 = 1.969; p = 0.89 - 0.1969 = 0.6931
  const p = makeParam('w', [1], [1]);
  const opt = new Sgd({ momentum: 0.9, weightDecay: 0.1 });
  const expected = [0.89, 0.6931];
  for (const e of expected) {
    p.grad?.dispose();
    p.grad = tf.clone(p.value);
    opt.step([p], 0.1);
    assert.ok(Math.abs(p.value.dataSync()[0] - e) < 1e-6, `${p.value.dataSync()[0]} vs ${e}`);
  }
  const st = opt.exportState();
  assert.equal(st.step, 2);
  assert.deepEqual([...st.slots.keys()], ['w.momentum_buffer']);
  assert.ok(Math.abs(st.slots.get('w.momentum_buffer')!.data[0] - 1.969) < 1e-6);
  opt.dispose();
  disposeParams([p]);
});

test('SGD skips parameters without a gradient', () => {
  const a = makeParam('a', [1, 2], [2]);
  const b = makeParam('b', [3], [1]);
  const opt = new Sgd({ momentum: 0.9, weightDecay: 0.5 });
  a.grad = tf.tensor([1, 1], [2]);
  opt.step([a, b], 0.1);
  assert.deepEqual([...b.value.dataSync()], [3]);
  assert.deepEqual([...opt.exportState().slots.keys()], ['a.momentum_buffer']);
  opt.dispose();
  disposeParams([a, b]);
});

test('SGD does not leak tensors across steps', () => {
  assertNoLeak(() => new Sgd({ momentum: 0.9, weightDecay: 0.01, nesterov: true }), grad);
});

test('SGD export/import resumes bit-for-bit: 3 + 2 steps == 5 steps', () => {
  for (const cfg of configs) assertResumesBitForBit(() => new Sgd(cfg), grad);
});

test('SGD importState rejects bad state', () => {
  const opt = new Sgd({ momentum: 0.9 });
  assert.throws(
    () => opt.importState({ step: 1, slots: new Map([['w.exp_avg', { shape: [1], data: new Float32Array(1) }]]) }),
    (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CHECKPOINT',
  );
  assert.throws(
    () => opt.importState({ step: 1, slots: new Map([['w.momentum_buffer', { shape: [2], data: new Float32Array(1) }]]) }),
    (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CHECKPOINT',
  );
  opt.importState({ step: 1, slots: new Map([['w.momentum_buffer', { shape: [2], data: new Float32Array(2) }]]) });
  const p = makeParam('w', [1, 2, 3], [3]);
  p.grad = tf.ones([3]);
  assert.throws(() => opt.step([p], 0.1), (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CHECKPOINT');
  assert.deepEqual([...p.value.dataSync()], [1, 2, 3]);
  opt.dispose();
  disposeParams([p]);
});

test('createOptimizer(sgd) validates like PyTorch', () => {
  const field = (f: string) => (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_INVALID_SPEC' && e.field === f;
  assert.throws(() => createOptimizer({ type: 'sgd', lr: -0.1 }), field('optimizer.lr'));
  assert.throws(() => createOptimizer({ type: 'sgd', lr: 0.1, momentum: -1 }), field('optimizer.momentum'));
  assert.throws(() => createOptimizer({ type: 'sgd', lr: 0.1, weight_decay: -1 }), field('optimizer.weight_decay'));
  assert.throws(() => createOptimizer({ type: 'sgd', lr: 0.1, nesterov: true }), field('optimizer.nesterov'));
  assert.throws(() => createOptimizer({ type: 'sgd', lr: 0.1, nesterov: true, momentum: 0.9, dampening: 0.1 }), field('optimizer.nesterov'));
  assert.throws(() => createOptimizer({ type: 'sgd', lr: 0.1, betas: [0.9, 0.99] } as never), field('optimizer.betas'));
  assert.throws(() => createOptimizer({ type: 'sgd' } as never), field('optimizer.lr'));
  assert.throws(() => createOptimizer({ type: 'rmsprop', lr: 1 } as never), field('optimizer.type'));
  assert.throws(() => new Sgd({ nesterov: true }), (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_INVALID_SPEC');
  const opt = createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 1e-4 });
  assert.ok(opt instanceof Sgd);
  assert.equal(opt.kind, 'sgd');
  assert.equal(opt.momentum, 0.9);
  assert.equal(opt.weightDecay, 1e-4);
  assert.equal(opt.nesterov, true);
  const p = makeParam('w', [1], [1]);
  p.grad = tf.ones([1]);
  assert.throws(() => opt.step([p], Number.NaN), field('optimizer.lr'));
  opt.dispose();
  disposeParams([p]);
});
