/**
 * Data loaders: CSV quoting and label handling, NPY dtypes/orders/versions, IDX plain and
 * gzipped, synthetic determinism, path confinement, and errors that name the field.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { TrainerError } from '../errors.js';
import { resolveTrainSpec } from '../engine/job-spec.js';
import { csvToDataset, parseCsvRows } from './csv.js';
import { parseIdx } from './idx.js';
import { loadDataset } from './load.js';
import { parseNpy } from './npy.js';
import { generateSynthetic } from './synthetic.js';

const dir = mkdtempSync(join(tmpdir(), 'tas-data-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function rejectsWith(fn: () => unknown, code: string, field: string, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TrainerError, String(e));
    assert.equal(e.code, code);
    assert.equal(e.field, field);
    assert.match(e.message, re);
    return true;
  });
}

/** A .npy file as numpy's format.write_array writes it (header padded to 64 bytes). */
function npy(descr: string, shape: number[], body: Uint8Array, o: { fortran?: boolean; version?: 1 | 2 } = {}): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': ${o.fortran ? 'True' : 'False'}, 'shape': ${shapeText}, }`;
  const pre = o.version === 2 ? 12 : 10;
  header += ' '.repeat(64 - ((pre + header.length + 1) % 64)) + '\n';
  const out = new Uint8Array(pre + header.length + body.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, o.version ?? 1, 0]);
  const v = new DataView(out.buffer);
  if (o.version === 2) v.setUint32(8, header.length, true);
  else v.setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), pre);
  out.set(body, pre + header.length);
  return out;
}
const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function idx(type: number, shape: number[], write: (v: DataView, off: number) => void, size: number): Uint8Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const out = new Uint8Array(4 + 4 * shape.length + n * size);
  const v = new DataView(out.buffer);
  out.set([0, 0, type, shape.length]);
  shape.forEach((d, i) => v.setUint32(4 + 4 * i, d, false));
  write(v, 4 + 4 * shape.length);
  return out;
}

describe('CSV', () => {
  it('parses quotes, doubled quotes, CRLF, blank lines and a byte-order mark', () => {
    const rows = parseCsvRows('\ufeffa,"b,1","say ""hi"""\r\n\r\n 1 , 2,3\n"multi\nline",x,y');
    assert.deepEqual(rows, [['a', 'b,1', 'say "hi"'], ['1', '2', '3'], ['multi\nline', 'x', 'y']]);
  });

  it('takes the last column as the label by default, integer labels as classes', () => {
    const ds = csvToDataset('f1,f2,label\n0.5,1,0\n-2,3e-1,2\n7,8,1\n');
    assert.equal(ds.count, 3);
    assert.deepEqual(ds.sampleShape, [2]);
    assert.deepEqual([...ds.x], [0.5, 1, -2, Math.fround(0.3), 7, 8]);
    assert.equal(ds.targets.kind, 'classes');
    if (ds.targets.kind === 'classes') {
      assert.deepEqual([...ds.targets.labels], [0, 2, 1]);
      assert.equal(ds.targets.numClasses, 3);
    }
  });

  it('selects the label column by name or negative index, maps string labels in sorted order', () => {
    const text = 'species,len,width\nsetosa,1,2\nvirginica,3,4\nsetosa,5,6\nversicolor,7,8\n';
    for (const labelColumn of ['species', 0, -3] as const) {
      const ds = csvToDataset(text, { labelColumn });
      assert.deepEqual([...ds.x], [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.ok(ds.targets.kind === 'classes');
      assert.deepEqual([...ds.targets.labels], [0, 2, 0, 1]);
      assert.deepEqual(ds.targets.classNames, ['setosa', 'versicolor', 'virginica']);
    }
  });

  it('reads float targets for regression, and headerless files', () => {
    const ds = csvToDataset('1;2;0.25\n3;4;-1.5\n', { header: false, delimiter: ';', task: 'regression' });
    assert.ok(ds.targets.kind === 'values');
    assert.deepEqual([...ds.targets.values], [0.25, -1.5]);
    assert.equal(ds.targets.targetDim, 1);
  });

  it('names the row and column of a bad value, a short row, an unknown label column', () => {
    rejectsWith(() => csvToDataset('a,b,y\n1,2,0\n1,oops,1\n'), 'TAS_ERR_DATA_FORMAT', 'data.path', /row 3, column "b": "oops" is not a finite number/);
    rejectsWith(() => csvToDataset('a,b,y\n1,2,0\n1,1\n'), 'TAS_ERR_DATA_FORMAT', 'data.path', /row 3 has 2 fields, expected 3/);
    rejectsWith(() => csvToDataset('a,b,y\n1,,0\n'), 'TAS_ERR_DATA_FORMAT', 'data.path', /row 2, column "b": "" is not a finite number/);
    rejectsWith(() => csvToDataset('a,b,y\n1,2,0\n', { labelColumn: 'z' }), 'TAS_ERR_INVALID_SPEC', 'data.label_column', /no column "z"/);
    rejectsWith(() => csvToDataset('a,b,y\n1,2,x\n', { task: 'regression' }), 'TAS_ERR_DATA_FORMAT', 'data.path', /target "x"/);
    rejectsWith(() => csvToDataset('a,b,y\n'), 'TAS_ERR_DATA_FORMAT', 'data.path', /no data rows/);
    rejectsWith(() => csvToDataset('a,"b\n1,2'), 'TAS_ERR_DATA_FORMAT', 'data.path', /unterminated quoted field/);
  });
});

describe('NPY', () => {
  it('reads float32, float64, float16 and big-endian int32, versions 1 and 2', () => {
    const f32 = Float32Array.from([1.5, -2, 3.25, 4, 5, 6]);
    const a = parseNpy(npy('<f4', [3, 2], bytes(f32)), 'data.x');
    assert.deepEqual(a.shape, [3, 2]);
    assert.deepEqual([...a.data], [...f32]);
    const f64 = Float64Array.from([0.1, 0.2]);
    assert.deepEqual([...parseNpy(npy('<f8', [2], bytes(f64), { version: 2 }), 'x').data], [0.1, 0.2]);
    const half = Uint16Array.from([0x3c00, 0xc000, 0x3555]); // 1, -2, 0.333...
    assert.deepEqual([...parseNpy(npy('<f2', [3], bytes(half)), 'x').data], [1, -2, 0.333251953125]);
    const be = new Uint8Array(8);
    new DataView(be.buffer).setInt32(0, -7, false);
    new DataView(be.buffer).setInt32(4, 9, false);
    assert.deepEqual([...parseNpy(npy('>i4', [2], be), 'x').data], [-7, 9]);
    assert.deepEqual([...parseNpy(npy('|u1', [3], Uint8Array.from([0, 200, 255])), 'x').data], [0, 200, 255]);
    assert.deepEqual([...parseNpy(npy('<i8', [2], bytes(BigInt64Array.from([-3n, 4n]))), 'x').data], [-3, 4]);
    assert.deepEqual([...parseNpy(npy('|b1', [3], Uint8Array.from([1, 0, 1])), 'x').data], [1, 0, 1]);
  });

  it('transposes Fortran order to C order', () => {
    // C-order [[1,2,3],[4,5,6]] stored column-major: 1,4,2,5,3,6.
    const a = parseNpy(npy('<f4', [2, 3], bytes(Float32Array.from([1, 4, 2, 5, 3, 6])), { fortran: true }), 'x');
    assert.deepEqual([...a.data], [1, 2, 3, 4, 5, 6]);
  });

  it('rejects a non-npy file, an unsupported dtype and a truncated body', () => {
    rejectsWith(() => parseNpy(new TextEncoder().encode('hello, world'), 'data.x'), 'TAS_ERR_DATA_FORMAT', 'data.x', /not a \.npy file/);
    rejectsWith(() => parseNpy(npy('<U3', [1], new Uint8Array(12)), 'data.x'), 'TAS_ERR_DATA_FORMAT', 'data.x', /dtype '<U3' is not supported/);
    rejectsWith(() => parseNpy(npy('<f4', [4], new Uint8Array(8)), 'data.y'), 'TAS_ERR_DATA_FORMAT', 'data.y', /needs 16/);
  });
});

describe('IDX', () => {
  const images = idx(0x08, [2, 2, 3], (v, o) => [0, 51, 102, 153, 204, 255, 1, 2, 3, 4, 5, 6].forEach((b, i) => v.setUint8(o + i, b)), 1);
  const labels = idx(0x08, [2], (v, o) => [7, 1].forEach((b, i) => v.setUint8(o + i, b)), 1);

  it('reads ubyte and big-endian float IDX, plain and gzipped alike', () => {
    const a = parseIdx(images, 'data.images');
    assert.deepEqual(a.shape, [2, 2, 3]);
    assert.deepEqual([...a.data].slice(0, 6), [0, 51, 102, 153, 204, 255]);
    assert.deepEqual(parseIdx(gzipSync(images), 'data.images'), a);
    const f = parseIdx(idx(0x0d, [2], (v, o) => { v.setFloat32(o, 1.25, false); v.setFloat32(o + 4, -3, false); }, 4), 'x');
    assert.deepEqual([...f.data], [1.25, -3]);
  });

  it('rejects a bad magic, a corrupt gzip and a truncated body', () => {
    rejectsWith(() => parseIdx(Uint8Array.from([1, 2, 8, 1, 0, 0, 0, 1, 5]), 'data.images'), 'TAS_ERR_DATA_FORMAT', 'data.images', /not an IDX file/);
    rejectsWith(() => parseIdx(Uint8Array.from([0x1f, 0x8b, 1, 2, 3]), 'data.labels'), 'TAS_ERR_DATA_FORMAT', 'data.labels', /corrupt gzip/);
    rejectsWith(() => parseIdx(images.subarray(0, images.length - 1), 'data.images'), 'TAS_ERR_DATA_FORMAT', 'data.images', /needs 12/);
  });

  it('loads MNIST-style files as [N, 1, H, W] scaled to [0, 1]', async () => {
    mkdirSync(join(dir, 'mnist'), { recursive: true });
    writeFileSync(join(dir, 'mnist/images.idx3-ubyte.gz'), gzipSync(images));
    writeFileSync(join(dir, 'mnist/labels.idx1-ubyte'), labels);
    const ds = await loadDataset({ type: 'idx', images: 'mnist/images.idx3-ubyte.gz', labels: 'mnist/labels.idx1-ubyte' }, dir);
    assert.deepEqual(ds.sampleShape, [1, 2, 3]);
    assert.equal(ds.count, 2);
    assert.equal(ds.x[1], Math.fround(51 / 255));
    assert.equal(ds.x[5], 1);
    assert.ok(ds.targets.kind === 'classes');
    assert.deepEqual([...ds.targets.labels], [7, 1]);
    assert.equal(ds.targets.numClasses, 8);
  });
});

describe('loadDataset', () => {
  it('loads npy pairs with image-shaped samples and regression targets', async () => {
    writeFileSync(join(dir, 'x.npy'), npy('<f4', [2, 1, 2, 2], bytes(Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]))));
    writeFileSync(join(dir, 'y.npy'), npy('<i8', [2], bytes(BigInt64Array.from([1n, 0n]))));
    writeFileSync(join(dir, 'yr.npy'), npy('<f8', [2, 2], bytes(Float64Array.from([0.5, 1, 1.5, 2]))));
    const ds = await loadDataset({ type: 'npy', x: 'x.npy', y: 'y.npy' }, dir);
    assert.deepEqual(ds.sampleShape, [1, 2, 2]);
    assert.ok(ds.targets.kind === 'classes');
    assert.deepEqual([...ds.targets.labels], [1, 0]);
    const dr = await loadDataset({ type: 'npy', x: 'x.npy', y: 'yr.npy', task: 'regression' }, dir);
    assert.ok(dr.targets.kind === 'values');
    assert.equal(dr.targets.targetDim, 2);
    assert.deepEqual([...dr.targets.values], [0.5, 1, 1.5, 2]);
  });

  it('rejects mismatched counts, float class labels, NaN inputs', async () => {
    writeFileSync(join(dir, 'y3.npy'), npy('<i4', [3], bytes(Int32Array.from([0, 1, 2]))));
    writeFileSync(join(dir, 'yf.npy'), npy('<f4', [2], bytes(Float32Array.from([0.5, 1]))));
    writeFileSync(join(dir, 'xnan.npy'), npy('<f4', [2, 1], bytes(Float32Array.from([1, NaN]))));
    await assert.rejects(loadDataset({ type: 'npy', x: 'x.npy', y: 'y3.npy' }, dir), /data\.y: has 3 rows but the inputs have 2 samples/);
    await assert.rejects(loadDataset({ type: 'npy', x: 'x.npy', y: 'yf.npy' }, dir), /data\.y: sample 0 has label 0\.5/);
    await assert.rejects(loadDataset({ type: 'npy', x: 'xnan.npy', y: 'y.npy' }, dir), /data\.x: sample 1 holds a non-finite value/);
  });

  it('names a missing file and refuses paths outside the data directory', async () => {
    await assert.rejects(loadDataset({ type: 'csv', path: 'nope.csv' }, dir), (e: unknown) => e instanceof TrainerError && e.field === 'data.path' && /"nope\.csv": no such file/.test(e.message));
    await assert.rejects(loadDataset({ type: 'csv', path: '../../etc/passwd' }, dir), /data\.path: "\.\.\/\.\.\/etc\/passwd" is outside the data directory/);
    await assert.rejects(loadDataset({ type: 'npy', x: '/etc/passwd', y: 'y.npy' }, dir), /data\.x: .* is outside the data directory/);
  });

  it('reads a CSV file relative to the data directory', async () => {
    writeFileSync(join(dir, 'd.csv'), 'a,b,y\n1,2,0\n3,4,1\n');
    const ds = await loadDataset({ type: 'csv', path: 'd.csv' }, dir);
    assert.deepEqual([...ds.x], [1, 2, 3, 4]);
  });
});

describe('synthetic', () => {
  it('is a pure function of its spec, and a prefix-stable one', () => {
    for (const generator of ['blobs', 'spirals', 'images', 'regression'] as const) {
      const a = generateSynthetic({ type: 'synthetic', generator, n: 40, seed: 9 });
      const b = generateSynthetic({ type: 'synthetic', generator, n: 40, seed: 9 });
      const c = generateSynthetic({ type: 'synthetic', generator, n: 40, seed: 10 });
      const longer = generateSynthetic({ type: 'synthetic', generator, n: 50, seed: 9 });
      assert.deepEqual(a, b, generator);
      assert.notDeepEqual(a.x, c.x, generator);
      assert.deepEqual(longer.x.subarray(0, a.x.length), a.x, generator);
    }
  });

  it('has the documented shapes and balanced classes', () => {
    const img = generateSynthetic({ type: 'synthetic', generator: 'images', n: 12, classes: 4, size: 6, channels: 2 });
    assert.deepEqual(img.sampleShape, [2, 6, 6]);
    assert.ok(img.targets.kind === 'classes');
    assert.deepEqual([...img.targets.labels].filter((l) => l === 3).length, 3);
    const blobs = generateSynthetic({ type: 'synthetic', generator: 'blobs', n: 10, features: 5, classes: 2 });
    assert.deepEqual(blobs.sampleShape, [5]);
    const reg = generateSynthetic({ type: 'synthetic', generator: 'regression', n: 10, features: 3, outputs: 2 });
    assert.ok(reg.targets.kind === 'values');
    assert.equal(reg.targets.targetDim, 2);
    assert.equal(reg.targets.values.length, 20);
  });

  it('blobs are separable: each sample is nearest its own class mean', () => {
    const ds = generateSynthetic({ type: 'synthetic', generator: 'blobs', n: 300, classes: 3, noise: 0.5, seed: 1 });
    assert.ok(ds.targets.kind === 'classes');
    const labels = ds.targets.labels;
    const means = [0, 1, 2].map((k) => {
      const rows = [...labels.keys()].filter((i) => labels[i] === k);
      return [0, 1].map((j) => rows.reduce((s, i) => s + ds.x[2 * i + j], 0) / rows.length);
    });
    let right = 0;
    for (let i = 0; i < ds.count; i++) {
      const d = means.map((m) => (ds.x[2 * i] - m[0]) ** 2 + (ds.x[2 * i + 1] - m[1]) ** 2);
      if (d.indexOf(Math.min(...d)) === labels[i]) right++;
    }
    assert.ok(right / ds.count > 0.95, `${right}/${ds.count}`);
  });
});

describe('data spec validation', () => {
  const base = { model: { input_shape: [2], layers: [{ type: 'linear', out: 2 }] }, optimizer: { type: 'sgd', lr: 0.1 }, epochs: 1 };
  it('names the offending data field', () => {
    rejectsWith(() => resolveTrainSpec({ ...base, data: { type: 'synthetic', generator: 'moons', n: 10 } }), 'TAS_ERR_INVALID_SPEC', 'data.generator', /must be one of/);
    rejectsWith(() => resolveTrainSpec({ ...base, data: { type: 'synthetic', generator: 'blobs' } }), 'TAS_ERR_INVALID_SPEC', 'data.n', /is required/);
    rejectsWith(() => resolveTrainSpec({ ...base, data: { type: 'csv', path: 'a.csv', labels: 'y' } }), 'TAS_ERR_INVALID_SPEC', 'data.labels', /not a known field/);
    rejectsWith(() => resolveTrainSpec({ ...base, data: { type: 'npy', x: 'x.npy' } }), 'TAS_ERR_INVALID_SPEC', 'data.y', /is required/);
    rejectsWith(() => resolveTrainSpec({ ...base, data: { type: 'parquet' } }), 'TAS_ERR_INVALID_SPEC', 'data.type', /must be one of/);
  });
});
