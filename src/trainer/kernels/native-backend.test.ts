/**
 * The native backend against tfjs's cpu backend, kernel by kernel: products and
 * convolutions within float32 rounding, element-wise ops and sums to the bit (the same
 * float32 roundings), the fused kernels against the compositions kernels.ts uses
 * elsewhere, and the memory rules (outputs are reused only when nobody holds them; the
 * addon refuses a call that would reach outside an array).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { Rng } from '../math/rng.js';
import { createOptimizer } from '../optim/index.js';
import * as K from './kernels.js';
import { NATIVE_COMPUTE_MISSING, nativeCompute } from './native-addon.js';
import { NATIVE_BACKEND, registerNativeBackend } from './native-backend.js';

// CI builds the addon and sets TAS_REQUIRE_NATIVE=1, so a missing addon fails there.
const skip = nativeCompute ? false : process.env.TAS_REQUIRE_NATIVE === '1' ? false : `native addon absent: ${NATIVE_COMPUTE_MISSING}`;

const rng = new Rng(11);
function rand(n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => rng.normal() * scale);
}

/** Run `fn` on a backend with host inputs; returns host outputs. */
async function on(backend: string, fn: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const r = tf.tidy(fn);
  const list = Array.isArray(r) ? r : [r];
  const out = list.map((t) => Float32Array.from(t.dataSync() as Float32Array));
  list.forEach((t) => t.dispose());
  return out;
}

async function both(fn: () => tf.Tensor | tf.Tensor[]): Promise<{ native: Float32Array[]; cpu: Float32Array[] }> {
  return { native: await on(NATIVE_BACKEND, fn), cpu: await on('cpu', fn) };
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] !== ub[i] && !(Number.isNaN(a[i]) && Number.isNaN(b[i]))) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]}`);
  }
}

/** Relative error in the 2-norm: float32 products of length k stay well under 1e-5. */
function close(a: Float32Array, b: Float32Array, what: string, tol = 1e-5): void {
  assert.equal(a.length, b.length, `${what}: length`);
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  const rel = Math.sqrt(num / Math.max(den, 1e-30));
  assert.ok(rel <= tol, `${what}: relative error ${rel}`);
}

describe('native backend', { skip }, () => {
  before(() => registerNativeBackend(nativeCompute!));

  it('matMul: every transpose form, batched and broadcast, matches the cpu backend', async () => {
    for (const [m, k, n] of [[7, 5, 3], [64, 33, 17], [1, 300, 2], [40, 1, 9]]) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const a = rand(m * k), b = rand(k * n);
          const r = await both(() => tf.matMul(tf.tensor2d(a, ta ? [k, m] : [m, k]), tf.tensor2d(b, tb ? [n, k] : [k, n]), ta, tb));
          close(r.native[0], r.cpu[0], `matMul ${m}x${k}x${n} ${ta} ${tb}`);
        }
      }
    }
    const a3 = rand(3 * 4 * 5), b3 = rand(3 * 5 * 2), b2 = rand(5 * 2);
    let r = await both(() => tf.matMul(tf.tensor3d(a3, [3, 4, 5]), tf.tensor3d(b3, [3, 5, 2])));
    close(r.native[0], r.cpu[0], 'batched');
    r = await both(() => tf.matMul(tf.tensor3d(a3, [3, 4, 5]), tf.tensor3d(b2, [1, 5, 2])));
    close(r.native[0], r.cpu[0], 'broadcast batch');
  });

  it('conv2d and both gradients match the cpu backend (strides, padding, 1x1, odd sizes, empty batch, several patch groups)', async () => {
    const cases = [
      { n: 2, h: 7, w: 6, c: 3, k: 3, cout: 4, s: 1, p: 1 },
      { n: 3, h: 9, w: 9, c: 5, k: 3, cout: 8, s: 2, p: 1 },
      { n: 1, h: 5, w: 4, c: 6, k: 1, cout: 3, s: 1, p: 0 },
      { n: 2, h: 8, w: 8, c: 2, k: 5, cout: 3, s: 3, p: 2 },
      { n: 2, h: 6, w: 6, c: 4, k: 2, cout: 2, s: 2, p: 0 },
      { n: 0, h: 4, w: 4, c: 2, k: 3, cout: 3, s: 1, p: 1 },
      // A sample's patches over the addon's 1 MiB group: one sample per group, three groups.
      { n: 3, h: 64, w: 64, c: 8, k: 3, cout: 4, s: 1, p: 1 },
    ];
    for (const g of cases) {
      const geom: K.Conv2DGeometry = { kernel: [g.k, g.k], stride: g.s, padding: g.p };
      const ho = Math.floor((g.h + 2 * g.p - g.k) / g.s) + 1, wo = Math.floor((g.w + 2 * g.p - g.k) / g.s) + 1;
      const x = rand(g.n * g.h * g.w * g.c), w = rand(g.k * g.k * g.c * g.cout), dy = rand(g.n * ho * wo * g.cout);
      const xs = (): tf.Tensor4D => tf.tensor4d(x, [g.n, g.h, g.w, g.c]);
      const ws = (): tf.Tensor4D => tf.tensor4d(w, [g.k, g.k, g.c, g.cout]);
      const dys = (): tf.Tensor4D => tf.tensor4d(dy, [g.n, ho, wo, g.cout]);
      const what = JSON.stringify(g);
      let r = await both(() => K.conv2d(xs(), ws(), geom));
      close(r.native[0], r.cpu[0], `conv2d ${what}`);
      r = await both(() => K.conv2dBackpropInput(dys(), ws(), [g.n, g.h, g.w, g.c], geom));
      close(r.native[0], r.cpu[0], `backprop input ${what}`);
      r = await both(() => K.conv2dBackpropFilter(xs(), dys(), [g.k, g.k, g.c, g.cout], geom));
      if (g.n === 0) assert.ok(r.native[0].every((v) => v === 0), 'empty batch: zero filter gradient');
      else close(r.native[0], r.cpu[0], `backprop filter ${what}`);
    }
  });

  it('element-wise arithmetic with broadcasting gives the cpu backend\'s bits, NaN, infinities and -0 included', async () => {
    const special = Float32Array.of(0, -0, 1, -1, Infinity, -Infinity, NaN, 1e-40, 3.4e38, -2.5);
    const shapes: Array<[number[], number[]]> = [
      [[6, 5], [6, 5]],
      [[6, 5], [5]],
      [[5], [6, 5]],
      [[6, 5], []],
      [[], [6, 5]],
      [[2, 3, 4, 5], [1, 3, 1, 5]],
      [[2, 1, 4, 1], [1, 3, 1, 5]],
      [[4, 1], [1, 4]],
    ];
    for (const [sa, sb] of shapes) {
      const na = sa.reduce((p, q) => p * q, 1), nb = sb.reduce((p, q) => p * q, 1);
      const a = rand(na), b = rand(nb);
      a.set(special.subarray(0, Math.min(na, special.length)));
      b.set(special.slice().reverse().subarray(0, Math.min(nb, special.length)));
      for (const op of [tf.add, tf.sub, tf.mul, tf.div]) {
        const r = await both(() => op(tf.tensor(a, sa), tf.tensor(b, sb)));
        sameBits(r.native[0], r.cpu[0], `${op.name} [${sa}] [${sb}]`);
      }
    }
  });

  it('unary maps give the cpu backend\'s bits (exp and log within an ulp)', async () => {
    const x = Float32Array.from([...rand(200, 3), 0, -0, Infinity, -Infinity, NaN, 1e-40, -1e-40]);
    const exact: Array<[string, (t: tf.Tensor) => tf.Tensor]> = [
      ['relu', tf.relu], ['neg', tf.neg], ['square', tf.square], ['sqrt', tf.sqrt], ['rsqrt', tf.rsqrt],
      ['reciprocal', tf.reciprocal], ['abs', tf.abs], ['step', (t) => tf.step(t, 0)], ['step alpha', (t) => tf.step(t, 0.25)],
    ];
    for (const [name, fn] of exact) {
      const r = await both(() => fn(tf.tensor1d(x)));
      sameBits(r.native[0], r.cpu[0], name);
    }
    for (const fn of [tf.exp, tf.log]) {
      const r = await both(() => fn(tf.tensor1d(x)));
      for (let i = 0; i < x.length; i++) {
        const [p, q] = [r.native[0][i], r.cpu[0][i]];
        if (Number.isNaN(q)) assert.ok(Number.isNaN(p));
        else assert.ok(p === q || Math.abs(p - q) <= Math.abs(q) * 1.2e-7, `${fn.name}(${x[i]}): ${p} vs ${q}`);
      }
    }
  });

  it('sums over a run of axes give the cpu backend\'s bits; means and scattered axes agree', async () => {
    const x = rand(2 * 3 * 4 * 5, 10);
    const shape = [2, 3, 4, 5];
    for (const axis of [0, 3, [1, 2], [0, 1], [2, 3], [0, 1, 2, 3], [0, 2]]) {
      for (const keepDims of [false, true]) {
        let r = await both(() => tf.sum(tf.tensor(x, shape), axis, keepDims));
        sameBits(r.native[0], r.cpu[0], `sum ${JSON.stringify(axis)}`);
        r = await both(() => tf.mean(tf.tensor(x, shape), axis, keepDims));
        close(r.native[0], r.cpu[0], `mean ${JSON.stringify(axis)}`, 1e-6);
      }
    }
  });

  it('fused BatchNorm and ReLU kernels equal the tfjs compositions used on other backends', async () => {
    const rows = 37, c = 6;
    const x = rand(rows * c, 2).map((v, i) => v + 1000 * (i % c)); // large offsets: the two-pass variance must not cancel
    const dy = rand(rows * c), gamma = rand(c), beta = rand(c), invstd = rand(c).map((v) => Math.abs(v) + 0.1);
    const sumDy = rand(c), sumDyXmu = rand(c);
    // Moments: the composition sums in float32 on some backends, so compare closely, not bitwise.
    const m = await both(() => {
      const r = K.channelStats(tf.tensor2d(x, [rows, c]));
      return [r.mean, r.m2];
    });
    close(m.native[0], m.cpu[0], 'mean', 1e-7);
    close(m.native[1], m.cpu[1], 'm2', 1e-6);
    const xmu = rand(rows * c);
    let r = await both(() => K.bnNormalize(tf.tensor2d(xmu, [rows, c]), tf.tensor1d(invstd), tf.tensor1d(gamma), tf.tensor1d(beta)));
    sameBits(r.native[0], r.cpu[0], 'bnNormalize');
    r = await both(() => K.bnNormalize(tf.tensor2d(xmu, [rows, c]), tf.tensor1d(invstd), null, null));
    sameBits(r.native[0], r.cpu[0], 'bnNormalize without affine');
    r = await both(() => {
      const s = K.bnBackwardSums(tf.tensor2d(dy, [rows, c]), tf.tensor2d(xmu, [rows, c]));
      return [s.sumDy, s.sumDyXmu];
    });
    sameBits(r.native[0], r.cpu[0], 'sumDy');
    close(r.native[1], r.cpu[1], 'sumDyXmu', 1e-7);
    for (const g of [gamma, null]) {
      r = await both(() => K.bnInputGrad(tf.tensor2d(dy, [rows, c]), tf.tensor2d(xmu, [rows, c]), tf.tensor1d(invstd), g ? tf.tensor1d(g) : null, tf.tensor1d(sumDy), tf.tensor1d(sumDyXmu), 3 * rows));
      sameBits(r.native[0], r.cpu[0], `bnInputGrad ${g ? 'affine' : 'plain'}`);
    }
    const y = Float32Array.from([...rand(50), 0, -0, NaN, Infinity]);
    const d = Float32Array.from([...rand(50), NaN, 2, 3, -Infinity]);
    r = await both(() => K.reluGrad(tf.tensor1d(d), tf.tensor1d(y)));
    sameBits(r.native[0], r.cpu[0], 'reluGrad');
  });

  it('fused SGD and Adam updates give the bits of the tfjs compositions, state included', async () => {
    const configs: Array<Record<string, unknown>> = [
      { type: 'sgd', lr: 0.1 },
      { type: 'sgd', lr: 0.05, momentum: 0.9, weight_decay: 0.01 },
      { type: 'sgd', lr: 0.05, momentum: 0.9, nesterov: true },
      { type: 'sgd', lr: 0.05, momentum: 0.8, dampening: 0.3 },
      { type: 'adam', lr: 0.01 },
      { type: 'adam', lr: 0.01, weight_decay: 0.1, amsgrad: true },
      { type: 'adamw', lr: 0.01, weight_decay: 0.05, betas: [0.3, 0.99] },
    ];
    const shapes = [[17, 5], [5]];
    const init = shapes.map((sh) => rand(sh.reduce((a, b) => a * b, 1)));
    const grads = [0, 1, 2].map(() => shapes.map((sh) => rand(sh.reduce((a, b) => a * b, 1))));
    for (const config of configs) {
      const run = async (backend: string): Promise<Float32Array[]> => {
        await tf.setBackend(backend);
        const params = shapes.map((sh, i) => ({ name: `p${i}`, value: tf.variable(tf.tensor(init[i], sh)), grad: null as tf.Tensor | null }));
        const opt = createOptimizer(config as never);
        for (const g of grads) {
          params.forEach((p, i) => (p.grad = tf.tensor(g[i], shapes[i])));
          opt.step(params, config.lr as number);
          params.forEach((p) => p.grad!.dispose());
        }
        const state = opt.exportState();
        const out = [...params.map((p) => Float32Array.from(p.value.dataSync() as Float32Array)), ...[...state.slots.values()].map((t) => Float32Array.from(t.data))];
        params.forEach((p) => p.value.dispose());
        return out;
      };
      const [native, cpu] = [await run(NATIVE_BACKEND), await run('cpu')];
      assert.equal(native.length, cpu.length);
      native.forEach((a, i) => sameBits(a, cpu[i], `${JSON.stringify(config)} tensor ${i}`));
    }
  });

  it('reuses an output array only when nobody holds it', async () => {
    await tf.setBackend(NATIVE_BACKEND);
    const a = tf.tensor1d(rand(1000)), b = tf.tensor1d(rand(1000));
    const first = tf.add(a, b);
    const held = first.dataSync() as Float32Array; // leaves the backend: never reused
    const copy = Float32Array.from(held);
    first.dispose();
    const second = tf.mul(a, b);
    sameBits(held, copy, 'a read array after its tensor is gone');
    const secondData = (tf.backend() as unknown as { data: { get(id: object): { values: Float32Array } } }).data.get(second.dataId).values;
    second.dispose(); // not read: its array goes back to the pool ...
    const third = tf.sub(a, b);
    const thirdData = (tf.backend() as unknown as { data: { get(id: object): { values: Float32Array } } }).data.get(third.dataId).values;
    assert.equal(thirdData, secondData, '... and the next output of that size reuses it');
    sameBits(Float32Array.from(third.dataSync() as Float32Array), await on('cpu', () => tf.sub(tf.tensor1d(a.dataSync()), tf.tensor1d(b.dataSync()))).then((o) => o[0]), 'reused array fully rewritten');
    await tf.setBackend(NATIVE_BACKEND);
    tf.dispose([a, b, third]);
  });

  it('the addon refuses calls that would reach outside an array', () => {
    const n = nativeCompute!;
    const small = new Float32Array(4);
    assert.throws(() => n.sgemm(false, false, 3, 3, 3, 1, small, 3, small, 3, 0, small, 3), RangeError);
    assert.throws(() => n.sgemm(false, false, 2, 2, 2, 1, small, 1, small, 2, 0, small, 2), RangeError); // lda < k
    assert.throws(() => n.conv2d(small, small, small, Int32Array.of(1, 2, 2, 1, 1, 1, 1, 1, 1, 0, 0, 3, 3)), RangeError);
    assert.throws(() => n.binary(0, small, Int32Array.of(4), small, Int32Array.of(3), Int32Array.of(4), small), RangeError);
    assert.throws(() => n.reduce(0, small, 2, 3, 1, small), RangeError);
    assert.throws(() => n.bnMoments(new Float32Array(5), 2, small, small), RangeError);
    assert.throws(() => n.unary(0, small, new Uint8Array(4) as unknown as Float32Array, 0), TypeError);
  });
});
