/**
 * Adam and AdamW with exactly the semantics of PyTorch `torch.optim.Adam` /
 * `torch.optim.AdamW` (single-tensor path, `maximize=False`). Per parameter, with its own
 * step counter t (incremented only on steps where the parameter has a gradient):
 *
 *   t += 1
 *   Adam:  g = grad + weight_decay * param                (L2 penalty in the gradient)
 *   AdamW: param = param * (1 - lr * weight_decay)        (decoupled decay), g = grad
 *   m = lerp(m, g, 1 - beta1) = beta1 * m + (1 - beta1) * g  (exp_avg.lerp_, same formula)
 *   v = beta2 * v + (1 - beta2) * g * g
 *   step_size = lr / (1 - beta1^t)
 *   amsgrad: vmax = max(vmax, v), and vmax replaces v below
 *   denom = sqrt(v) / sqrt(1 - beta2^t) + eps
 *   param = param - step_size * (m / denom)
 *
 * Bias corrections are computed in double precision, as PyTorch does with `step.item()`.
 *
 * State slots per parameter: `<name>.exp_avg`, `<name>.exp_avg_sq`,
 * `<name>.max_exp_avg_sq` (amsgrad only) and `<name>.step` (shape [], the parameter's
 * own step count, as in PyTorch's state_dict), plus the number of `step` calls.
 */
import * as tf from '@tensorflow/tfjs-core';
import { TrainerError } from '../errors.js';
import { FUSED } from '../kernels/fused.js';
import { fused, runFused } from '../kernels/kernels.js';
import type { HostTensor, HostTensorMap, Param } from '../tensor-types.js';
import type { Optimizer } from './optimizer.js';

export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Default 0 for Adam, 0.01 for AdamW (PyTorch defaults). */
  weightDecay?: number;
  /** true: AdamW (decoupled weight decay); false: Adam (L2 added to the gradient). */
  decoupled?: boolean;
  amsgrad?: boolean;
}

interface AdamSlot {
  step: number;
  expAvg: tf.Tensor;
  expAvgSq: tf.Tensor;
  maxExpAvgSq: tf.Tensor | null;
}

/** The scalars of one parameter's step: learning rate and its bias corrections. */
interface StepScalars {
  lr: number;
  stepSize: number;
  biasCorrection2Sqrt: number;
}

const SLOT_NAMES = ['exp_avg', 'exp_avg_sq', 'max_exp_avg_sq', 'step'] as const;
type SlotName = (typeof SLOT_NAMES)[number];

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function invalid(field: string, message: string): TrainerError {
  return new TrainerError('TAS_ERR_INVALID_SPEC', message, field);
}

function toHost(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: new Float32Array(t.dataSync() as Float32Array) };
}

export class Adam implements Optimizer {
  readonly kind: 'adam' | 'adamw';
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly decoupled: boolean;
  readonly amsgrad: boolean;

  private steps = 0;
  private readonly state = new Map<string, AdamSlot>();

  constructor(options: AdamOptions = {}) {
    const decoupled = options.decoupled ?? false;
    const { beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay = decoupled ? 0.01 : 0, amsgrad = false } = options;
    if (typeof decoupled !== 'boolean') throw invalid('optimizer.type', 'decoupled must be a boolean');
    if (typeof beta1 !== 'number' || !(beta1 >= 0 && beta1 < 1)) {
      throw invalid('optimizer.betas', `Invalid beta parameter at index 0: ${String(beta1)} (must be in [0, 1))`);
    }
    if (typeof beta2 !== 'number' || !(beta2 >= 0 && beta2 < 1)) {
      throw invalid('optimizer.betas', `Invalid beta parameter at index 1: ${String(beta2)} (must be in [0, 1))`);
    }
    if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0) {
      throw invalid('optimizer.eps', `Invalid epsilon value: ${String(eps)} (must be a finite number >= 0)`);
    }
    if (typeof weightDecay !== 'number' || !Number.isFinite(weightDecay) || weightDecay < 0) {
      throw invalid('optimizer.weight_decay', `Invalid weight_decay value: ${String(weightDecay)} (must be a finite number >= 0)`);
    }
    if (typeof amsgrad !== 'boolean') throw invalid('optimizer.amsgrad', 'amsgrad must be a boolean');
    this.kind = decoupled ? 'adamw' : 'adam';
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    this.weightDecay = weightDecay;
    this.decoupled = decoupled;
    this.amsgrad = amsgrad;
  }

  step(params: readonly Param[], lr: number): void {
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) {
      throw invalid('optimizer.lr', `learning rate must be a finite number >= 0, got ${String(lr)}`);
    }
    // Validate everything before touching any tensor, so a failed step changes nothing.
    for (const p of params) {
      if (p.grad === null) continue;
      if (!sameShape(p.grad.shape, p.value.shape)) {
        throw new TrainerError('TAS_ERR_SHAPE', `gradient of ${p.name} has shape [${p.grad.shape}], parameter has [${p.value.shape}]`);
      }
      const s = this.state.get(p.name);
      if (s !== undefined && !sameShape(s.expAvg.shape, p.value.shape)) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `Adam state of ${p.name} has shape [${s.expAvg.shape}], parameter has [${p.value.shape}]`);
      }
    }
    const { beta1, beta2 } = this;
    for (const p of params) {
      const grad = p.grad;
      if (grad === null) continue;
      const old = this.state.get(p.name);
      const t = (old?.step ?? 0) + 1;
      const biasCorrection1 = 1 - beta1 ** t;
      const biasCorrection2 = 1 - beta2 ** t;
      const stepSize = lr / biasCorrection1;
      const biasCorrection2Sqrt = Math.sqrt(biasCorrection2);
      const k = { lr, stepSize, biasCorrection2Sqrt };
      const next = fused(FUSED.adamUpdate) ? this.fusedUpdate(p, grad, old, k) : this.composedUpdate(p, grad, old, k);
      if (old !== undefined) {
        old.expAvg.dispose();
        old.expAvgSq.dispose();
        old.maxExpAvgSq?.dispose();
      }
      this.state.set(p.name, { step: t, expAvg: next[0], expAvgSq: next[1], maxExpAvgSq: next[2] ?? null });
    }
    this.steps++;
  }

  /** One parameter's update from tfjs ops; returns [m, v, vmax?]. */
  private composedUpdate(p: Param, grad: tf.Tensor, old: AdamSlot | undefined, k: StepScalars): tf.Tensor[] {
    const { beta1, beta2, eps, weightDecay, decoupled, amsgrad } = this;
    const { lr, stepSize, biasCorrection2Sqrt } = k;
    return tf.tidy(() => {
      let param: tf.Tensor = p.value;
      let g: tf.Tensor = grad;
      if (weightDecay !== 0) {
        if (decoupled) param = tf.mul(param, 1 - lr * weightDecay);
        else g = tf.add(g, tf.mul(param, weightDecay));
      }
      const m0 = old?.expAvg ?? tf.zerosLike(param);
      const v0 = old?.expAvgSq ?? tf.zerosLike(param);
      // torch.lerp(m0, g, w): m0 + w * (g - m0) for |w| < 0.5, else g - (g - m0) * (1 - w).
      const w = 1 - beta1;
      const m = w < 0.5 ? tf.add(m0, tf.mul(tf.sub(g, m0), w)) : tf.sub(g, tf.mul(tf.sub(g, m0), 1 - w));
      const v = tf.add(tf.mul(v0, beta2), tf.mul(tf.mul(g, g), 1 - beta2));
      let vUsed = v;
      let vmax: tf.Tensor | null = null;
      if (amsgrad) {
        vmax = old?.maxExpAvgSq ? tf.maximum(old.maxExpAvgSq, v) : tf.clone(v);
        vUsed = vmax;
      }
      const denom = tf.add(tf.div(tf.sqrt(vUsed), biasCorrection2Sqrt), eps);
      p.value.assign(tf.sub(param, tf.mul(tf.div(m, denom), stepSize)));
      return vmax === null ? [m, v] : [m, v, vmax];
    });
  }

  /** The same update in one kernel of the backend's, with the same roundings (kernels/fused.ts). */
  private fusedUpdate(p: Param, grad: tf.Tensor, old: AdamSlot | undefined, k: StepScalars): tf.Tensor[] {
    const w = 1 - this.beta1;
    const attrs = {
      decay: 1 - k.lr * this.weightDecay,
      weightDecay: this.weightDecay,
      decoupled: this.decoupled,
      amsgrad: this.amsgrad,
      lerpLow: w < 0.5,
      w,
      oneMinusW: 1 - w,
      beta2: this.beta2,
      oneMinusBeta2: 1 - this.beta2,
      biasCorrection2Sqrt: k.biasCorrection2Sqrt,
      eps: this.eps,
      stepSize: k.stepSize,
    };
    const inputs = { param: p.value, grad, m: old?.expAvg ?? null, v: old?.expAvgSq ?? null, vmax: old?.maxExpAvgSq ?? null };
    const [param, ...slots] = runFused<tf.Tensor[]>(FUSED.adamUpdate, inputs, attrs);
    p.value.assign(param);
    param.dispose();
    return slots;
  }

  exportState(): { step: number; slots: HostTensorMap } {
    const slots: HostTensorMap = new Map();
    for (const [name, s] of this.state) {
      slots.set(`${name}.exp_avg`, toHost(s.expAvg));
      slots.set(`${name}.exp_avg_sq`, toHost(s.expAvgSq));
      if (s.maxExpAvgSq !== null) slots.set(`${name}.max_exp_avg_sq`, toHost(s.maxExpAvgSq));
      slots.set(`${name}.step`, { shape: [], data: new Float32Array([s.step]) });
    }
    return { step: this.steps, slots };
  }

  /**
   * Replaces the whole state. A parameter without a `<name>.step` slot takes the global
   * step counter (state written by an exporter that tracks only one counter).
   */
  importState(state: { step: number; slots: HostTensorMap }): void {
    if (!Number.isInteger(state.step) || state.step < 0) {
      throw new TrainerError('TAS_ERR_CHECKPOINT', `optimizer step counter must be a non-negative integer, got ${String(state.step)}`);
    }
    const grouped = new Map<string, Partial<Record<SlotName, HostTensor>>>();
    for (const [key, host] of state.slots) {
      const slot = SLOT_NAMES.find((s) => key.endsWith(`.${s}`) && key.length > s.length + 1);
      if (slot === undefined) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `unexpected Adam optimizer slot '${key}' (expected '<param>.{${SLOT_NAMES.join(',')}}')`);
      }
      const size = host.shape.reduce((a, b) => a * b, 1);
      if (!host.shape.every((d) => Number.isInteger(d) && d >= 0) || size !== host.data.length) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `optimizer slot '${key}' has shape [${host.shape}] but ${host.data.length} values`);
      }
      const name = key.slice(0, key.length - slot.length - 1);
      let group = grouped.get(name);
      if (group === undefined) grouped.set(name, (group = {}));
      group[slot] = host;
    }
    for (const [name, g] of grouped) {
      if (g.exp_avg === undefined || g.exp_avg_sq === undefined) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `Adam state of ${name} lacks exp_avg or exp_avg_sq`);
      }
      if (!sameShape(g.exp_avg.shape, g.exp_avg_sq.shape) || (g.max_exp_avg_sq !== undefined && !sameShape(g.exp_avg.shape, g.max_exp_avg_sq.shape))) {
        throw new TrainerError('TAS_ERR_CHECKPOINT', `Adam state of ${name} has slots of different shapes`);
      }
      if (this.amsgrad !== (g.max_exp_avg_sq !== undefined)) {
        throw new TrainerError(
          'TAS_ERR_CHECKPOINT',
          this.amsgrad ? `Adam state of ${name} lacks max_exp_avg_sq but amsgrad is on` : `Adam state of ${name} has max_exp_avg_sq but amsgrad is off`,
        );
      }
      if (g.step !== undefined) {
        const t = g.step.data.length === 1 ? g.step.data[0] : NaN;
        if (!Number.isInteger(t) || t < 0) {
          throw new TrainerError('TAS_ERR_CHECKPOINT', `Adam step of ${name} must be one non-negative integer`);
        }
      }
    }
    this.disposeState();
    const load = (h: HostTensor) => tf.keep(tf.tensor(new Float32Array(h.data), h.shape.slice(), 'float32'));
    for (const [name, g] of grouped) {
      this.state.set(name, {
        step: g.step !== undefined ? g.step.data[0] : state.step,
        expAvg: load(g.exp_avg!),
        expAvgSq: load(g.exp_avg_sq!),
        maxExpAvgSq: g.max_exp_avg_sq !== undefined ? load(g.max_exp_avg_sq) : null,
      });
    }
    this.steps = state.step;
  }

  dispose(): void {
    this.disposeState();
  }

  private disposeState(): void {
    for (const s of this.state.values()) {
      s.expAvg.dispose();
      s.expAvgSq.dispose();
      s.maxExpAvgSq?.dispose();
    }
    this.state.clear();
  }
}
