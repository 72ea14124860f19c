import type { HostTensorMap, Param } from '../tensor-types.js';

/**
 * Optimizer contract. `step` applies one update with the given learning rate to every
 * parameter that has a gradient. State is exported as host tensors keyed
 * `<param name>.<slot>` (e.g. `layers.0.weight.momentum_buffer`) plus a step counter,
 * so checkpoints can store it and a resumed run continues bit-for-bit.
 */
export interface Optimizer {
  readonly kind: 'sgd' | 'adam' | 'adamw';
  step(params: readonly Param[], lr: number): void;
  exportState(): { step: number; slots: HostTensorMap };
  importState(state: { step: number; slots: HostTensorMap }): void;
  dispose(): void;
}
