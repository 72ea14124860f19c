/**
 * A model built from a ModelSpec: layers with their state, the forward/backward drivers,
 * and conversion between PyTorch layouts (state, NCHW input) and the trainer's
 * channels-last tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';
import { Rng } from '../math/rng.js';
import type { HostTensorMap, Param } from '../tensor-types.js';
import { Relu, gelu } from '../layers/activations.js';
import { BatchNorm } from '../layers/batchnorm.js';
import { Conv2d } from '../layers/conv2d.js';
import { Dropout } from '../layers/dropout.js';
import { Flatten } from '../layers/flatten.js';
import type { ForwardContext, Layer } from '../layers/layer.js';
import { Linear } from '../layers/linear.js';
import { groupNorm, instanceNorm, layerNorm } from '../layers/norms.js';
import { globalAvgPool, pool2d } from '../layers/pooling.js';
import { Residual } from '../layers/residual.js';
import { Sequential } from '../layers/sequential.js';
import { validateAgainst } from '../schema.js';
import { BN_DEFAULTS, type LayerSpec, type ModelSpec } from './spec.js';

/** tfjs backends whose tensors live in host memory, where reading a tensor is a copy, not a device sync. */
const HOST_MEMORY_BACKENDS: ReadonlySet<string> = new Set(['wasm', 'cpu']);

export class Model {
  readonly net: Sequential;
  /** Sample shape inside the trainer: [D] or [H, W, C]. */
  readonly internalInputShape: number[];
  readonly outputShape: readonly number[];

  private constructor(readonly spec: ModelSpec, net: Sequential, internalInputShape: number[]) {
    this.net = net;
    this.internalInputShape = internalInputShape;
    this.outputShape = net.layers[net.layers.length - 1].outputShape;
  }

  /** Validate the spec (schema, then shapes) and build the layers; `seed` draws PyTorch-style initial weights. */
  static build(spec: unknown, seed = 0, field = 'model'): Model {
    const s = validateAgainst<ModelSpec>('model.schema.json', spec, field);
    const internal = toChannelsLast(s.input_shape);
    const rng = new Rng(seed);
    const next = () => rng.next();
    const layers = buildLayers(s.layers, 'layers', internal, s.bn_convention ?? 'pytorch', next, `${field}.layers`);
    return new Model(s, new Sequential(layers), internal);
  }

  params(): Param[] {
    return this.net.params();
  }
  batchNorms(): BatchNorm[] {
    return this.net.batchNorms();
  }

  /** Forward pass over a channels-last batch. */
  forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    return this.net.forward(x, ctx);
  }

  /** Backward from dL/d(output); parameter gradients land in `params()[i].grad`. */
  async backward(dy: tf.Tensor, onGradients?: (params: Param[]) => void): Promise<void> {
    const dx = await this.net.backward(dy, false, onGradients);
    dx?.dispose();
  }

  /** PyTorch state_dict: names, layouts, BN buffers with num_batches_tracked. */
  stateDict(): HostTensorMap {
    return this.net.exportState();
  }

  /**
   * Only the BN buffers of `stateDict()` (`<layer>.running_mean`, `.running_var`,
   * `.num_batches_tracked`: same names, shapes and values), for progress reports taken
   * while training; `stateDict()` would also download every weight.
   *
   * How the buffers are read depends on where tensors live. On wasm and cpu they are in
   * host memory: a direct read per buffer is cheapest (about 20 µs for the quickstart's
   * two layers in a training run, against 60 µs for a concat and one read, whose op
   * dispatch dominates: bench/bn-stats.ts). Elsewhere (tfjs-node, possibly on a GPU) each
   * read is a device synchronisation and copy, so all buffers are concatenated on the
   * device and read ONCE. `oneRead` forces a path (tests compare both).
   */
  bnBuffers(oneRead: boolean = !HOST_MEMORY_BACKENDS.has(tf.getBackend())): HostTensorMap {
    const out: HostTensorMap = new Map();
    const bns = this.batchNorms().filter((b) => b.runningMean !== null && b.runningVar !== null);
    if (bns.length === 0) return out;
    let flat: Float32Array | null = null;
    if (oneRead) {
      // No tf.tidy: a concat of variables leaves no intermediates.
      const t = tf.concat(bns.flatMap((b) => [b.runningMean!, b.runningVar!]));
      flat = t.dataSync() as Float32Array;
      t.dispose();
    }
    let off = 0;
    for (const b of bns) {
      const c = b.opts.channels;
      // slice/Float32Array.from: own copies, never views of backend memory a later op may reuse.
      const mean = flat ? flat.slice(off, off + c) : Float32Array.from(b.runningMean!.dataSync() as Float32Array);
      const variance = flat ? flat.slice(off + c, off + 2 * c) : Float32Array.from(b.runningVar!.dataSync() as Float32Array);
      out.set(`${b.path}.running_mean`, { shape: [c], data: mean });
      out.set(`${b.path}.running_var`, { shape: [c], data: variance });
      out.set(`${b.path}.num_batches_tracked`, { shape: [], data: Float32Array.of(b.numBatchesTracked) });
      off += 2 * c;
    }
    return out;
  }

  loadStateDict(state: HostTensorMap): void {
    this.net.importState(state);
  }

  /** A batch in PyTorch layout (rows of `input_shape`) as a channels-last tensor. */
  inputTensor(data: Float32Array, rows: number): tf.Tensor {
    const shape = this.spec.input_shape;
    if (data.length !== rows * shape.reduce((a, b) => a * b, 1)) {
      throw new TrainerError('TAS_ERR_SHAPE', `input has ${data.length} values, expected ${rows} x [${shape.join(', ')}]`);
    }
    if (shape.length !== 3) return tf.tensor(data, [rows, ...shape]);
    if (rows === 0) return tf.zeros([0, ...this.internalInputShape]);
    return tf.tidy(() => tf.transpose(tf.tensor4d(data, [rows, shape[0], shape[1], shape[2]]), [0, 2, 3, 1]));
  }

  dispose(): void {
    this.net.dispose();
  }
}

function toChannelsLast(shape: number[]): number[] {
  if (shape.length === 3) return [shape[1], shape[2], shape[0]];
  if (shape.length === 1) return shape.slice();
  throw new TrainerError('TAS_ERR_INVALID_SPEC', 'model.input_shape: must be [features] or [channels, height, width]', 'model.input_shape');
}

function fail(field: string, msg: string): never {
  throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: ${msg}`, field);
}

function channelsOf(shape: readonly number[]): number {
  return shape[shape.length - 1];
}

function buildLayers(specs: LayerSpec[], prefix: string, inputShape: readonly number[], convention: 'pytorch' | 'keras', next: () => number, field: string): Layer[] {
  const layers: Layer[] = [];
  let shape = inputShape;
  specs.forEach((s, i) => {
    const f = `${field}[${i}]`;
    if (s.index !== undefined && s.index !== i) fail(`${f}.index`, `is ${s.index} but the layer is at position ${i}`);
    const layer = buildLayer(s, `${prefix}.${i}`, shape, convention, next, f);
    layers.push(layer);
    shape = layer.outputShape;
  });
  return layers;
}

function buildLayer(s: LayerSpec, path: string, shape: readonly number[], convention: 'pytorch' | 'keras', next: () => number, f: string): Layer {
  const image = shape.length === 3;
  const needImage = () => {
    if (!image) fail(`${f}.type`, `${s.type} needs an image input [C, H, W], got [${shape.join(', ')}]`);
  };
  const checkChannels = (given: number | undefined, name: string) => {
    if (given !== undefined && given !== channelsOf(shape)) fail(`${f}.${name}`, `is ${given} but the incoming tensor has ${channelsOf(shape)} channels`);
  };
  switch (s.type) {
    case 'linear': {
      if (shape.length !== 1) fail(`${f}.type`, `linear needs [features] input, got [${shape.join(', ')}]: add a flatten or global_avg_pool before it`);
      checkChannels(s.in, 'in');
      return new Linear(path, { inFeatures: shape[0], outFeatures: s.out, bias: s.bias ?? true }, next);
    }
    case 'conv2d': {
      needImage();
      checkChannels(s.in, 'in');
      const o = { inChannels: shape[2], outChannels: s.out, kernel: s.kernel, stride: s.stride ?? 1, padding: s.padding ?? 0, bias: s.bias ?? true };
      if (shape[0] + 2 * o.padding < o.kernel || shape[1] + 2 * o.padding < o.kernel) fail(`${f}.kernel`, `kernel ${o.kernel} is larger than the padded input ${shape[0]}x${shape[1]}`);
      return new Conv2d(path, shape, o, next);
    }
    case 'batchnorm': {
      checkChannels(s.channels, 'channels');
      const d = BN_DEFAULTS[convention];
      return new BatchNorm(path, shape, {
        channels: channelsOf(shape),
        eps: s.eps ?? d.eps,
        momentum: s.momentum === undefined ? d.momentum : s.momentum,
        affine: s.affine ?? true,
        trackRunningStats: s.track_running_stats ?? true,
        sync: s.sync ?? true,
        convention,
      });
    }
    case 'groupnorm': {
      checkChannels(s.channels, 'channels');
      if (channelsOf(shape) % s.groups !== 0) fail(`${f}.groups`, `${channelsOf(shape)} channels are not divisible into ${s.groups} groups`);
      return groupNorm(path, shape, s.groups, s.eps ?? 1e-5, s.affine ?? true);
    }
    case 'layernorm':
      return layerNorm(path, shape, s.eps ?? 1e-5, s.affine ?? true);
    case 'instancenorm':
      needImage();
      checkChannels(s.channels, 'channels');
      return instanceNorm(path, shape, s.eps ?? 1e-5, s.affine ?? false);
    case 'relu':
      return new Relu(path, shape);
    case 'gelu':
      return gelu(path, shape, s.approximate ?? 'none');
    case 'maxpool':
    case 'avgpool': {
      needImage();
      const o = { kernel: s.kernel, stride: s.stride ?? s.kernel, padding: s.padding ?? 0 };
      if (o.padding > o.kernel / 2) fail(`${f}.padding`, `must be at most half the kernel (PyTorch's rule), got ${o.padding}`);
      if (shape[0] + 2 * o.padding < o.kernel || shape[1] + 2 * o.padding < o.kernel) fail(`${f}.kernel`, `kernel ${o.kernel} is larger than the padded input ${shape[0]}x${shape[1]}`);
      return pool2d(s.type, path, shape, o);
    }
    case 'global_avg_pool':
      needImage();
      return globalAvgPool(path, shape);
    case 'flatten':
      return new Flatten(path, shape);
    case 'dropout':
      return new Dropout(path, shape, s.p ?? 0.5);
    case 'residual': {
      const body = buildLayers(s.body, `${path}.body`, shape, convention, next, `${f}.body`);
      const bodyOut = body[body.length - 1].outputShape;
      const shortcut = s.shortcut ? buildLayers(s.shortcut, `${path}.shortcut`, shape, convention, next, `${f}.shortcut`) : null;
      const shortOut = shortcut ? shortcut[shortcut.length - 1].outputShape : shape;
      if (bodyOut.join() !== shortOut.join()) {
        fail(`${f}.${shortcut ? 'shortcut' : 'body'}`, `body gives [${bodyOut.join(', ')}] but the shortcut gives [${shortOut.join(', ')}] (channels-last); add a projection shortcut`);
      }
      return new Residual(path, shape, bodyOut, new Sequential(body), shortcut ? new Sequential(shortcut) : null, s.activation ?? 'relu');
    }
  }
}
