/**
 * A job's recorded steps as `GET /v1/jobs/:id/metrics` serves them (pure): the loss /
 * accuracy / throughput curve, the time split between compute, BN synchronisation
 * (forward and backward) and gradient all-reduce, and each BatchNorm layer's running
 * statistics over time, one series per layer, plus the final (post-recalibration)
 * statistics of the published model. Long runs are downsampled to at most `maxPoints`
 * per series by windows that keep each series' minimum and maximum (a loss spike or a
 * throughput dip survives any `maxPoints`), always with the first and last step; the
 * time split averages every step.
 */

/** One BN layer's running statistics, summarised over its channels. */
export interface BnLayerStats {
  layer: string;
  channels: number;
  mean: { mean: number; min: number; max: number; l2: number };
  var: { mean: number; min: number; max: number };
}

export interface MetricRow {
  step: number;
  loss: number | null;
  accuracy: number | null;
  /** The learning rate of the step (absent in rows recorded before it was stored). */
  lr?: number | null;
  samplesPerSec: number | null;
  computeMs: number | null;
  bnFwdMs: number | null;
  bnBwdMs: number | null;
  gradMs: number | null;
  bnStats: unknown;
}

export interface JobMetricsView {
  job_id: string;
  steps_recorded: number;
  points: Array<{
    step: number;
    loss: number | null;
    accuracy: number | null;
    lr: number | null;
    samples_per_sec: number | null;
    time_ms: { compute: number | null; bn_forward_sync: number | null; bn_backward_sync: number | null; grad_sync: number | null };
  }>;
  /** Mean milliseconds per step, and the share of a step spent synchronising BN. */
  time_split: { compute_ms: number; bn_forward_sync_ms: number; bn_backward_sync_ms: number; grad_sync_ms: number; bn_sync_fraction: number } | null;
  bn_layers: Array<{ layer: string; channels: number; points: Array<{ step: number } & Omit<BnLayerStats, 'layer' | 'channels'>>; last: BnLayerStats | null; final: BnLayerStats | null }>;
  /** How the published model's BN statistics were obtained after training (`final`), when it was recalibrated. */
  recalibration: { mode: string; after_step: number | null } | null;
}

/**
 * Indices of `n` rows to plot at most `maxPoints` of them without losing extremes: the
 * rows are cut into equal windows of consecutive indices and each window keeps, for every
 * series, the row holding its minimum and the row holding its maximum (nulls and NaN
 * ignored), plus the first and last row. Rows picked by several series count once, so
 * the number of windows is the largest that keeps the union within `maxPoints`. Sorted
 * ascending; every index when `n <= maxPoints`; the first and last only when `maxPoints`
 * is too small for one window (2 + 2 per series).
 */
export function downsampleIndices(n: number, series: ReadonlyArray<(i: number) => number | null>, maxPoints: number): number[] {
  if (n <= 0) return [];
  const max = Math.max(2, Math.floor(maxPoints));
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  // Each series read once into a column (null as NaN): the search below scans them often.
  const columns = series.map((value) => Float64Array.from({ length: n }, (_, i) => value(i) ?? NaN));
  const pick = (windows: number): number[] => {
    const picked = new Set<number>([0, n - 1]);
    for (let w = 0; w < windows; w++) {
      const from = Math.floor((w * n) / windows);
      const to = Math.floor(((w + 1) * n) / windows);
      for (const column of columns) {
        let lo = -1;
        let hi = -1;
        let loV = Infinity;
        let hiV = -Infinity;
        for (let i = from; i < to; i++) {
          const v = column[i]!;
          if (Number.isNaN(v)) continue;
          if (v < loV) (loV = v), (lo = i);
          if (v > hiV) (hiV = v), (hi = i);
        }
        if (lo >= 0) picked.add(lo).add(hi);
      }
      // With no series to follow, one row per window: evenly spaced.
      if (columns.length === 0) picked.add(from);
    }
    return [...picked].sort((a, b) => a - b);
  };
  // Each window adds at most 2 rows per series (1 with none), so `lo` windows always fit;
  // binary search for the most windows whose union still fits (overlaps make room).
  let lo = Math.max(1, Math.floor((max - 2) / Math.max(1, 2 * series.length)));
  let best = pick(lo);
  // Too few points for one window of every series' extremes: the ends only.
  if (best.length > max) return [0, n - 1];
  let hi = Math.max(lo, Math.min(n, max - 2));
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    const p = pick(mid);
    if (p.length <= max) (lo = mid), (best = p);
    else hi = mid - 1;
  }
  return best;
}

/**
 * A BN summary in either wire form: nested as the trainer writes it
 * (`{layer, channels, mean: {...}, var: {...}}`) or flat as proto/worker.proto's
 * BnLayerStats carries it (`mean_mean`, `var_min`, ...). Null when it is neither.
 */
export function normaliseBnStats(v: unknown): BnLayerStats | null {
  if (typeof v !== 'object' || v === null) return null;
  const fields = v as Record<string, unknown>;
  const num = (x: unknown) => (typeof x === 'number' ? x : Number(x));
  if (typeof fields.layer !== 'string') return null;
  if (typeof fields.mean === 'object' && fields.mean !== null && typeof fields.var === 'object' && fields.var !== null) {
    const m = fields.mean as Record<string, unknown>;
    const s = fields.var as Record<string, unknown>;
    return { layer: fields.layer, channels: num(fields.channels), mean: { mean: num(m.mean), min: num(m.min), max: num(m.max), l2: num(m.l2) }, var: { mean: num(s.mean), min: num(s.min), max: num(s.max) } };
  }
  if ('mean_mean' in fields) {
    return {
      layer: fields.layer,
      channels: num(fields.channels),
      mean: { mean: num(fields.mean_mean), min: num(fields.mean_min), max: num(fields.mean_max), l2: num(fields.mean_l2) },
      var: { mean: num(fields.var_mean), min: num(fields.var_min), max: num(fields.var_max) },
    };
  }
  return null;
}

/** The BN summaries whose extremes downsampling keeps: the channel mean, min and max of running mean and variance. */
const BN_SERIES: ReadonlyArray<(s: BnLayerStats) => number> = [(s) => s.mean.mean, (s) => s.mean.min, (s) => s.mean.max, (s) => s.var.mean, (s) => s.var.min, (s) => s.var.max];

function bnList(v: unknown): BnLayerStats[] {
  return Array.isArray(v) ? v.map(normaliseBnStats).filter((x): x is BnLayerStats => x !== null) : [];
}

/** What the published model's metadata says of recalibration (null: none, or no model yet). */
function recalibrationOf(record: unknown, lastStep: number | null): JobMetricsView['recalibration'] {
  if (typeof record !== 'object' || record === null) return null;
  const mode = (record as { mode?: unknown }).mode;
  return typeof mode === 'string' ? { mode, after_step: lastStep } : null;
}

export function summariseMetrics(jobId: string, rows: readonly MetricRow[], bnFinal: unknown, maxPoints: number, recalibration: unknown = null): JobMetricsView {
  // A restarted attempt repeats the steps after its checkpoint: the later record wins.
  const byStep = new Map<number, MetricRow>();
  for (const r of rows) byStep.set(r.step, r);
  const steps = [...byStep.values()].sort((a, b) => a.step - b.step);

  const stepTime = (r: MetricRow) => (r.computeMs === null ? null : r.computeMs + (r.bnFwdMs ?? 0) + (r.bnBwdMs ?? 0) + (r.gradMs ?? 0));
  const rowSeries: Array<(r: MetricRow) => number | null> = [(r) => r.loss, (r) => r.accuracy, (r) => r.lr ?? null, (r) => r.samplesPerSec, stepTime, (r) => r.computeMs, (r) => r.bnFwdMs, (r) => r.bnBwdMs, (r) => r.gradMs];
  const pointIndices = downsampleIndices(
    steps.length,
    rowSeries.map((f) => (i: number) => f(steps[i]!)),
    maxPoints,
  );
  const points = pointIndices.map((i) => {
    const r = steps[i]!;
    return {
      step: r.step,
      loss: r.loss,
      accuracy: r.accuracy,
      lr: r.lr ?? null,
      samples_per_sec: r.samplesPerSec,
      time_ms: { compute: r.computeMs, bn_forward_sync: r.bnFwdMs, bn_backward_sync: r.bnBwdMs, grad_sync: r.gradMs },
    };
  });

  let timeSplit: JobMetricsView['time_split'] = null;
  const timed = steps.filter((r) => r.computeMs !== null);
  if (timed.length > 0) {
    const mean = (f: (r: MetricRow) => number | null) => timed.reduce((a, r) => a + (f(r) ?? 0), 0) / timed.length;
    const c = mean((r) => r.computeMs);
    const bf = mean((r) => r.bnFwdMs);
    const bb = mean((r) => r.bnBwdMs);
    const g = mean((r) => r.gradMs);
    const total = c + bf + bb + g;
    timeSplit = { compute_ms: c, bn_forward_sync_ms: bf, bn_backward_sync_ms: bb, grad_sync_ms: g, bn_sync_fraction: total > 0 ? (bf + bb) / total : 0 };
  }

  const layers = new Map<string, { channels: number; series: Array<{ step: number; stats: BnLayerStats }> }>();
  for (const r of steps) {
    for (const s of bnList(r.bnStats)) {
      const entry = layers.get(s.layer) ?? { channels: s.channels, series: [] };
      entry.series.push({ step: r.step, stats: s });
      layers.set(s.layer, entry);
    }
  }
  const finals = new Map(bnList(bnFinal).map((s) => [s.layer, s]));
  for (const [layer, s] of finals) if (!layers.has(layer)) layers.set(layer, { channels: s.channels, series: [] });
  const bnLayers = [...layers.entries()].map(([layer, e]) => ({
    layer,
    channels: e.channels,
    points: downsampleIndices(e.series.length, BN_SERIES.map((f) => (i: number) => f(e.series[i]!.stats)), maxPoints).map((i) => ({ step: e.series[i]!.step, mean: e.series[i]!.stats.mean, var: e.series[i]!.stats.var })),
    last: e.series[e.series.length - 1]?.stats ?? null,
    final: finals.get(layer) ?? null,
  }));

  const lastStep = steps.length > 0 ? steps[steps.length - 1]!.step : null;
  return { job_id: jobId, steps_recorded: steps.length, points, time_split: timeSplit, bn_layers: bnLayers, recalibration: recalibrationOf(recalibration, lastStep) };
}
