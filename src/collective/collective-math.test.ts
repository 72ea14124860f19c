import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SUM_BACKEND, sumInRankOrder as dispatched, sumInRankOrderJs } from './collective-math.js';
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

// Every case for what `sumInRankOrder` runs (native/sum.c where built) and for the JS.
for (const [name, sumInRankOrder] of [
  [`sumInRankOrder (${SUM_BACKEND})`, dispatched],
  ['sumInRankOrderJs', sumInRankOrderJs],
] as const) {
describe(name, () => {
  it('gives the in-process bits for 1 to 9 ranks (every fused and chained path), every length mod 4', () => {
    for (let k = 1; k <= 9; k++) {
      for (const n of [0, 1, 2, 3, 4, 5, 7, 8, 1001, 4099]) {
        const parts = Array.from({ length: k }, (_, r) => nasty(n, 100 * k + 10 * r + n));
        const out = new Float32Array(n).fill(123);
        sumInRankOrder(out, parts);
        sameBits(out, reference(parts, n), `k=${k} n=${n}`);
      }
    }
  });

  it('-0 from every rank gives +0, as zeros + -0 does', () => {
    for (let k = 1; k <= 6; k++) for (const n of [5, 300]) {
      const out = new Float32Array(n);
      sumInRankOrder(out, Array.from({ length: k }, () => new Float32Array(n).fill(-0)));
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
    for (let k = 2; k <= 6; k++) for (const n of [33, 3000]) {
      const parts = Array.from({ length: k }, (_, r) => nasty(n, 7 * k + r));
      const want = reference(parts, n);
      for (let into = 0; into < Math.min(k, 4); into++) {
        const copies = parts.map((p) => p.slice());
        sumInRankOrder(copies[into], copies);
        sameBits(copies[into], want, `k=${k} n=${n} into ${into}`);
      }
    }
  });

  it('rejects parts of another length', () => {
    assert.throws(() => sumInRankOrder(new Float32Array(300), [new Float32Array(300), new Float32Array(299)]), RangeError);
  });
});
}

/** Equal bits, except that a NaN may come out as another NaN (which NaN operand x86 propagates depends on the operand order the compiler picks). */
function sameBitsOrNaN(a: Float32Array, b: Float32Array, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length),
    y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let nans = 0;
  for (let i = 0; i < a.length; i++) {
    if (Number.isNaN(a[i]) && Number.isNaN(b[i])) nans++;
    else if (x[i] !== y[i]) assert.fail(`${what}: differ at ${i}: ${a[i]} vs ${b[i]}`);
  }
  assert.ok(nans > 0 || a.length === 0, `${what}: the case has no NaN to check`);
}

describe('native/sum.c', () => {
  it('gives the JS bits (a NaN stays a NaN) on random values with NaN, infinities, subnormals and signed zeros, 1 to 12 ranks, in place too', { skip: SUM_BACKEND === 'native' ? false : 'not built here (npm run build:native)' }, () => {
    const r = rng(5);
    const specials = [NaN, Infinity, -Infinity, 0, -0, 2 ** -149, -(2 ** -140), 3.4e38, -3.4e38];
    for (let k = 1; k <= 12; k++) {
      const n = 5000 + k;
      const parts = Array.from({ length: k }, () => Float32Array.from({ length: n }, (_, i) => (i % 5 === 0 ? specials[Math.floor(r() * specials.length)] : (r() * 2 - 1) * 10 ** Math.floor(r() * 80 - 40))));
      const a = new Float32Array(n),
        b = new Float32Array(n);
      sumInRankOrderJs(a, parts);
      dispatched(b, parts);
      sameBitsOrNaN(b, a, `k=${k}`);
      const copies = parts.map((p) => p.slice());
      dispatched(copies[k - 1], copies);
      sameBitsOrNaN(copies[k - 1], a, `k=${k} in place into the last part`);
    }
  });
});
