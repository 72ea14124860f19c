/**
 * One training benchmark in a process of its own (the backend is chosen once per
 * process): `child.ts MODEL STEPS [MEMORY_STEPS]` with TAS_BACKEND and TAS_COMPUTE_THREADS
 * in the environment. Trains the model on one random batch, as the PyTorch twin does,
 * and prints one JSON line: the backend, threads, median step time, peak RSS and, with
 * MEMORY_STEPS, the resident set after warm-up and after that many steps.
 */
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../../src/trainer/backend.js';
import { SoloCollective } from '../../src/trainer/collective/collective.js';
import { RankTrainer } from '../../src/trainer/engine/rank-trainer.js';
import { Rng } from '../../src/trainer/math/rng.js';
import { Model } from '../../src/trainer/model/model.js';
import { createOptimizer } from '../../src/trainer/optim/index.js';
import { MODELS } from './models.js';

const [modelName, stepsArg, memoryArg] = process.argv.slice(2);
const m = MODELS[modelName];
if (!m) throw new Error(`unknown model ${modelName}`);
const steps = Number(stepsArg ?? 20);
const memorySteps = Number(memoryArg ?? 0);

let backend;
try {
  backend = await initBackend(undefined, () => {});
} catch (e) {
  console.log(JSON.stringify({ unavailable: (e as Error).message }));
  process.exit(0);
}
const model = Model.build(m.spec, 0);
const trainer = new RankTrainer(model, createOptimizer({ type: 'sgd', lr: m.lr }), new SoloCollective(), 'cross_entropy');
const rng = new Rng(0);
const size = m.spec.input_shape.reduce((a, b) => a * b, 1);
const x = model.inputTensor(Float32Array.from({ length: m.batch * size }, () => rng.normal()), m.batch);
const labels = Int32Array.from({ length: m.batch }, () => rng.int(m.classes));
const step = (): Promise<unknown> => trainer.step(x, { labels }, m.batch, m.lr, undefined, rng);

for (let i = 0; i < 3; i++) await step();
const times: number[] = [];
for (let i = 0; i < steps; i++) {
  const t = performance.now();
  await step();
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
const mb = (bytes: number): number => +(bytes / 2 ** 20).toFixed(1);
let memory: Record<string, number> | undefined;
if (memorySteps > 0) {
  // Resident set once the step's working set exists, then after many more steps: flat
  // means nothing accumulates per step (tensors, pooled arrays, heap).
  const warm = process.memoryUsage().rss;
  for (let i = 0; i < memorySteps; i++) await step();
  const end = process.memoryUsage().rss;
  memory = { steps: memorySteps, rss_warm_mb: mb(warm), rss_end_mb: mb(end), rss_growth_mb: mb(end - warm), live_tensors: tf.memory().numTensors };
}
console.log(
  JSON.stringify({
    backend: backend.name,
    threads: backend.threads,
    step_ms: times[Math.floor(times.length / 2)],
    step_ms_min: times[0],
    peak_rss_mb: mb(process.resourceUsage().maxRSS * 1024),
    ...(memory ? { memory } : {}),
  }),
);
