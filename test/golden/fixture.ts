/** Reading golden fixtures (format: fixtures/pytorch/README.md) and comparing with them. */
import type { HostTensor, HostTensorMap } from '../../src/trainer/tensor-types.js';

export interface FixtureTensor {
  shape: number[];
  data: number[];
}

export function isTensor(v: unknown): v is FixtureTensor {
  return typeof v === 'object' && v !== null && Array.isArray((v as FixtureTensor).shape) && Array.isArray((v as FixtureTensor).data);
}

export function host(t: FixtureTensor): HostTensor {
  return { shape: t.shape.slice(), data: Float32Array.from(t.data) };
}

export function stateMap(obj: Record<string, FixtureTensor>): HostTensorMap {
  const m: HostTensorMap = new Map();
  for (const [k, v] of Object.entries(obj)) m.set(k, host(v));
  return m;
}

export interface Check {
  name: string;
  ok: boolean;
  err: number;
  detail: string;
  /** Printed even when the check passes (fixture errata). */
  note?: string;
}

/** Single-step rule: max|out - ref| <= 1e-4 * max(1, max|ref|). NaN never passes. */
export function checkMaxAbs(name: string, out: ArrayLike<number>, ref: ArrayLike<number>, tol = 1e-4): Check {
  if (out.length !== ref.length) return { name, ok: false, err: Infinity, detail: `${name}: ${out.length} values, expected ${ref.length}` };
  let maxRef = 0;
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
    const e = Math.abs(out[i] - ref[i]);
    if (Number.isNaN(e)) return { name, ok: false, err: NaN, detail: `${name}: NaN at ${i}` };
    maxErr = Math.max(maxErr, e);
  }
  const bound = tol * Math.max(1, maxRef);
  return { name, ok: maxErr <= bound, err: maxErr / Math.max(1, maxRef), detail: `${name}: max abs err ${maxErr.toExponential(2)} (bound ${bound.toExponential(2)})` };
}

/** After-training rule: ||out - ref|| / ||ref|| <= 1e-4. */
export function checkRelNorm(name: string, out: ArrayLike<number>, ref: ArrayLike<number>, tol = 1e-4): Check {
  if (out.length !== ref.length) return { name, ok: false, err: Infinity, detail: `${name}: ${out.length} values, expected ${ref.length}` };
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i];
    if (Number.isNaN(d)) return { name, ok: false, err: NaN, detail: `${name}: NaN at ${i}` };
    num += d * d;
    den += ref[i] * ref[i];
  }
  const rel = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
  return { name, ok: rel <= tol, err: rel, detail: `${name}: rel err ${rel.toExponential(2)}` };
}

/** NCHW (PyTorch) -> NHWC data for [N, C, H, W]. */
export function nchwToNhwc(data: ArrayLike<number>, shape: number[]): Float32Array {
  const [n, c, h, w] = shape;
  const out = new Float32Array(n * c * h * w);
  for (let a = 0; a < n; a++) for (let ch = 0; ch < c; ch++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[((a * h + y) * w + x) * c + ch] = data[((a * c + ch) * h + y) * w + x];
  return out;
}

export function nhwcToNchw(data: ArrayLike<number>, shape: number[]): Float32Array {
  const [n, c, h, w] = shape;
  const out = new Float32Array(n * c * h * w);
  for (let a = 0; a < n; a++) for (let ch = 0; ch < c; ch++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[((a * c + ch) * h + y) * w + x] = data[((a * h + y) * w + x) * c + ch];
  return out;
}
