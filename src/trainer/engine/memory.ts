/**
 * How much memory one rank of a job needs, from its spec alone (pure: no tensors are
 * made), so that a job too large for the workers is refused at submission naming the
 * layer, and a worker refuses it again before allocating anything: a job that outgrows a
 * worker's memory does not fail cleanly, it traps the WebAssembly engine (its memory
 * stops at 4 GiB) or gets the process killed, and may leave the worker corrupt.
 *
 * The estimate counts float32 values (4 bytes) and errs on the large side:
 * - per parameter: the weight, its gradient, its share of the gradient all-reduce's flat
 *   bucket, and the optimizer's slots (SGD with momentum 1, Adam 2, AMSGrad 3), plus the
 *   arrays of the previous update that the backend keeps for reuse (1 + slots);
 * - per layer, the activations a training step keeps for the backward pass, for the
 *   rank's own rows: the layer's output, plus what the layer caches (BatchNorm its
 *   centred input, dropout its mask, the functional norms and GELU their input);
 * - at the peak, the largest of: the backward pass's two live gradients of the widest
 *   layer (dy and dx), the eval and recalibration passes (forward only, up to 512 rows
 *   per rank, input and output of the widest layer), a checkpoint (a host copy of the
 *   weights and slots, and its encoding);
 * - the dataset's values, and a fixed runtime baseline (Node, tfjs, the backend).
 *
 * Measured (peak RSS of `tas train`, one rank, 2-core VM): an MLP 256-4096-4096-10 with
 * BN and Adam (17.9M parameters, batch 256): native 1.17 GiB, wasm 2.13 GiB, estimate
 * 1.2 / 2.2 GiB; a CNN of two 64-channel 3x3 convolutions on 32x32x3 with BN and SGD
 * momentum (batch 512): native 1.12 GiB, estimate 1.5 GiB; the quickstart: 257 MiB
 * (native) and 267 MiB (wasm), estimate 288 MiB. WebAssembly's heap never shrinks and
 * keeps every size it ever allocated, so on wasm the part above the baseline counts twice
 * (`BACKEND_FACTOR`).
 */
import type { ModelSpec, LayerSpec } from '../model/spec.js';
import type { OptimizerSpec } from '../optim/index.js';
import { TrainerError } from '../errors.js';
import type { ResolvedTrainSpec } from './job-spec.js';

/** What a worker process needs before any job: Node, tfjs, the backend's module. */
export const RUNTIME_BASELINE_BYTES = 288 * 2 ** 20;
/** Rows per rank of the eval pass (train.ts `evaluate`). */
export const EVAL_BATCH_ROWS = 512;
/** How much more than the estimate a backend's heap takes (measured: see above). */
export const BACKEND_FACTOR: Readonly<Record<string, number>> = { wasm: 2 };
const FLOAT = 4;

export interface LayerMemory {
  /** The spec field: `model.layers[3]`, `model.layers[2].body[0]`. */
  readonly field: string;
  readonly type: LayerSpec['type'];
  /** Trained parameters (BatchNorm's running statistics are not). */
  readonly parameters: number;
  /** Output elements per row (channels-last, as the trainer holds them). */
  readonly outputPerRow: number;
  /**
   * Bytes this layer accounts for: its parameters with gradients and slots, its kept
   * activations, and the step's peak where the layer causes it (`peak`).
   */
  readonly bytes: number;
  /** The part of the peak charged to this layer: the widest layer's for a backward or forward pass, the one with most parameters' for a checkpoint. */
  readonly peak?: { readonly what: 'backward' | 'forward' | 'checkpoint'; readonly rows: number; readonly bytes: number };
}

export interface MemoryEstimate {
  /** The peak, in bytes, of one rank. */
  readonly bytes: number;
  readonly parameters: number;
  /** Training rows of the rank. */
  readonly rows: number;
  /** Every layer (residual blocks' inner layers after the block). */
  readonly layers: readonly LayerMemory[];
  /** The layer with the most bytes; null for a model the estimate could not follow. */
  readonly largest: LayerMemory | null;
}

export interface MemoryInput {
  readonly model: ModelSpec;
  readonly optimizer: OptimizerSpec;
  /** Training rows of the rank (its share of the global batch). */
  readonly rows: number;
  /** Rows of the rank's forward-only passes (eval, recalibration). */
  readonly forwardRows: number;
  /** The dataset's values in memory, bytes. */
  readonly dataBytes: number;
  /** The worker's tensor backend (`BACKEND_FACTOR`); unknown: none. */
  readonly backend?: string | null;
}

/** Optimizer slots per parameter. */
export function optimizerSlots(o: OptimizerSpec): number {
  if (o.type === 'sgd') return (o.momentum ?? 0) > 0 ? 1 : 0;
  return o.amsgrad ? 3 : 2;
}

const product = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

interface Walk {
  readonly layers: LayerMemory[];
  /** BatchNorm running statistics, values. */
  buffers: number;
  /** Widest output per row. */
  widest: number;
  /** False when a layer did not fit its input (the worker's model builder reports it). */
  complete: boolean;
}

/**
 * Output shape of each layer, as the trainer's model builder computes it (channels-last),
 * without building anything; undefined where the spec does not fit (left to the builder).
 */
function walk(specs: readonly LayerSpec[], input: readonly number[], field: string, rows: number, perParam: number, w: Walk): readonly number[] | undefined {
  let shape = input;
  for (const [i, s] of specs.entries()) {
    const f = `${field}[${i}]`;
    const c = shape[shape.length - 1]!;
    let out: readonly number[] = shape;
    let parameters = 0;
    let kept = 1;
    switch (s.type) {
      case 'linear':
        if (shape.length !== 1) return undefined;
        parameters = c * s.out + (s.bias ?? true ? s.out : 0);
        out = [s.out];
        break;
      case 'conv2d':
      case 'maxpool':
      case 'avgpool': {
        if (shape.length !== 3) return undefined;
        const stride = s.stride ?? (s.type === 'conv2d' ? 1 : s.kernel);
        const padding = s.padding ?? 0;
        const h = Math.floor((shape[0]! + 2 * padding - s.kernel) / stride) + 1;
        const wd = Math.floor((shape[1]! + 2 * padding - s.kernel) / stride) + 1;
        if (!(h > 0 && wd > 0)) return undefined;
        if (s.type === 'conv2d') parameters = s.kernel * s.kernel * c * s.out + (s.bias ?? true ? s.out : 0);
        out = [h, wd, s.type === 'conv2d' ? s.out : c];
        break;
      }
      case 'batchnorm':
        parameters = s.affine ?? true ? 2 * c : 0;
        if (s.track_running_stats ?? true) w.buffers += 2 * c;
        kept = 2;
        break;
      case 'groupnorm':
      case 'instancenorm':
        parameters = s.affine ?? s.type === 'groupnorm' ? 2 * c : 0;
        kept = 2;
        break;
      case 'layernorm':
        parameters = s.affine ?? true ? 2 * product(shape) : 0;
        kept = 2;
        break;
      case 'gelu':
      case 'dropout':
        kept = 2;
        break;
      case 'global_avg_pool':
        if (shape.length !== 3) return undefined;
        out = [c];
        break;
      case 'flatten':
        out = [product(shape)];
        break;
      case 'relu':
        break;
      case 'residual': {
        const body = walk(s.body, shape, `${f}.body`, rows, perParam, w);
        const shortcut = s.shortcut ? walk(s.shortcut, shape, `${f}.shortcut`, rows, perParam, w) : shape;
        if (!body || !shortcut) return undefined;
        out = body;
        break;
      }
    }
    const outputPerRow = product(out);
    w.widest = Math.max(w.widest, outputPerRow);
    w.layers.push({ field: f, type: s.type, parameters, outputPerRow, bytes: (parameters * perParam + kept * outputPerRow * rows) * FLOAT });
    shape = out;
  }
  return shape;
}

/** One rank's peak memory for a model, optimizer and batch. */
export function estimateMemory(input: MemoryInput): MemoryEstimate {
  const slots = optimizerSlots(input.optimizer);
  // Weight, gradient, gradient bucket, slots; the previous update's arrays kept for reuse.
  const perParam = 3 + slots + (1 + slots);
  const w: Walk = { layers: [], buffers: 0, widest: product(input.model.input_shape), complete: true };
  const internal = input.model.input_shape.length === 3 ? [input.model.input_shape[1]!, input.model.input_shape[2]!, input.model.input_shape[0]!] : input.model.input_shape;
  w.complete = walk(input.model.layers, internal, 'model.layers', input.rows, perParam, w) !== undefined;
  const parameters = w.layers.reduce((a, l) => a + l.parameters, 0);
  const layerBytes = w.layers.reduce((a, l) => a + l.bytes, 0);
  const peaks = [
    { what: 'backward' as const, rows: input.rows, bytes: 2 * w.widest * input.rows * FLOAT }, // dy and dx of the widest layer
    { what: 'forward' as const, rows: input.forwardRows, bytes: 2 * w.widest * input.forwardRows * FLOAT }, // eval / recalibration: input and output of the widest layer
    { what: 'checkpoint' as const, rows: 0, bytes: 2 * (parameters * (1 + slots) + w.buffers) * FLOAT }, // a checkpoint's copy and its encoding
  ];
  const peak = peaks.reduce((a, p) => (p.bytes > a.bytes ? p : a));
  const factor = BACKEND_FACTOR[input.backend ?? ''] ?? 1;
  const bytes = RUNTIME_BASELINE_BYTES + Math.ceil(factor * (input.dataBytes + w.buffers * FLOAT + layerBytes + peak.bytes));
  // The peak is charged to the layer that causes it, so that the layer named is the one to change.
  const charged =
    peak.what === 'checkpoint'
      ? w.layers.reduce<LayerMemory | null>((a, l) => (a === null || l.parameters > a.parameters ? l : a), null)
      : (w.layers.find((l) => l.outputPerRow === w.widest) ?? w.layers[0] ?? null);
  const layers = w.layers.map((l) => (l === charged ? { ...l, bytes: l.bytes + peak.bytes, peak } : l));
  const largest = layers.reduce<LayerMemory | null>((a, l) => (a === null || l.bytes > a.bytes ? l : a), null);
  return { bytes, parameters, rows: input.rows, layers, largest };
}

/**
 * The estimate for rank `rank` of a resolved job (default: its largest share, which is
 * what every worker of the gang must hold). `samples`: the dataset's size when known
 * (the eval pass then takes at most its share); `dataBytes`: its values in memory.
 */
export function estimateJobMemory(spec: ResolvedTrainSpec, opts: { rank?: number; samples?: number; dataBytes?: number; backend?: string | null } = {}): MemoryEstimate {
  const rows = opts.rank !== undefined ? spec.localBatchSizes[opts.rank] ?? 0 : Math.max(...spec.localBatchSizes);
  const evalRows = opts.samples !== undefined ? Math.min(EVAL_BATCH_ROWS, Math.ceil(opts.samples / spec.workers)) : EVAL_BATCH_ROWS;
  const recalRows = spec.recalibration ? Math.ceil((spec.recalibration.batchSize * Math.max(...spec.localBatchSizes)) / spec.globalBatch) : 0;
  return estimateMemory({ model: spec.model, optimizer: spec.optimizer, rows, forwardRows: Math.max(evalRows, recalRows), dataBytes: opts.dataBytes ?? syntheticBytes(spec), backend: opts.backend ?? null });
}

/** A synthetic dataset's values (features and one label per sample); 0 for files (the caller knows their size). */
export function syntheticBytes(spec: Pick<ResolvedTrainSpec, 'data' | 'model'>): number {
  return spec.data.type === 'synthetic' ? spec.data.n * (product(spec.model.input_shape) + 1) * FLOAT : 0;
}

export function formatBytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  return `${Math.ceil(n / 2 ** 10)} KiB`;
}

/**
 * Throws TAS_ERR_OUT_OF_MEMORY naming the largest layer (`model.layers[i]`, the peak
 * charged to the layer that causes it) when the
 * estimate exceeds `limitBytes`; `where` ends the sentence "more than the 4.0 GiB ..." with
 * whose limit it is ("a cpu worker has", "this worker (cpu 0, wasm backend) has").
 */
export function checkMemoryFits(estimate: MemoryEstimate, limitBytes: number, where: string): void {
  if (estimate.bytes <= limitBytes) return;
  const l = estimate.largest;
  const field = l?.field ?? 'model.layers';
  const peak = !l?.peak
    ? ''
    : l.peak.what === 'forward'
      ? `, which the eval pass holds for ${l.peak.rows} rows at once`
      : l.peak.what === 'backward'
        ? ', whose gradients the backward pass holds too'
        : ', all copied when a checkpoint is written';
  const layer = l ? `; ${l.field} (${l.type}) alone ${formatBytes(l.bytes)}: ${l.parameters.toLocaleString('en-US')} parameters with their gradients and optimizer state, and ${l.outputPerRow.toLocaleString('en-US')} values per row kept for the backward pass${peak}` : '';
  throw new TrainerError(
    'TAS_ERR_OUT_OF_MEMORY',
    `${field}: the job needs about ${formatBytes(estimate.bytes)} per worker (${estimate.rows} rows per worker${layer}), more than the ${formatBytes(limitBytes)} ${where}; make the model smaller or lower batch_size`,
    field,
  );
}
