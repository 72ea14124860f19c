/**
 * Checking an uploaded file with the trainer's own parsers, so that what an upload
 * accepts is exactly what a job can train on, and a malformed file is refused with the
 * parser's own message (`data.path: row 7 has 4 fields, expected 5`).
 *
 * The parsers are synchronous and hold the whole set in memory (as a training rank
 * does), so a check of a large file would block the API's event loop for seconds and
 * leave its peak in the server's heap. `checkInWorker` therefore runs `checkUpload` in a
 * worker thread per upload: the server keeps answering, and the memory goes with the
 * thread.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { parseIdx } from '../../trainer/data/idx.js';
import { loadDataset, type DataSource } from '../../trainer/data/load.js';
import { parseNpy } from '../../trainer/data/npy.js';
import { TrainerError } from '../../trainer/errors.js';
import { DatasetError } from './dataset-errors.js';

/** What the targets of a checked dataset are (for the listing; the values stay on disk). */
export type TargetsSummary =
  | { readonly kind: 'classes'; readonly classes: number; readonly class_names?: readonly string[] }
  | { readonly kind: 'values'; readonly dim: number };

export type CheckRequest =
  /** A whole dataset as a job would load it (paths relative to `dataDir`). */
  | { readonly kind: 'dataset'; readonly source: DataSource; readonly dataDir: string }
  /** One file of a two-file dataset, on its own: is it an array of that format at all. */
  | { readonly kind: 'array'; readonly format: 'npy' | 'idx'; readonly file: string; readonly field: string };

export type CheckResult =
  | { readonly kind: 'dataset'; readonly samples: number; readonly sampleShape: number[]; readonly targets: TargetsSummary }
  | { readonly kind: 'array'; readonly shape: number[] };

/** The check itself, in this thread. Throws the parsers' TrainerErrors unchanged. */
export async function checkUpload(req: CheckRequest): Promise<CheckResult> {
  if (req.kind === 'array') {
    const bytes = new Uint8Array(await readFile(req.file));
    const a = req.format === 'npy' ? parseNpy(bytes, req.field) : parseIdx(bytes, req.field);
    if (a.shape.length === 0) throw new TrainerError('TAS_ERR_DATA_FORMAT', `${req.field}: a 0-d array holds no samples`, req.field);
    return { kind: 'array', shape: a.shape };
  }
  const ds = await loadDataset(req.source, resolve(req.dataDir));
  const t = ds.targets;
  const targets: TargetsSummary =
    t.kind === 'classes'
      ? { kind: 'classes', classes: t.numClasses, ...(t.classNames ? { class_names: t.classNames } : {}) }
      : { kind: 'values', dim: t.targetDim };
  return { kind: 'dataset', samples: ds.count, sampleShape: ds.sampleShape, targets };
}

/** What crosses the thread boundary: a result, or an error flattened to its fields. */
export type CheckReply =
  | { readonly ok: true; readonly result: CheckResult }
  | { readonly ok: false; readonly error: { readonly name: string; readonly message: string; readonly code?: string; readonly field?: string } };

/** Back from `CheckReply` to what `checkUpload` would have thrown. */
function errorOf(e: Extract<CheckReply, { ok: false }>['error']): Error {
  if (e.name === 'TrainerError' && e.code !== undefined) return new TrainerError(e.code as TrainerError['code'], e.message, e.field);
  return new Error(`dataset check failed: ${e.message}`);
}

/**
 * The worker's entry: this module's own file, with the extension it is running under.
 * Under tsx (the service's normal way to run) the thread must register tsx before it
 * can import a .ts file; compiled to .js it is imported directly.
 */
function startWorker(req: CheckRequest, options: CheckWorkerOptions): Worker {
  const resourceLimits = options.maxHeapMiB !== undefined ? { maxOldGenerationSizeMb: options.maxHeapMiB } : undefined;
  const self = import.meta.url;
  const entry = new URL(self.endsWith('.ts') ? './dataset-check-worker.ts' : './dataset-check-worker.js', self).href;
  if (!self.endsWith('.ts')) return new Worker(new URL(entry), { workerData: req, ...(resourceLimits ? { resourceLimits } : {}) });
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(boot, { eval: true, workerData: req, ...(resourceLimits ? { resourceLimits } : {}) });
}

export interface CheckWorkerOptions {
  /**
   * The thread's JS heap limit. The CSV parser's rows and strings live there (about ten
   * times the file's size); a file that needs more is refused with TAS_ERR_PAYLOAD_TOO_LARGE
   * instead of taking the server down. @defaultValue Node's default for the machine
   */
  readonly maxHeapMiB?: number;
}

/** `checkUpload` in a fresh worker thread (see the module doc for why). */
export function checkInWorker(req: CheckRequest, options: CheckWorkerOptions = {}): Promise<CheckResult> {
  return new Promise((resolvePromise, reject) => {
    const worker = startWorker(req, options);
    let reply: CheckReply | undefined;
    worker.once('message', (m: CheckReply) => (reply = m));
    worker.once('error', (err: Error & { code?: string }) => {
      if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
        const limit = options.maxHeapMiB !== undefined ? ` of ${options.maxHeapMiB} MiB` : '';
        reject(new DatasetError('TAS_ERR_PAYLOAD_TOO_LARGE', `the file is too large to check within the memory limit${limit} (the parser holds the whole set in memory, as a training rank does)`));
      } else reject(err);
    });
    worker.once('exit', (code) => {
      if (reply?.ok) resolvePromise(reply.result);
      else if (reply) reject(errorOf(reply.error));
      else reject(new Error(`dataset check worker exited with code ${code} without an answer`));
    });
  });
}
