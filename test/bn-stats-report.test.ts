/**
 * BN running statistics reported by the training driver: the per-step summaries of rank 0
 * are those of the model's own state dict, the live-buffer accessor agrees with the state
 * dict, and the final summary is the artifact's (post-recalibration) statistics.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import './setup-backend.js';
import { parseArtifact } from '../src/trainer/artifact/artifact.js';
import { InProcessGroup } from '../src/trainer/collective/in-process.js';
import { loadDataset } from '../src/trainer/data/load.js';
import { resolveTrainSpec } from '../src/trainer/engine/job-spec.js';
import { runLocalJob } from '../src/trainer/engine/local-job.js';
import { trainRank, type StepMetrics, type TrainRankResult } from '../src/trainer/engine/train.js';
import { summariseBnBuffers } from '../src/trainer/math/bn-summary.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'tas-bnstats-'));
  dirs.push(d);
  return d;
}

/** A tiny SyncBN model with a top-level BN and BNs nested in a residual block (body and shortcut). */
function spec(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: {
      input_shape: [2],
      layers: [
        { type: 'linear', out: 8, bias: false },
        { type: 'batchnorm' },
        { type: 'relu' },
        {
          type: 'residual',
          body: [{ type: 'linear', out: 6 }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 8 }],
          shortcut: [{ type: 'linear', out: 8, bias: false }, { type: 'batchnorm', momentum: null }],
        },
        { type: 'linear', out: 3 },
      ],
    },
    data: { type: 'synthetic', generator: 'spirals', n: 96, classes: 3, seed: 2 },
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
    epochs: 2,
    workers: 2,
    local_batch_sizes: [10, 22],
    seed: 4,
    ...overrides,
  };
}

/** Every rank of the job in this process; rank 0 reports steps. The caller disposes the models. */
async function trainInProcess(raw: Record<string, unknown>, steps: StepMetrics[]): Promise<TrainRankResult[]> {
  const s = resolveTrainSpec(raw);
  const dataset = await loadDataset(s.data);
  const group = new InProcessGroup(s.workers);
  return Promise.all(
    Array.from({ length: s.workers }, (_, rank) =>
      trainRank({ spec: s, dataset, collective: group.member(rank), ...(rank === 0 ? { onStep: (m: StepMetrics) => steps.push(m) } : {}) }).catch((e: Error) => {
        group.abort(e);
        throw e;
      }),
    ),
  );
}

describe('BN statistics reported while training', () => {
  it('every step of a short run carries bnStats; the last equals the final state dict\'s summary (no recalibration)', async () => {
    const steps: StepMetrics[] = [];
    const results = await trainInProcess(spec(), steps);
    try {
      const [r0] = results;
      assert.equal(steps.length, 6); // 96 / 32 = 3 steps per epoch, 2 epochs
      assert.ok(steps.every((m) => m.bnStats !== undefined && m.bnStats.length === 3));
      const want = summariseBnBuffers(r0.model.stateDict());
      assert.deepEqual(want.map((l) => l.layer), ['layers.1', 'layers.3.body.1', 'layers.3.shortcut.1']);
      assert.deepEqual(steps[steps.length - 1].bnStats, want);
      assert.deepEqual(r0.bnFinal, want);
      // The statistics move from step to step (these are live reads, not a stale copy).
      assert.notDeepEqual(steps[0].bnStats, steps[1].bnStats);
      assert.equal(steps[2].bnStats![0].num_batches_tracked, 3);
      // The cheap accessor holds exactly the state dict's BN buffers, by either read path.
      const state = r0.model.stateDict();
      for (const oneRead of [false, true]) {
        const buffers = r0.model.bnBuffers(oneRead);
        assert.deepEqual([...buffers.keys()], [...state.keys()].filter((k) => /\.(running_mean|running_var|num_batches_tracked)$/.test(k)));
        for (const [k, t] of buffers) assert.deepEqual(t, state.get(k), k);
      }
      // All ranks end with the same buffers, so every rank's bnFinal agrees.
      assert.deepEqual(results[1].bnFinal, want);
    } finally {
      results.forEach((r) => r.model.dispose());
    }
  });

  it('bnFinal is the summary of the artifact\'s running statistics after recalibration', async () => {
    const steps: StepMetrics[] = [];
    const r = await runLocalJob(spec({ recalibration: { mode: 'exact' } }), { outDir: tmp(), onStep: (m) => steps.push(m) });
    const art = parseArtifact(new Uint8Array(readFileSync(r.artifactPath!)));
    assert.equal(JSON.parse(art.metadata.running_stats).source, 'recalibration');
    const fromArtifact = summariseBnBuffers(art.state);
    assert.equal(fromArtifact.length, 3);
    assert.deepEqual(r.rank0.bnFinal, fromArtifact);
    // Recalibration replaced the training EMA: the last step's report is not the final one.
    assert.notDeepEqual(steps[steps.length - 1].bnStats!.map((l) => l.mean), r.rank0.bnFinal.map((l) => l.mean));
  });

  it('a run of more than 500 steps reports on 500 evenly spread steps, the last included', async () => {
    const steps: StepMetrics[] = [];
    const small = { input_shape: [2], layers: [{ type: 'linear', out: 4 }, { type: 'batchnorm' }, { type: 'linear', out: 3 }] };
    const results = await trainInProcess(spec({ model: small, data: { type: 'synthetic', generator: 'spirals', n: 8, classes: 3, seed: 2 }, workers: 1, local_batch_sizes: [8], epochs: 600 }), steps);
    results.forEach((r) => r.model.dispose());
    assert.equal(steps.length, 600);
    const withStats = steps.filter((m) => m.bnStats !== undefined);
    assert.equal(withStats.length, 500);
    assert.equal(withStats[withStats.length - 1].globalStep, 600);
    assert.deepEqual(withStats.slice(0, 3).map((m) => m.globalStep), [2, 3, 4]); // stride 1.2: floor(s·500/600) steps
  });

  it('a model without BN reports [] on every step and as bnFinal', async () => {
    const steps: StepMetrics[] = [];
    const noBn = { input_shape: [2], layers: [{ type: 'linear', out: 8 }, { type: 'relu' }, { type: 'linear', out: 3 }] };
    const results = await trainInProcess(spec({ model: noBn, epochs: 1 }), steps);
    results.forEach((r) => r.model.dispose());
    assert.ok(steps.length > 0 && steps.every((m) => Array.isArray(m.bnStats) && m.bnStats.length === 0));
    assert.deepEqual(results[0].bnFinal, []);
  });
});
