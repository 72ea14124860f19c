/** The memory estimate: its shape pass agrees with the model builder; what it counts; which layer it names. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import './setup-backend.js';
import { TrainerError } from '../src/trainer/errors.js';
import { resolveTrainSpec } from '../src/trainer/engine/job-spec.js';
import { checkMemoryFits, estimateJobMemory, estimateMemory, optimizerSlots, RUNTIME_BASELINE_BYTES, type MemoryInput } from '../src/trainer/engine/memory.js';
import { Model } from '../src/trainer/model/model.js';
import type { ModelSpec } from '../src/trainer/model/spec.js';

const example = (name: string) => JSON.parse(readFileSync(new URL(`../examples/${name}`, import.meta.url), 'utf8')) as Record<string, unknown>;
const QUICKSTART = example('quickstart.json');

/** Trained parameters of the built model, and its widest output per row. */
function built(spec: ModelSpec): { parameters: number } {
  const m = Model.build(spec);
  try {
    return { parameters: m.params().reduce((a, p) => a + p.value.size, 0) };
  } finally {
    m.dispose();
  }
}

const RESNETISH: ModelSpec = {
  input_shape: [3, 16, 12],
  layers: [
    { type: 'conv2d', out: 8, kernel: 3, padding: 1 },
    { type: 'batchnorm' },
    { type: 'residual', body: [{ type: 'conv2d', out: 8, kernel: 3, padding: 1, bias: false }, { type: 'groupnorm', groups: 2 }, { type: 'gelu' }], activation: 'relu' },
    { type: 'residual', body: [{ type: 'conv2d', out: 16, kernel: 3, stride: 2, padding: 1 }, { type: 'instancenorm', affine: true }], shortcut: [{ type: 'conv2d', out: 16, kernel: 1, stride: 2 }] },
    { type: 'maxpool', kernel: 2 },
    { type: 'layernorm' },
    { type: 'dropout', p: 0.1 },
    { type: 'flatten' },
    { type: 'linear', out: 10 },
  ],
};

const input = (model: ModelSpec, over: Partial<MemoryInput> = {}): MemoryInput => ({ model, optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 }, rows: 32, forwardRows: 32, dataBytes: 0, ...over });

describe('memory estimate', () => {
  it('counts the parameters the model builder makes, for every layer type', () => {
    for (const model of [QUICKSTART.model as ModelSpec, example('cnn-images.json').model as ModelSpec, RESNETISH]) {
      assert.equal(estimateMemory(input(model)).parameters, built(model).parameters, JSON.stringify(model.layers.map((l) => l.type)));
    }
    // And names nested layers by their field.
    const fields = estimateMemory(input(RESNETISH)).layers.map((l) => l.field);
    assert.ok(fields.includes('model.layers[2].body[1]') && fields.includes('model.layers[3].shortcut[0]'), fields.join(' '));
  });

  it('grows with the rows, the optimizer state and the data; has the runtime baseline', () => {
    const m = QUICKSTART.model as ModelSpec;
    const base = estimateMemory(input(m)).bytes;
    assert.ok(base > RUNTIME_BASELINE_BYTES);
    assert.ok(estimateMemory(input(m, { rows: 64 })).bytes > base);
    assert.ok(estimateMemory(input(m, { optimizer: { type: 'adam', lr: 1e-3 } })).bytes > base);
    assert.equal(estimateMemory(input(m, { dataBytes: 1000 })).bytes, base + 1000);
    assert.deepEqual([optimizerSlots({ type: 'sgd', lr: 1 }), optimizerSlots({ type: 'sgd', lr: 1, momentum: 0.9 }), optimizerSlots({ type: 'adam', lr: 1 }), optimizerSlots({ type: 'adamw', lr: 1, amsgrad: true })], [0, 1, 2, 3]);
  });

  it('a job: the largest share of the batch, the eval pass bounded by the dataset, a synthetic dataset counted', () => {
    const spec = resolveTrainSpec({ ...QUICKSTART, local_batch_sizes: [24, 40], batch_size: undefined, workers: undefined });
    assert.equal(estimateJobMemory(spec).rows, 40);
    assert.equal(estimateJobMemory(spec, { rank: 0 }).rows, 24);
    // Quickstart: 1200 samples of 2 features and a label.
    const e = estimateJobMemory(spec, { samples: 1200 });
    assert.equal(e.bytes - estimateJobMemory(spec, { samples: 1200, dataBytes: 0 }).bytes, 1200 * 3 * 4);
  });

  it('refuses a model that cannot fit, naming the layer that takes the most, its peak included', () => {
    // The quickstart with layers[0].out 10,000,000: 10M values per row through layers 0-2
    // (the eval pass holds 512 rows of them), and layers[3] holds 640M weights.
    const huge = resolveTrainSpec({ ...QUICKSTART, model: { ...(QUICKSTART.model as ModelSpec), layers: (QUICKSTART.model as ModelSpec).layers.map((l, i) => (i === 0 ? { ...l, out: 10_000_000 } : l)) } });
    const e = estimateJobMemory(huge);
    assert.ok(e.bytes > 12 * 2 ** 30, `${e.bytes}`);
    assert.equal(e.largest?.field, 'model.layers[0]');
    assert.deepEqual(e.largest?.peak?.what, 'forward');
    assert.ok(e.layers.find((l) => l.field === 'model.layers[3]')!.bytes > 14 * 2 ** 30);
    assert.throws(
      () => checkMemoryFits(e, 4 * 2 ** 30, 'a cpu worker has'),
      (err: unknown) => {
        assert.ok(err instanceof TrainerError);
        assert.equal(err.code, 'TAS_ERR_OUT_OF_MEMORY');
        assert.equal(err.field, 'model.layers[0]');
        assert.match(err.message, /^model\.layers\[0\]: the job needs about \d+\.\d GiB per worker \(32 rows per worker; model\.layers\[0\] \(linear\) alone \d+\.\d GiB: 20,000,000 parameters .* 10,000,000 values per row kept for the backward pass, which the eval pass holds for 512 rows at once\)/);
        assert.match(err.message, /more than the 4\.0 GiB a cpu worker has/);
        return true;
      },
    );
    // The quickstart itself fits easily.
    checkMemoryFits(estimateJobMemory(resolveTrainSpec(QUICKSTART)), 512 * 2 ** 20, 'a cpu worker has');
    // A model whose parameters dominate: the checkpoint's copies are charged to the layer with most of them.
    const wide = estimateMemory(input({ input_shape: [4096], layers: [{ type: 'linear', out: 4096 }, { type: 'relu' }, { type: 'linear', out: 10 }] }, { rows: 8, forwardRows: 8 }));
    assert.equal(wide.largest?.field, 'model.layers[0]');
    assert.equal(wide.largest?.peak?.what, 'checkpoint');
  });

  it('a spec whose shapes do not fit is estimated as far as it goes (the model builder reports the error)', () => {
    const e = estimateMemory(input({ input_shape: [4], layers: [{ type: 'linear', out: 8 }, { type: 'conv2d', out: 2, kernel: 3 }] }));
    assert.deepEqual(e.layers.map((l) => l.field), ['model.layers[0]']);
  });
});
