/**
 * Stochastic gradient descent with exactly the semantics of PyTorch `torch.optim.SGD`
 * (single-tensor path, `maximize=False`):
 *
 *   d_p = grad + weight_decay * param
 *   if momentum != 0:
 *     buf = clone(d_p)                                   (first step of this parameter)
 *     buf = momentum * buf + (1 - dampening) * d_p       (later steps)
 *     d_p = nesterov ? d_p + momentum * buf : buf
 *   param = param - lr * d_p
 *
 * Parameters whose `grad` is null are skipped (their buffers are left untouched), as in
 * PyTorch. Weight decay applies to every parameter passed to `step`.
 *
 * State: one slot per parameter, `<name>.momentum_buffer` (only when momentum != 0),
 * plus the number of `step` calls.
 */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';
import { FUSED } from '../kernels/fused.js';
import { fused, runFused } from '../kernels/kernels.js';
import type { HostTensorMap, Param } from '../tensor-types.js';
import type { Optimizer } from './optimizer.js';

export interface SgdOptions {
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

const BUFFER_SLOT = 'momentum_buffer';

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function checkFinite(value: number, field: string, min: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field} must be a finite number >= ${min}, got ${String(value)}`, field);
  }
}

export class Sgd implements Optimizer {
  readonly kind = 'sgd' as const;
  readonly momentum: number;
  readonly dampening: number;
  readonly weightDecay: number;
  readonly nesterov: boolean;

  private steps = 0;
  private readonly buffers = new Map<string, tf.Tensor>();

  constructor(options: SgdOptions = {}) {
    const { momentum = 0, dampening = 0, weightDecay = 0, nesterov = false } = options;
    checkFinite(momentum, 'optimizer.momentum', 0);
    if (typeof dampening !== 'number' || !Number.isFinite(dampening)) {
      throw new TrainerError('TAS_ERR_INVALID_SPEC', `optimizer.dampening must be a finite number, got ${String(dampening)}`, 'optimizer.dampening');
    }
    checkFinite(weightDecay, 'optimizer.weight_decay', 0);
    if (typeof nesterov !== 'boolean') {
      throw new TrainerError('TAS_ERR_INVALID_SPEC', 'optimizer.nesterov must be a boolean', 'optimizer.nesterov');
    }
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new TrainerError(
        'TAS_ERR_INVALID_SPEC',
        'Nesterov momentum requires a momentum > 0 and zero dampening',
        momentum <= 0 ? 'optimizer.momentum' : 'optimizer.dampening',
      );
    }
    this.momentum = momentum;
    this.dampening = dampening;
    this.weightDecay = weightDecay;
    this.nesterov = nesterov;
  }

  step(params: readonly Param[], lr: number): void {
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) {
      throw new TrainerError('TAS_ERR_INVALID_SPEC', `learning rate must be a finite number >= 0, got ${String(lr)}`, 'optimizer.lr');
    }
    // Validate everything before touching any tensor, so a failed step changes nothing.
    for (const p of params) {
      if (p.grad === null) continue;
      if (!sameShape(p.grad.shape, p.value.shape)) {
        throw new TrainerError('TAS_ERR_SHAPE', `gradient of ${p.name} has shape [${p.grad.shape}], parameter has [${p.value.shape}]`);
      }
      const buf = this.buffers.get(p.name);
      if (buf !== undefined && !sameShape(buf.shape, p.value.shape)) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `momentum buffer of ${p.name} has shape [${buf.shape}], parameter has [${p.value.shape}]`);
      }
    }
    for (const p of params) {
      const grad = p.grad;
      if (grad === null) continue;
      const old = this.buffers.get(p.name);
      const next = fused(FUSED.sgdUpdate) ? this.fusedUpdate(p, grad, old, lr) : this.composedUpdate(p, grad, old, lr);
      if (next !== undefined) {
        old?.dispose();
        this.buffers.set(p.name, next);
      }
    }
    this.steps++;
  }

  /** One parameter's update from tfjs ops; returns the new momentum buffer (none without momentum). */
  private composedUpdate(p: Param, grad: tf.Tensor, old: tf.Tensor | undefined, lr: number): tf.Tensor | undefined {
    const { momentum, dampening, weightDecay, nesterov } = this;
    return tf.tidy(() => {
      let dp: tf.Tensor = weightDecay !== 0 ? tf.add(grad, tf.mul(p.value, weightDecay)) : grad;
      let buf: tf.Tensor | undefined;
      if (momentum !== 0) {
        buf = old === undefined ? tf.clone(dp) : tf.add(tf.mul(old, momentum), tf.mul(dp, 1 - dampening));
        dp = nesterov ? tf.add(dp, tf.mul(buf, momentum)) : buf;
      }
      p.value.assign(tf.sub(p.value, tf.mul(dp, lr)));
      return buf;
    });
  }

  /** The same update in one kernel of the backend's, with the same roundings (kernels/fused.ts). */
  private fusedUpdate(p: Param, grad: tf.Tensor, old: tf.Tensor | undefined, lr: number): tf.Tensor | undefined {
    const attrs = { lr, momentum: this.momentum, oneMinusDampening: 1 - this.dampening, weightDecay: this.weightDecay, nesterov: this.nesterov };
    const [param, buf] = runFused<tf.Tensor[]>(FUSED.sgdUpdate, { param: p.value, grad, buf: old ?? null }, attrs);
    p.value.assign(param);
    param.dispose();
    return buf;
  }

  exportState(): { step: number; slots: HostTensorMap } {
    const slots: HostTensorMap = new Map();
    for (const [name, buf] of this.buffers) {
      slots.set(`${name}.${BUFFER_SLOT}`, { shape: buf.shape.slice(), data: new Float32Array(buf.dataSync() as Float32Array) });
    }
    return { step: this.steps, slots };
  }

  importState(state: { step: number; slots: HostTensorMap }): void {
    if (!Number.isInteger(state.step) || state.step < 0) {
      throw new TrainerError('TAS_ERR_CHECKPOINT', `optimizer step counter must be a non-negative integer, got ${String(state.step)}`);
    }
    const parsed = new Map<string, { shape: number[]; data: Float32Array }>();
    const suffix = `.${BUFFER_SLOT}`;
    for (const [key, host] of state.slots) {
      if (!key.endsWith(suffix) || key.length === suffix.length) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `unexpected SGD optimizer slot '${key}' (expected '<param>.${BUFFER_SLOT}')`);
      }
      if (this.momentum === 0) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `SGD state has momentum buffers ('${key}') but momentum is 0`);
      }
      const size = host.shape.reduce((a, b) => a * b, 1);
      if (!host.shape.every((d) => Number.isInteger(d) && d >= 0) || size !== host.data.length) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `optimizer slot '${key}' has shape [${host.shape}] but ${host.data.length} values`);
      }
      parsed.set(key.slice(0, -suffix.length), host);
    }
    this.disposeBuffers();
    for (const [name, host] of parsed) {
      // Copy: the backend may keep a reference to the array it is given.
      this.buffers.set(name, tf.keep(tf.tensor(new Float32Array(host.data), host.shape.slice(), 'float32')));
    }
    this.steps = state.step;
  }

  dispose(): void {
    this.disposeBuffers();
  }

  private disposeBuffers(): void {
    for (const buf of this.buffers.values()) buf.dispose();
    this.buffers.clear();
  }
}
