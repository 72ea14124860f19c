// ONNX export, run in the real onnxruntime-node: models of every layer type against the
// trainer's eval-mode forward, the golden fixtures' PyTorch eval logits, the BatchNorm
// nodes' initializers and epsilons read back from the bytes, typed refusals, and the
// /onnx route over a real PostgreSQL (fresh migrated schema) with artifacts on disk.
// Long because each exported layer type is built, exported, run and compared here: one
// exporter, one test file.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import * as ort from 'onnxruntime-node';
import '../../test/setup-backend.js';
import { checkMaxAbs, nhwcToNchw, stateMap, type FixtureTensor } from '../../test/golden/fixture.js';
import { createBaseApp } from '../api/rest/app.js';
import { modelRoutes } from '../api/rest/routes/models.js';
import { addSharedSchemas } from '../api/rest/schemas.js';
import { createPrismaClient, type PrismaClient } from '../service/db/client.js';
import { migrate } from '../service/db/migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from '../service/db/testing/fresh-schema.js';
import { ModelStore } from '../service/models/model-store.js';
import { artifactMetadata, encodeStateDict, parseArtifact, type ArtifactMeta, type LoadedArtifact } from '../trainer/artifact/artifact.js';
import type { ForwardContext } from '../trainer/layers/layer.js';
import { Rng } from '../trainer/math/rng.js';
import { Model } from '../trainer/model/model.js';
import { BN_DEFAULTS, type LayerSpec, type ModelSpec } from '../trainer/model/spec.js';
import type { HostTensorMap } from '../trainer/tensor-types.js';
import { exportOnnx, onnxModelType, OnnxExportError, ONNX_BATCH_DIM, ONNX_INPUT_NAME, ONNX_IR_VERSION, ONNX_OPSET, ONNX_OUTPUT_NAME } from './onnx-export.js';

const EVAL: Omit<ForwardContext, 'rng'> = { training: false, record: false, bnSync: null, updateRunningStats: false };

/** The artifact a job would write for this spec and state, read back as the server reads it. */
function artifactOf(model: ModelSpec, state: HostTensorMap, runningStats: ArtifactMeta['runningStats'] = { source: 'training' }): LoadedArtifact {
  return parseArtifact(encodeStateDict(state, artifactMetadata({ model, runningStats, training: { steps: 0 } })));
}

async function runOnnx(bytes: Uint8Array, x: Float32Array, rows: number, inputShape: number[]): Promise<{ data: Float32Array; dims: readonly number[] }> {
  const session = await ort.InferenceSession.create(bytes);
  try {
    const out = await session.run({ [ONNX_INPUT_NAME]: new ort.Tensor('float32', x, [rows, ...inputShape]) });
    const t = out[ONNX_OUTPUT_NAME];
    return { data: Float32Array.from(t.data as Float32Array), dims: t.dims };
  } finally {
    await session.release();
  }
}

/** The trainer's eval forward in PyTorch layout (a channels-last [N, H, W, C] output transposed to NCHW). */
async function trainerEval(model: Model, x: Float32Array, rows: number): Promise<{ data: Float32Array; dims: number[] }> {
  const xt = model.inputTensor(x, rows);
  const y = await model.forward(xt, { ...EVAL, rng: new Rng(0) });
  const data = Float32Array.from(y.dataSync() as Float32Array);
  const shape = y.shape.slice();
  xt.dispose();
  y.dispose();
  if (shape.length !== 4) return { data, dims: shape };
  const [n, h, w, c] = shape;
  return { data: nhwcToNchw(data, [n, c, h, w]), dims: [n, c, h, w] };
}

function randomInput(rng: Rng, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => 1.5 * rng.normal() + 0.3);
}

/** The model's state with every parameter moved off its init and BN running stats made non-trivial (var > 0). */
function perturbedState(model: Model, rng: Rng): HostTensorMap {
  const out: HostTensorMap = new Map();
  for (const [k, t] of model.stateDict()) {
    const d = Float32Array.from(t.data);
    if (k.endsWith('.running_mean')) d.forEach((_, i) => (d[i] = 0.7 * rng.normal()));
    else if (k.endsWith('.running_var')) d.forEach((_, i) => (d[i] = 0.2 + 2.5 * rng.next()));
    else if (!k.endsWith('.num_batches_tracked')) d.forEach((v, i) => (d[i] = v + 0.25 * rng.normal()));
    out.set(k, { shape: t.shape.slice(), data: d });
  }
  return out;
}

interface Compared {
  err: number;
  detail: string;
}

/** Build, export, run in onnxruntime and compare with the trainer on the same state. */
async function compareWithTrainer(spec: ModelSpec, seed: number, rows: number, stateFrom: (m: Model, rng: Rng) => Promise<HostTensorMap> | HostTensorMap): Promise<Compared> {
  const rng = new Rng(seed + 1000);
  const model = Model.build(spec, seed);
  try {
    model.loadStateDict(await stateFrom(model, rng));
    const bytes = exportOnnx(artifactOf(spec, model.stateDict()), { name: `case-${seed}`, version: 1 });
    const x = randomInput(rng, rows * spec.input_shape.reduce((a, b) => a * b, 1));
    const ref = await trainerEval(model, x, rows);
    const got = await runOnnx(bytes, x, rows, spec.input_shape);
    assert.deepEqual([...got.dims], ref.dims, `output dims of ${JSON.stringify(spec)}`);
    const c = checkMaxAbs('logits', got.data, ref.data);
    assert.ok(c.ok, `${c.detail} for ${JSON.stringify(spec)}`);
    return { err: c.err, detail: c.detail };
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------------------- models

/** Hand-picked models: every layer type and option at least once. */
const CURATED: Array<{ name: string; spec: ModelSpec; rows?: number }> = [
  {
    name: 'mlp: bias off, BN affine on/off, gelu, dropout',
    spec: { input_shape: [7], layers: [{ type: 'linear', out: 9, bias: false }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 6 }, { type: 'batchnorm', affine: false, eps: 0.01 }, { type: 'gelu' }, { type: 'dropout', p: 0.3 }, { type: 'linear', out: 3 }] },
  },
  {
    name: 'keras convention: default eps 1e-3 and a per-layer override',
    spec: { input_shape: [5], bn_convention: 'keras', layers: [{ type: 'linear', out: 8 }, { type: 'batchnorm', momentum: 0.9 }, { type: 'relu' }, { type: 'linear', out: 4 }, { type: 'batchnorm', eps: 1e-5, affine: false }, { type: 'linear', out: 2 }] },
  },
  {
    name: 'cnn: conv padding/stride, BN2d, maxpool padded, avgpool padded (count_include_pad), flatten NCHW',
    spec: {
      input_shape: [3, 9, 7],
      layers: [
        { type: 'conv2d', out: 5, kernel: 3, padding: 1 },
        { type: 'batchnorm' },
        { type: 'relu' },
        { type: 'maxpool', kernel: 3, stride: 2, padding: 1 },
        { type: 'conv2d', out: 4, kernel: 2, stride: 2, bias: false },
        { type: 'batchnorm', affine: false },
        { type: 'relu' },
        { type: 'avgpool', kernel: 3, stride: 1, padding: 1 },
        { type: 'flatten' },
        { type: 'linear', out: 3 },
      ],
    },
  },
  {
    name: 'norms on images: groupnorm, instancenorm (affine on/off), layernorm [C,H,W], gelu tanh, global_avg_pool',
    spec: {
      input_shape: [4, 6, 5],
      layers: [
        { type: 'conv2d', out: 6, kernel: 3, padding: 1 },
        { type: 'groupnorm', groups: 3 },
        { type: 'gelu', approximate: 'tanh' },
        { type: 'instancenorm', affine: true, eps: 1e-3 },
        { type: 'layernorm' },
        { type: 'instancenorm' },
        { type: 'groupnorm', groups: 2, affine: false },
        { type: 'avgpool', kernel: 2 },
        { type: 'global_avg_pool' },
        { type: 'layernorm', affine: false },
        { type: 'linear', out: 4 },
      ],
    },
  },
  {
    name: 'resnet: identity and projection shortcuts, activation relu/none',
    spec: {
      input_shape: [3, 8, 8],
      layers: [
        { type: 'conv2d', out: 4, kernel: 3, padding: 1, bias: false },
        { type: 'batchnorm' },
        { type: 'relu' },
        { type: 'residual', body: [{ type: 'conv2d', out: 4, kernel: 3, padding: 1, bias: false }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'conv2d', out: 4, kernel: 3, padding: 1, bias: false }, { type: 'batchnorm' }] },
        {
          type: 'residual',
          activation: 'none',
          body: [{ type: 'conv2d', out: 6, kernel: 3, stride: 2, padding: 1 }, { type: 'batchnorm', eps: 1e-4 }],
          shortcut: [{ type: 'conv2d', out: 6, kernel: 1, stride: 2, bias: false }, { type: 'batchnorm', affine: false }],
        },
        { type: 'global_avg_pool' },
        { type: 'linear', out: 5 },
      ],
    },
  },
  {
    name: '1-D residual blocks, groupnorm and layernorm on features',
    spec: {
      input_shape: [6],
      layers: [
        { type: 'linear', out: 8 },
        { type: 'residual', body: [{ type: 'linear', out: 8 }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 8, bias: false }] },
        { type: 'groupnorm', groups: 4 },
        { type: 'residual', activation: 'none', body: [{ type: 'linear', out: 5 }, { type: 'layernorm' }], shortcut: [{ type: 'linear', out: 5, bias: false }, { type: 'batchnorm' }] },
        { type: 'gelu' },
        { type: 'linear', out: 3 },
      ],
    },
  },
  {
    name: 'BN without running statistics (batch statistics in eval), 1d and 2d',
    spec: {
      input_shape: [2, 5, 5],
      layers: [
        { type: 'conv2d', out: 3, kernel: 3 },
        { type: 'batchnorm', track_running_stats: false },
        { type: 'relu' },
        { type: 'flatten' },
        { type: 'linear', out: 6 },
        { type: 'batchnorm', track_running_stats: false, affine: false, eps: 1e-3 },
        { type: 'linear', out: 2 },
      ],
    },
  },
  {
    name: 'image output (no flatten): the output stays NCHW',
    spec: { input_shape: [2, 7, 6], layers: [{ type: 'conv2d', out: 3, kernel: 3, stride: 2, padding: 1 }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'maxpool', kernel: 2, stride: 1 }] },
  },
  {
    name: 'odd shapes, kernel 1, one row',
    spec: { input_shape: [1, 3, 11], layers: [{ type: 'conv2d', out: 2, kernel: 1 }, { type: 'batchnorm', eps: 0.1 }, { type: 'avgpool', kernel: 3, stride: 2, padding: 1 }, { type: 'flatten' }, { type: 'batchnorm' }, { type: 'linear', out: 1 }] },
    rows: 1,
  },
  {
    name: 'dropout alone and flatten of features',
    spec: { input_shape: [4], layers: [{ type: 'dropout' }, { type: 'flatten' }] },
  },
];

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)];
const coin = (rng: Rng, p = 0.5) => rng.next() < p;
const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
const outSize = (size: number, k: number, s: number, p: number) => Math.floor((size + 2 * p - k) / s) + 1;

function randomBn(rng: Rng): LayerSpec {
  return {
    type: 'batchnorm',
    ...(coin(rng, 0.3) ? { eps: pick(rng, [1e-5, 1e-3, 1e-2, 1e-1]) } : {}),
    ...(coin(rng, 0.3) ? { affine: false } : {}),
    ...(coin(rng, 0.15) ? { track_running_stats: false } : {}),
  };
}

function randomNorm(rng: Rng, channels: number, image: boolean): LayerSpec {
  const eps = coin(rng, 0.3) ? { eps: pick(rng, [1e-5, 1e-3, 0.05]) } : {};
  const affine = coin(rng, 0.5);
  switch (rng.int(image ? 4 : 3)) {
    case 0:
      return randomBn(rng);
    case 1:
      return { type: 'groupnorm', groups: pick(rng, divisors(channels)), affine, ...eps };
    case 2:
      return { type: 'layernorm', affine, ...eps };
    default:
      return { type: 'instancenorm', affine, ...eps };
  }
}

/** A random image layer that fits [C, H, W], and the shape it gives. */
function randomImageLayer(rng: Rng, shape: number[], nested: boolean): { layer: LayerSpec; shape: number[] } {
  const [c, h, w] = shape;
  for (;;) {
    switch (rng.int(8)) {
      case 0: {
        const k = 1 + rng.int(3);
        const p = rng.int(2);
        const s = 1 + rng.int(2);
        if (h + 2 * p < k || w + 2 * p < k) continue;
        const out = 1 + rng.int(5);
        return { layer: { type: 'conv2d', out, kernel: k, stride: s, padding: p, bias: coin(rng) }, shape: [out, outSize(h, k, s, p), outSize(w, k, s, p)] };
      }
      case 1:
        return { layer: randomNorm(rng, c, true), shape };
      case 2:
        return { layer: coin(rng) ? { type: 'relu' } : { type: 'gelu', approximate: pick(rng, ['none', 'tanh'] as const) }, shape };
      case 3: {
        const k = 2 + rng.int(2);
        const s = 1 + rng.int(k);
        const p = rng.int(Math.floor(k / 2) + 1);
        if (h + 2 * p < k || w + 2 * p < k) continue;
        return { layer: { type: coin(rng) ? 'maxpool' : 'avgpool', kernel: k, stride: s, padding: p }, shape: [c, outSize(h, k, s, p), outSize(w, k, s, p)] };
      }
      case 4:
        return { layer: { type: 'dropout', p: 0.2 }, shape };
      default: {
        if (nested) continue;
        if (coin(rng)) {
          const body: LayerSpec[] = [{ type: 'conv2d', out: c, kernel: 3, padding: 1, bias: coin(rng) }, randomNorm(rng, c, true), { type: 'relu' }, { type: 'conv2d', out: c, kernel: 3, padding: 1 }];
          return { layer: { type: 'residual', body, ...(coin(rng) ? { activation: 'none' as const } : {}) }, shape };
        }
        const out = 1 + rng.int(5);
        const body: LayerSpec[] = [{ type: 'conv2d', out, kernel: 3, stride: 2, padding: 1, bias: false }, randomBn(rng)];
        const shortcut: LayerSpec[] = [{ type: 'conv2d', out, kernel: 1, stride: 2, bias: false }, randomBn(rng)];
        return { layer: { type: 'residual', body, shortcut, activation: pick(rng, ['relu', 'none'] as const) }, shape: [out, outSize(h, 1, 2, 0), outSize(w, 1, 2, 0)] };
      }
    }
  }
}

function randomFeatureLayer(rng: Rng, d: number, nested: boolean): { layer: LayerSpec; shape: number[] } {
  for (;;) {
    switch (rng.int(6)) {
      case 0: {
        const out = 1 + rng.int(9);
        return { layer: { type: 'linear', out, bias: coin(rng, 0.7) }, shape: [out] };
      }
      case 1:
        return { layer: randomNorm(rng, d, false), shape: [d] };
      case 2:
        return { layer: coin(rng) ? { type: 'relu' } : { type: 'gelu', approximate: pick(rng, ['none', 'tanh'] as const) }, shape: [d] };
      case 3:
        return { layer: coin(rng) ? { type: 'dropout' } : { type: 'flatten' }, shape: [d] };
      default: {
        if (nested) continue;
        if (coin(rng)) {
          const body: LayerSpec[] = [{ type: 'linear', out: d }, randomNorm(rng, d, false), { type: 'relu' }, { type: 'linear', out: d, bias: coin(rng) }];
          return { layer: { type: 'residual', body }, shape: [d] };
        }
        const out = 1 + rng.int(8);
        const body: LayerSpec[] = [{ type: 'linear', out }, randomBn(rng), { type: 'relu' }];
        return { layer: { type: 'residual', body, shortcut: [{ type: 'linear', out, bias: false }], activation: pick(rng, ['relu', 'none'] as const) }, shape: [out] };
      }
    }
  }
}

function randomSpec(rng: Rng): ModelSpec {
  const layers: LayerSpec[] = [];
  let shape: number[];
  if (coin(rng, 0.6)) {
    shape = [1 + rng.int(4), 4 + rng.int(6), 4 + rng.int(6)];
    const input = shape.slice();
    for (let i = 0, n = 1 + rng.int(4); i < n; i++) {
      const next = randomImageLayer(rng, shape, false);
      layers.push(next.layer);
      shape = next.shape;
    }
    if (coin(rng, 0.15)) return { input_shape: input, layers, ...(coin(rng, 0.3) ? { bn_convention: 'keras' as const } : {}) };
    layers.push(coin(rng) ? { type: 'flatten' } : { type: 'global_avg_pool' });
    shape = [layers[layers.length - 1].type === 'flatten' ? shape.reduce((a, b) => a * b, 1) : shape[0]];
    for (let i = 0, n = rng.int(3); i < n; i++) {
      const next = randomFeatureLayer(rng, shape[0], false);
      layers.push(next.layer);
      shape = next.shape;
    }
    layers.push({ type: 'linear', out: 2 + rng.int(4) });
    return { input_shape: input, layers, ...(coin(rng, 0.3) ? { bn_convention: 'keras' as const } : {}) };
  }
  shape = [2 + rng.int(9)];
  const input = shape.slice();
  for (let i = 0, n = 1 + rng.int(5); i < n; i++) {
    const next = randomFeatureLayer(rng, shape[0], false);
    layers.push(next.layer);
    shape = next.shape;
  }
  if (coin(rng, 0.8)) layers.push({ type: 'linear', out: 2 + rng.int(4) });
  return { input_shape: input, layers, ...(coin(rng, 0.3) ? { bn_convention: 'keras' as const } : {}) };
}

function usesBatchStats(layers: LayerSpec[]): boolean {
  return layers.some((l) => (l.type === 'batchnorm' && l.track_running_stats === false) || (l.type === 'residual' && usesBatchStats([...l.body, ...(l.shortcut ?? [])])));
}

// ---------------------------------------------------------------------------- tests

describe('ONNX export against the trainer (onnxruntime-node)', () => {
  const worst = { err: 0, detail: '' };
  const note = (c: Compared) => {
    if (c.err >= worst.err) Object.assign(worst, c);
  };
  after(() => console.log(`# onnx vs trainer: worst ${worst.detail} (relative ${worst.err.toExponential(2)})`));

  CURATED.forEach(({ name, spec, rows }, i) => {
    test(name, async () => {
      note(await compareWithTrainer(spec, i, rows ?? 5, perturbedState));
      // The same export with one row (no batch-statistics BN: its single-row eval fails in the trainer as in PyTorch).
      if (rows === undefined && !usesBatchStats(spec.layers)) note(await compareWithTrainer(spec, i, 1, perturbedState));
    });
  });

  test('40 random models (image and feature inputs, every layer type, both conventions)', async () => {
    const rng = new Rng(20261201);
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const spec = randomSpec(rng);
      const walk = (ls: LayerSpec[]) => ls.forEach((l) => (seen.add(l.type), l.type === 'residual' && walk([...l.body, ...(l.shortcut ?? [])])));
      walk(spec.layers);
      note(await compareWithTrainer(spec, 100 + i, 2 + (i % 4), perturbedState));
    }
    // The generator is meant to reach every layer type of the schema.
    assert.deepEqual([...seen].sort(), ['avgpool', 'batchnorm', 'conv2d', 'dropout', 'flatten', 'gelu', 'global_avg_pool', 'groupnorm', 'instancenorm', 'layernorm', 'linear', 'maxpool', 'relu', 'residual']);
  });

  for (const convention of ['pytorch', 'keras'] as const) {
    test(`running statistics from training-mode forwards (${convention} EMA)`, async () => {
      const spec: ModelSpec = {
        input_shape: [2, 6, 6],
        bn_convention: convention,
        layers: [{ type: 'conv2d', out: 3, kernel: 3, padding: 1 }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'flatten' }, { type: 'linear', out: 5 }, { type: 'batchnorm', momentum: 0.5 }, { type: 'linear', out: 2 }],
      };
      note(
        await compareWithTrainer(spec, 7, 6, async (model, rng) => {
          for (let step = 0; step < 4; step++) {
            const x = model.inputTensor(randomInput(rng, 8 * 72).map((v) => 2 * v + 1), 8);
            const y = await model.forward(x, { training: true, record: false, bnSync: null, updateRunningStats: true, rng: new Rng(step) });
            x.dispose();
            y.dispose();
          }
          const st = model.stateDict();
          assert.equal(st.get('layers.1.num_batches_tracked')!.data[0], 4);
          return st;
        }),
      );
    });
  }
});

interface DecodedTensor {
  name: string;
  dims?: number[];
  data_type?: number;
  raw_data?: Uint8Array;
}
interface DecodedNode {
  name: string;
  op_type: string;
  input: string[];
  output: string[];
  attribute?: Array<{ name: string; type: number; f?: number; i?: number; ints?: number[] }>;
}
interface DecodedDim {
  dim_value?: number;
  dim_param?: string;
}
interface DecodedValueInfo {
  name: string;
  type: { tensor_type: { elem_type: number; shape: { dim: DecodedDim[] } } };
}
interface DecodedModel {
  ir_version: number;
  producer_name: string;
  model_version?: number;
  opset_import: Array<{ domain?: string; version: number }>;
  metadata_props: Array<{ key: string; value: string }>;
  graph: { name: string; node: DecodedNode[]; initializer: DecodedTensor[]; input: DecodedValueInfo[]; output: DecodedValueInfo[] };
}

function decode(bytes: Uint8Array): DecodedModel {
  const T = onnxModelType();
  return T.toObject(T.decode(bytes), { longs: Number, arrays: true }) as DecodedModel;
}

function floatsOf(t: DecodedTensor): number[] {
  const raw = t.raw_data!;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Array.from({ length: raw.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true));
}

describe('ONNX export: BatchNormalization nodes and model fields, read back from the bytes', () => {
  test('each BN is one BatchNormalization with gamma/beta/running stats and the resolved epsilon', () => {
    const cases: Array<{ spec: ModelSpec; bn: Array<{ path: string; eps: number; affine: boolean }> }> = [
      {
        spec: { input_shape: [3, 5, 5], layers: [{ type: 'conv2d', out: 4, kernel: 3 }, { type: 'batchnorm' }, { type: 'residual', body: [{ type: 'batchnorm', affine: false, eps: 0.02 }] }, { type: 'flatten' }, { type: 'linear', out: 3 }, { type: 'batchnorm' }] },
        bn: [
          { path: 'layers.1', eps: BN_DEFAULTS.pytorch.eps, affine: true },
          { path: 'layers.2.body.0', eps: 0.02, affine: false },
          { path: 'layers.5', eps: BN_DEFAULTS.pytorch.eps, affine: true },
        ],
      },
      {
        spec: { input_shape: [4], bn_convention: 'keras', layers: [{ type: 'batchnorm' }, { type: 'linear', out: 3 }, { type: 'batchnorm', eps: 1e-5, affine: false }] },
        bn: [
          { path: 'layers.0', eps: BN_DEFAULTS.keras.eps, affine: true },
          { path: 'layers.2', eps: 1e-5, affine: false },
        ],
      },
    ];
    for (const [i, { spec, bn }] of cases.entries()) {
      const model = Model.build(spec, i);
      model.loadStateDict(perturbedState(model, new Rng(i)));
      const state = model.stateDict();
      model.dispose();
      const m = decode(exportOnnx(artifactOf(spec, state), { name: 'bn', version: 4 }));
      const inits = new Map(m.graph.initializer.map((t) => [t.name, t]));
      const bnNodes = m.graph.node.filter((n) => n.op_type === 'BatchNormalization');
      assert.deepEqual(bnNodes.map((n) => n.name), bn.map((b) => b.path));
      for (const b of bn) {
        const node = bnNodes.find((n) => n.name === b.path)!;
        const eps = node.attribute!.find((a) => a.name === 'epsilon')!;
        assert.equal(eps.f, Math.fround(b.eps), `${b.path} epsilon`);
        assert.equal(node.attribute!.some((a) => a.name === 'training_mode' && a.i !== 0), false);
        assert.equal(node.input.length, 5, `${b.path}: X, scale, B, input_mean, input_var`);
        const [scale, shift, mean, variance] = node.input.slice(1).map((name) => floatsOf(inits.get(name)!));
        const c = mean.length;
        const f32 = (k: string) => Array.from(state.get(`${b.path}.${k}`)!.data);
        assert.deepEqual(scale, b.affine ? f32('weight') : new Array(c).fill(1), `${b.path} scale`);
        assert.deepEqual(shift, b.affine ? f32('bias') : new Array(c).fill(0), `${b.path} B`);
        assert.deepEqual(mean, f32('running_mean'), `${b.path} input_mean`);
        assert.deepEqual(variance, f32('running_var'), `${b.path} input_var`);
      }
    }
  });

  test('IR version, opset, producer, I/O names and shapes, metadata (running-stats source)', () => {
    const spec: ModelSpec = { input_shape: [2, 4, 4], layers: [{ type: 'conv2d', out: 3, kernel: 3 }, { type: 'batchnorm' }, { type: 'batchnorm', track_running_stats: false }] };
    const model = Model.build(spec, 3);
    const state = model.stateDict();
    model.dispose();
    const record = { mode: 'exact', batches: 12 };
    const m = decode(exportOnnx(artifactOf(spec, state, { source: 'recalibration', record }), { name: 'resnet-ish', version: 3 }));
    assert.equal(m.ir_version, ONNX_IR_VERSION);
    assert.deepEqual(m.opset_import.map((o) => [o.domain ?? '', o.version]), [['', ONNX_OPSET]]);
    assert.equal(m.producer_name, 'tas');
    assert.equal(m.model_version, 3);
    assert.equal(m.graph.name, 'resnet-ish');
    const dims = (v: DecodedValueInfo) => v.type.tensor_type.shape.dim.map((d) => d.dim_param ?? d.dim_value);
    assert.deepEqual(m.graph.input.map((v) => [v.name, v.type.tensor_type.elem_type, dims(v)]), [[ONNX_INPUT_NAME, 1, [ONNX_BATCH_DIM, 2, 4, 4]]]);
    assert.deepEqual(m.graph.output.map((v) => [v.name, v.type.tensor_type.elem_type, dims(v)]), [[ONNX_OUTPUT_NAME, 1, [ONNX_BATCH_DIM, 3, 2, 2]]]);
    const meta = Object.fromEntries(m.metadata_props.map((p) => [p.key, p.value]));
    assert.equal(meta.model_name, 'resnet-ish');
    assert.equal(meta.model_version, '3');
    assert.equal(meta.bn_running_stats_source, 'recalibration');
    assert.deepEqual(JSON.parse(meta.bn_running_stats), { source: 'recalibration', record });
    assert.equal(meta.bn_convention, 'pytorch');
    assert.deepEqual(JSON.parse(meta.bn_batch_statistics_layers), ['layers.2']);
    assert.deepEqual(JSON.parse(meta.model), spec);
    // The batch-statistics BN is not a BatchNormalization (that op's eval form needs stored statistics).
    assert.deepEqual(m.graph.node.filter((n) => n.op_type === 'BatchNormalization').map((n) => n.name), ['layers.1']);
  });
});

describe('ONNX export: what cannot be exported fails with OnnxExportError', () => {
  const linearState = (): HostTensorMap =>
    new Map([
      ['layers.0.weight', { shape: [3, 4], data: new Float32Array(12) }],
      ['layers.0.bias', { shape: [3], data: new Float32Array(3) }],
    ]);
  const isNotExportable = (pattern: RegExp, layer?: string) => (err: unknown) => {
    assert.ok(err instanceof OnnxExportError, `expected OnnxExportError, got ${String(err)}`);
    assert.equal(err.code, 'TAS_ERR_NOT_EXPORTABLE');
    assert.match(err.message, pattern);
    if (layer !== undefined) assert.equal(err.layer, layer);
    return true;
  };

  test('an unknown layer type', () => {
    const a: LoadedArtifact = { model: { input_shape: [4], layers: [{ type: 'linear', out: 3 }, { type: 'attention' } as unknown as LayerSpec] }, state: linearState(), metadata: {} };
    assert.throws(() => exportOnnx(a), isNotExportable(/model\.layers\[1\]\.type: must be one of/));
  });

  test('a state tensor missing, or of the wrong shape', () => {
    const missing = linearState();
    missing.delete('layers.0.bias');
    assert.throws(() => exportOnnx({ model: { input_shape: [4], layers: [{ type: 'linear', out: 3 }] }, state: missing, metadata: {} }), isNotExportable(/layers\.0 \(linear\): the artifact has no tensor layers\.0\.bias/, 'layers.0'));
    const bnState: HostTensorMap = new Map([
      ['layers.0.weight', { shape: [4], data: new Float32Array(4) }],
      ['layers.0.bias', { shape: [4], data: new Float32Array(4) }],
      ['layers.0.running_mean', { shape: [4], data: new Float32Array(4) }],
      ['layers.0.running_var', { shape: [3], data: new Float32Array(3) }],
    ]);
    assert.throws(() => exportOnnx({ model: { input_shape: [4], layers: [{ type: 'batchnorm' }] }, state: bnState, metadata: {} }), isNotExportable(/layers\.0\.running_var has shape \[3\], the model spec needs \[4\]/, 'layers.0'));
  });

  test('a spec whose shapes do not fit (linear on an image)', () => {
    assert.throws(() => exportOnnx({ model: { input_shape: [1, 2, 2], layers: [{ type: 'linear', out: 3 }] }, state: linearState(), metadata: {} }), isNotExportable(/layers\.0 \(linear\): needs \[features\] input/, 'layers.0'));
  });
});

// ---------------------------------------------------------------------------- golden

/* eslint-disable @typescript-eslint/no-explicit-any -- fixtures are untyped JSON */
// The repository's PyTorch fixtures, or another set of the same format in GOLDEN_DIR.
const GOLDEN_DIR = resolve(process.env.GOLDEN_DIR ?? join(import.meta.dirname, '../../test/golden/fixtures/pytorch'));
const goldenFiles = existsSync(GOLDEN_DIR) ? readdirSync(GOLDEN_DIR).filter((f) => f.endsWith('.json')).sort() : [];

describe('ONNX export against PyTorch (golden eval logits)', () => {
  test('has fixtures to compare with', () => {
    assert.ok(goldenFiles.length > 0, `no *.json fixtures in ${GOLDEN_DIR}`);
  });
  // Any fixture of the training format: a model, PyTorch's final state and eval logits.
  const trained = goldenFiles
    .map((f) => ({ f, fx: JSON.parse(readFileSync(join(GOLDEN_DIR, f), 'utf8')) as any }))
    .filter(({ fx }) => Array.isArray(fx.model) && fx.final_state && fx.eval?.x && fx.eval?.logits);
  if (trained.length === 0) test('no training fixtures', { skip: `no fixture in ${GOLDEN_DIR} has model, final_state and eval` }, () => {});
  for (const { f, fx } of trained) {
    test(f, async () => {
      const ex = fx.eval.x as FixtureTensor;
      // The fixture's layers are the schema's own (test/golden/cases.ts builds them the same way).
      const spec: ModelSpec = { input_shape: ex.shape.slice(1), layers: fx.model as LayerSpec[] };
      const state = stateMap(fx.final_state);
      const x = Float32Array.from(ex.data);
      const got = await runOnnx(exportOnnx(artifactOf(spec, state), { name: f, version: 1 }), x, ex.shape[0], spec.input_shape);
      const vsTorch = checkMaxAbs('onnx vs PyTorch eval logits', got.data, (fx.eval.logits as FixtureTensor).data);
      console.log(`# ${f}: ${vsTorch.detail}`);
      assert.ok(vsTorch.ok, vsTorch.detail);
      // And the trainer on the same state, so a failure says which side moved.
      const model = Model.build(spec, 0);
      model.loadStateDict(state);
      const ref = await trainerEval(model, x, ex.shape[0]);
      model.dispose();
      const vsTrainer = checkMaxAbs('onnx vs trainer', got.data, ref.data);
      assert.ok(vsTrainer.ok, vsTrainer.detail);
    });
  }
});

// ---------------------------------------------------------------------------- route

// The route suite needs PostgreSQL; its absence fails that suite only (or skips it with
// TAS_ALLOW_NO_DB=1, as the other database tests), not the export tests above.
let dbSkip: string | null = null;
let dbError: unknown = null;
try {
  dbSkip = await databaseUnavailable();
} catch (err) {
  dbError = err;
}

describe('GET /v1/models/:name/versions/:version/onnx', { skip: dbSkip ?? false }, () => {
  const ctx = {} as { schema: FreshSchema; prisma: PrismaClient; dataDir: string; app: FastifyInstance };
  const spec: ModelSpec = { input_shape: [2, 5, 5], layers: [{ type: 'conv2d', out: 3, kernel: 3, padding: 1 }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'global_avg_pool' }, { type: 'linear', out: 2 }] };
  let goodBytes: Uint8Array;
  let trainerModel: Model;

  before(async () => {
    if (dbError) throw dbError;
    ctx.schema = await createFreshSchema();
    await migrate(ctx.schema.url);
    ctx.prisma = createPrismaClient(ctx.schema.url);
    ctx.dataDir = mkdtempSync(join(tmpdir(), 'tas-onnx-'));
    trainerModel = Model.build(spec, 5);
    trainerModel.loadStateDict(perturbedState(trainerModel, new Rng(5)));
    goodBytes = encodeStateDict(trainerModel.stateDict(), artifactMetadata({ model: spec, runningStats: { source: 'training' }, training: {} }));
    const bad = encodeStateDict(new Map(), artifactMetadata({ model: { input_shape: [3], layers: [{ type: 'attention' } as unknown as LayerSpec] }, runningStats: { source: 'training' }, training: {} }));
    const files = { good: join(ctx.dataDir, 'good.safetensors'), bad: join(ctx.dataDir, 'bad.safetensors'), garbage: join(ctx.dataDir, 'garbage.safetensors') };
    writeFileSync(files.good, goodBytes);
    writeFileSync(files.bad, bad);
    writeFileSync(files.garbage, 'not a safetensors file');
    await ctx.prisma.model.create({
      data: {
        name: 'tiny net',
        versions: {
          create: [
            { version: 1, artifactPath: files.good, metadata: {} },
            { version: 2, artifactPath: files.garbage, metadata: {} },
            { version: 3, artifactPath: join(ctx.dataDir, 'deleted.safetensors'), metadata: {} },
            { version: 4, artifactPath: files.bad, metadata: {} },
          ],
        },
      },
      select: { id: true },
    });
    ctx.app = createBaseApp();
    addSharedSchemas(ctx.app);
    await ctx.app.register(modelRoutes, { models: new ModelStore(ctx.prisma) });
    await ctx.app.ready();
  });
  after(async () => {
    trainerModel?.dispose();
    await ctx.app?.close();
    await ctx.prisma?.$disconnect();
    await ctx.schema?.drop();
    if (ctx.dataDir) rmSync(ctx.dataDir, { recursive: true, force: true });
  });

  test('200: the export of the stored artifact, as a download, and it runs', async () => {
    const res = await ctx.app.inject({ method: 'GET', url: `/v1/models/${encodeURIComponent('tiny net')}/versions/1/onnx` });
    assert.equal(res.statusCode, 200, res.body);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['content-disposition'], 'attachment; filename="tiny_net-v1.onnx"');
    const bytes = new Uint8Array(res.rawPayload);
    assert.equal(Buffer.compare(bytes, exportOnnx(parseArtifact(goodBytes), { name: 'tiny net', version: 1 })), 0, 'the body is the export of the stored artifact');
    const x = randomInput(new Rng(9), 3 * 50);
    const got = await runOnnx(bytes, x, 3, spec.input_shape);
    const ref = await trainerEval(trainerModel, x, 3);
    const c = checkMaxAbs('route onnx vs trainer', got.data, ref.data);
    assert.ok(c.ok, c.detail);
  });

  test('422 TAS_ERR_NOT_EXPORTABLE: an unknown layer type, an unreadable artifact', async () => {
    for (const [version, pattern] of [
      ['latest', /layers\[0\]\.type/],
      ['2', /./],
    ] as const) {
      const res = await ctx.app.inject({ method: 'GET', url: `/v1/models/tiny%20net/versions/${version}/onnx` });
      assert.equal(res.statusCode, 422, res.body);
      const body = res.json() as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'TAS_ERR_NOT_EXPORTABLE');
      assert.match(body.error.message, pattern);
    }
  });

  test('404: no such version, or its artifact file is gone; 400: a bad version', async () => {
    for (const [url, status] of [
      ['/v1/models/tiny%20net/versions/9/onnx', 404],
      ['/v1/models/nothing/versions/latest/onnx', 404],
      ['/v1/models/tiny%20net/versions/3/onnx', 404],
      ['/v1/models/tiny%20net/versions/0/onnx', 400],
    ] as const) {
      const res = await ctx.app.inject({ method: 'GET', url });
      assert.equal(res.statusCode, status, `${url}: ${res.body}`);
    }
  });
});
