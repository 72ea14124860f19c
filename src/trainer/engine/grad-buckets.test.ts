/**
 * Gradients reduced in buckets during backward: the same bits as one all-reduce after
 * backward, in-process and over the gRPC collective; the buckets start during backward
 * (between SyncBN's backward reductions), in one order on every rank; and without
 * overlap they all start after backward.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import '../../../test/setup-backend.js';
import * as tf from '@tensorflow/tfjs-core';
import { GrpcCollective } from '../../collective/grpc-collective.js';
import { listenCollectiveServer } from '../../collective/links.js';
import type { Collective } from '../collective/collective.js';
import { InProcessGroup } from '../collective/in-process.js';
import { Rng } from '../math/rng.js';
import { Model } from '../model/model.js';
import { createOptimizer } from '../optim/index.js';
import { GradientBuckets, gradientBucketsFromEnv, type GradientBucketsOptions } from './grad-buckets.js';
import { RankTrainer } from './rank-trainer.js';

const SPEC = {
  input_shape: [1, 6, 6],
  layers: [
    { type: 'conv2d', out: 4, kernel: 3, padding: 1, bias: false },
    { type: 'batchnorm' },
    { type: 'relu' },
    { type: 'flatten' },
    { type: 'linear', out: 16 },
    { type: 'batchnorm' },
    { type: 'relu' },
    { type: 'linear', out: 3 },
  ],
};

/** Every call a collective sees, by kind and length, in order. */
function recording(c: Collective, calls: string[]): Collective {
  return {
    rank: c.rank,
    worldSize: c.worldSize,
    allGather: (d) => (calls.push(`gather:${d.length}`), c.allGather(d)),
    allReduce: (d) => (calls.push(`reduce:${d.length}`), c.allReduce(d)),
    allReduceInPlace: (d) => (calls.push(`bucket:${d.length}`), c.allReduceInPlace(d)),
    broadcast: (d, r) => c.broadcast(d, r),
    barrier: () => c.barrier(),
    close: () => c.close(),
  };
}

/** Three steps of SGD with momentum on every rank; each rank's final parameters. */
async function train(collectives: Collective[], buckets: GradientBucketsOptions): Promise<Float32Array[][]> {
  const world = collectives.length;
  const rows = [5, 0, 7, 4].slice(0, world); // uneven shares, one empty rank when W > 1
  const total = rows.reduce((a, b) => a + b, 0);
  return Promise.all(
    collectives.map(async (c, rank) => {
      const model = Model.build(SPEC, 3);
      const trainer = new RankTrainer(model, createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9 }), c, 'cross_entropy', buckets);
      const data = new Rng(11);
      const all = Float32Array.from({ length: total * 36 }, () => data.normal());
      const labels = Int32Array.from({ length: total }, (_, i) => i % 3);
      const start = rows.slice(0, rank).reduce((a, b) => a + b, 0);
      for (let step = 0; step < 3; step++) {
        const x = model.inputTensor(all.subarray(start * 36, (start + rows[rank]!) * 36), rows[rank]!);
        await trainer.step(x, { labels: labels.subarray(start, start + rows[rank]!) }, total, 0.1, undefined, new Rng(step));
        x.dispose();
      }
      const out = model.params().map((p) => Float32Array.from(p.value.dataSync() as Float32Array));
      trainer.optimizer.dispose();
      model.dispose();
      return out;
    }),
  );
}

function sameBits(a: Float32Array[][], b: Float32Array[][], what: string): void {
  a.forEach((rank, r) =>
    rank.forEach((t, i) => assert.deepEqual(Buffer.from(t.buffer), Buffer.from(b[r]![i]!.buffer), `${what}: rank ${r}, parameter ${i}`)),
  );
}

describe('gradient buckets', () => {
  const servers: Array<{ forceShutdown(): void }> = [];
  after(() => servers.forEach((s) => s.forceShutdown()));

  it('buckets close at the size cap in backward order; the last carries the loss sum and correct count', () => {
    const model = Model.build(SPEC, 3);
    const sizes = model.params().map((p) => p.value.size);
    const b = new GradientBuckets(model.params(), new InProcessGroup(2).member(0), { bucketFloats: 60 });
    // Forward order: conv 36, BN 4+4, linear 2304+16, BN 16+16, head 48+3. Backward order
    // closes [3, 48, 16] (67 >= 60), then [16, 16, 2304], and the last takes [4, 4, 36].
    assert.deepEqual(sizes, [36, 4, 4, 2304, 16, 16, 16, 48, 3]);
    assert.equal(b.count, 3);
    model.dispose();
  });

  for (const world of [2, 3]) {
    it(`in-process, W=${world}: small buckets during backward give the bits of one bucket after backward`, async () => {
      const group = () => {
        const g = new InProcessGroup(world);
        return Array.from({ length: world }, (_, r) => g.member(r));
      };
      const reference = await train(group(), { bucketFloats: 1e9, overlap: false });
      const many = await train(group(), { bucketFloats: 40, overlap: true });
      sameBits(many, reference, 'small buckets');
      // And every rank ends with the same model.
      for (const r of many.slice(1)) sameBits([r], [many[0]!], 'ranks agree');
    });
  }

  it('over the gRPC collective, small buckets give the in-process bits', async () => {
    const world = 3;
    const listening = await Promise.all(Array.from({ length: world }, () => listenCollectiveServer({ host: '127.0.0.1', port: 0 })));
    listening.forEach((l) => servers.push(l.server));
    const peers = listening.map((l) => `127.0.0.1:${l.port}`);
    const ranks = await Promise.all(listening.map((l, rank) => GrpcCollective.connect({ jobId: 'buckets', generation: 1, rank, worldSize: world, peers, server: l.server, log: () => {} })));
    try {
      const viaGrpc = await train(ranks, { bucketFloats: 40, overlap: true });
      const g = new InProcessGroup(world);
      const inProcess = await train(Array.from({ length: world }, (_, r) => g.member(r)), { bucketFloats: 1e9, overlap: false });
      sameBits(viaGrpc, inProcess, 'gRPC, small buckets');
    } finally {
      await Promise.all(ranks.map((c) => c.close()));
    }
  });

  it('buckets start during backward, between SyncBN reductions, in one order on every rank; without overlap, after backward', async () => {
    for (const overlap of [true, false]) {
      const g = new InProcessGroup(2);
      const calls: string[][] = [[], []];
      await train([recording(g.member(0), calls[0]!), recording(g.member(1), calls[1]!)], { bucketFloats: 60, overlap });
      assert.deepEqual(calls[0], calls[1], 'both ranks call the same collectives in the same order');
      const step = calls[0]!.slice(0, calls[0]!.length / 3); // the first of three identical steps
      const firstBucket = step.findIndex((c) => c.startsWith('bucket'));
      const lastBnReduce = step.map((c) => c.startsWith('reduce')).lastIndexOf(true);
      assert.equal(step.filter((c) => c.startsWith('bucket')).length, 3);
      if (overlap) assert.ok(firstBucket < lastBnReduce, `a bucket starts before the first BN layer's backward reduction: ${step.join(' ')}`);
      else assert.ok(firstBucket > lastBnReduce, `every bucket after backward: ${step.join(' ')}`);
    }
  });

  it('TAS_GRAD_BUCKET_MB and TAS_GRAD_OVERLAP are read and checked', () => {
    assert.deepEqual(gradientBucketsFromEnv({}), { bucketFloats: 1 << 20, overlap: true });
    assert.deepEqual(gradientBucketsFromEnv({ TAS_GRAD_BUCKET_MB: '0.5', TAS_GRAD_OVERLAP: '0' }), { bucketFloats: 131072, overlap: false });
    assert.throws(() => gradientBucketsFromEnv({ TAS_GRAD_BUCKET_MB: '0' }), /TAS_GRAD_BUCKET_MB/);
    assert.throws(() => gradientBucketsFromEnv({ TAS_GRAD_OVERLAP: 'yes' }), /TAS_GRAD_OVERLAP/);
  });

  it('leaves no tensors behind', async () => {
    const before = tf.memory().numTensors;
    const g = new InProcessGroup(2);
    await train([g.member(0), g.member(1)], { bucketFloats: 50 });
    assert.equal(tf.memory().numTensors, before);
  });
});
