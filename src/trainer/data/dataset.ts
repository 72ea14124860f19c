/**
 * The in-memory dataset every loader produces: N samples of one shape, stored flat
 * in float32 (row-major, PyTorch layout: images are [C, H, W] per sample), with either
 * integer class labels or float targets. Pure data; no I/O here.
 */
import { TrainerError } from '../errors.js';

export type Targets =
  | { kind: 'classes'; labels: Int32Array; numClasses: number; /** Names of classes 0..K-1, when the labels were strings. */ classNames?: string[] }
  | { kind: 'values'; values: Float32Array; targetDim: number };

export interface Dataset {
  /** Number of samples. */
  count: number;
  /** Shape of one sample, e.g. [2] or [1, 28, 28]. */
  sampleShape: number[];
  /** count x prod(sampleShape) values, sample-major. */
  x: Float32Array;
  targets: Targets;
}

/** Values per sample. */
export function sampleSize(ds: Pick<Dataset, 'sampleShape'>): number {
  return ds.sampleShape.reduce((a, b) => a * b, 1);
}

/** Class labels, checked to be integers in [0, 2^31), with K = max + 1. */
export function classTargets(raw: ArrayLike<number>, field: string): Targets {
  const labels = new Int32Array(raw.length);
  let max = -1;
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i];
    if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
      throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: sample ${i} has label ${v}; class labels must be integers >= 0 (use task: "regression" for float targets)`, field);
    }
    labels[i] = v;
    if (v > max) max = v;
  }
  return { kind: 'classes', labels, numClasses: max + 1 };
}

/** Build a dataset, checking that every array agrees on the sample count. */
export function makeDataset(x: Float32Array, sampleShape: number[], targets: Targets, field: string): Dataset {
  const per = sampleSize({ sampleShape });
  if (per === 0 || x.length % per !== 0) {
    throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: ${x.length} values do not divide into samples of shape [${sampleShape.join(', ')}]`, field);
  }
  const count = x.length / per;
  const tcount = targets.kind === 'classes' ? targets.labels.length : targets.values.length / targets.targetDim;
  if (tcount !== count) {
    throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: ${count} samples but ${tcount} labels/targets`, field);
  }
  if (count === 0) throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: the dataset is empty`, field);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) {
      throw new TrainerError('TAS_ERR_DATA_FORMAT', `${field}: sample ${Math.floor(i / per)} holds a non-finite value (${x[i]})`, field);
    }
  }
  return { count, sampleShape: sampleShape.slice(), x, targets };
}
