/**
 * Golden cases: each runs the trainer on a fixture (any file of the format in
 * test/golden/fixtures/pytorch/README.md) for one world size, ranks in one process over the
 * in-process collective, and returns the comparisons.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InProcessGroup } from '../../src/trainer/collective/in-process.js';
import type { Collective } from '../../src/trainer/collective/collective.js';
import { collectiveBnSync } from '../../src/trainer/engine/bn-sync.js';
import { recalibrate } from '../../src/trainer/engine/recalibrate.js';
import { RankTrainer } from '../../src/trainer/engine/rank-trainer.js';
import type { ForwardContext } from '../../src/trainer/layers/layer.js';
import { biasedVariance, type ChannelStats } from '../../src/trainer/math/bn-stats.js';
import { updateRunning } from '../../src/trainer/math/momentum.js';
import { Rng } from '../../src/trainer/math/rng.js';
import { Model } from '../../src/trainer/model/model.js';
import type { LayerSpec } from '../../src/trainer/model/spec.js';
import { createOptimizer, validateOptimizerSpec } from '../../src/trainer/optim/index.js';
import { checkMaxAbs, checkRelNorm, nchwToNhwc, nhwcToNchw, stateMap, type Check, type FixtureTensor } from './fixture.js';

/* eslint-disable @typescript-eslint/no-explicit-any -- fixtures are untyped JSON */
type Json = any;

/**
 * How a case runs its ranks. `fn` is one rank's program; a launcher runs it on every rank
 * and returns the results in rank order. Cases may launch several times (one per mode).
 */
export type RankLauncher = <T>(world: number, fn: (c: Collective, rank: number) => Promise<T>) => Promise<T[]>;

/** All ranks in this process, over the in-process collective. */
export const inProcessLauncher: RankLauncher = async (world, fn) => {
  const group = new InProcessGroup(world);
  return Promise.all(
    Array.from({ length: world }, (_, r) =>
      fn(group.member(r), r).catch((e: Error) => {
        group.abort(e);
        throw e;
      }),
    ),
  );
};

let launcher: RankLauncher = inProcessLauncher;

/** Select how the next cases run their ranks (the gRPC suite runs them as processes). */
export function useLauncher(l: RankLauncher): void {
  launcher = l;
}

function onRanks<T>(world: number, fn: (c: Collective, rank: number) => Promise<T>): Promise<T[]> {
  return launcher(world, fn);
}

/** Cut `rows` into `world` contiguous shares by the given sizes. */
function offsets(sizes: number[]): number[] {
  const o = [0];
  for (const s of sizes) o.push(o[o.length - 1] + s);
  return o;
}

/** Split n rows over `world` ranks unevenly (the first rank gets the least, possibly 0). */
export function unevenSplit(n: number, world: number): number[] {
  if (world === 1) return [n];
  const weights = Array.from({ length: world }, (_, r) => r);
  const total = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.floor((n * w) / total));
  sizes[world - 1] += n - sizes.reduce((a, b) => a + b, 0);
  return sizes;
}

function rowsOf(t: FixtureTensor, from: number, to: number): Float32Array {
  const per = t.shape.slice(1).reduce((a: number, b: number) => a + 0 * b + 0, 0) || t.shape.slice(1).reduce((a: number, b: number) => a * b, 1);
  return Float32Array.from(t.data.slice(from * per, to * per));
}

function modelFor(layers: LayerSpec[], sampleShape: number[]): Model {
  return Model.build({ input_shape: sampleShape, layers }, 0, 'fixture.model');
}

/** bn1d_step / bn2d_step: one training step of a BN layer, its batch split over `world` ranks. */
export async function bnStep(fx: Json, world: number): Promise<Check[]> {
  const x = fx.inputs.x as FixtureTensor;
  const n = x.shape[0];
  const image = x.shape.length === 4;
  const sizes = unevenSplit(n, world);
  const off = offsets(sizes);
  const per = x.shape.slice(1).reduce((a, b) => a * b, 1);
  const perRank = await onRanks(world, async (c, r) => {
    const model = modelFor([{ type: 'batchnorm', eps: fx.eps, momentum: fx.momentum }], x.shape.slice(1));
    const bn = model.batchNorms()[0];
    bn.importState(stateMap({ weight: fx.inputs.gamma, bias: fx.inputs.beta, running_mean: zeros(x.shape[1]), running_var: ones(x.shape[1]) }));
    let batch: ChannelStats | null = null;
    const ctx: ForwardContext = { training: true, record: true, bnSync: world > 1 ? collectiveBnSync(c) : null, updateRunningStats: true, rng: new Rng(0), onBnStats: (_p, s) => (batch = s) };
    const xl = model.inputTensor(Float32Array.from(x.data.slice(off[r] * per, off[r + 1] * per)), sizes[r]);
    const y = await model.forward(xl, ctx);
    const dyData = Float32Array.from((fx.inputs.dy as FixtureTensor).data.slice(off[r] * per, off[r + 1] * per));
    const dy = image ? tf.tensor(nchwToNhwc(dyData, [sizes[r], ...x.shape.slice(1)]), y.shape) : tf.tensor(dyData, y.shape);
    const dx = (await model.net.backward(dy, true))!;
    const toTorch = (t: tf.Tensor) => (image ? nhwcToNchw(t.dataSync(), [sizes[r], ...x.shape.slice(1)]) : Float32Array.from(t.dataSync()));
    const out = { y: toTorch(y), dx: toTorch(dx), dgamma: Float32Array.from(bn.gamma!.grad!.dataSync()), dbeta: Float32Array.from(bn.beta!.grad!.dataSync()), batch: batch!, state: bn.exportState() };
    [xl, y, dy, dx].forEach((t) => t.dispose());
    model.dispose();
    return out;
  });
  const cat = (k: 'y' | 'dx') => Float32Array.from(perRank.flatMap((p) => Array.from(p[k])));
  // dγ and dβ are local sums; the data-parallel gradient is their sum over ranks.
  const sum = (k: 'dgamma' | 'dbeta') => perRank.reduce((acc, p) => acc.map((v, i) => v + p[k][i]), new Float64Array(x.shape[1]));
  const e = fx.expected;
  const r0 = perRank[0];
  return [
    checkMaxAbs('y', cat('y'), e.y.data),
    checkMaxAbs('dx', cat('dx'), e.dx.data),
    checkMaxAbs('dgamma', sum('dgamma'), e.dgamma.data),
    checkMaxAbs('dbeta', sum('dbeta'), e.dbeta.data),
    checkMaxAbs('batch_mean', r0.batch.mean, e.batch_mean.data),
    checkMaxAbs('batch_var_biased', biasedVariance(r0.batch), e.batch_var_biased.data),
    checkMaxAbs('running_mean', r0.state.get('running_mean')!.data, e.running_mean.data),
    checkMaxAbs('running_var', r0.state.get('running_var')!.data, e.running_var.data),
    ...perRank.slice(1).map((p, i) => checkMaxAbs(`rank${i + 1} running_var == rank0`, p.state.get('running_var')!.data, r0.state.get('running_var')!.data, 0)),
  ];
}

function zeros(c: number): FixtureTensor {
  return { shape: [c], data: new Array(c).fill(0) };
}
function ones(c: number): FixtureTensor {
  return { shape: [c], data: new Array(c).fill(1) };
}

/** running_stats_sequence: running stats after each batch under each momentum schedule. */
export async function runningStats(fx: Json, world: number): Promise<Check[]> {
  const checks: Check[] = [];
  const batches = fx.batches as FixtureTensor[];
  const c = batches[0].shape[1];
  for (const [mode, m] of Object.entries<Json>(fx.modes)) {
    const results = await onRanks(world, async (col, r) => {
      const model = modelFor([{ type: 'batchnorm', momentum: 0.1 }], batches[0].shape.slice(1));
      const bn = model.batchNorms()[0];
      const after: Array<{ mean: Float32Array; var: Float32Array }> = [];
      for (let i = 0; i < batches.length; i++) {
        const b = batches[i];
        const sizes = unevenSplit(b.shape[0], world);
        const off = offsets(sizes);
        const momentum: number | null = m.momentum_per_step === null ? null : m.momentum_per_step[i];
        const ctx: ForwardContext = { training: true, record: false, bnSync: world > 1 ? collectiveBnSync(col) : null, updateRunningStats: true, rng: new Rng(0), bnMomentum: momentum };
        const x = model.inputTensor(rowsOf(b, off[r], off[r + 1]), sizes[r]);
        const y = await model.forward(x, ctx);
        x.dispose();
        y.dispose();
        const st = bn.exportState();
        after.push({ mean: st.get('running_mean')!.data, var: st.get('running_var')!.data });
      }
      model.dispose();
      return after;
    });
    const r0 = results[0];
    r0.forEach((s, i) => {
      checks.push(checkMaxAbs(`${mode} step ${i} running_mean`, s.mean, m.running_mean_after_step[i].data));
      checks.push(checkMaxAbs(`${mode} step ${i} running_var`, s.var, m.running_var_after_step[i].data));
    });
  }
  if (fx.seed_example && world === 1) checks.push(...seedExample(fx.seed_example));
  void c;
  return checks;
}

/**
 * The seed guide's worked example (momentum 0.9 as the weight of the new value). Each
 * step is checked against the fixture; where the fixture's own number does not follow
 * from its previous number by the stated formula (the guide's third step: (1 - 0.9) *
 * 5.85 + 0.9 * 7 = 6.885, not 6.765), the check compares with the formula applied to the
 * fixture's previous value instead and says so, rather than copying an arithmetic slip.
 */
function seedExample(ex: Json): Check[] {
  const checks: Check[] = [];
  const run = new Float64Array([ex.init]);
  let prevRef: number = ex.init;
  (ex.batch_means as number[]).forEach((bm, i) => {
    updateRunning(run, [bm], ex.momentum);
    const ref: number = ex.running_mean_after_step[i];
    const fromFormula = (1 - ex.momentum) * prevRef + ex.momentum * bm;
    const c = checkMaxAbs(`seed_example step ${i}`, [run[0]], [ref]);
    if (!c.ok && Math.abs(fromFormula - ref) > 1e-9 * Math.max(1, Math.abs(ref))) {
      const f = checkMaxAbs(`seed_example step ${i}`, [run[0]], [fromFormula]);
      f.detail = `${f.detail}; the fixture says ${ref}, but (1 - ${ex.momentum}) * ${prevRef} + ${ex.momentum} * ${bm} = ${fromFormula} (erratum in the fixture)`;
      f.note = f.detail;
      checks.push(f);
    } else checks.push(c);
    prevRef = ref;
  });
  return checks;
}

/** precise_bn: exact population stats and update_bn over the dataset split across ranks. */
export async function preciseBn(fx: Json, world: number): Promise<Check[]> {
  const x = fx.data.x as FixtureTensor;
  const n = x.shape[0];
  // update_bn's batch size: a field when the fixture has one, else its description
  // ("update_bn over batches of 16"), else PyTorch DataLoader-style 16.
  const described = /batches of (\d+)/.exec(String(fx.what ?? ''));
  const bs: number = fx.update_bn_batch_size ?? fx.batch_size ?? (described ? Number(described[1]) : 16);
  const run = (mode: 'exact' | 'update_bn') =>
    onRanks(world, async (c, r) => {
      const model = modelFor(fx.model, x.shape.slice(1));
      model.loadStateDict(stateMap(fx.initial_state));
      const localBatches = function* () {
        const global = mode === 'exact' ? n : bs; // exact: the batch size does not matter; use one pass of the whole set per rank share
        for (let start = 0; start < n; start += global) {
          const end = Math.min(n, start + global);
          const sizes = unevenSplit(end - start, world);
          const off = offsets(sizes);
          yield model.inputTensor(rowsOf(x, start + off[r], start + off[r + 1]), sizes[r]);
        }
      };
      const { record, population } = await recalibrate(model, c, localBatches, mode);
      const state = model.stateDict();
      model.dispose();
      return { state, record, population };
    });
  const checks: Check[] = [];
  const exact = (await run('exact'))[0];
  for (const [k, ref] of Object.entries<FixtureTensor>(fx.exact)) {
    const [layer, stat] = [k.slice(0, k.lastIndexOf('.')), k.slice(k.lastIndexOf('.') + 1)];
    const pop = exact.population[layer];
    const got = stat === 'mean' ? pop?.mean : stat === 'var_biased' ? pop?.varBiased : stat === 'var_unbiased' ? pop?.varUnbiased : undefined;
    checks.push(got ? checkMaxAbs(`exact ${k}`, got, ref.data) : { name: k, ok: false, err: Infinity, detail: `exact ${k}: not produced` });
    // The stored running_var is the unbiased population variance (PyTorch's running_var convention).
    if (stat === 'mean') checks.push(checkMaxAbs(`exact ${layer}.running_mean`, exact.state.get(`${layer}.running_mean`)!.data, ref.data));
    if (stat === 'var_unbiased') checks.push(checkMaxAbs(`exact ${layer}.running_var`, exact.state.get(`${layer}.running_var`)!.data, ref.data));
  }
  const ub = (await run('update_bn'))[0].state;
  for (const [k, ref] of Object.entries<FixtureTensor>(fx.update_bn)) checks.push(checkMaxAbs(`update_bn ${k}`, ub.get(k)!.data, ref.data));
  return checks;
}

/** syncbn_*_train: data-parallel SGD with SyncBN equals the single-process global-batch run. */
export async function training(fx: Json, world: number): Promise<Check[]> {
  const x = fx.data.x as FixtureTensor;
  const labels = Int32Array.from(fx.data.labels as number[]);
  const n = x.shape[0];
  const gb = fx.global_batch as number;
  const shardSizes: number[][] = fx.shard_sizes_per_step[String(world)];
  const steps: Array<{ start: number; sizes: number[] }> = [];
  let step = 0;
  for (let e = 0; e < fx.epochs; e++) {
    for (let start = 0; start < n; start += gb) {
      const sizes = shardSizes[step] ?? fx.rank_splits[String(world)];
      steps.push({ start, sizes });
      step++;
    }
  }
  const { note: _note, ...optSpec } = fx.optimizer;
  validateOptimizerSpec(optSpec);
  const results = await onRanks(world, async (c, r) => {
    const model = modelFor(fx.model, x.shape.slice(1));
    model.loadStateDict(stateMap(fx.initial_state));
    const opt = createOptimizer(optSpec);
    const trainer = new RankTrainer(model, opt, c, 'cross_entropy');
    const losses: number[] = [];
    for (const [i, s] of steps.entries()) {
      const off = offsets(s.sizes);
      const from = s.start + off[r];
      const to = s.start + off[r + 1];
      const xl = model.inputTensor(rowsOf(x, from, to), to - from);
      const res = await trainer.step(xl, { labels: labels.slice(from, to) }, off[off.length - 1], optSpec.lr, undefined, new Rng(i));
      xl.dispose();
      losses.push(res.loss);
    }
    const state = model.stateDict();
    let logits: Float32Array | null = null;
    if (fx.eval) {
      const ex = fx.eval.x as FixtureTensor;
      const xe = model.inputTensor(Float32Array.from(ex.data), ex.shape[0]);
      const y = await model.forward(xe, { training: false, record: false, bnSync: null, updateRunningStats: false, rng: new Rng(0) });
      logits = Float32Array.from(y.dataSync());
      xe.dispose();
      y.dispose();
    }
    opt.dispose();
    model.dispose();
    return { losses, state, logits };
  });
  const checks: Check[] = [];
  const r0 = results[0];
  checks.push(checkMaxAbs('loss_per_step', r0.losses, fx.loss_per_step));
  for (const [k, ref] of Object.entries<FixtureTensor>(fx.final_state)) {
    const got = r0.state.get(k);
    checks.push(got ? checkRelNorm(`final ${k}`, got.data, ref.data) : { name: k, ok: false, err: Infinity, detail: `final ${k}: missing from the model state` });
  }
  if (fx.eval && r0.logits) checks.push(checkMaxAbs('eval logits', r0.logits, fx.eval.logits.data));
  // Every rank must end with the same model, bit for bit.
  for (const [i, res] of results.slice(1).entries()) {
    for (const [k, v] of res.state) checks.push(checkMaxAbs(`rank${i + 1} ${k} == rank0`, v.data, r0.state.get(k)!.data, 0));
  }
  return checks;
}
