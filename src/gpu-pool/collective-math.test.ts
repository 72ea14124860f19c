import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sumInRankOrder } from './collective-math.js';
import { Rng } from '../trainer/math/rng.js';

/** The in-process group's reduction: zeros, then `out[i] += x_r[i]` rank by rank. */
function reference(parts: Float32Array[], n: number): Float32Array {
  const out = new Float32Array(n);
  for (const p of parts) for (let i = 0; i < n; i++) out[i] += p[i];
  return out;
}

/** A seeded stream of uniforms in [0, 1) (the trainer's mulberry32). */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Values over many magnitudes, signed zeros, exact ties and cancellations: rounding order shows. */
function nasty(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const specials = [0, -0, 1, -1, 2 ** -149, -(2 ** -149), 3.4e38, -3.4e38, 16777216, 1, 0.1];
  return Float32Array.from({ length: n }, (_, i) => (i % 7 === 0 ? specials[Math.floor(r() * specials.length)] : (r() * 2 - 1) * 10 ** Math.floor(r() * 12 - 6)));
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  const x = Buffer.from(a.buffer, a.byteOffset, a.byteLength), y = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (Buffer.compare(x, y) !== 0) {
    const i = a.findIndex((v, k) => !Object.is(v, b[k]));
    assert.fail(`${what}: differ at ${i}: ${a[i]} vs ${b[i]}`);
  }
}

describe('sumInRankOrder', () => {
  it('gives the in-process bits for 1 to 9 ranks (every fused and chained path), every length mod 4', () => {
    for (let k = 1; k <= 9; k++) {
      for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 1001]) {
        const parts = Array.from({ length: k }, (_, r) => nasty(n, 100 * k + 10 * r + n));
        const out = new Float32Array(n).fill(123);
        sumInRankOrder(out, parts);
        sameBits(out, reference(parts, n), `k=${k} n=${n}`);
      }
    }
  });

  it('-0 from every rank gives +0, as zeros + -0 does', () => {
    for (let k = 1; k <= 6; k++) {
      const out = new Float32Array(5);
      sumInRankOrder(out, Array.from({ length: k }, () => new Float32Array(5).fill(-0)));
      for (const v of out) assert.ok(Object.is(v, 0), `k=${k}: ${v}`);
    }
  });

  it('rounds after every rank: (1 + 2^24) - 2^24 is 0 in float32, not 1', () => {
    const parts = [Float32Array.of(1), Float32Array.of(16777216), Float32Array.of(-16777216)];
    const out = new Float32Array(1);
    sumInRankOrder(out, parts);
    assert.equal(out[0], 0);
  });

  it('may write into one of its first four inputs', () => {
    for (let k = 2; k <= 6; k++) {
      const parts = Array.from({ length: k }, (_, r) => nasty(33, 7 * k + r));
      const want = reference(parts, 33);
      for (let into = 0; into < Math.min(k, 4); into++) {
        const copies = parts.map((p) => p.slice());
        sumInRankOrder(copies[into], copies);
        sameBits(copies[into], want, `k=${k} into ${into}`);
      }
    }
  });

  it('rejects parts of another length', () => {
    assert.throws(() => sumInRankOrder(new Float32Array(3), [new Float32Array(3), new Float32Array(2)]), RangeError);
  });
});
