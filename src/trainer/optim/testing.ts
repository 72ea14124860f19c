/**
 * Test helpers shared by the optimizer tests: parameters with a fixed nonlinear gradient,
 * and the two properties every optimizer must have (no tensor leak across steps; export
 * after k steps + import + the rest == the uninterrupted run, bit for bit).
 */
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import type { Param } from '../tensor-types.js';
import type { Optimizer } from './optimizer.js';

/** The gradient a test feeds, as a function of the parameter tensor. */
export type GradFn = (p: tf.Tensor) => tf.Tensor;

export function makeParam(name: string, values: number[], shape: number[]): Param {
  // Unnamed variable: tfjs variable names are global and tests reuse parameter names.
  return { name, value: tf.tidy(() => tf.variable(tf.tensor(values, shape, 'float32'), true)), grad: null };
}

export function setGrads(params: Param[], grad: GradFn): void {
  for (const p of params) {
    const g = tf.tidy(() => grad(p.value));
    p.grad?.dispose();
    p.grad = g;
  }
}

export function disposeParams(params: Param[]): void {
  for (const p of params) {
    p.grad?.dispose();
    p.value.dispose();
  }
}

/** After a warm-up step, further steps and an export/import round trip allocate no tensors. */
export function assertNoLeak(make: () => Optimizer, grad: GradFn): void {
  const params = [makeParam('w', [0.1, 0.2, 0.3], [3]), makeParam('b', [0.5], [1])];
  const opt = make();
  setGrads(params, grad);
  opt.step(params, 0.01);
  const baseline = tf.memory().numTensors;
  for (let i = 0; i < 5; i++) {
    setGrads(params, grad);
    opt.step(params, 0.01);
    assert.equal(tf.memory().numTensors, baseline);
  }
  opt.importState(opt.exportState());
  assert.equal(tf.memory().numTensors, baseline);
  opt.dispose();
  disposeParams(params);
}

/** 3 steps, export, a fresh optimizer imports, 2 more steps == 5 uninterrupted steps (bits and state). */
export function assertResumesBitForBit(make: () => Optimizer, grad: GradFn): void {
  const init = [0.4, -0.8, 1.1];
  const run = (opt: Optimizer, params: Param[], steps: number) => {
    for (let i = 0; i < steps; i++) {
      setGrads(params, grad);
      opt.step(params, 0.03);
    }
  };
  const run5 = [makeParam('w', init, [3])];
  const full = make();
  run(full, run5, 5);
  const resumed = [makeParam('w', init, [3])];
  const first = make();
  run(first, resumed, 3);
  const state = first.exportState();
  first.dispose();
  const second = make();
  second.importState(state);
  assert.equal(second.exportState().step, 3);
  run(second, resumed, 2);
  assert.deepEqual([...resumed[0].value.dataSync()], [...run5[0].value.dataSync()]);
  assert.deepEqual(second.exportState(), full.exportState());
  full.dispose();
  second.dispose();
  disposeParams([...run5, ...resumed]);
}
