/**
 * A job's recorded steps as `GET /v1/jobs/:id/metrics` serves them (pure): the loss /
 * accuracy / throughput curve, the time split between compute, BN synchronisation
 * (forward and backward) and gradient all-reduce, and each BatchNorm layer's running
 * statistics over time, one series per layer, plus the final (post-recalibration)
 * statistics of the published model. Long runs are thinned to `maxPoints` per series
 * (the last step is always kept); the time split averages every step.
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
    samples_per_sec: number | null;
    time_ms: { compute: number | null; bn_forward_sync: number | null; bn_backward_sync: number | null; grad_sync: number | null };
  }>;
  /** Mean milliseconds per step, and the share of a step spent synchronising BN. */
  time_split: { compute_ms: number; bn_forward_sync_ms: number; bn_backward_sync_ms: number; grad_sync_ms: number; bn_sync_fraction: number } | null;
  bn_layers: Array<{ layer: string; channels: number; points: Array<{ step: number } & Omit<BnLayerStats, 'layer' | 'channels'>>; last: BnLayerStats | null; final: BnLayerStats | null }>;
}

/** Every `stride`-th index of `n`, always including the last, at most about `max`. */
export function thinIndices(n: number, max: number): number[] {
  if (n === 0) return [];
  const stride = Math.max(1, Math.ceil(n / Math.max(1, max)));
  const out: number[] = [];
  for (let i = 0; i < n; i += stride) out.push(i);
  if (out[out.length - 1] !== n - 1) out.push(n - 1);
  return out;
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

function bnList(v: unknown): BnLayerStats[] {
  return Array.isArray(v) ? v.map(normaliseBnStats).filter((x): x is BnLayerStats => x !== null) : [];
}

export function summariseMetrics(jobId: string, rows: readonly MetricRow[], bnFinal: unknown, maxPoints: number): JobMetricsView {
  // A restarted attempt repeats the steps after its checkpoint: the later record wins.
  const byStep = new Map<number, MetricRow>();
  for (const r of rows) byStep.set(r.step, r);
  const steps = [...byStep.values()].sort((a, b) => a.step - b.step);

  const points = thinIndices(steps.length, maxPoints).map((i) => {
    const r = steps[i]!;
    return {
      step: r.step,
      loss: r.loss,
      accuracy: r.accuracy,
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
    points: thinIndices(e.series.length, maxPoints).map((i) => ({ step: e.series[i]!.step, mean: e.series[i]!.stats.mean, var: e.series[i]!.stats.var })),
    last: e.series[e.series.length - 1]?.stats ?? null,
    final: finals.get(layer) ?? null,
  }));

  return { job_id: jobId, steps_recorded: steps.length, points, time_split: timeSplit, bn_layers: bnLayers };
}
