/**
 * An ordered list of layers (the model itself, and the branches of a residual block).
 * Forward runs layer by layer, awaiting each (a SyncBN layer awaits its all-gather);
 * backward runs in reverse, awaiting each (a SyncBN layer awaits its all-reduce).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensorMap, Param } from '../tensor-types.js';
import type { BatchNorm } from './batchnorm.js';
import type { ForwardContext, Layer } from './layer.js';

/** Layers that must run even on a rank with no rows: they join collectives. */
function joinsCollectives(layer: Layer): boolean {
  return layer.batchNorms().length > 0;
}

export class Sequential {
  /** Layers skipped in the last recording forward because the rank had no rows. */
  private skipped: boolean[] = [];

  constructor(readonly layers: Layer[]) {}

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    let h = x;
    this.skipped = this.layers.map(() => false);
    for (const [i, layer] of this.layers.entries()) {
      // A rank with an empty share still runs every BN layer (it joins the collectives with
      // zeros); other layers just pass an empty tensor on (some wasm kernels fail on 0 rows).
      const skip = h.shape[0] === 0 && !joinsCollectives(layer);
      if (skip && ctx.record) this.skipped[i] = true;
      const next = skip ? tf.zeros([0, ...layer.outputShape]) : await layer.forward(h, ctx);
      if (h !== x && next !== h) h.dispose();
      h = next;
    }
    return h;
  }

  /** `needInputGrad`: whether the caller needs dL/d(input) (false for the model's first layer). */
  /**
   * Backward through the layers, last to first. `onGradients`, when given, is told each
   * layer's parameters as soon as their gradients are final (in this order on every rank,
   * so a caller may start reducing them while earlier layers still compute); layers
   * before the first that needs an input gradient are told too, with their gradients.
   */
  async backward(dy: tf.Tensor, needInputGrad: boolean, onGradients?: (params: Param[]) => void): Promise<tf.Tensor | null> {
    let g: tf.Tensor | null = dy;
    for (let i = this.layers.length - 1; i >= 0; i--) {
      const needs = i > 0 || needInputGrad;
      const layer = this.layers[i];
      let next: tf.Tensor | null;
      if (this.skipped[i]) {
        for (const p of layer.params()) {
          p.grad?.dispose();
          p.grad = tf.zerosLike(p.value);
        }
        next = needs ? tf.zeros([0, ...layer.inputShape]) : null;
      } else next = await layer.backward(g!, needs);
      if (g !== dy && g !== next) g!.dispose();
      g = next;
      onGradients?.(layer.params());
      if (!needs) break;
    }
    return g;
  }

  params(): Param[] {
    return this.layers.flatMap((l) => l.params());
  }
  batchNorms(): BatchNorm[] {
    return this.layers.flatMap((l) => l.batchNorms());
  }
  exportState(): HostTensorMap {
    const out: HostTensorMap = new Map();
    for (const l of this.layers) for (const [k, v] of l.exportState()) out.set(`${l.path}.${k}`, v);
    return out;
  }
  importState(state: HostTensorMap): void {
    for (const l of this.layers) {
      const prefix = `${l.path}.`;
      const sub: HostTensorMap = new Map();
      for (const [k, v] of state) if (k.startsWith(prefix)) sub.set(k.slice(prefix.length), v);
      l.importState(sub);
    }
  }
  clearCache(): void {
    for (const l of this.layers) l.clearCache();
  }
  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
