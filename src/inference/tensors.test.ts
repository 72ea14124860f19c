import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InferenceError } from './errors.js';
import { checkInput, fromJson, fromRaw, fromTyped, rawFp32, type TensorSignature } from './tensors.js';

const SIG: TensorSignature = { name: 'input', datatype: 'FP32', shape: [-1, 3] };
const IMG: TensorSignature = { name: 'input', datatype: 'FP32', shape: [-1, 1, 2, 2] };

function code(fn: () => unknown, c: InferenceError['code'], message?: string | RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InferenceError, String(e));
    assert.equal(e.code, c);
    if (typeof message === 'string') assert.equal(e.message, message);
    else if (message) assert.match(e.message, message);
    return true;
  });
}

describe('checkInput', () => {
  test('accepts the batch dimension free and the rest exact', () => {
    assert.deepEqual(checkInput('m', SIG, { name: 'input', datatype: 'FP32', shape: [5, 3] }), { rows: 5, datatype: 'FP32' });
    assert.deepEqual(checkInput('m', IMG, { name: 'input', datatype: 'UINT8', shape: [1, 1, 2, 2] }), { rows: 1, datatype: 'UINT8' });
    assert.equal(checkInput('m', SIG, { name: 'input', datatype: 'INT64', shape: [0, 3] }).rows, 0);
  });
  test("a wrong shape gets Triton's message", () => {
    code(() => checkInput('m', SIG, { name: 'input', datatype: 'FP32', shape: [3, 5] }), 'SHAPE_MISMATCH', "unexpected shape for input 'input' for model 'm'. Expected [-1,3], got [3,5]");
    code(() => checkInput('m', SIG, { name: 'input', datatype: 'FP32', shape: [3] }), 'SHAPE_MISMATCH');
    code(() => checkInput('m', SIG, { name: 'input', datatype: 'FP32', shape: [-2, 3] }), 'SHAPE_MISMATCH');
  });
  test("a datatype the model cannot take gets Triton's message", () => {
    for (const d of ['BYTES', 'BOOL', 'FP16', 'BF16', 'fp32']) {
      code(() => checkInput('m', SIG, { name: 'input', datatype: d, shape: [1, 3] }), 'DATATYPE_MISMATCH', `inference input data-type is '${d}', model expects 'FP32' for 'm'`);
    }
  });
});

describe('decoding', () => {
  const h = (datatype: 'FP32' | 'FP64' | 'INT8' | 'INT16' | 'INT32' | 'INT64' | 'UINT8' | 'UINT16' | 'UINT32' | 'UINT64', shape = [2, 3]) => ({ name: 'input', datatype, shape });

  test('typed contents: the field that matches the datatype', () => {
    assert.deepEqual(fromTyped('m', h('FP32'), { fp32_contents: [1, 2, 3, 4, 5, 6.5] }), Float32Array.of(1, 2, 3, 4, 5, 6.5));
    assert.deepEqual(fromTyped('m', h('INT32'), { int_contents: [-1, 2, 3, 4, 5, 6] }), Float32Array.of(-1, 2, 3, 4, 5, 6));
    assert.deepEqual(fromTyped('m', h('UINT8'), { uint_contents: [0, 255, 3, 4, 5, 6] }), Float32Array.of(0, 255, 3, 4, 5, 6));
    assert.deepEqual(fromTyped('m', h('INT64'), { int64_contents: [7, 8, 9, 10, 11, 12] }), Float32Array.of(7, 8, 9, 10, 11, 12));
    // Values in the wrong field do not count.
    code(() => fromTyped('m', h('FP32'), { fp64_contents: [1, 2, 3, 4, 5, 6] }), 'INVALID_INPUT', "unexpected number of elements for input 'input' for model 'm'. Expected 6, got 0");
    code(() => fromTyped('m', h('UINT8'), { uint_contents: [0, 256, 3, 4, 5, 6] }), 'INVALID_INPUT', /element 1 \(256\) is not a UINT8 value/);
  });

  test('raw contents: little-endian bytes of each datatype, at any offset', () => {
    const f32 = Float32Array.of(1.5, -2, 3, 4, 5, 6);
    // A slice at an odd offset, as protobuf hands out `bytes` fields.
    const padded = Buffer.concat([Buffer.from([9]), Buffer.from(f32.buffer)]).subarray(1);
    assert.deepEqual(fromRaw('m', h('FP32'), padded), f32);
    // At a 4-aligned offset inside a larger buffer: the values, whatever the neighbours.
    const inside = Buffer.concat([Buffer.alloc(4, 7), Buffer.from(f32.buffer), Buffer.alloc(4, 7)]).subarray(4, 28);
    assert.deepEqual(fromRaw('m', h('FP32'), inside), f32);
    // Every datatype at an odd offset.
    const odd = (b: ArrayBufferView) => Buffer.concat([Buffer.from([1]), Buffer.from(b.buffer, b.byteOffset, b.byteLength)]).subarray(1);
    assert.deepEqual(fromRaw('m', h('INT16'), odd(Int16Array.of(-300, 2, 3, 4, 5, 6))), Float32Array.of(-300, 2, 3, 4, 5, 6));
    assert.deepEqual(fromRaw('m', h('UINT32'), odd(Uint32Array.of(2 ** 32 - 1, 2, 3, 4, 5, 6))), Float32Array.of(2 ** 32 - 1, 2, 3, 4, 5, 6));
    assert.deepEqual(fromRaw('m', h('INT64'), odd(BigInt64Array.of(-5n, 2n, 3n, 4n, 5n, 6n))), Float32Array.of(-5, 2, 3, 4, 5, 6));
    assert.deepEqual(fromRaw('m', h('FP64'), odd(Float64Array.of(0.5, 2, 3, 4, 5, -6))), Float32Array.of(0.5, 2, 3, 4, 5, -6));
    assert.deepEqual(fromRaw('m', h('UINT8'), Uint8Array.of(0, 1, 2, 3, 254, 255)), Float32Array.of(0, 1, 2, 3, 254, 255));
    assert.deepEqual(fromRaw('m', h('INT16'), new Uint8Array(Int16Array.of(-300, 2, 3, 4, 5, 6).buffer)), Float32Array.of(-300, 2, 3, 4, 5, 6));
    assert.deepEqual(fromRaw('m', h('INT64'), new Uint8Array(BigInt64Array.of(-1n, 2n, 3n, 4n, 5n, 1n << 40n).buffer)), Float32Array.of(-1, 2, 3, 4, 5, 2 ** 40));
    assert.deepEqual(fromRaw('m', h('FP64'), new Uint8Array(Float64Array.of(0.25, 2, 3, 4, 5, 6).buffer)), Float32Array.of(0.25, 2, 3, 4, 5, 6));
    code(() => fromRaw('m', h('FP32'), new Uint8Array(20)), 'INVALID_INPUT', "input byte size mismatch for input 'input' for model 'm'. Expected 24, got 20");
  });

  test('JSON data: flat or nested, numbers only, integers in range', () => {
    assert.deepEqual(fromJson('m', h('FP32'), [1, 2, 3, 4, 5, 6]), Float32Array.of(1, 2, 3, 4, 5, 6));
    assert.deepEqual(fromJson('m', h('FP32'), [[1, 2, 3], [4, 5, 6]]), Float32Array.of(1, 2, 3, 4, 5, 6));
    code(() => fromJson('m', h('FP32'), [1, 2, 3, 4, 5]), 'INVALID_INPUT', /Expected 6, got 5/);
    code(() => fromJson('m', h('FP32'), [1, 2, 3, 4, 5, '6']), 'INVALID_INPUT', /data must hold numbers, got "6"/);
    code(() => fromJson('m', h('INT32'), [1, 2, 3, 4, 5, 6.5]), 'INVALID_INPUT', /element 5 \(6.5\) is not a INT32 value/);
  });

  test('floating-point inputs must be finite and within float32, whatever the binding; the input is named', () => {
    const nonFinite = /input 'input' for model 'm': element 2 is (NaN|Infinity|-Infinity); inputs must be finite/;
    const overflow = /input 'input' for model 'm': element 1 \(1e\+300\) is out of the FP32 range/;
    // REST JSON has no NaN, but 1e300 is a valid JSON number that float32 cannot hold.
    code(() => fromJson('m', h('FP32'), [1, 1e300, 3, 4, 5, 6]), 'INVALID_INPUT', overflow);
    code(() => fromJson('m', h('FP64'), [1, 1e300, 3, 4, 5, 6]), 'INVALID_INPUT', overflow);
    code(() => fromJson('m', h('FP32'), [1, -1e39, 3, 4, 5, 6]), 'INVALID_INPUT', /element 1 \(-1e\+39\) is out of the FP32 range/);
    // gRPC typed contents and raw bytes can carry NaN and the infinities.
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      code(() => fromTyped('m', h('FP32'), { fp32_contents: [1, 2, bad, 4, 5, 6] }), 'INVALID_INPUT', nonFinite);
      code(() => fromTyped('m', h('FP64'), { fp64_contents: [1, 2, bad, 4, 5, 6] }), 'INVALID_INPUT', nonFinite);
      const f32 = Float32Array.of(1, 2, bad, 4, 5, 6);
      code(() => fromRaw('m', h('FP32'), new Uint8Array(f32.buffer)), 'INVALID_INPUT', nonFinite);
      const odd = Buffer.concat([Buffer.from([1]), Buffer.from(f32.buffer)]).subarray(1);
      code(() => fromRaw('m', h('FP32'), odd), 'INVALID_INPUT', nonFinite);
      code(() => fromRaw('m', h('FP64'), new Uint8Array(Float64Array.of(1, 2, bad, 4, 5, 6).buffer)), 'INVALID_INPUT', nonFinite);
    }
    code(() => fromTyped('m', h('FP64'), { fp64_contents: [1, 1e300, 3, 4, 5, 6] }), 'INVALID_INPUT', overflow);
    code(() => fromRaw('m', h('FP64'), new Uint8Array(Float64Array.of(1, 1e300, 3, 4, 5, 6).buffer)), 'INVALID_INPUT', overflow);
    // The extremes float32 holds are taken, including a double that rounds to its largest value.
    const max = 3.4028234663852886e38;
    assert.deepEqual(fromJson('m', h('FP32'), [max, -max, 1e-45, 0, -0, 3.4028235e38]), Float32Array.of(max, -max, 1e-45, 0, -0, max));
    assert.deepEqual(fromRaw('m', h('FP32'), new Uint8Array(Float32Array.of(max, -max, 1e-45, 0, -0, 1).buffer)), Float32Array.of(max, -max, 1e-45, 0, -0, 1));
  });

  test('raw output bytes round-trip', () => {
    const v = Float32Array.of(1, -0.5, 3e-8);
    assert.deepEqual(fromRaw('m', { name: 'x', datatype: 'FP32', shape: [1, 3] }, rawFp32(v)), v);
  });
});
