/**
 * Per-layer summaries of BatchNorm running statistics, for progress reports and plots.
 *
 * A BN layer's running_mean and running_var have one value per channel (64, 512, ...);
 * sending every channel of every layer at every step would dwarf the rest of a step
 * event, and a plot of "how the running statistics move" only needs their location and
 * spread. So each layer is reduced to a handful of numbers: the mean, min and max of the
 * running mean over channels (plus its L2 norm, which shows drift that cancels in the
 * mean), and the mean, min and max of the running variance.
 *
 * Pure: state in, numbers out. Layers are found by their buffer names only (a
 * `<prefix>.running_mean` with a `<prefix>.running_var` beside it), so the same function
 * summarises a live model's buffers, a checkpoint's state or an artifact's state, and the
 * results compare exactly.
 *
 * Numerics: the inputs are float32, every sum is accumulated in float64 with Neumaier's
 * compensation (a mean over thousands of channels keeps its last bits), and nothing is
 * computed as E[x²] - E[x]²: the only second moment is the L2 norm, a sum of squares
 * that has no cancellation. float32 values squared cannot overflow float64.
 */

/**
 * A tensor's values as the summary reads them: a HostTensor, a plain array, or a decoded
 * safetensors tensor (whose int64 `num_batches_tracked` is a BigInt64Array).
 */
export interface BnBufferLike {
  readonly data: ArrayLike<number> | ArrayLike<bigint>;
}

/** A state dict as the summary reads it (HostTensorMap and decoded safetensors fit). Iteration order is kept. */
export type BnStateLike = ReadonlyMap<string, BnBufferLike>;

/** Location and spread of the running mean over a layer's channels. */
export interface BnMeanSummary {
  /** Average over channels of running_mean. */
  mean: number;
  min: number;
  max: number;
  /** sqrt(Σ_c running_mean[c]²): grows with drift even when the channel means cancel. */
  l2: number;
}

/** Location and spread of the running variance over a layer's channels. */
export interface BnVarSummary {
  /** Average over channels of running_var. */
  mean: number;
  min: number;
  max: number;
}

/** One BN layer's running statistics, summarised (JSON-ready; NaN serialises as null). */
export interface BnLayerSummary {
  /** State-dict prefix of the layer: `layers.1`, `layers.3.body.0` (or `1` for a PyTorch Sequential's state). */
  layer: string;
  channels: number;
  mean: BnMeanSummary;
  var: BnVarSummary;
  /** Present when the state has `<layer>.num_batches_tracked`. */
  num_batches_tracked?: number;
}

const MEAN_SUFFIX = '.running_mean';

/**
 * Summaries of every BN layer of `state`, in state-dict order (the order of the
 * `running_mean` buffers). Layers without running statistics (track_running_stats false)
 * have no buffers and are absent; a model without BN gives [].
 * Throws when a layer's running_mean and running_var disagree on the channel count: a
 * corrupt state should not turn into a plausible plot.
 */
export function summariseBnBuffers(state: BnStateLike): BnLayerSummary[] {
  const out: BnLayerSummary[] = [];
  for (const [name, meanBuf] of state) {
    const layer = layerOf(name);
    if (layer === null) continue;
    const varBuf = state.get(bufferName(layer, 'running_var'));
    if (!varBuf) continue; // a running_mean alone is not a BN layer's pair
    const channels = meanBuf.data.length;
    if (varBuf.data.length !== channels) {
      throw new Error(`BN layer '${layer}': running_mean has ${channels} channels but running_var has ${varBuf.data.length}`);
    }
    const m = moments(meanBuf.data);
    const v = moments(varBuf.data);
    const s: BnLayerSummary = { layer, channels, mean: { mean: m.mean, min: m.min, max: m.max, l2: m.l2 }, var: { mean: v.mean, min: v.min, max: v.max } };
    const nbt = state.get(bufferName(layer, 'num_batches_tracked'));
    if (nbt && nbt.data.length > 0) s.num_batches_tracked = Number(nbt.data[0]);
    out.push(s);
  }
  return out;
}

/** `layers.1.running_mean` -> `layers.1`; a bare `running_mean` (one BN module's own state) -> ''; else null. */
function layerOf(name: string): string | null {
  if (name === 'running_mean') return '';
  return name.endsWith(MEAN_SUFFIX) ? name.slice(0, -MEAN_SUFFIX.length) : null;
}

function bufferName(layer: string, buffer: string): string {
  return layer === '' ? buffer : `${layer}.${buffer}`;
}

/** Mean, min, max and L2 norm of `xs` in float64 (compensated sums); NaN everywhere for no values. */
function moments(xs: ArrayLike<number> | ArrayLike<bigint>): { mean: number; min: number; max: number; l2: number } {
  const n = xs.length;
  if (n === 0) return { mean: Number.NaN, min: Number.NaN, max: Number.NaN, l2: Number.NaN };
  const sum = new CompensatedSum();
  const sumSq = new CompensatedSum();
  let min = Infinity;
  let max = -Infinity;
  let nan = false;
  for (let i = 0; i < n; i++) {
    const x = Number(xs[i]);
    if (Number.isNaN(x)) nan = true; // the comparisons below skip NaN
    if (x < min) min = x;
    if (x > max) max = x;
    sum.add(x);
    sumSq.add(x * x);
  }
  // A diverged layer must show as NaN, not as the min/max of its finite channels.
  if (nan) return { mean: Number.NaN, min: Number.NaN, max: Number.NaN, l2: Number.NaN };
  return { mean: sum.value() / n, min, max, l2: Math.sqrt(sumSq.value()) };
}

/** Neumaier's compensated (Kahan-Babuška) summation in float64. */
class CompensatedSum {
  private s = 0;
  private c = 0;
  add(x: number): void {
    const t = this.s + x;
    this.c += Math.abs(this.s) >= Math.abs(x) ? this.s - t + x : x - t + this.s;
    this.s = t;
  }
  value(): number {
    return this.s + this.c;
  }
}

/** At most this many step records of BN statistics per run (the plot's resolution). */
export const BN_STATS_MAX_POINTS = 500;

/**
 * Whether step `globalStep` (1-based, as reported after the step) records BN statistics.
 *
 * Runs of up to `maxPoints` steps record every step. Longer runs record on a stride of
 * totalSteps/maxPoints (fractional: exactly `maxPoints` points, evenly spread, where an
 * integer stride ceil(T/maxPoints) would give as few as half of them): step s records when
 * floor(s·maxPoints/T) moves past floor((s-1)·maxPoints/T). The last step always records
 * (floor(maxPoints) > floor(maxPoints - maxPoints/T)). A function of (step, total) only,
 * so a resumed run records the same steps as an uninterrupted one.
 */
export function recordsBnStatsAt(globalStep: number, totalSteps: number, maxPoints = BN_STATS_MAX_POINTS): boolean {
  if (!Number.isInteger(globalStep) || !Number.isInteger(totalSteps) || !Number.isInteger(maxPoints) || maxPoints < 1) {
    throw new RangeError(`recordsBnStatsAt: integer steps and maxPoints >= 1 expected, got (${globalStep}, ${totalSteps}, ${maxPoints})`);
  }
  if (globalStep < 1 || globalStep > totalSteps) return false;
  if (totalSteps <= maxPoints) return true;
  // Exact in doubles: globalStep·maxPoints stays far below 2^53 for any real run.
  return Math.floor((globalStep * maxPoints) / totalSteps) > Math.floor(((globalStep - 1) * maxPoints) / totalSteps);
}
