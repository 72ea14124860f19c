import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { Adam, type AdamOptions } from './adam.js';
import { createOptimizer } from './index.js';
import { TrainerError } from '../errors.js';
import type { Param } from '../tensor-types.js';
import { assertNoLeak, assertResumesBitForBit, disposeParams, makeParam, setGrads as setGradsWith, type GradFn } from './testing.js';

before(async () => {
  await tf.setBackend('cpu');
});

/** g = p^2 + 0.5 * p - 0.2 (nonlinear, sign changes, so errors compound). */
const gradOf = (p: number): number => p * p + 0.5 * p - 0.2;

const grad: GradFn = (p) => tf.sub(tf.add(tf.square(p), tf.mul(p, 0.5)), 0.2);
const setGrads = (params: Param[]) => setGradsWith(params, grad);

type Cfg = Required<AdamOptions>;

/** Plain-JS float64 reference of torch.optim.Adam / AdamW for one scalar parameter. */
function referenceAdam(p0: number, steps: number, lr: number, o: Cfg): number[] {
  let p = p0;
  let m = 0;
  let v = 0;
  let vmax = 0;
  const out: number[] = [];
  for (let t = 1; t <= steps; t++) {
    let g = gradOf(p);
    if (o.decoupled) p *= 1 - lr * o.weightDecay;
    else g += o.weightDecay * p;
    m = o.beta1 * m + (1 - o.beta1) * g;
    v = o.beta2 * v + (1 - o.beta2) * g * g;
    vmax = Math.max(vmax, v);
    const bc1 = 1 - o.beta1 ** t;
    const bc2 = 1 - o.beta2 ** t;
    const denom = Math.sqrt(o.amsgrad ? vmax : v) / Math.sqrt(bc2) + o.eps;
    p -= (lr / bc1) * (m / denom);
    out.push(p);
  }
  return out;
}

const configs: Cfg[] = [
  { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, decoupled: false, amsgrad: false },
  { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, decoupled: false, amsgrad: false },
  { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, decoupled: true, amsgrad: false },
  { beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.2, decoupled: true, amsgrad: true },
  { beta1: 0.3, beta2: 0.9, eps: 1e-3, weightDecay: 0.05, decoupled: false, amsgrad: true },
];

test('Adam/AdamW match a float64 scalar reference for 5 steps', () => {
  const init = [0.7, -1.2, 0.05, 1.5, -0.3, 0.9];
  const lr = 0.05;
  for (const cfg of configs) {
    const params = [makeParam('l.weight', init.slice(0, 4), [2, 2]), makeParam('l.bias', init.slice(4), [2])];
    const opt = new Adam(cfg);
    assert.equal(opt.kind, cfg.decoupled ? 'adamw' : 'adam');
    const expected = init.map((x) => referenceAdam(x, 5, lr, cfg));
    for (let s = 0; s < 5; s++) {
      setGrads(params);
      opt.step(params, lr);
      const got = [...params[0].value.dataSync(), ...params[1].value.dataSync()];
      got.forEach((v, i) => {
        const e = expected[i][s];
        assert.ok(Math.abs(v - e) <= 2e-6 * Math.max(1, Math.abs(e)), `${JSON.stringify(cfg)} step ${s + 1} [${i}]: ${v} vs ${e}`);
      });
    }
    opt.dispose();
    disposeParams(params);
  }
});

test('first Adam step moves each parameter by about -lr * sign(grad)', () => {
  const p = makeParam('w', [1, 1, 1, 1], [4]);
  p.grad = tf.tensor([3, -0.01, 250, -7], [4]);
  const opt = new Adam();
  opt.step([p], 0.01);
  const got = [...p.value.dataSync()];
  const expected = [0.99, 1.01, 0.99, 1.01];
  got.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `${v} vs ${expected[i]}`));
  const st = opt.exportState();
  assert.deepEqual([...st.slots.keys()], ['w.exp_avg', 'w.exp_avg_sq', 'w.step']);
  assert.deepEqual(st.slots.get('w.step'), { shape: [], data: new Float32Array([1]) });
  opt.dispose();
  disposeParams([p]);
});

test('AdamW decays the parameter even when the gradient is zero; Adam with zero grad and no decay does not move', () => {
  const p = makeParam('w', [2], [1]);
  p.grad = tf.zeros([1]);
  const adamw = new Adam({ decoupled: true }); // default weight decay 0.01
  assert.equal(adamw.weightDecay, 0.01);
  adamw.step([p], 0.1);
  assert.ok(Math.abs(p.value.dataSync()[0] - 2 * (1 - 0.1 * 0.01)) < 1e-7);
  const q = makeParam('w', [2], [1]);
  q.grad = tf.zeros([1]);
  const adam = new Adam();
  assert.equal(adam.weightDecay, 0);
  adam.step([q], 0.1);
  assert.equal(q.value.dataSync()[0], 2);
  adamw.dispose();
  adam.dispose();
  disposeParams([p, q]);
});

test('Adam keeps a per-parameter step count; parameters without grad are skipped', () => {
  const a = makeParam('a', [0.5], [1]);
  const b = makeParam('b', [0.5], [1]);
  const opt = new Adam();
  const ref = new Adam();
  const c = makeParam('c', [0.5], [1]);
  // a gets a gradient on both steps, b only on the second: b's update must be a first step.
  a.grad = tf.ones([1]);
  opt.step([a, b], 0.1);
  assert.equal(b.value.dataSync()[0], 0.5);
  setGrads([a, b]);
  c.grad = tf.clone(b.grad!);
  opt.step([a, b], 0.1);
  ref.step([c], 0.1);
  assert.equal(b.value.dataSync()[0], c.value.dataSync()[0]);
  const st = opt.exportState();
  assert.equal(st.step, 2);
  assert.equal(st.slots.get('a.step')!.data[0], 2);
  assert.equal(st.slots.get('b.step')!.data[0], 1);
  opt.dispose();
  ref.dispose();
  disposeParams([a, b, c]);
});

test('Adam does not leak tensors across steps', () => {
  for (const cfg of configs) assertNoLeak(() => new Adam(cfg), grad);
});

test('Adam export/import resumes bit-for-bit: 3 + 2 steps == 5 steps', () => {
  for (const cfg of configs) assertResumesBitForBit(() => new Adam(cfg), grad);
});

test('Adam importState: missing per-param step falls back to the global counter; bad state rejected', () => {
  const cfg = configs[0];
  const init = [0.4, -0.8];
  const a = [makeParam('w', init, [2])];
  const optA = new Adam(cfg);
  for (let i = 0; i < 3; i++) {
    setGrads(a);
    optA.step(a, 0.01);
  }
  const state = optA.exportState();
  const slots = new Map(state.slots);
  slots.delete('w.step');
  const optB = new Adam(cfg);
  optB.importState({ step: state.step, slots });
  assert.equal(optB.exportState().slots.get('w.step')!.data[0], 3);
  const isCkpt = (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_CHECKPOINT';
  const bad = (mut: (m: Map<string, { shape: number[]; data: Float32Array }>) => void, opt = optB) => {
    const m = new Map(state.slots);
    mut(m);
    assert.throws(() => opt.importState({ step: 3, slots: m }), isCkpt);
  };
  bad((m) => m.delete('w.exp_avg_sq'));
  bad((m) => m.set('w.momentum_buffer', { shape: [2], data: new Float32Array(2) }));
  bad((m) => m.set('w.exp_avg', { shape: [3], data: new Float32Array(3) }));
  bad((m) => m.set('w.step', { shape: [], data: new Float32Array([1.5]) }));
  bad(() => {}, new Adam({ amsgrad: true }));
  // Rejected imports leave the previous state in place.
  assert.equal(optB.exportState().slots.get('w.step')!.data[0], 3);
  optA.dispose();
  optB.dispose();
  disposeParams(a);
});

test('createOptimizer(adam|adamw) maps the spec and validates like PyTorch', () => {
  const field = (f: string) => (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_INVALID_SPEC' && e.field === f;
  const adam = createOptimizer({ type: 'adam', lr: 1e-3, betas: [0.8, 0.99], eps: 1e-6, amsgrad: true });
  assert.ok(adam instanceof Adam);
  assert.equal(adam.kind, 'adam');
  assert.deepEqual([adam.beta1, adam.beta2, adam.eps, adam.weightDecay, adam.amsgrad, adam.decoupled], [0.8, 0.99, 1e-6, 0, true, false]);
  const adamw = createOptimizer({ type: 'adamw', lr: 1e-3 });
  assert.ok(adamw instanceof Adam);
  assert.equal(adamw.kind, 'adamw');
  assert.equal(adamw.weightDecay, 0.01);
  assert.equal((createOptimizer({ type: 'adamw', lr: 1e-3, weight_decay: 0 }) as Adam).weightDecay, 0);
  assert.throws(() => createOptimizer({ type: 'adam', lr: -1 }), field('optimizer.lr'));
  assert.throws(() => createOptimizer({ type: 'adam', lr: 1, betas: [1, 0.9] }), field('optimizer.betas.0'));
  assert.throws(() => createOptimizer({ type: 'adam', lr: 1, betas: [0.9, -0.1] }), field('optimizer.betas.1'));
  assert.throws(() => createOptimizer({ type: 'adam', lr: 1, betas: [0.9] } as never), field('optimizer.betas'));
  assert.throws(() => createOptimizer({ type: 'adam', lr: 1, eps: -1 }), field('optimizer.eps'));
  assert.throws(() => createOptimizer({ type: 'adamw', lr: 1, weight_decay: -1 }), field('optimizer.weight_decay'));
  assert.throws(() => createOptimizer({ type: 'adamw', lr: 1, amsgrad: 'yes' } as never), field('optimizer.amsgrad'));
  assert.throws(() => createOptimizer({ type: 'adam', lr: 1, momentum: 0.9 } as never), field('optimizer.momentum'));
  adam.dispose();
  adamw.dispose();
});
