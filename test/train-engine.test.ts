/**
 * The training driver end to end on real data paths: checkpoint + resume equals an
 * uninterrupted run, data parallelism with uneven (and empty) shares equals one rank,
 * and the artifact round-trips with PyTorch names.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import './setup-backend.js';
import { parseArtifact } from '../src/trainer/artifact/artifact.js';
import { runLocalJob } from '../src/trainer/engine/local-job.js';
import type { HostTensorMap } from '../src/trainer/tensor-types.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tas-test-'));
  dirs.push(d);
  return d;
}
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function spec(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: {
      input_shape: [2],
      layers: [
        { type: 'linear', out: 16, bias: false },
        { type: 'batchnorm' },
        { type: 'relu' },
        { type: 'dropout', p: 0.2 },
        { type: 'linear', out: 16 },
        { type: 'batchnorm', momentum: null },
        { type: 'gelu' },
        { type: 'linear', out: 3 },
      ],
    },
    data: { type: 'synthetic', generator: 'spirals', n: 150, classes: 3, seed: 5 },
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weight_decay: 0.001 },
    lr_schedule: { type: 'step', step_size: 1, gamma: 0.5 },
    bn: { momentum_schedule: { type: 'linear', start: 0.5, end: 0.1, total: 10 } },
    epochs: 3,
    workers: 2,
    local_batch_sizes: [12, 20],
    seed: 3,
    ...overrides,
  };
}

function stateOf(path: string): HostTensorMap {
  return parseArtifact(new Uint8Array(readFileSync(path))).state;
}

function maxRelDiff(a: HostTensorMap, b: HostTensorMap): number {
  let worst = 0;
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) {
    const u = b.get(k)!;
    let num = 0;
    let den = 0;
    for (let i = 0; i < t.data.length; i++) {
      num += (t.data[i] - u.data[i]) ** 2;
      den += u.data[i] ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
  }
  return worst;
}

describe('training driver', () => {
  it('resumed from a mid-epoch checkpoint gives the same final model as an uninterrupted run', async () => {
    const full = await runLocalJob(spec(), { outDir: tmp() });
    assert.ok(full.rank0.completed);
    const dir = tmp();
    // 150 samples / 32 per step = 5 steps per epoch; stop in the middle of epoch 2.
    const first = await runLocalJob(spec(), { outDir: dir, stopAfterGlobalStep: 7 });
    assert.equal(first.rank0.completed, false);
    assert.equal(first.artifactPath, null);
    const second = await runLocalJob(spec(), { outDir: dir });
    assert.equal(second.resumedFrom, 7);
    assert.ok(second.rank0.completed);
    assert.equal(second.rank0.globalSteps, full.rank0.globalSteps);
    // Bit-for-bit: same data order, dropout masks, optimizer state and BN buffers.
    assert.equal(maxRelDiff(stateOf(second.artifactPath!), stateOf(full.artifactPath!)), 0);
  });

  it('a checkpoint of another spec is refused', async () => {
    const dir = tmp();
    await runLocalJob(spec(), { outDir: dir, stopAfterGlobalStep: 2 });
    await assert.rejects(runLocalJob(spec({ seed: 4 }), { outDir: dir }), /another job spec/);
  });

  it('uneven shares, with an empty rank, give the single-rank result', async () => {
    const base = { shuffle: false, model: { input_shape: [2], layers: [{ type: 'linear', out: 8, bias: false }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 3 }] } };
    const one = await runLocalJob(spec({ ...base, workers: 1, local_batch_sizes: [30] }), { outDir: tmp() });
    const three = await runLocalJob(spec({ ...base, workers: 3, local_batch_sizes: [0, 11, 19] }), { outDir: tmp() });
    const rel = maxRelDiff(stateOf(three.artifactPath!), stateOf(one.artifactPath!));
    assert.ok(rel < 1e-4, `rel diff ${rel}`);
    assert.ok(Math.abs(three.rank0.evaluation!.loss - one.rank0.evaluation!.loss) < 1e-4);
  });

  it('writes a PyTorch-named artifact with conventions and the recalibration record', async () => {
    const r = await runLocalJob(spec({ recalibration: { mode: 'update_bn', batches: 2 } }), { outDir: tmp() });
    const art = parseArtifact(new Uint8Array(readFileSync(r.artifactPath!)));
    assert.deepEqual([...art.state.keys()].slice(0, 6), ['layers.0.weight', 'layers.1.weight', 'layers.1.bias', 'layers.1.running_mean', 'layers.1.running_var', 'layers.1.num_batches_tracked']);
    assert.deepEqual(art.state.get('layers.0.weight')!.shape, [16, 2]); // Linear [out, in]
    assert.equal(art.metadata.bn_convention, 'pytorch');
    const rs = JSON.parse(art.metadata.running_stats) as { source: string; record: { mode: string; batches: number } };
    assert.equal(rs.source, 'recalibration');
    assert.equal(rs.record.mode, 'update_bn');
    assert.equal(rs.record.batches, 2);
    // update_bn: cumulative average over 2 batches -> num_batches_tracked counts them.
    assert.equal(art.state.get('layers.1.num_batches_tracked')!.data[0], 2);
  });

  it('starts from an artifact (init_from) and trains further', async () => {
    const dir = tmp();
    const a = await runLocalJob(spec({ epochs: 1 }), { outDir: dir });
    const b = await runLocalJob(spec({ epochs: 1, init_from: a.artifactPath }), { outDir: tmp() });
    assert.ok(b.rank0.evaluation!.loss < a.rank0.evaluation!.loss, `${b.rank0.evaluation!.loss} >= ${a.rank0.evaluation!.loss}`);
  });
});
