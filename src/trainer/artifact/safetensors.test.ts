import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeSafetensors, encodeSafetensors } from './safetensors.js';
import { TrainerError } from '../errors.js';

/** A file from a header (serialised as given, padded to 8) and a byte buffer. */
function build(header: unknown, data: Uint8Array | number[], headerText?: string): Uint8Array {
  const json = new TextEncoder().encode(headerText ?? JSON.stringify(header));
  const padded = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + padded + data.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.fill(0x20, 8, 8 + padded);
  bytes.set(json, 8);
  bytes.set(data, 8 + padded);
  return bytes;
}

const isFormatError = (e: unknown) => e instanceof TrainerError && e.code === 'TAS_ERR_DATA_FORMAT';

test('byte-exact encoding of a tiny file built by hand', () => {
  const out = encodeSafetensors(
    [
      { name: 'a', dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) },
      { name: 'b', dtype: 'I64', shape: [], data: new BigInt64Array([7n]) },
    ],
    { format: 'pt' },
  );
  const header =
    '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}';
  assert.equal(header.length, 138); // padded with 6 spaces to 144 = 0x90
  const expected = new Uint8Array([
    0x90, 0, 0, 0, 0, 0, 0, 0,
    ...new TextEncoder().encode(header),
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x00, 0x00, 0x80, 0x3f, // 1.0f
    0x00, 0x00, 0x00, 0xc0, // -2.0f
    0x07, 0, 0, 0, 0, 0, 0, 0, // 7n
  ]);
  assert.deepEqual(out, expected);
  const back = decodeSafetensors(expected);
  assert.deepEqual(back.metadata, { format: 'pt' });
  assert.deepEqual([...back.tensors.keys()], ['a', 'b']);
  assert.deepEqual(back.tensors.get('a'), { dtype: 'F32', shape: [2], data: new Float32Array([1, -2]) });
  assert.deepEqual(back.tensors.get('b'), { dtype: 'I64', shape: [], data: new BigInt64Array([7n]) });
});

test('empty metadata is omitted; empty file round-trips', () => {
  const out = encodeSafetensors([], {});
  assert.deepEqual(out, new Uint8Array([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20]));
  const back = decodeSafetensors(out);
  assert.equal(back.tensors.size, 0);
  assert.deepEqual(back.metadata, {});
});

test('round trip keeps order, shapes, values, metadata; unaligned data is copied', () => {
  const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i * 1.7) * 1e3));
  const tensors = [
    { name: 'layers.0.weight', dtype: 'F32' as const, shape: [3, 5], data: rnd(15) },
    { name: 'layers.0.bias', dtype: 'F32' as const, shape: [3], data: rnd(3) }, // 60 + 12 = 72: I64 below aligned
    { name: 'odd', dtype: 'F32' as const, shape: [1], data: new Float32Array([Number.NaN]) }, // makes the next I64 unaligned
    { name: 'bn.num_batches_tracked', dtype: 'I64' as const, shape: [], data: new BigInt64Array([-(2n ** 62n) + 5n]) },
    { name: 'empty', dtype: 'F32' as const, shape: [0, 4], data: new Float32Array(0) },
    { name: '10', dtype: 'F32' as const, shape: [2, 1], data: new Float32Array([Infinity, -0]) },
  ];
  const meta = { spec: '{"a":1}', 'ünïcode': 'värde ✓' };
  const bytes = encodeSafetensors(tensors, meta);
  assert.equal((new DataView(bytes.buffer).getUint32(0, true) + 8) % 8, 0);
  // Decode from a view at an odd byte offset, so every tensor's bytes are unaligned.
  const shifted = new Uint8Array(bytes.length + 1);
  shifted.set(bytes, 1);
  for (const input of [bytes, shifted.subarray(1)]) {
    const back = decodeSafetensors(input);
    assert.deepEqual(back.metadata, meta);
    assert.deepEqual([...back.tensors.keys()], tensors.map((t) => t.name));
    for (const t of tensors) {
      const got = back.tensors.get(t.name)!;
      assert.equal(got.dtype, t.dtype);
      assert.deepEqual(got.shape, t.shape);
      assert.deepEqual(got.data, t.data);
      assert.equal(got.data.constructor, t.data.constructor);
    }
    // Aligned tensors are views on the input; unaligned ones are copies.
    const views = [...back.tensors.values()].map((x) => x.data.buffer === input.buffer);
    assert.deepEqual(views, input === bytes ? [true, true, true, false, true, true] : [false, false, false, false, false, false]);
  }
});

test('decodes F64, I32, U8 and BOOL', () => {
  const f64 = new Float64Array([Math.PI, -1e300]);
  const i32 = new Int32Array([-5, 2 ** 31 - 1]);
  const data = new Uint8Array([...new Uint8Array(f64.buffer), ...new Uint8Array(i32.buffer), 200, 1, 0]);
  const file = build(
    {
      x: { dtype: 'F64', shape: [2], data_offsets: [0, 16] },
      y: { dtype: 'I32', shape: [1, 2], data_offsets: [16, 24] },
      z: { dtype: 'U8', shape: [1], data_offsets: [24, 25] },
      w: { dtype: 'BOOL', shape: [2], data_offsets: [25, 27] },
    },
    data,
  );
  const back = decodeSafetensors(file);
  assert.deepEqual(back.tensors.get('x')!.data, f64);
  assert.deepEqual(back.tensors.get('y')!.data, i32);
  assert.deepEqual(back.tensors.get('z')!.data, new Uint8Array([200]));
  assert.deepEqual(back.tensors.get('w'), { dtype: 'BOOL', shape: [2], data: new Uint8Array([1, 0]) });
});

test('every corruption is rejected with TAS_ERR_DATA_FORMAT', () => {
  const t = (begin: number, end: number, shape = [(end - begin) / 4], dtype = 'F32') => ({ dtype, shape, data_offsets: [begin, end] });
  const eight = new Uint8Array(8);
  const good = build({ a: t(0, 8) }, eight);
  assert.equal(decodeSafetensors(good).tensors.size, 1);

  const tooLong = good.slice();
  new DataView(tooLong.buffer).setBigUint64(0, BigInt(good.length - 8 + 1), true);
  const huge = good.slice();
  new DataView(huge.buffer).setBigUint64(0, 2n ** 63n, true);
  const badUtf8 = build(null, eight, '{"a":1}');
  badUtf8[9] = 0xff;

  const cases: Array<[string, Uint8Array]> = [
    ['shorter than 8 bytes', new Uint8Array(5)],
    ['header length beyond the file', tooLong],
    ['header length beyond 2^53', huge],
    ['header not UTF-8', badUtf8],
    ['header not JSON', build(null, eight, '{"a": ')],
    ['header a JSON array', build([1], eight)],
    ['header not starting with {', build(null, eight, ' {}')],
    ['unknown dtype', build({ a: t(0, 8, [2], 'Q7') }, eight)],
    ['unsupported dtype', build({ a: t(0, 8, [4], 'F16') }, eight)],
    ['missing dtype', build({ a: { shape: [2], data_offsets: [0, 8] } }, eight)],
    ['size mismatch with shape', build({ a: t(0, 8, [3]) }, eight)],
    ['size mismatch with dtype', build({ a: t(0, 8, [2], 'F64') }, eight)],
    ['negative dimension', build({ a: t(0, 8, [-2]) }, eight)],
    ['fractional dimension', build({ a: t(0, 8, [2.5]) }, eight)],
    ['offsets reversed', build({ a: t(8, 0, [0]) }, eight)],
    ['offsets not a pair', build({ a: { dtype: 'F32', shape: [2], data_offsets: [0] } }, eight)],
    ['offsets out of range', build({ a: t(0, 16) }, eight)],
    ['overlapping offsets', build({ a: t(0, 8), b: t(4, 8) }, eight)],
    ['gap between tensors', build({ a: t(0, 4), b: t(8, 12) }, new Uint8Array(12))],
    ['trailing bytes not covered', build({ a: t(0, 4) }, eight)],
    ['tensor entry not an object', build({ a: 3 }, eight)],
    ['metadata value not a string', build({ __metadata__: { n: 1 }, a: t(0, 8) }, eight)],
    ['metadata not an object', build({ __metadata__: 'x', a: t(0, 8) }, eight)],
  ];
  for (const [what, file] of cases) {
    assert.throws(() => decodeSafetensors(file), isFormatError, what);
  }
});

test('encode rejects inconsistent input', () => {
  const f = (n: number) => new Float32Array(n);
  const bad: Array<[string, () => unknown]> = [
    ['data length vs shape', () => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [3], data: f(2) }], {})],
    ['dtype vs array type', () => encodeSafetensors([{ name: 'a', dtype: 'I64', shape: [2], data: f(2) }], {})],
    ['duplicate name', () => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [1], data: f(1) }, { name: 'a', dtype: 'F32', shape: [1], data: f(1) }], {})],
    ['reserved name', () => encodeSafetensors([{ name: '__metadata__', dtype: 'F32', shape: [1], data: f(1) }], {})],
    ['negative dim', () => encodeSafetensors([{ name: 'a', dtype: 'F32', shape: [-1], data: f(0) }], {})],
    ['metadata value', () => encodeSafetensors([], { a: 1 as unknown as string })],
  ];
  for (const [what, fn] of bad) assert.throws(fn, isFormatError, what);
});
