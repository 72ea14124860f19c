/**
 * Small seeded PRNG: mulberry32 for uniforms, Box-Muller for normals.
 *
 * The whole state is one uint32, so `state()` / `fromState()` let a checkpoint resume
 * a shuffle or a generator bit-for-bit. That is also why `normal()` does not cache the
 * second Box-Muller value: a cached value would be hidden state outside the uint32.
 * Not cryptographic; the period is 2^32, plenty for shuffling and synthetic data.
 */
export class Rng {
  private s: number;

  /** Any integer seed; it is reduced modulo 2^32 (so -1 and 4294967295 are the same). */
  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new RangeError(`Rng seed must be an integer, got ${seed}`);
    this.s = seed >>> 0; // ToUint32 is an exact modulo 2^32 for every integer double
  }

  /** Uniform in [0, 1), a multiple of 2^-32. */
  next(): number {
    // mulberry32 (Tommy Ettinger): a Weyl step then an integer hash of the counter.
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal N(0, 1); consumes exactly two uniforms. */
  normal(): number {
    const u1 = 1 - this.next(); // (0, 1]: log(0) would be -Infinity
    const u2 = this.next();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Uniform integer in [0, n); n must be an integer in [1, 2^32]. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) {
      throw new RangeError(`Rng.int needs an integer in [1, 2^32], got ${n}`);
    }
    // Multiply-and-floor; the bias is below n / 2^32, irrelevant for shuffles of datasets.
    return Math.floor(this.next() * n);
  }

  /** The full state, a uint32. `Rng.fromState(r.state())` continues r's sequence exactly. */
  state(): number {
    return this.s;
  }

  static fromState(s: number): Rng {
    if (!Number.isInteger(s) || s < 0 || s > 0xffffffff) {
      throw new RangeError(`Rng state must be a uint32, got ${s}`);
    }
    return new Rng(s);
  }
}
