/**
 * Finite-difference checks of every layer type's explicit backward.
 *
 * Loss: L = Σ y ⊙ R for a fixed random R, so dL/dy = R is what backward gets. For the
 * input and for every parameter, a few random directions v are checked:
 *   numeric  = L(θ + h v) - L(θ - h v)           (forward in float32, L summed in float64)
 *   analytic = Σ g ⊙ (θ⁺ - θ⁻)                    (θ± as actually rounded to float32)
 * Using the perturbation as stored (not 2h·v) removes the rounding of θ ± h v from the
 * comparison, and a directional derivative averages the float32 noise of the forward
 * over every output; together they allow a tight relative tolerance (observed errors
 * are 1e-5..1e-3 against TOL = 1e-2; a 5% error in a gradient fails).
 * Kinks: ReLU inputs are kept away from 0 and maxpool windows have no near-ties; in the
 * residual block, where that cannot be arranged, every ReLU's on/off pattern is recorded
 * and a step that changes it is shortened until it does not.
 *
 * Every case also checks that a forward+backward cycle leaves no tensors behind, and the
 * negative controls show that the check does fail on wrong gradients.
 *
 * Backend: cpu by default; TAS_TEST_BACKEND=wasm runs the same checks on wasm (where
 * conv2d's filter gradient goes through kernels.ts's im2col fallback, and maxpool's
 * gradient through kernels.maxPoolGrad instead of the backend's broken MaxPoolGrad).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import * as K from '../kernels/kernels.js';
import { Rng } from '../math/rng.js';
import { Model } from '../model/model.js';
import type { LayerSpec } from '../model/spec.js';
import type { ForwardContext, Layer } from './layer.js';
import { Residual } from './residual.js';

const BACKEND = (process.env.TAS_TEST_BACKEND ?? 'cpu').trim().toLowerCase();

before(async () => {
  if (BACKEND === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
  else if (BACKEND !== 'cpu') throw new Error(`TAS_TEST_BACKEND must be cpu or wasm, got '${BACKEND}'`);
  assert.ok(await tf.setBackend(BACKEND), `backend ${BACKEND} failed to initialise`);
  await tf.ready();
  assert.equal(tf.getBackend(), BACKEND);
});

/** Relative tolerance on each directional derivative. */
const TOL = 1e-2;
/** Random directions per checked tensor. */
const DIRECTIONS = 3;
const DROPOUT_SEED = 1234;

interface GradCase {
  name: string;
  /** One sample in PyTorch layout ([features] or [C, H, W]). */
  inputShape: number[];
  layers: LayerSpec[];
  batch: number;
  /** Input values, channels-last; default N(0, 1). */
  input?: (size: number, rng: Rng) => Float32Array;
  /** Finite-difference step. */
  h?: number;
  seed?: number;
}

function normals(n: number, rng: Rng, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = scale * rng.normal();
  return a;
}

/** Values at least 0.2 away from ReLU's kink, so no ±h step crosses it. */
function awayFromZero(n: number, rng: Rng): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const z = rng.normal();
    a[i] = (z < 0 ? -1 : 1) * (0.2 + Math.abs(z));
  }
  return a;
}

/** A shuffled grid with spacing 0.05: no ties, and every pooling window has a clear max. */
function distinctValues(n: number, rng: Rng): Float32Array {
  const a = Float32Array.from({ length: n }, (_, i) => (i - n / 2) * 0.05);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

function ctxOf(record: boolean): ForwardContext {
  // A fresh Rng with the same seed for every forward: dropout draws the same mask each time.
  return { training: true, record, bnSync: null, updateRunningStats: false, rng: new Rng(DROPOUT_SEED) };
}

/** A loss evaluation and the ReLU activation pattern it went through. */
interface Evaluation {
  loss: number;
  /** 1 where a ReLU (a relu layer or a residual block's output activation) passed its input. */
  pattern: Uint8Array;
}

interface Target {
  name: string;
  /** Current value (host copy). */
  value: Float32Array;
  /** Loss with this target replaced by `v` (everything else at its base value). */
  lossWith: (v: Float32Array) => Promise<Evaluation>;
}

interface Prepared {
  model: Model;
  targets: Target[];
  /** Analytic gradients by target name (`x` and the parameter names). */
  grads: Map<string, Float32Array>;
  /** Scale of the float32 noise in L: Σ |y ⊙ R|. */
  lossScale: number;
  /** ReLU pattern at the base point: a ±h step that changes it crossed a kink. */
  basePattern: Uint8Array;
  /** R = dL/dy, channels-last. */
  r: Float32Array;
  xShape: number[];
  h: number;
  tensorsPerCycle: { firstCycleNew: number; paramsWithGrad: number; secondCycleDelta: number; evalForwardDelta: number };
}

async function prepare(c: GradCase): Promise<Prepared> {
  const rng = new Rng(c.seed ?? 7);
  const model = Model.build({ input_shape: c.inputShape, layers: c.layers }, c.seed ?? 7);
  // Move every parameter off its initial value (BN's γ = 1, β = 0 would hide a missing γ factor).
  for (const p of model.params()) {
    const noise = normals(p.value.size, rng, 0.3);
    tf.tidy(() => p.value.assign(tf.add(p.value, tf.tensor(noise, p.value.shape))));
  }
  const xShape = [c.batch, ...model.internalInputShape];
  const xSize = xShape.reduce((a, b) => a * b, 1);
  const xData = (c.input ?? ((n, r) => normals(n, r)))(xSize, rng);
  const ySize = c.batch * model.outputShape.reduce((a, b) => a * b, 1);
  const rData = normals(ySize, rng);
  const yShape = [c.batch, ...model.outputShape];

  const recorder = watchRelus(model);
  let lossScale = 0;
  const loss = async (xv: Float32Array): Promise<Evaluation> => {
    recorder.length = 0;
    const x = tf.tensor(xv, xShape);
    const y = await model.forward(x, ctxOf(false));
    const yd = y.dataSync();
    x.dispose();
    y.dispose();
    let l = 0;
    let s = 0;
    for (let i = 0; i < yd.length; i++) {
      l += yd[i] * rData[i];
      s += Math.abs(yd[i] * rData[i]);
    }
    lossScale = Math.max(lossScale, s);
    const pattern = new Uint8Array(recorder.reduce((a, b) => a + b.length, 0));
    let off = 0;
    for (const r of recorder.splice(0)) {
      pattern.set(r, off);
      off += r.length;
    }
    return { loss: l, pattern };
  };

  /** One recording forward + backward; returns the host gradients. */
  const cycle = async (): Promise<Map<string, Float32Array>> => {
    const x = tf.tensor(xData, xShape);
    const y = await model.forward(x, ctxOf(true));
    assert.deepEqual(y.shape, yShape);
    const r = tf.tensor(rData, yShape);
    const dx = await model.net.backward(r, true);
    assert.ok(dx, 'backward returned no input gradient');
    assert.deepEqual(dx.shape, xShape);
    const grads = new Map<string, Float32Array>([['x', Float32Array.from(dx.dataSync())]]);
    for (const p of model.params()) {
      assert.ok(p.grad, `${p.name}: no gradient after backward`);
      assert.deepEqual(p.grad.shape, p.value.shape, `${p.name}: gradient shape`);
      grads.set(p.name, Float32Array.from(p.grad.dataSync()));
    }
    [x, y, r, dx].forEach((t) => t.dispose());
    return grads;
  };

  const t0 = tf.memory().numTensors;
  const grads = await cycle();
  const t1 = tf.memory().numTensors;
  const again = await cycle();
  const t2 = tf.memory().numTensors;
  const base = await loss(xData);
  const t3 = tf.memory().numTensors;
  // The same inputs give the same gradients (no state leaks from one cycle into the next).
  for (const [k, g] of grads) assert.deepEqual(again.get(k), g, `${c.name}: ${k} differs between two identical cycles`);

  const targets: Target[] = [{ name: 'x', value: xData, lossWith: loss }];
  for (const p of model.params()) {
    const original = Float32Array.from(p.value.dataSync());
    targets.push({
      name: p.name,
      value: original,
      lossWith: async (v) => {
        tf.tidy(() => p.value.assign(tf.tensor(v, p.value.shape)));
        try {
          return await loss(xData);
        } finally {
          tf.tidy(() => p.value.assign(tf.tensor(original, p.value.shape)));
        }
      },
    });
  }
  return {
    model,
    targets,
    grads,
    lossScale,
    basePattern: base.pattern,
    r: rData,
    xShape,
    h: c.h ?? 1e-3,
    tensorsPerCycle: { firstCycleNew: t1 - t0, paramsWithGrad: model.params().length, secondCycleDelta: t2 - t1, evalForwardDelta: t3 - t2 },
  };
}

interface DirectionalResult {
  target: string;
  numeric: number;
  analytic: number;
  err: number;
  /** Step used (shorter than the case's where the first one crossed a ReLU kink). */
  h: number;
}

/** Directional-derivative comparisons for every target, with the given analytic gradients. */
async function directional(p: Prepared, grads: Map<string, Float32Array>, seed = 99): Promise<DirectionalResult[]> {
  const rng = new Rng(seed);
  const out: DirectionalResult[] = [];
  // Float32 noise floor of a loss difference: about one ulp of every term.
  const floor = 1e-7 * p.lossScale;
  for (const t of p.targets) {
    const g = grads.get(t.name)!;
    for (let d = 0; d < DIRECTIONS; d++) {
      const v = normals(t.value.length, rng);
      const plus = new Float32Array(t.value.length);
      const minus = new Float32Array(t.value.length);
      let h = p.h;
      let ep: Evaluation;
      let em: Evaluation;
      for (;;) {
        for (let i = 0; i < v.length; i++) {
          plus[i] = t.value[i] + h * v[i];
          minus[i] = t.value[i] - h * v[i];
        }
        ep = await t.lossWith(plus);
        em = await t.lossWith(minus);
        if (samePattern(ep.pattern, p.basePattern) && samePattern(em.pattern, p.basePattern)) break;
        // The step crossed a ReLU kink, where the difference quotient is not the
        // derivative: shorten the step (a unit just next to its kink needs a short one).
        assert.ok(h > p.h / 1000, `${t.name}: a ±${h} step still crosses a ReLU kink`);
        h /= 4;
      }
      const numeric = ep.loss - em.loss;
      let analytic = 0;
      let gg = 0;
      let dd = 0;
      for (let i = 0; i < v.length; i++) {
        const step = plus[i] - minus[i];
        analytic += g[i] * step;
        gg += g[i] * g[i];
        dd += step * step;
      }
      // Relative to the larger of the two values and of the typical size of a directional
      // derivative of this gradient (‖g‖·‖step‖/√dim, its RMS over random directions): a
      // direction nearly orthogonal to g gives a tiny value whose truncation error is not.
      const typical = Math.sqrt((gg * dd) / v.length);
      const err = Math.abs(numeric - analytic) / Math.max(Math.abs(numeric), Math.abs(analytic), typical, floor);
      out.push({ target: t.name, numeric, analytic, err, h });
    }
  }
  return out;
}

function samePattern(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Record, on every non-recording forward, which outputs of each ReLU were positive: the
 * relu layers and the residual blocks' output activations, nested ones included.
 */
function watchRelus(model: Model): Uint8Array[] {
  const recorder: Uint8Array[] = [];
  const wrap = (layer: Layer) => {
    if (layer instanceof Residual) {
      layer.body.layers.forEach(wrap);
      layer.shortcut?.layers.forEach(wrap);
      if (layer.activation !== 'relu') return;
    } else if (layer.type !== 'relu') return;
    const forward = layer.forward.bind(layer);
    layer.forward = async (x, ctx) => {
      const y = await forward(x, ctx);
      if (!ctx.record) recorder.push(Uint8Array.from(y.dataSync(), (v) => (v > 0 ? 1 : 0)));
      return y;
    };
  };
  model.net.layers.forEach(wrap);
  return recorder;
}

function failures(results: DirectionalResult[]): DirectionalResult[] {
  return results.filter((r) => !(r.err <= TOL));
}

function describeResults(results: DirectionalResult[]): string {
  return results.map((r) => `${r.target}: numeric ${r.numeric.toExponential(6)} analytic ${r.analytic.toExponential(6)} rel err ${r.err.toExponential(2)} (h ${r.h})`).join('\n');
}

/** The gradient check proper: throws a GradientMismatch naming every direction out of tolerance. */
async function verifyGradients(p: Prepared, grads: Map<string, Float32Array>, label: string): Promise<DirectionalResult[]> {
  const results = await directional(p, grads);
  assert.equal(results.length, DIRECTIONS * p.targets.length);
  const bad = failures(results);
  if (bad.length > 0) throw new GradientMismatch(label, bad, results);
  return results;
}

class GradientMismatch extends Error {
  constructor(
    label: string,
    readonly bad: DirectionalResult[],
    all: DirectionalResult[],
  ) {
    super(`${label}: gradient check failed\n${describeResults(bad)}\nall:\n${describeResults(all)}`);
  }
  get targets(): string[] {
    return [...new Set(this.bad.map((r) => r.target))];
  }
}

async function checkCase(c: GradCase): Promise<void> {
  const p = await prepare(c);
  try {
    const m = p.tensorsPerCycle;
    // The first cycle creates exactly one gradient tensor per parameter; later cycles replace them.
    assert.equal(m.firstCycleNew, m.paramsWithGrad, `${c.name}: first forward+backward left ${m.firstCycleNew} tensors, expected ${m.paramsWithGrad} (the parameter gradients)`);
    assert.equal(m.secondCycleDelta, 0, `${c.name}: a forward+backward cycle leaked ${m.secondCycleDelta} tensors`);
    assert.equal(m.evalForwardDelta, 0, `${c.name}: a non-recording forward leaked ${m.evalForwardDelta} tensors`);
    await verifyGradients(p, p.grads, c.name);
  } finally {
    p.model.dispose();
  }
}

/** Run the check with tampered gradients: it must fail, and only on the `expected` targets. */
async function mustFail(p: Prepared, tampered: Map<string, Float32Array>, expected: string[]): Promise<void> {
  await verifyGradients(p, p.grads, 'untampered'); // the control itself passes untampered
  await assert.rejects(verifyGradients(p, tampered, 'tampered'), (e: unknown) => {
    assert.ok(e instanceof GradientMismatch, String(e));
    assert.deepEqual(e.targets, expected, e.message);
    return true;
  });
}

const conv = (o: Partial<{ out: number; kernel: number; stride: number; padding: number; bias: boolean }> = {}): LayerSpec => ({
  type: 'conv2d',
  out: o.out ?? 4,
  kernel: o.kernel ?? 3,
  stride: o.stride ?? 1,
  padding: o.padding ?? 0,
  bias: o.bias ?? true,
});

const CASES: GradCase[] = [
  { name: 'linear with bias', inputShape: [5], layers: [{ type: 'linear', out: 3 }], batch: 4 },
  { name: 'linear without bias', inputShape: [5], layers: [{ type: 'linear', out: 3, bias: false }], batch: 4 },
  { name: 'conv2d k3 stride 2 padding 1 with bias', inputShape: [3, 7, 6], layers: [conv({ stride: 2, padding: 1 })], batch: 2 },
  { name: 'conv2d k2 stride 1 no padding, no bias', inputShape: [2, 5, 5], layers: [conv({ out: 3, kernel: 2, bias: false })], batch: 2 },
  { name: 'batchnorm1d training, affine', inputShape: [3], layers: [{ type: 'batchnorm' }], batch: 6 },
  { name: 'batchnorm1d training, not affine', inputShape: [3], layers: [{ type: 'batchnorm', affine: false }], batch: 6 },
  { name: 'batchnorm2d training, affine', inputShape: [3, 4, 4], layers: [{ type: 'batchnorm' }], batch: 2 },
  { name: 'batchnorm2d training, not affine', inputShape: [3, 4, 4], layers: [{ type: 'batchnorm', affine: false }], batch: 2 },
  { name: 'groupnorm (2 groups of 2 channels)', inputShape: [4, 3, 3], layers: [{ type: 'groupnorm', groups: 2 }], batch: 2 },
  { name: 'layernorm over features', inputShape: [6], layers: [{ type: 'layernorm' }], batch: 3 },
  { name: 'layernorm over an image', inputShape: [2, 3, 3], layers: [{ type: 'layernorm' }], batch: 2 },
  { name: 'instancenorm, affine', inputShape: [3, 4, 4], layers: [{ type: 'instancenorm', affine: true }], batch: 2 },
  { name: 'relu', inputShape: [10], layers: [{ type: 'relu' }], batch: 3, input: awayFromZero },
  { name: 'gelu (erf)', inputShape: [10], layers: [{ type: 'gelu' }], batch: 3 },
  { name: 'gelu (tanh)', inputShape: [10], layers: [{ type: 'gelu', approximate: 'tanh' }], batch: 3 },
  { name: 'maxpool k2', inputShape: [2, 4, 6], layers: [{ type: 'maxpool', kernel: 2 }], batch: 2, input: distinctValues },
  { name: 'maxpool k3 stride 2 padding 1', inputShape: [2, 5, 5], layers: [{ type: 'maxpool', kernel: 3, stride: 2, padding: 1 }], batch: 2, input: distinctValues },
  { name: 'avgpool k3 stride 2 padding 1', inputShape: [2, 5, 5], layers: [{ type: 'avgpool', kernel: 3, stride: 2, padding: 1 }], batch: 2 },
  { name: 'global_avg_pool', inputShape: [3, 3, 4], layers: [{ type: 'global_avg_pool' }], batch: 2 },
  { name: 'flatten (image -> linear)', inputShape: [2, 3, 2], layers: [{ type: 'flatten' }, { type: 'linear', out: 3 }], batch: 2 },
  { name: 'dropout p=0.3 (training)', inputShape: [12], layers: [{ type: 'dropout', p: 0.3 }], batch: 3 },
  {
    name: 'residual block with a conv+batchnorm projection shortcut',
    inputShape: [2, 5, 5],
    layers: [
      {
        type: 'residual',
        body: [conv({ stride: 2, padding: 1, bias: false }), { type: 'batchnorm' }, { type: 'relu' }, conv({ padding: 1, bias: false }), { type: 'batchnorm' }],
        shortcut: [conv({ kernel: 1, stride: 2, bias: false }), { type: 'batchnorm' }],
      },
    ],
    batch: 3,
  },
];

describe(`layer gradients by finite differences (${BACKEND})`, () => {
  for (const c of CASES) it(c.name, () => checkCase(c));

  it("exercises the conv2d filter-gradient path of this backend (wasm: kernels.ts's im2col fallback)", () => {
    const native = tf.getKernel('Conv2DBackpropFilter', BACKEND) !== undefined;
    assert.equal(native, BACKEND !== 'wasm', `Conv2DBackpropFilter registered for ${BACKEND}: ${native}`);
  });

  it('covers every layer type of the model schema', () => {
    const seen = new Set<string>();
    const walk = (ls: LayerSpec[]) =>
      ls.forEach((l) => {
        seen.add(l.type);
        if (l.type === 'residual') {
          walk(l.body);
          if (l.shortcut) walk(l.shortcut);
        }
      });
    CASES.forEach((c) => walk(c.layers));
    const schema = JSON.parse(readFileSync(new URL('../../../schemas/model.schema.json', import.meta.url), 'utf8'));
    const all: string[] = schema.definitions.layer.properties.type.enum;
    assert.deepEqual([...seen].sort(), [...all].sort());
  });
});

describe(`negative controls: the gradient check can fail (${BACKEND})`, () => {
  const caseNamed = (name: string) => CASES.find((k) => k.name === name)!;

  it('a 5% error in the analytic input gradient of linear fails', async () => {
    const p = await prepare(caseNamed('linear with bias'));
    try {
      const tampered = new Map(p.grads);
      tampered.set('x', p.grads.get('x')!.map((v) => v * 1.05));
      await mustFail(p, tampered, ['x']);
    } finally {
      p.model.dispose();
    }
  });

  it('a 5% error in one parameter gradient (linear bias) fails', async () => {
    const p = await prepare(caseNamed('linear with bias'));
    try {
      const tampered = new Map(p.grads);
      tampered.set('layers.0.bias', p.grads.get('layers.0.bias')!.map((v) => v * 1.05));
      await mustFail(p, tampered, ['layers.0.bias']);
    } finally {
      p.model.dispose();
    }
  });

  it('a permuted filter gradient (wrong layout) of conv2d fails', async () => {
    const p = await prepare(caseNamed('conv2d k3 stride 2 padding 1 with bias'));
    try {
      const name = 'layers.0.weight';
      const tampered = new Map(p.grads);
      tampered.set(name, p.grads.get(name)!.slice().reverse());
      await mustFail(p, tampered, [name]);
    } finally {
      p.model.dispose();
    }
  });

  it("batchnorm's eval-style input gradient (ignoring the batch statistics) fails in training mode", async () => {
    const p = await prepare(caseNamed('batchnorm1d training, not affine'));
    try {
      // dx = dy / sqrt(var + eps): right for fixed statistics, wrong for batch statistics.
      const x = p.targets[0].value;
      const ch = 3;
      const n = x.length / ch;
      const mean = new Float64Array(ch);
      const m2 = new Float64Array(ch);
      for (let i = 0; i < x.length; i++) mean[i % ch] += x[i] / n;
      for (let i = 0; i < x.length; i++) m2[i % ch] += (x[i] - mean[i % ch]) ** 2;
      const naive = p.r.map((v, i) => v / Math.sqrt(m2[i % ch] / n + 1e-5));
      await mustFail(p, new Map([['x', naive]]), ['x']);
    } finally {
      p.model.dispose();
    }
  });

  it('dropout gradients from another mask fail (the mask must come from the same seeded Rng)', async () => {
    const c = caseNamed('dropout p=0.3 (training)');
    const p = await prepare(c);
    try {
      const x = tf.tensor(p.targets[0].value, p.xShape);
      const y = await p.model.forward(x, { ...ctxOf(true), rng: new Rng(DROPOUT_SEED + 1) });
      const dy = tf.tensor(p.r, y.shape);
      const dx = (await p.model.net.backward(dy, true))!;
      const tampered = new Map([['x', Float32Array.from(dx.dataSync())]]);
      [x, y, dy, dx].forEach((t) => t.dispose());
      await mustFail(p, tampered, ['x']);
    } finally {
      p.model.dispose();
    }
  });
});

/** Host reference of a 'valid' max pool's input gradient: dy to each window's first maximum. */
function referenceMaxPoolGrad(x: Float32Array, shape: number[], dy: Float32Array, k: number, s: number): Float32Array {
  const [n, h, w, c] = shape;
  const ho = Math.floor((h - k) / s) + 1;
  const wo = Math.floor((w - k) / s) + 1;
  const dx = new Float32Array(x.length);
  const at = (b: number, r: number, q: number, ch: number) => ((b * h + r) * w + q) * c + ch;
  for (let b = 0; b < n; b++)
    for (let a = 0; a < ho; a++)
      for (let e = 0; e < wo; e++)
        for (let ch = 0; ch < c; ch++) {
          let best = -Infinity;
          let pos = -1;
          for (let i = 0; i < k; i++)
            for (let j = 0; j < k; j++) {
              const v = x[at(b, a * s + i, e * s + j, ch)];
              if (v > best) [best, pos] = [v, at(b, a * s + i, e * s + j, ch)];
            }
          dx[pos] += dy[((b * ho + a) * wo + e) * c + ch];
        }
  return dx;
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

describe(`max pooling gradient (${BACKEND})`, () => {
  // Negative windows (tfjs-backend-wasm 4.22's MaxPoolGrad sends their dy to the window's
  // first element), ties (ReLU zeros: the first maximum wins), overlapping windows, and
  // sizes where the last window leaves rows and columns unused.
  const shapes: Array<[number[], number, number]> = [
    [[2, 4, 6, 3], 2, 2],
    [[2, 7, 7, 2], 3, 2],
    [[1, 6, 5, 2], 3, 1],
    [[1, 8, 7, 1], 2, 3],
  ];
  for (const [shape, k, s] of shapes) {
    it(`kernel ${k} stride ${s} over [${shape}]: matches the host reference, negative values and ties included`, () => {
      const rng = new Rng(k * 10 + s);
      const size = shape.reduce((a, b) => a * b, 1);
      // A third zeros (ties), the rest negative or positive.
      const xd = Float32Array.from({ length: size }, () => (rng.next() < 0.33 ? 0 : Math.round(rng.normal() * 20) / 8 - 1));
      const before = tf.memory().numTensors;
      const x = tf.tensor4d(xd, shape as [number, number, number, number]);
      const y = K.maxPool2d(x, k, s);
      const dyd = normals(y.size, rng);
      const dy = tf.tensor(dyd, y.shape) as tf.Tensor4D;
      const want = referenceMaxPoolGrad(xd, shape, dyd, k, s);
      const viaGrad = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(K.maxPool2d(t as tf.Tensor4D, k, s), dy)))(x);
      const direct = K.maxPoolGrad(x, y, dy, k, s);
      // Overlapping windows sum in another order than the reference: allow float32 rounding.
      assertClose(direct.dataSync(), want, 1e-6, 'kernels.maxPoolGrad');
      assertClose(viaGrad.dataSync(), want, 1e-6, 'gradient of kernels.maxPool2d');
      [x, y, dy, viaGrad, direct].forEach((t) => t.dispose());
      assert.equal(tf.memory().numTensors, before);
    });
  }

  it('a maxpool layer over all-negative windows gets the right gradient', async () => {
    const model = Model.build({ input_shape: [2, 4, 4], layers: [{ type: 'maxpool', kernel: 2 }] }, 0);
    try {
      const xd = Float32Array.from({ length: 32 }, (_, i) => -1 - ((i * 13) % 32) / 8);
      const x = tf.tensor(xd, [1, 4, 4, 2]);
      const y = await model.forward(x, ctxOf(true));
      const dyd = Float32Array.from({ length: y.size }, (_, i) => i + 1);
      const dy = tf.tensor(dyd, y.shape);
      const dx = (await model.net.backward(dy, true))!;
      assert.deepEqual(Array.from(dx.dataSync()), Array.from(referenceMaxPoolGrad(xd, [1, 4, 4, 2], dyd, 2, 2)));
      [x, y, dy, dx].forEach((t) => t.dispose());
    } finally {
      model.dispose();
    }
  });
});
