/**
 * Built-in synthetic datasets, generated from a seed so every rank (and every rerun)
 * builds the same bits without any file: blobs (Gaussian clusters, as scikit-learn's
 * make_blobs), spirals (the CS231n arms), images (oriented stripe textures, one
 * orientation/frequency per class, for conv nets) and regression (a noisy linear map).
 */
import { TrainerError } from '../errors.js';
import { Rng } from '../math/rng.js';
import { makeDataset, type Dataset, type Targets } from './dataset.js';

export type SyntheticGenerator = 'blobs' | 'spirals' | 'images' | 'regression';

export interface SyntheticSource {
  type: 'synthetic';
  generator: SyntheticGenerator;
  n: number;
  classes?: number;
  features?: number;
  outputs?: number;
  noise?: number;
  size?: number;
  channels?: number;
  seed?: number;
}

const DEFAULT_NOISE: Record<SyntheticGenerator, number> = { blobs: 1.0, spirals: 0.1, images: 0.3, regression: 0.1 };

/** Largest synthetic set, in float32 values (1 GiB). */
const MAX_VALUES = 1 << 28;

export function generateSynthetic(s: SyntheticSource): Dataset {
  const n = s.n;
  const classes = s.classes ?? 3;
  const noise = s.noise ?? DEFAULT_NOISE[s.generator];
  const seed = s.seed ?? 0;
  // Two independent streams: the generator's fixed parameters and the samples, so the
  // first k samples of a set of n are the same for every n.
  const params = new Rng((seed ^ 0x51ed27) >>> 0);
  const rng = new Rng(seed);
  const labels = () => Int32Array.from({ length: n }, (_, i) => i % classes);
  const classTargets = (): Targets => ({ kind: 'classes', labels: labels(), numClasses: classes });
  const check = (values: number) => {
    if (values > MAX_VALUES) throw new TrainerError('TAS_ERR_INVALID_SPEC', `data.n: ${n} samples of this shape need ${values} values, more than the ${MAX_VALUES} a synthetic set may hold`, 'data.n');
  };

  switch (s.generator) {
    case 'blobs': {
      const d = s.features ?? 2;
      check(n * d);
      const centers = Float64Array.from({ length: classes * d }, () => -10 + 20 * params.next());
      const x = new Float32Array(n * d);
      for (let i = 0; i < n; i++) {
        const k = i % classes;
        for (let j = 0; j < d; j++) x[i * d + j] = centers[k * d + j] + noise * rng.normal();
      }
      return makeDataset(x, [d], classTargets(), 'data');
    }
    case 'spirals': {
      const x = new Float32Array(n * 2);
      for (let i = 0; i < n; i++) {
        const k = i % classes;
        const r = rng.next();
        const theta = (2 * Math.PI * k) / classes + 4 * r + noise * rng.normal();
        x[2 * i] = r * Math.sin(theta);
        x[2 * i + 1] = r * Math.cos(theta);
      }
      return makeDataset(x, [2], classTargets(), 'data');
    }
    case 'images': {
      const size = s.size ?? 8;
      const ch = s.channels ?? 1;
      const per = ch * size * size;
      check(n * per);
      // Class k: stripes at angle pi*k/K with frequency 1 or 2 cycles per image and a
      // per-class channel mix; each sample has a random phase, so only the texture
      // (not a position) tells the class: a conv net with global pooling can learn it.
      const mix = Float64Array.from({ length: classes * ch }, () => 0.5 + params.next());
      const x = new Float32Array(n * per);
      for (let i = 0; i < n; i++) {
        const k = i % classes;
        const angle = (Math.PI * k) / classes;
        const freq = (1 + (k % 2)) / size;
        const phase = 2 * Math.PI * rng.next();
        const ca = Math.cos(angle);
        const sa = Math.sin(angle);
        for (let c = 0; c < ch; c++) {
          for (let h = 0; h < size; h++) {
            for (let w = 0; w < size; w++) {
              const v = mix[k * ch + c] * Math.sin(2 * Math.PI * freq * (w * ca + h * sa) + phase);
              x[i * per + (c * size + h) * size + w] = v + noise * rng.normal();
            }
          }
        }
      }
      return makeDataset(x, [ch, size, size], classTargets(), 'data');
    }
    case 'regression': {
      const d = s.features ?? 2;
      const o = s.outputs ?? 1;
      check(n * (d + o));
      const w = Float64Array.from({ length: d * o }, () => params.normal() / Math.sqrt(d));
      const b = Float64Array.from({ length: o }, () => params.normal());
      const x = new Float32Array(n * d);
      const y = new Float32Array(n * o);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < d; j++) x[i * d + j] = rng.normal();
        for (let q = 0; q < o; q++) {
          let acc = b[q];
          for (let j = 0; j < d; j++) acc += x[i * d + j] * w[j * o + q];
          y[i * o + q] = acc + noise * rng.normal();
        }
      }
      return makeDataset(x, [d], { kind: 'values', values: y, targetDim: o }, 'data');
    }
  }
}
