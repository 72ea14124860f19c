/**
 * bench:train — the MLP of shared/bench/torch_mlp.py (784-512-512-10, BatchNorm1d,
 * batch 256, SGD lr 0.01) on the selected tensor backend. Prints JSON lines:
 * the backend's own plain matMul rate, our training step, and PyTorch's samples/s from
 * the peer script in the same run when /usr/bin/python3 has torch.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../src/trainer/backend.js';
import { SoloCollective } from '../src/trainer/collective/collective.js';
import { RankTrainer } from '../src/trainer/engine/rank-trainer.js';
import { Rng } from '../src/trainer/math/rng.js';
import { Model } from '../src/trainer/model/model.js';
import { createOptimizer } from '../src/trainer/optim/index.js';

const B = 256, D = 784, H = 512, C = 10;
const STEPS = Number(process.env.BENCH_STEPS ?? 20);
const FLOPS_PER_STEP = 3 * 2 * B * (D * H + H * H + H * C);

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const backend = await initBackend(undefined, () => {});

// The backend's own plain matMul rate on the step's largest product (256x784 · 784x512).
const a = tf.randomNormal([B, D]) as tf.Tensor2D;
const w = tf.randomNormal([D, H]) as tf.Tensor2D;
const mmTimes: number[] = [];
for (let i = 0; i < 23; i++) {
  const t = performance.now();
  const r = tf.matMul(a, w);
  r.dataSync();
  r.dispose();
  if (i >= 3) mmTimes.push(performance.now() - t);
}
a.dispose();
w.dispose();
const matmulGflops = (2 * B * D * H) / median(mmTimes) / 1e6;

const model = Model.build({
  input_shape: [D],
  layers: [
    { type: 'linear', out: H, bias: false },
    { type: 'batchnorm' },
    { type: 'relu' },
    { type: 'linear', out: H, bias: false },
    { type: 'batchnorm' },
    { type: 'relu' },
    { type: 'linear', out: C },
  ],
}, 0);
const trainer = new RankTrainer(model, createOptimizer({ type: 'sgd', lr: 0.01 }), new SoloCollective(), 'cross_entropy');
const rng = new Rng(0);
const xData = Float32Array.from({ length: B * D }, () => rng.normal());
const labels = Int32Array.from({ length: B }, () => rng.int(C));
const x = model.inputTensor(xData, B);
const stepTimes: number[] = [];
for (let i = 0; i < 3 + STEPS; i++) {
  const t = performance.now();
  await trainer.step(x, { labels }, B, 0.01, undefined, rng);
  if (i >= 3) stepTimes.push(performance.now() - t);
}
x.dispose();
const leaked = tf.memory().numTensors;
const stepMs = median(stepTimes);
const ours = {
  bench: 'train_mlp',
  backend: backend.name,
  package: backend.package,
  batch: B,
  step_ms: +stepMs.toFixed(2),
  samples_per_s: +((B / stepMs) * 1000).toFixed(1),
  gflops: +(FLOPS_PER_STEP / stepMs / 1e6).toFixed(2),
  matmul_gflops: +matmulGflops.toFixed(2),
  fraction_of_matmul: +(FLOPS_PER_STEP / stepMs / 1e6 / matmulGflops).toFixed(3),
  live_tensors: leaked,
};
console.log(JSON.stringify(ours));

const peerScript = join(import.meta.dirname, '../../shared/bench/torch_mlp.py');
const python = '/usr/bin/python3';
let peer: { samples_per_s: number } | null = null;
if (existsSync(python) && existsSync(peerScript)) {
  try {
    execFileSync(python, ['-c', 'import torch'], { stdio: 'ignore' });
    const out = execFileSync(python, [peerScript, String(STEPS)], { encoding: 'utf8' }).trim().split('\n').pop()!;
    peer = JSON.parse(out) as { samples_per_s: number };
    console.log(JSON.stringify({ bench: 'train_mlp', ...peer }));
  } catch (e) {
    console.log(JSON.stringify({ bench: 'train_mlp', peer: 'pytorch-cpu', skipped: `torch not usable: ${(e as Error).message.split('\n')[0]}` }));
  }
} else {
  console.log(JSON.stringify({ bench: 'train_mlp', peer: 'pytorch-cpu', skipped: 'no /usr/bin/python3 or peer script' }));
}
if (peer) console.log(JSON.stringify({ bench: 'train_mlp', ratio_to_pytorch: +(ours.samples_per_s / peer.samples_per_s).toFixed(4), target: 0.06 }));
model.dispose();
