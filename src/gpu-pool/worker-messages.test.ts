/**
 * Step events through proto/worker.proto as the worker service encodes them and the
 * pool decodes them (proto.ts's loader options): BN summaries arrive flattened with every
 * value, and a step that recorded none arrives with `bn_stats: []`, never undefined
 * (`defaults: true` fills absent repeated fields), as `StepMsg` promises.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BnLayerSummary } from '../trainer/math/bn-summary.js';
import type { RunEventMsg } from './messages.js';
import { workerProto } from '../grpc/proto.js';
import { bnLayerStatsMsg } from './worker-service.js';

const run = workerProto().service.Run;
const roundTrip = (ev: RunEventMsg): RunEventMsg => run.responseDeserialize(run.responseSerialize(ev)) as RunEventMsg;

const step = { global_step: 7, total_steps: 9, epoch: 1, loss: 0.5, accuracy: 0.75, lr: 0.1, samples_per_sec: 1000, compute_ms: 2, bn_forward_sync_ms: 0.25, bn_backward_sync_ms: 0.5, grad_sync_ms: 0.125 };

describe('worker step events', () => {
  it('carry BN summaries flattened into BnLayerStats', () => {
    const s: BnLayerSummary = { layer: 'layers.3.body.1', channels: 64, mean: { mean: 0.125, min: -1.5, max: 2.25, l2: 3.5 }, var: { mean: 1.0625, min: 0.5, max: 4 }, num_batches_tracked: 7 };
    const got = roundTrip({ step: { ...step, bn_stats: [bnLayerStatsMsg(s)] } });
    assert.equal(got.event, 'step');
    assert.deepEqual(got.step!.bn_stats, [{ layer: 'layers.3.body.1', channels: 64, mean_mean: 0.125, mean_min: -1.5, mean_max: 2.25, mean_l2: 3.5, var_mean: 1.0625, var_min: 0.5, var_max: 4 }]);
    assert.equal(got.step!.global_step, 7);
  });

  it('a step without BN summaries arrives with bn_stats: []', () => {
    const got = roundTrip({ step: { ...step, bn_stats: [] } });
    assert.deepEqual(got.step!.bn_stats, []);
  });

  it('a diverged layer\'s NaN survives the wire (double)', () => {
    const s: BnLayerSummary = { layer: 'layers.1', channels: 2, mean: { mean: Number.NaN, min: Number.NaN, max: Number.NaN, l2: Number.NaN }, var: { mean: 1, min: 1, max: 1 } };
    const got = roundTrip({ step: { ...step, bn_stats: [bnLayerStatsMsg(s)] } });
    assert.ok(Number.isNaN(got.step!.bn_stats[0].mean_mean));
  });
});
