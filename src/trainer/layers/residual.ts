/**
 * Residual block: y = act(body(x) + shortcut(x)), shortcut = identity when absent
 * (ResNet's BasicBlock with `activation: 'relu'`). State names follow a PyTorch module
 * with `body` and `shortcut` Sequentials: `layers.3.body.0.weight`, `layers.3.shortcut.1.running_mean`.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HostTensorMap, Param } from '../tensor-types.js';
import type { BatchNorm } from './batchnorm.js';
import type { ForwardContext, Layer } from './layer.js';
import { Sequential } from './sequential.js';

export class Residual implements Layer {
  readonly type = 'residual';
  private cachedOut: tf.Tensor | null = null;

  constructor(
    readonly path: string,
    readonly inputShape: readonly number[],
    readonly outputShape: readonly number[],
    readonly body: Sequential,
    readonly shortcut: Sequential | null,
    readonly activation: 'relu' | 'none',
  ) {}

  async forward(x: tf.Tensor, ctx: ForwardContext): Promise<tf.Tensor> {
    // Order matters for SyncBN: every rank runs body then shortcut, so collectives line up.
    const b = await this.body.forward(x, ctx);
    const s = this.shortcut ? await this.shortcut.forward(x, ctx) : x;
    const sum = tf.add(b, s);
    if (b !== x) b.dispose();
    if (s !== x) s.dispose();
    if (this.activation === 'none') return sum;
    const y = tf.relu(sum);
    sum.dispose();
    if (ctx.record) this.cachedOut = tf.keep(y.clone());
    return y;
  }

  async backward(dy: tf.Tensor, needInputGrad: boolean): Promise<tf.Tensor | null> {
    let g = dy;
    if (this.activation === 'relu') {
      const y = this.cachedOut!;
      this.cachedOut = null;
      g = tf.tidy(() => tf.mul(dy, tf.step(y, 0)));
      y.dispose();
    }
    const dxBody = await this.body.backward(g, needInputGrad);
    const dxShort = this.shortcut ? await this.shortcut.backward(g, needInputGrad) : needInputGrad ? g.clone() : null;
    if (g !== dy) g.dispose();
    if (!needInputGrad) return null;
    const dx = tf.add(dxBody!, dxShort!);
    dxBody!.dispose();
    dxShort!.dispose();
    return dx;
  }

  params(): Param[] {
    return [...this.body.params(), ...(this.shortcut?.params() ?? [])];
  }
  batchNorms(): BatchNorm[] {
    return [...this.body.batchNorms(), ...(this.shortcut?.batchNorms() ?? [])];
  }
  exportState(): HostTensorMap {
    // Children carry full paths already; strip this block's prefix.
    const out: HostTensorMap = new Map();
    const strip = this.path.length + 1;
    for (const [k, v] of this.body.exportState()) out.set(k.slice(strip), v);
    if (this.shortcut) for (const [k, v] of this.shortcut.exportState()) out.set(k.slice(strip), v);
    return out;
  }
  importState(state: HostTensorMap): void {
    const full: HostTensorMap = new Map();
    for (const [k, v] of state) full.set(`${this.path}.${k}`, v);
    this.body.importState(full);
    this.shortcut?.importState(full);
  }
  clearCache(): void {
    this.body.clearCache();
    this.shortcut?.clearCache();
    this.cachedOut?.dispose();
    this.cachedOut = null;
  }
  dispose(): void {
    this.clearCache();
    this.body.dispose();
    this.shortcut?.dispose();
  }
}
