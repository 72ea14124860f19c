/**
 * The two training benchmarks, as their PyTorch twins in bench/peers/ define them: the
 * model spec, batch, optimizer and FLOPs per step (training = 3x the forward FLOPs).
 */
import type { ModelSpec } from '../../src/trainer/model/spec.js';

export interface BenchModel {
  name: 'mlp' | 'cnn';
  spec: ModelSpec;
  batch: number;
  classes: number;
  lr: number;
  /** Multiply-adds of one sample's forward pass. */
  forwardMacs: number;
  /** The PyTorch twin (bench/peers/). */
  peer: string;
}

export const MLP: BenchModel = {
  name: 'mlp',
  spec: {
    input_shape: [784],
    layers: [
      { type: 'linear', out: 512, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'linear', out: 512, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'linear', out: 10 },
    ],
  } as ModelSpec,
  batch: 256,
  classes: 10,
  lr: 0.01,
  forwardMacs: 784 * 512 + 512 * 512 + 512 * 10,
  peer: 'torch_mlp.py',
};

export const CNN: BenchModel = {
  name: 'cnn',
  spec: {
    input_shape: [3, 32, 32],
    layers: [
      { type: 'conv2d', out: 32, kernel: 3, padding: 1, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'conv2d', out: 64, kernel: 3, stride: 2, padding: 1, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'conv2d', out: 128, kernel: 3, stride: 2, padding: 1, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'global_avg_pool' },
      { type: 'linear', out: 10 },
    ],
  } as ModelSpec,
  batch: 64,
  classes: 10,
  lr: 0.01,
  forwardMacs: 32 * 32 * 32 * 27 + 16 * 16 * 64 * 288 + 8 * 8 * 128 * 576 + 128 * 10,
  peer: 'torch_cnn.py',
};

export const MODELS: Record<string, BenchModel> = { mlp: MLP, cnn: CNN };

export function flopsPerStep(m: BenchModel): number {
  return 3 * 2 * m.forwardMacs * m.batch;
}
