/**
 * ONNX export of a trained model artifact: the model spec and its PyTorch-layout state
 * dict become an ONNX ModelProto in eval mode, the graph PyTorch's `torch.onnx.export`
 * would give for the same module (NCHW, Linear weight [out, in], flatten in C, H, W
 * order), so the artifact needs no permutation at all.
 *
 * - Graph input `input` [batch, ...input_shape], output `logits` [batch, ...], FLOAT,
 *   `batch` symbolic.
 * - BatchNorm with running statistics is one `BatchNormalization` node whose scale, B,
 *   input_mean and input_var initializers are gamma, beta (1 and 0 without affine) and the
 *   stored running_mean / running_var (EMA or recalibrated: what the artifact holds), with
 *   the layer's epsilon resolved as the trainer resolves it (per-layer `eps`, else the
 *   convention's default: PyTorch 1e-5, Keras 1e-3).
 * - BatchNorm with `track_running_stats: false` normalises with the statistics of the
 *   batch it is given, in eval too (PyTorch); it is exported as those ops, and its path
 *   is listed in the metadata (`bn_batch_statistics_layers`), because then a sample's
 *   output depends on the rest of its batch.
 * - GroupNorm, LayerNorm, InstanceNorm and the batch-statistics BN are composed from
 *   ReduceMean/Sub/Mul/Sqrt/Div as two-pass moments (mean, then mean squared deviation),
 *   the trainer's numerics, rather than runtime kernels that may compute E[x²] - E[x]².
 *
 * Opset 17 with IR version 8 (the IR that shipped with opset 17): every op used here is in
 * the default domain at that opset, ReduceMean still takes `axes` as an attribute, and
 * onnxruntime (1.12 and later, 1.30 here) and most other runtimes load it.
 *
 * The wire format is written with protobufjs from proto/onnx/onnx-subset.proto, a subset
 * of ONNX's schema with ONNX's own field numbers.
 */
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type { LoadedArtifact } from '../trainer/artifact/artifact.js';
import { TrainerError } from '../trainer/errors.js';
import type { BnConvention } from '../trainer/math/momentum.js';
import { BN_DEFAULTS, type LayerSpec, type ModelSpec } from '../trainer/model/spec.js';
import { validateAgainst } from '../trainer/schema.js';
import type { HostTensor, HostTensorMap } from '../trainer/tensor-types.js';

export const ONNX_INPUT_NAME = 'input';
export const ONNX_OUTPUT_NAME = 'logits';
export const ONNX_OPSET = 17;
export const ONNX_IR_VERSION = 8;
/** The symbolic first dimension of the input and output. */
export const ONNX_BATCH_DIM = 'batch';

export type OnnxExportErrorCode = 'TAS_ERR_NOT_EXPORTABLE';

/** A model that cannot be written as ONNX; `layer` is the state path of the layer at fault when one is. */
export class OnnxExportError extends Error {
  readonly code: OnnxExportErrorCode;
  readonly layer?: string;
  constructor(code: OnnxExportErrorCode, message: string, layer?: string) {
    super(message);
    this.name = 'OnnxExportError';
    this.code = code;
    if (layer !== undefined) this.layer = layer;
  }
}

export interface OnnxExportOptions {
  /** The published model's name (graph name and metadata). */
  readonly name?: string;
  /** The published version (ModelProto.model_version and metadata). */
  readonly version?: number;
}

const PROTO_PATH = fileURLToPath(new URL('../../proto/onnx/onnx-subset.proto', import.meta.url));
let modelType: protobuf.Type | null = null;

/** The `onnx.ModelProto` message type of proto/onnx/onnx-subset.proto (loaded once), for readers of the bytes. */
export function onnxModelType(): protobuf.Type {
  // keepCase: the messages use ONNX's snake_case field names, not protobufjs's camelCase.
  modelType ??= new protobuf.Root().loadSync(PROTO_PATH, { keepCase: true }).lookupType('onnx.ModelProto');
  return modelType;
}

// ONNX enum values (TensorProto.DataType, AttributeProto.AttributeType).
const FLOAT = 1;
const INT64 = 7;
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

interface TensorMsg {
  name: string;
  dims: number[];
  data_type: number;
  raw_data: Uint8Array;
  doc_string?: string;
}
interface AttrMsg {
  name: string;
  type: number;
  f?: number;
  i?: number;
  ints?: number[];
}
interface NodeMsg {
  name: string;
  op_type: string;
  input: string[];
  output: string[];
  attribute: AttrMsg[];
}
interface ValueInfoMsg {
  name: string;
  type: { tensor_type: { elem_type: number; shape: { dim: Array<{ dim_value: number } | { dim_param: string }> } } };
}

const intAttr = (name: string, i: number): AttrMsg => ({ name, type: ATTR_INT, i });
const intsAttr = (name: string, ints: number[]): AttrMsg => ({ name, type: ATTR_INTS, ints });
const floatAttr = (name: string, f: number): AttrMsg => ({ name, type: ATTR_FLOAT, f });

function f32Bytes(data: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(data.length * 4);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) view.setFloat32(i * 4, data[i], true); // ONNX raw_data is little-endian
  return out;
}

function i64Bytes(data: readonly number[]): Uint8Array {
  const out = new Uint8Array(data.length * 8);
  const view = new DataView(out.buffer);
  data.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return out;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Nodes and initializers in topological order, with unique value names. */
class GraphBuilder {
  readonly nodes: NodeMsg[] = [];
  readonly initializers: TensorMsg[] = [];
  // Layer values are named by state path (`layers.3.body.0`), constants `const_*` and
  // `shape_*`: none can take the graph output's name before the last node claims it.
  private readonly names = new Set<string>([ONNX_INPUT_NAME]);
  private readonly constants = new Map<string, string>();

  unique(base: string): string {
    let name = base;
    for (let k = 1; this.names.has(name); k++) name = `${base}_${k}`;
    this.names.add(name);
    return name;
  }

  floatInit(base: string, dims: number[], data: ArrayLike<number>, doc?: string): string {
    const name = this.unique(base);
    this.initializers.push({ name, dims, data_type: FLOAT, raw_data: f32Bytes(data), ...(doc ? { doc_string: doc } : {}) });
    return name;
  }

  /** A float scalar, shared by every node that needs the same value. */
  scalar(v: number): string {
    const key = `f:${Math.fround(v)}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.floatInit(`const_${v}`, [], [v]);
      this.constants.set(key, name);
    }
    return name;
  }

  /** An int64 vector (Reshape's shape), shared likewise. */
  int64s(values: number[]): string {
    const key = `i:${values.join(',')}`;
    let name = this.constants.get(key);
    if (!name) {
      name = this.unique(`shape_${values.join('_').replace(/-/g, 'm')}`);
      this.initializers.push({ name, dims: [values.length], data_type: INT64, raw_data: i64Bytes(values) });
      this.constants.set(key, name);
    }
    return name;
  }

  node(opType: string, inputs: string[], outBase: string, attribute: AttrMsg[] = []): string {
    const out = this.unique(outBase);
    this.nodes.push({ name: out, op_type: opType, input: inputs, output: [out], attribute });
    return out;
  }
}

/** A value in the graph and its per-sample shape in PyTorch layout ([D] or [C, H, W]). */
interface Value {
  name: string;
  shape: number[];
}

interface Ctx {
  g: GraphBuilder;
  state: HostTensorMap;
  convention: BnConvention;
  /** BN layers normalising with batch statistics (track_running_stats: false). */
  batchStatBn: string[];
}

function fail(path: string, what: string, msg: string): never {
  throw new OnnxExportError('TAS_ERR_NOT_EXPORTABLE', `${path} (${what}): ${msg}`, path);
}

/** A state tensor by its PyTorch name, checked against the shape the spec implies. */
function take(ctx: Ctx, path: string, what: string, name: string, shape: number[]): HostTensor {
  const key = `${path}.${name}`;
  const t = ctx.state.get(key);
  if (!t) fail(path, what, `the artifact has no tensor ${key}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== numel(shape)) {
    fail(path, what, `${key} has shape [${t.shape.join(', ')}], the model spec needs [${shape.join(', ')}]`);
  }
  return t;
}

const outSize = (size: number, kernel: number, stride: number, padding: number) => Math.floor((size + 2 * padding - kernel) / stride) + 1;

/** Per-channel parameters broadcast over [N, C] or [N, C, H, W]. */
const channelDims = (shape: number[]) => (shape.length === 3 ? [shape[0], 1, 1] : [shape[0]]);

/**
 * (x - mean) / sqrt(var + eps) over `axes`, the variance biased and two-pass, as the
 * trainer's norms compute it. Mul(d, d) rather than Pow keeps runtimes from fusing the
 * pattern into a LayerNormalization kernel with other numerics.
 */
function normalize(ctx: Ctx, x: string, axes: number[], eps: number, base: string): string {
  const { g } = ctx;
  const mean = g.node('ReduceMean', [x], `${base}/mean`, [intsAttr('axes', axes), intAttr('keepdims', 1)]);
  const d = g.node('Sub', [x, mean], `${base}/centered`);
  const sq = g.node('Mul', [d, d], `${base}/sq`);
  const variance = g.node('ReduceMean', [sq], `${base}/var`, [intsAttr('axes', axes), intAttr('keepdims', 1)]);
  const std = g.node('Sqrt', [g.node('Add', [variance, g.scalar(eps)], `${base}/var_eps`)], `${base}/std`);
  return g.node('Div', [d, std], `${base}/normalized`);
}

/** y * weight + bias with the layer's affine parameters in `dims`, or y unchanged. */
function affine(ctx: Ctx, y: string, path: string, what: string, enabled: boolean, stateShape: number[], dims: number[], out: string): string {
  if (!enabled) return ctx.g.node('Identity', [y], out);
  const w = take(ctx, path, what, 'weight', stateShape);
  const b = take(ctx, path, what, 'bias', stateShape);
  const scaled = ctx.g.node('Mul', [y, ctx.g.floatInit(`${path}.weight`, dims, w.data)], `${path}/scaled`);
  return ctx.g.node('Add', [scaled, ctx.g.floatInit(`${path}.bias`, dims, b.data)], out);
}

function emitLayers(ctx: Ctx, specs: LayerSpec[], prefix: string, x: Value): Value {
  let v = x;
  specs.forEach((s, i) => {
    v = emitLayer(ctx, s, `${prefix}.${i}`, v);
  });
  return v;
}

function emitLayer(ctx: Ctx, s: LayerSpec, path: string, x: Value): Value {
  const { g } = ctx;
  const shape = x.shape;
  const image = shape.length === 3;
  const what = s.type;
  const needImage = () => {
    if (!image) fail(path, what, `needs an image input [C, H, W], got [${shape.join(', ')}]`);
  };
  switch (s.type) {
    case 'linear': {
      if (image) fail(path, what, `needs [features] input, got [${shape.join(', ')}]`);
      const inF = shape[0];
      const w = take(ctx, path, what, 'weight', [s.out, inF]);
      const inputs = [x.name, g.floatInit(`${path}.weight`, [s.out, inF], w.data)];
      if (s.bias ?? true) inputs.push(g.floatInit(`${path}.bias`, [s.out], take(ctx, path, what, 'bias', [s.out]).data));
      // PyTorch's [out, in] weight as Gemm's B with transB: no transpose of the data.
      return { name: g.node('Gemm', inputs, path, [intAttr('transB', 1)]), shape: [s.out] };
    }
    case 'conv2d': {
      needImage();
      const [c, h, w] = shape;
      const k = s.kernel;
      const stride = s.stride ?? 1;
      const pad = s.padding ?? 0;
      if (h + 2 * pad < k || w + 2 * pad < k) fail(path, what, `kernel ${k} is larger than the padded input ${h}x${w}`);
      const wt = take(ctx, path, what, 'weight', [s.out, c, k, k]);
      const inputs = [x.name, g.floatInit(`${path}.weight`, [s.out, c, k, k], wt.data)];
      if (s.bias ?? true) inputs.push(g.floatInit(`${path}.bias`, [s.out], take(ctx, path, what, 'bias', [s.out]).data));
      const attrs = [intsAttr('kernel_shape', [k, k]), intsAttr('strides', [stride, stride]), intsAttr('pads', [pad, pad, pad, pad]), intsAttr('dilations', [1, 1]), intAttr('group', 1)];
      return { name: g.node('Conv', inputs, path, attrs), shape: [s.out, outSize(h, k, stride, pad), outSize(w, k, stride, pad)] };
    }
    case 'batchnorm': {
      const c = shape[0];
      const eps = s.eps ?? BN_DEFAULTS[ctx.convention].eps;
      const hasAffine = s.affine ?? true;
      if (!(s.track_running_stats ?? true)) {
        // Batch statistics over every axis but the channel one (N, or N, H, W).
        ctx.batchStatBn.push(path);
        const y = normalize(ctx, x.name, image ? [0, 2, 3] : [0], eps, path);
        return { name: affine(ctx, y, path, what, hasAffine, [c], channelDims(shape), path), shape };
      }
      const mean = take(ctx, path, what, 'running_mean', [c]);
      const variance = take(ctx, path, what, 'running_var', [c]);
      const gamma = hasAffine ? take(ctx, path, what, 'weight', [c]).data : new Float32Array(c).fill(1);
      const beta = hasAffine ? take(ctx, path, what, 'bias', [c]).data : new Float32Array(c);
      const inputs = [
        x.name,
        hasAffine ? g.floatInit(`${path}.weight`, [c], gamma) : g.floatInit(`${path}.scale_one`, [c], gamma, 'affine=false: gamma is 1'),
        hasAffine ? g.floatInit(`${path}.bias`, [c], beta) : g.floatInit(`${path}.shift_zero`, [c], beta, 'affine=false: beta is 0'),
        g.floatInit(`${path}.running_mean`, [c], mean.data),
        g.floatInit(`${path}.running_var`, [c], variance.data),
      ];
      return { name: g.node('BatchNormalization', inputs, path, [floatAttr('epsilon', eps)]), shape };
    }
    case 'groupnorm': {
      const c = shape[0];
      if (c % s.groups !== 0) fail(path, what, `${c} channels are not divisible into ${s.groups} groups`);
      // [N, C, ...] -> [N, G, rest]: each group's channels and positions in one row.
      const grouped = g.node('Reshape', [x.name, g.int64s([0, s.groups, -1])], `${path}/grouped`);
      const y = normalize(ctx, grouped, [2], s.eps ?? 1e-5, path);
      const back = g.node('Reshape', [y, g.int64s([0, ...shape])], `${path}/ungrouped`);
      return { name: affine(ctx, back, path, what, s.affine ?? true, [c], channelDims(shape), path), shape };
    }
    case 'layernorm': {
      const axes = shape.map((_, i) => i + 1);
      const y = normalize(ctx, x.name, axes, s.eps ?? 1e-5, path);
      // PyTorch LayerNorm(sample_shape): weight and bias have the sample's shape.
      return { name: affine(ctx, y, path, what, s.affine ?? true, shape, shape, path), shape };
    }
    case 'instancenorm': {
      needImage();
      const y = normalize(ctx, x.name, [2, 3], s.eps ?? 1e-5, path);
      return { name: affine(ctx, y, path, what, s.affine ?? false, [shape[0]], channelDims(shape), path), shape };
    }
    case 'relu':
      return { name: g.node('Relu', [x.name], path), shape };
    case 'gelu': {
      const half = g.node('Mul', [x.name, g.scalar(0.5)], `${path}/half_x`);
      let inner: string;
      if ((s.approximate ?? 'none') === 'tanh') {
        // tanh(sqrt(2/pi) * (x + 0.044715 x³)), as nn.GELU(approximate='tanh').
        const cube = g.node('Mul', [g.node('Mul', [x.name, x.name], `${path}/x2`), x.name], `${path}/x3`);
        const poly = g.node('Add', [x.name, g.node('Mul', [cube, g.scalar(0.044715)], `${path}/cx3`)], `${path}/poly`);
        inner = g.node('Tanh', [g.node('Mul', [poly, g.scalar(Math.sqrt(2 / Math.PI))], `${path}/arg`)], `${path}/tanh`);
      } else {
        inner = g.node('Erf', [g.node('Div', [x.name, g.scalar(Math.SQRT2)], `${path}/x_over_sqrt2`)], `${path}/erf`);
      }
      return { name: g.node('Mul', [half, g.node('Add', [inner, g.scalar(1)], `${path}/one_plus`)], path), shape };
    }
    case 'maxpool':
    case 'avgpool': {
      needImage();
      const [c, h, w] = shape;
      const k = s.kernel;
      const stride = s.stride ?? k;
      const pad = s.padding ?? 0;
      if (pad > k / 2) fail(path, what, `padding ${pad} is more than half the kernel ${k}`);
      if (h + 2 * pad < k || w + 2 * pad < k) fail(path, what, `kernel ${k} is larger than the padded input ${h}x${w}`);
      const attrs = [intsAttr('kernel_shape', [k, k]), intsAttr('strides', [stride, stride]), intsAttr('pads', [pad, pad, pad, pad]), intAttr('ceil_mode', 0)];
      // The trainer pads average pooling with zeros that count in the divisor (PyTorch's count_include_pad=True).
      if (s.type === 'avgpool') attrs.push(intAttr('count_include_pad', 1));
      return { name: g.node(s.type === 'maxpool' ? 'MaxPool' : 'AveragePool', [x.name], path, attrs), shape: [c, outSize(h, k, stride, pad), outSize(w, k, stride, pad)] };
    }
    case 'global_avg_pool': {
      needImage();
      const pooled = g.node('GlobalAveragePool', [x.name], `${path}/pooled`);
      return { name: g.node('Flatten', [pooled], path, [intAttr('axis', 1)]), shape: [shape[0]] };
    }
    case 'flatten':
      // NCHW order, as the trainer's flatten and PyTorch's.
      return { name: g.node('Flatten', [x.name], path, [intAttr('axis', 1)]), shape: [numel(shape)] };
    case 'dropout':
      return x; // identity in eval
    case 'residual': {
      const body = emitLayers(ctx, s.body, `${path}.body`, x);
      const short = s.shortcut ? emitLayers(ctx, s.shortcut, `${path}.shortcut`, x) : x;
      if (body.shape.join() !== short.shape.join()) fail(path, what, `body gives [${body.shape.join(', ')}] but the shortcut gives [${short.shape.join(', ')}]`);
      const act = s.activation ?? 'relu';
      const sum = g.node('Add', [body.name, short.name], act === 'relu' ? `${path}/sum` : path);
      return { name: act === 'relu' ? g.node('Relu', [sum], path) : sum, shape: body.shape };
    }
    default: {
      // The schema check above rejects unknown types; this keeps a type added to the
      // schema but not here from being exported as something else.
      const unknown = s as { type?: unknown };
      return fail(path, String(unknown.type), `layer type ${JSON.stringify(unknown.type)} has no ONNX export`);
    }
  }
}

function valueInfo(name: string, shape: number[]): ValueInfoMsg {
  return {
    name,
    type: { tensor_type: { elem_type: FLOAT, shape: { dim: [{ dim_param: ONNX_BATCH_DIM }, ...shape.map((d) => ({ dim_value: d }))] } } },
  };
}

function runningStatsSource(metadata: Record<string, string>): string {
  try {
    const rs = JSON.parse(metadata.running_stats ?? 'null') as { source?: unknown } | null;
    return typeof rs?.source === 'string' ? rs.source : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The ONNX ModelProto bytes of an artifact, eval mode. Throws OnnxExportError when the
 * model spec is invalid, a layer has no export, or a state tensor is missing or has the
 * wrong shape.
 */
export function exportOnnx(artifact: LoadedArtifact, options: OnnxExportOptions = {}): Uint8Array {
  let model: ModelSpec;
  try {
    model = validateAgainst<ModelSpec>('model.schema.json', artifact.model, 'model');
  } catch (err) {
    if (err instanceof TrainerError) throw new OnnxExportError('TAS_ERR_NOT_EXPORTABLE', `the artifact's model spec is invalid: ${err.message}`);
    throw err;
  }
  if (model.input_shape.length !== 1 && model.input_shape.length !== 3) {
    throw new OnnxExportError('TAS_ERR_NOT_EXPORTABLE', `model.input_shape: must be [features] or [channels, height, width], got [${model.input_shape.join(', ')}]`);
  }
  const convention: BnConvention = model.bn_convention ?? 'pytorch';
  const ctx: Ctx = { g: new GraphBuilder(), state: artifact.state, convention, batchStatBn: [] };
  const out = emitLayers(ctx, model.layers, 'layers', { name: ONNX_INPUT_NAME, shape: model.input_shape.slice() });
  ctx.g.node('Identity', [out.name], ONNX_OUTPUT_NAME);

  const meta: Record<string, string> = {
    ...(options.name !== undefined ? { model_name: options.name } : {}),
    ...(options.version !== undefined ? { model_version: String(options.version) } : {}),
    artifact_format_version: artifact.metadata.format_version ?? '',
    bn_convention: convention,
    bn_running_stats_source: runningStatsSource(artifact.metadata),
    bn_running_stats: artifact.metadata.running_stats ?? 'null',
    bn_batch_statistics_layers: JSON.stringify(ctx.batchStatBn),
    input_layout: model.input_shape.length === 3 ? 'NCHW' : 'NC',
    model: JSON.stringify(model),
  };
  if (artifact.metadata.training !== undefined) meta.training = artifact.metadata.training;

  const proto = {
    ir_version: ONNX_IR_VERSION,
    producer_name: 'tas',
    ...(options.version !== undefined ? { model_version: options.version } : {}),
    doc_string: 'Exported by tas from a safetensors artifact, eval mode: BatchNorm normalises with the stored running statistics (layers listed in metadata bn_batch_statistics_layers, which keep none, with their batch\'s).',
    opset_import: [{ domain: '', version: ONNX_OPSET }],
    graph: {
      name: options.name ?? 'tas-model',
      node: ctx.g.nodes,
      initializer: ctx.g.initializers,
      input: [valueInfo(ONNX_INPUT_NAME, model.input_shape)],
      output: [valueInfo(ONNX_OUTPUT_NAME, out.shape)],
    },
    metadata_props: Object.entries(meta).map(([key, value]) => ({ key, value })),
  };
  const T = onnxModelType();
  const problem = T.verify(proto);
  if (problem) throw new Error(`onnx export built an invalid ModelProto: ${problem}`);
  return T.encode(T.fromObject(proto)).finish();
}
