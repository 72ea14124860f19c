/**
 * What reporting BN running statistics per step costs, on examples/quickstart.json
 * (2 in-process ranks, 2 SyncBN layers of 64 channels, 570 steps of which 500 report):
 *  - one report as the trainer takes it (`summariseBnBuffers(model.bnBuffers())`), with
 *    each read path of bnBuffers forced, against the same from `model.stateDict()` (a
 *    read per tensor, weights included);
 *  - the time spent reading BN buffers inside real runs (Model.prototype.bnBuffers
 *    wrapped with a timer), per reporting step and averaged over all steps;
 *  - whole runs with and without an `onStep` (only then does rank 0 take reports), as
 *    ms per step (best of BENCH_REPS, alternating so drift hits both alike). On a busy
 *    machine this difference is within noise; the in-run timing is the precise figure.
 * Prints JSON lines. `npx tsx bench/bn-stats.ts` (BENCH_REPS=3 runs each way).
 */
import { readFileSync } from 'node:fs';
import { initBackend } from '../src/trainer/backend.js';
import { InProcessGroup } from '../src/trainer/collective/in-process.js';
import { loadDataset } from '../src/trainer/data/load.js';
import { resolveTrainSpec } from '../src/trainer/engine/job-spec.js';
import { trainRank, type StepMetrics } from '../src/trainer/engine/train.js';
import { summariseBnBuffers } from '../src/trainer/math/bn-summary.js';
import { Model } from '../src/trainer/model/model.js';

const REPS = Number(process.env.BENCH_REPS ?? 3);
const backend = await initBackend(undefined, () => {});
const raw = JSON.parse(readFileSync(new URL('../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;
const spec = resolveTrainSpec(raw);
const dataset = await loadDataset(spec.data);

// In-run cost of the device reads: every bnBuffers() call is timed (the summary itself is pure and measured below).
let readMs = 0;
let reads = 0;
const original = Model.prototype.bnBuffers;
Model.prototype.bnBuffers = function (this: Model) {
  const t = performance.now();
  const out = original.call(this);
  readMs += performance.now() - t;
  reads++;
  return out;
};

/** One whole job; ms per step over the training loop and final passes, and how many steps reported. */
async function runOnce(report: boolean): Promise<{ msPerStep: number; steps: number; reported: number }> {
  const group = new InProcessGroup(spec.workers);
  let steps = 0;
  let reported = 0;
  const onStep = (m: StepMetrics) => {
    steps++;
    if (m.bnStats) reported++;
  };
  const t = performance.now();
  const results = await Promise.all(
    Array.from({ length: spec.workers }, (_, rank) => trainRank({ spec, dataset, collective: group.member(rank), ...(report && rank === 0 ? { onStep } : {}) })),
  );
  const ms = performance.now() - t;
  const total = results[0].globalSteps;
  results.forEach((r) => r.model.dispose());
  return { msPerStep: ms / total, steps: total, reported };
}

// Per report, on a trained model (a short run leaves live tensors where training leaves them).
const short = resolveTrainSpec({ ...raw, epochs: 1, workers: 1, recalibration: undefined });
const [{ model }] = await Promise.all([trainRank({ spec: short, dataset, collective: new InProcessGroup(1).member(0) })]);
const time = (fn: () => unknown, n = 2000): number => {
  for (let i = 0; i < 100; i++) fn();
  const t = performance.now();
  for (let i = 0; i < n; i++) fn();
  return ((performance.now() - t) / n) * 1000;
};
const viaBuffers = time(() => summariseBnBuffers(model.bnBuffers()));
const perBuffer = time(() => summariseBnBuffers(model.bnBuffers(false)));
const oneRead = time(() => summariseBnBuffers(model.bnBuffers(true)));
const viaStateDict = time(() => summariseBnBuffers(model.stateDict()));
const summariseOnly = ((state) => time(() => summariseBnBuffers(state), 20000))(model.bnBuffers());
model.dispose();
console.log(JSON.stringify({ bench: 'bn_stats_report', backend: backend.name, us_per_report: +viaBuffers.toFixed(1), us_per_buffer_reads: +perBuffer.toFixed(1), us_concat_one_read: +oneRead.toFixed(1), us_via_state_dict: +viaStateDict.toFixed(1), us_summarise_only: +summariseOnly.toFixed(2) }));

const off: number[] = [];
const on: number[] = [];
let reported = 0;
let steps = 0;
await runOnce(false); // warm-up (kernels, wasm)
for (let i = 0; i < REPS; i++) {
  for (const report of i % 2 ? [false, true] : [true, false]) {
    const r = await runOnce(report);
    (report ? on : off).push(r.msPerStep);
    if (report) [reported, steps] = [r.reported, r.steps];
  }
}
const median = (xs: number[]) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const [a, b] = [Math.min(...off), Math.min(...on)];
console.log(
  JSON.stringify({
    bench: 'bn_stats_run',
    backend: backend.name,
    steps,
    reported_steps: reported,
    ms_per_step_without: { best: +a.toFixed(3), median: +median(off).toFixed(3) },
    ms_per_step_with: { best: +b.toFixed(3), median: +median(on).toFixed(3) },
    difference_best_ms: +(b - a).toFixed(3),
    runs_each: REPS,
  }),
);
// Reads in the runs with reports: 500 per run, plus one bnFinal per rank per run (with or without onStep).
readMs = 0;
reads = 0;
const r = await runOnce(true);
const reportReads = r.reported;
const inRunUs = (readMs * 1000) / reads;
const perStepUs = ((inRunUs + summariseOnly) * reportReads) / r.steps;
console.log(JSON.stringify({ bench: 'bn_stats_in_run', backend: backend.name, us_per_read_in_run: +inRunUs.toFixed(1), us_per_report: +(inRunUs + summariseOnly).toFixed(1), overhead_us_per_step: +perStepUs.toFixed(1), overhead_pct_of_step: +((100 * perStepUs) / 1000 / a).toFixed(3) }));
