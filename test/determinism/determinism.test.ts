/**
 * Which runs give the same bits, per backend (each run a process of its own, as workers
 * are):
 * - every backend: a run resumed from a mid-epoch checkpoint ends with the bits of an
 *   uninterrupted one, and a rerun with the same settings repeats them;
 * - native: that holds at a fixed number of BLAS threads (TAS_COMPUTE_THREADS). OpenBLAS
 *   blocks a product differently with another thread count, so 1 and 2 threads may
 *   differ in the last bits; they agree to float32 rounding, which is checked too.
 * The model's products (256 rows per rank, 784 inputs, 512 hidden) are ones OpenBLAS
 * threads, and where 1 and 2 threads do give different bits here.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { NATIVE_COMPUTE_MISSING, nativeCompute } from '../../src/trainer/kernels/native-addon.js';

const run = promisify(execFile);
const CHILD = join(import.meta.dirname, 'train-child.ts');
const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

const SPEC = {
  model: {
    input_shape: [784],
    layers: [
      { type: 'linear', out: 512, bias: false },
      { type: 'batchnorm' },
      { type: 'relu' },
      { type: 'dropout', p: 0.1 },
      { type: 'linear', out: 4 },
    ],
  },
  data: { type: 'synthetic', generator: 'blobs', features: 784, n: 2048, classes: 4, seed: 2 },
  optimizer: { type: 'adamw', lr: 0.003, weight_decay: 0.01 },
  epochs: 2,
  workers: 2,
  batch_size: 512,
  seed: 9,
};

type Values = Record<string, number[]>;
interface Outcome {
  backend: string;
  threads: number;
  resumedFrom: number | null;
  values: Values | null;
}

async function train(backend: string, threads: number, outDir?: string, stopAt?: number): Promise<Outcome> {
  const dir = outDir ?? mkdtempSync(join(tmpdir(), 'tas-det-'));
  if (!outDir) dirs.push(dir);
  const args = ['--import', 'tsx', CHILD, JSON.stringify(SPEC), dir, ...(stopAt ? [String(stopAt)] : [])];
  const { stdout } = await run(process.execPath, args, { env: { ...process.env, TAS_BACKEND: backend, TAS_COMPUTE_THREADS: String(threads) }, maxBuffer: 64 << 20 });
  const o = JSON.parse(stdout.trim().split('\n').pop()!) as Outcome;
  assert.equal(o.backend, backend);
  return o;
}

function sameBits(a: Values, b: Values): boolean {
  return Object.keys(a).every((k) => a[k].length === b[k].length && a[k].every((v, i) => Object.is(Math.fround(v), Math.fround(b[k][i]))));
}

function maxRel(a: Values, b: Values): number {
  let worst = 0;
  for (const k of Object.keys(a)) {
    let num = 0, den = 0;
    for (let i = 0; i < a[k].length; i++) {
      num += (a[k][i] - b[k][i]) ** 2;
      den += b[k][i] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  return worst;
}

async function resumedEqualsUninterrupted(backend: string, threads: number): Promise<void> {
  const full = await train(backend, threads);
  const again = await train(backend, threads);
  assert.ok(sameBits(again.values!, full.values!), `${backend}, ${threads} thread(s): a rerun changed bits`);
  const dir = mkdtempSync(join(tmpdir(), 'tas-det-'));
  dirs.push(dir);
  const first = await train(backend, threads, dir, 5); // 4 steps per epoch: stop inside epoch 2
  assert.equal(first.values, null);
  const second = await train(backend, threads, dir);
  assert.equal(second.resumedFrom, 5);
  assert.ok(sameBits(second.values!, full.values!), `${backend}, ${threads} thread(s): resumed differs from uninterrupted (max rel ${maxRel(second.values!, full.values!)})`);
}

const nativeSkip = nativeCompute ? false : process.env.TAS_REQUIRE_NATIVE === '1' ? false : `native addon absent: ${NATIVE_COMPUTE_MISSING}`;

describe('determinism per backend', () => {
  it('native, 2 BLAS threads: reruns and resumed runs repeat the uninterrupted bits', { skip: nativeSkip }, () => resumedEqualsUninterrupted('native', 2));

  it('native, 1 thread against 2: the same model to float32 rounding', { skip: nativeSkip }, async () => {
    const [one, two] = [await train('native', 1), await train('native', 2)];
    const rel = maxRel(one.values!, two.values!);
    assert.ok(rel < 1e-5, `1 vs 2 threads: max relative difference ${rel}`);
  });

  it('wasm: reruns and resumed runs repeat the uninterrupted bits', () => resumedEqualsUninterrupted('wasm', 1));
});
