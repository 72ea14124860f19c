/**
 * The one entry point from a job spec's `data` to a Dataset: reads files (relative to
 * the data directory; a path may not climb out of it) and dispatches to the parsers.
 * Every rank loads the whole set; sharding happens per epoch (math/sharding.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve } from 'node:path';
import { TrainerError } from '../errors.js';
import { csvToDataset } from './csv.js';
import { classTargets, makeDataset, type Dataset, type Targets } from './dataset.js';
import { parseIdx } from './idx.js';
import { parseNpy, type NdArray } from './npy.js';
import { generateSynthetic, type SyntheticSource } from './synthetic.js';

export type Task = 'classification' | 'regression';

export type DataSource =
  | SyntheticSource
  | { type: 'csv'; path: string; header?: boolean; label_column?: string | number; delimiter?: string; task?: Task }
  | { type: 'npy'; x: string; y: string; task?: Task }
  | { type: 'idx'; images: string; labels: string; scale?: boolean };

export type { Dataset } from './dataset.js';

/** The files a data source reads, with the spec field naming each (none for a synthetic set). */
export function dataFiles(data: DataSource): Array<[field: string, path: string]> {
  switch (data.type) {
    case 'csv':
      return [['data.path', data.path]];
    case 'npy':
      return [['data.x', data.x], ['data.y', data.y]];
    case 'idx':
      return [['data.images', data.images], ['data.labels', data.labels]];
    case 'synthetic':
      return [];
  }
}

/**
 * The bytes a data source's files take on disk (0 for a missing one), which bounds the
 * float32 values they load into: the memory estimate's data part for files.
 */
export async function dataFileBytes(data: DataSource, dataDir: string): Promise<number> {
  const sizes = await Promise.all(dataFiles(data).map(([, path]) => stat(resolve(dataDir, path)).then((s) => s.size, () => 0)));
  // Text (CSV) and gzip (IDX) files can hold more values than bytes/4: count bytes x 4 for them.
  const widen = data.type === 'npy' ? 1 : 4;
  return sizes.reduce((a, b) => a + b, 0) * widen;
}

async function readIn(dataDir: string, path: string, field: string): Promise<Uint8Array> {
  const full = resolve(dataDir, path);
  const rel = relative(resolve(dataDir), full);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: "${path}" is outside the data directory`, field);
  }
  try {
    return new Uint8Array(await readFile(full));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: "${path}": ${why}`, field);
  }
}

function toFloat32(a: NdArray, scale: number): Float32Array {
  const out = new Float32Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = a.data[i] / scale;
  return out;
}

function targetsOf(y: NdArray, n: number, task: Task, field: string): Targets {
  if (y.shape[0] !== n) throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: has ${y.shape[0]} rows but the inputs have ${n} samples`, field);
  if (task === 'regression') {
    const targetDim = y.shape.slice(1).reduce((a, b) => a * b, 1);
    return { kind: 'values', values: toFloat32(y, 1), targetDim };
  }
  const per = y.shape.slice(1).reduce((a, b) => a * b, 1);
  if (per !== 1) throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: class labels must be one value per sample, got shape [${y.shape.join(', ')}] (use task: "regression" for vector targets)`, field);
  return classTargets(y.data, field);
}

/** Load the dataset a spec names. `dataDir` anchors relative paths (default: the working directory). */
export async function loadDataset(src: DataSource, dataDir: string = process.cwd()): Promise<Dataset> {
  switch (src.type) {
    case 'synthetic':
      return generateSynthetic(src);
    case 'csv': {
      const text = new TextDecoder('utf-8').decode(await readIn(dataDir, src.path, 'data.path'));
      return csvToDataset(text, {
        field: 'data.path',
        ...(src.header !== undefined ? { header: src.header } : {}),
        ...(src.label_column !== undefined ? { labelColumn: src.label_column } : {}),
        ...(src.delimiter !== undefined ? { delimiter: src.delimiter } : {}),
        ...(src.task !== undefined ? { task: src.task } : {}),
      });
    }
    case 'npy': {
      const x = parseNpy(await readIn(dataDir, src.x, 'data.x'), 'data.x');
      const y = parseNpy(await readIn(dataDir, src.y, 'data.y'), 'data.y');
      if (x.shape.length === 0) throw new TrainerError('TAS_ERR_DATA_FORMAT', 'data.x: a 0-d array holds no samples', 'data.x');
      const sampleShape = x.shape.length === 1 ? [1] : x.shape.slice(1);
      return makeDataset(toFloat32(x, 1), sampleShape, targetsOf(y, x.shape[0], src.task ?? 'classification', 'data.y'), 'data.x');
    }
    case 'idx': {
      const images = parseIdx(await readIn(dataDir, src.images, 'data.images'), 'data.images');
      const labels = parseIdx(await readIn(dataDir, src.labels, 'data.labels'), 'data.labels');
      // [N, H, W] (MNIST) becomes [N, 1, H, W]; [N, C, H, W] and [N, D] are kept.
      const sampleShape = images.shape.length === 3 ? [1, ...images.shape.slice(1)] : images.shape.length === 1 ? [1] : images.shape.slice(1);
      const scale = images.kind === 'u' && (src.scale ?? true) ? 255 : 1;
      return makeDataset(toFloat32(images, scale), sampleShape, targetsOf(labels, images.shape[0], 'classification', 'data.labels'), 'data.images');
    }
  }
}
