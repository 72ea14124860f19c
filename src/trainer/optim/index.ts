/**
 * Optimizer factory from the user's JSON spec (snake_case, PyTorch argument names).
 * Defaults are PyTorch's: SGD momentum 0, dampening 0, weight_decay 0, nesterov false;
 * Adam betas [0.9, 0.999], eps 1e-8, weight_decay 0 (Adam) or 0.01 (AdamW), amsgrad false.
 */
import { TrainerError } from '../errors.js';
import { Adam } from './adam.js';
import type { Optimizer } from './optimizer.js';
import { Sgd } from './sgd.js';

export type { Optimizer } from './optimizer.js';
export { Sgd, type SgdOptions } from './sgd.js';
export { Adam, type AdamOptions } from './adam.js';

export type OptimizerSpec =
  | { type: 'sgd'; lr: number; momentum?: number; dampening?: number; weight_decay?: number; nesterov?: boolean }
  | { type: 'adam' | 'adamw'; lr: number; betas?: [number, number]; eps?: number; weight_decay?: number; amsgrad?: boolean };

const SGD_KEYS = ['type', 'lr', 'momentum', 'dampening', 'weight_decay', 'nesterov'];
const ADAM_KEYS = ['type', 'lr', 'betas', 'eps', 'weight_decay', 'amsgrad'];

function fail(field: string, message: string): never {
  throw new TrainerError('TAS_ERR_INVALID_SPEC', message, `optimizer.${field}`);
}

function isNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v);
}

function optNumber(spec: Record<string, unknown>, key: string, check: (v: number) => boolean, rule: string): void {
  const v = spec[key];
  if (v === undefined) return;
  if (!isNumber(v) || !check(v)) fail(key, `optimizer.${key} must be ${rule}, got ${JSON.stringify(v)}`);
}

function optBoolean(spec: Record<string, unknown>, key: string): void {
  const v = spec[key];
  if (v !== undefined && typeof v !== 'boolean') fail(key, `optimizer.${key} must be a boolean, got ${JSON.stringify(v)}`);
}

/**
 * Checks an optimizer spec (types, ranges, unknown keys, PyTorch's constraints) and
 * throws `TrainerError('TAS_ERR_INVALID_SPEC', …, 'optimizer.<field>')` on the first problem.
 */
export function validateOptimizerSpec(spec: unknown): asserts spec is OptimizerSpec {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', 'optimizer must be an object', 'optimizer');
  }
  const s = spec as Record<string, unknown>;
  const type = s.type;
  if (type !== 'sgd' && type !== 'adam' && type !== 'adamw') {
    fail('type', `optimizer.type must be one of "sgd", "adam", "adamw", got ${JSON.stringify(type)}`);
  }
  const allowed = type === 'sgd' ? SGD_KEYS : ADAM_KEYS;
  for (const key of Object.keys(s)) {
    if (!allowed.includes(key)) fail(key, `unknown field optimizer.${key} for optimizer type "${type}" (allowed: ${allowed.join(', ')})`);
  }
  if (s.lr === undefined) fail('lr', 'optimizer.lr is required');
  optNumber(s, 'lr', (v) => v >= 0, 'a finite number >= 0');
  optNumber(s, 'weight_decay', (v) => v >= 0, 'a finite number >= 0');
  if (type === 'sgd') {
    optNumber(s, 'momentum', (v) => v >= 0, 'a finite number >= 0');
    optNumber(s, 'dampening', () => true, 'a finite number');
    optBoolean(s, 'nesterov');
    if (s.nesterov === true) {
      if (((s.momentum as number | undefined) ?? 0) <= 0) {
        fail('nesterov', 'Nesterov momentum requires a momentum > 0 and zero dampening (optimizer.momentum is 0)');
      }
      if ((s.dampening ?? 0) !== 0) {
        fail('nesterov', 'Nesterov momentum requires a momentum > 0 and zero dampening (optimizer.dampening is not 0)');
      }
    }
  } else {
    const betas = s.betas;
    if (betas !== undefined) {
      if (!Array.isArray(betas) || betas.length !== 2) fail('betas', 'optimizer.betas must be an array of two numbers');
      for (let i = 0; i < 2; i++) {
        const b = betas[i];
        if (!isNumber(b) || b < 0 || b >= 1) {
          throw new TrainerError('TAS_ERR_INVALID_SPEC', `optimizer.betas[${i}] must be in [0, 1), got ${JSON.stringify(b)}`, `optimizer.betas.${i}`);
        }
      }
    }
    optNumber(s, 'eps', (v) => v >= 0, 'a finite number >= 0');
    optBoolean(s, 'amsgrad');
  }
}

/** Validates `spec` and builds the optimizer. The learning rate is passed to `step`. */
export function createOptimizer(spec: OptimizerSpec): Optimizer {
  validateOptimizerSpec(spec);
  if (spec.type === 'sgd') {
    return new Sgd({
      momentum: spec.momentum ?? 0,
      dampening: spec.dampening ?? 0,
      weightDecay: spec.weight_decay ?? 0,
      nesterov: spec.nesterov ?? false,
    });
  }
  const decoupled = spec.type === 'adamw';
  return new Adam({
    beta1: spec.betas?.[0] ?? 0.9,
    beta2: spec.betas?.[1] ?? 0.999,
    eps: spec.eps ?? 1e-8,
    weightDecay: spec.weight_decay ?? (decoupled ? 0.01 : 0),
    decoupled,
    amsgrad: spec.amsgrad ?? false,
  });
}
