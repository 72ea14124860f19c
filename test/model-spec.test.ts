/** Model building: shape checks name the field; PyTorch state names and layouts. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import './setup-backend.js';
import { TrainerError } from '../src/trainer/errors.js';
import { Model } from '../src/trainer/model/model.js';

function buildError(spec: unknown): TrainerError {
  try {
    Model.build(spec).dispose();
  } catch (e) {
    assert.ok(e instanceof TrainerError);
    return e;
  }
  assert.fail('expected the model to be rejected');
}

describe('model spec', () => {
  it('names the layer whose input does not fit', () => {
    const e = buildError({ input_shape: [1, 8, 8], layers: [{ type: 'conv2d', out: 4, kernel: 3 }, { type: 'linear', out: 2 }] });
    assert.equal(e.field, 'model.layers[1].type');
    assert.match(e.message, /flatten or global_avg_pool/);
    assert.equal(buildError({ input_shape: [4], layers: [{ type: 'linear', in: 5, out: 2 }] }).field, 'model.layers[0].in');
    assert.equal(buildError({ input_shape: [4], layers: [{ type: 'linear', out: 2, index: 3 }] }).field, 'model.layers[0].index');
    assert.equal(buildError({ input_shape: [6, 4, 4], layers: [{ type: 'groupnorm', groups: 4 }] }).field, 'model.layers[0].groups');
    assert.equal(
      buildError({ input_shape: [2, 4, 4], layers: [{ type: 'residual', body: [{ type: 'conv2d', out: 3, kernel: 1 }] }] }).field,
      'model.layers[0].body',
    );
  });

  it('exports PyTorch names and layouts, nested for residual blocks', () => {
    const m = Model.build({
      input_shape: [2, 5, 5],
      layers: [
        { type: 'conv2d', out: 3, kernel: 3, stride: 2, padding: 1 },
        { type: 'residual', body: [{ type: 'conv2d', out: 4, kernel: 3, padding: 1, bias: false }, { type: 'batchnorm' }], shortcut: [{ type: 'conv2d', out: 4, kernel: 1, bias: false }, { type: 'batchnorm', affine: false }] },
        { type: 'layernorm' },
        { type: 'flatten' },
        { type: 'linear', out: 2 },
      ],
    });
    const shapes = Object.fromEntries([...m.stateDict()].map(([k, v]) => [k, v.shape]));
    assert.deepEqual(shapes, {
      'layers.0.weight': [3, 2, 3, 3],
      'layers.0.bias': [3],
      'layers.1.body.0.weight': [4, 3, 3, 3],
      'layers.1.body.1.weight': [4],
      'layers.1.body.1.bias': [4],
      'layers.1.body.1.running_mean': [4],
      'layers.1.body.1.running_var': [4],
      'layers.1.body.1.num_batches_tracked': [],
      'layers.1.shortcut.0.weight': [4, 3, 1, 1],
      'layers.1.shortcut.1.running_mean': [4],
      'layers.1.shortcut.1.running_var': [4],
      'layers.1.shortcut.1.num_batches_tracked': [],
      'layers.2.weight': [4, 3, 3],
      'layers.2.bias': [4, 3, 3],
      'layers.4.weight': [2, 36],
      'layers.4.bias': [2],
    });
    // Round trip through the PyTorch layout is exact.
    const state = m.stateDict();
    const m2 = Model.build(m.spec, 99);
    m2.loadStateDict(state);
    for (const [k, v] of m2.stateDict()) assert.deepEqual(v.data, state.get(k)!.data, k);
    m.dispose();
    m2.dispose();
  });

  it('rejects a state with a wrong shape, naming the tensor', () => {
    const m = Model.build({ input_shape: [3], layers: [{ type: 'linear', out: 2 }] });
    const s = m.stateDict();
    s.set('layers.0.weight', { shape: [3, 2], data: new Float32Array(6) });
    assert.throws(() => m.loadStateDict(s), /'layers.0.weight' has shape \[3,2\], the model expects \[2,3\]/);
    m.dispose();
  });
});
