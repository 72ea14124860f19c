/**
 * Uploaded datasets: streamed to disk under the data directory, checked with the
 * trainer's own parsers, recorded in the `datasets` table. Every dataset answers with a
 * ready-to-paste `data` block for a job spec, its paths relative to the data directory
 * (workers get data_dir = TAS_DATA_DIR), e.g.
 *
 *   {"type": "csv", "path": "datasets/<id>/data.csv", "label_column": "species"}
 *
 * ## One file per upload; two-file formats in two uploads
 *
 * A CSV is one file: one upload creates the dataset. NPY (x + y) and IDX (images +
 * labels) are two files, and an upload is one file (the raw request body, streamed), so:
 *
 *   1. upload either file with its `part` (x | y, or images | labels) and the dataset's
 *      name, format and options: the answer is a *pending upload* with an `upload_id`,
 *      the part received (its shape) and the part still missing;
 *   2. upload the other file with that `upload_id` (the part defaults to the missing
 *      one): the pair is checked together, exactly as a job loads it, and the answer is
 *      the dataset.
 *
 * A pending upload is not a dataset (it is not listed, and no row exists for it), so
 * every dataset row is complete and trainable. Pending uploads expire (24 h by default);
 * a failed second part (labels that do not match the images) leaves the pending upload
 * as it was, to be retried with a corrected file.
 *
 * ## On disk (all under `<dataDir>/datasets/`)
 *
 *   .incoming/<random>.upload     a body being received (removed on any failure)
 *   .incoming/<upload_id>/        a pending upload: its first file and upload.json
 *   .incoming/<id>.new/           a dataset being assembled and checked
 *   <id>/                         a dataset: its files and dataset.json (the manifest:
 *                                 data block, files with SHA-256, targets)
 *
 * A dataset directory appears by one rename of its assembled directory, so a job never
 * sees half a dataset; the row is written after the rename (a crash in between leaves
 * an unlisted directory, never a row without files). The table keeps what listing and
 * paging need (name, format, path = the dataset's directory, bytes, samples, sample
 * shape); the manifest keeps what the table has no column for (the parsing options that
 * make up the data block).
 *
 * The store is long (about 600 lines, most of it this page and the upload protocol's
 * steps) because the steps above share one directory layout and its crash-safety rules;
 * receiving a body (upload-stream.ts) and checking files (dataset-check.ts) are apart.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { DataSource } from '../../trainer/data/load.js';
import type { Dataset as DatasetRow, PrismaClient } from '../db/generated/client.js';
import { decodeCursor, encodeCursor, UUID } from '../db/cursor.js';
import { DEFAULT_TENANT_ID } from '../db/default-tenant.js';
import { DbError } from '../db/errors.js';
import { canSee, visibleTenant, type Principal } from '../tenants/principal.js';
import { checkInWorker, type CheckRequest, type CheckResult, type TargetsSummary } from './dataset-check.js';
import { DatasetError } from './dataset-errors.js';
import { Semaphore } from './semaphore.js';
import { receiveToFile } from './upload-stream.js';

export type { TargetsSummary } from './dataset-check.js';

export const UPLOAD_FORMATS = ['csv', 'npy', 'idx'] as const;
export type UploadFormat = (typeof UPLOAD_FORMATS)[number];
export type PairFormat = Exclude<UploadFormat, 'csv'>;

/** The two files of each two-file format, inputs first. */
export const PARTS: Readonly<Record<PairFormat, readonly [DatasetPart, DatasetPart]>> = { npy: ['x', 'y'], idx: ['images', 'labels'] };
export const DATASET_PARTS = ['x', 'y', 'images', 'labels'] as const;
export type DatasetPart = (typeof DATASET_PARTS)[number];

/** Parsing options, named and typed as in the job spec's `data` block (schemas/train.schema.json). */
export interface UploadOptions {
  /** csv: the first row holds column names. */
  readonly header?: boolean;
  /** csv: the label column, by header name or 0-based index (negative from the end). */
  readonly label_column?: string | number;
  /** csv: one character. */
  readonly delimiter?: string;
  /** csv, npy: integer classes or float targets. */
  readonly task?: 'classification' | 'regression';
  /** idx: divide unsigned-byte pixels by 255. */
  readonly scale?: boolean;
}

/** Which options each format takes (others are refused, naming the option). */
const OPTIONS_OF: Readonly<Record<UploadFormat, readonly (keyof UploadOptions)[]>> = {
  csv: ['header', 'label_column', 'delimiter', 'task'],
  npy: ['task'],
  idx: ['scale'],
};

/** A new dataset: the whole CSV, or the first file of a pair (then `part` is required). */
export interface NewUploadInput {
  /** Who uploads: the dataset is its tenant's. */
  readonly who: Principal;
  readonly name: string;
  readonly format: UploadFormat;
  readonly part?: DatasetPart;
  readonly options?: UploadOptions;
  readonly stream: Readable;
  readonly maxBytes: number;
}

/** The second file of a pair, to the pending upload the first one made. */
export interface ContinueUploadInput {
  /** Must be of the tenant that made the pending upload (another's is not found). */
  readonly who: Principal;
  readonly uploadId: string;
  /** @defaultValue the missing part */
  readonly part?: DatasetPart;
  /** When given, must be the pending upload's. */
  readonly name?: string;
  readonly format?: UploadFormat;
  /** Merged with the first upload's; a different value for the same option is refused. */
  readonly options?: UploadOptions;
  readonly stream: Readable;
  readonly maxBytes: number;
}

export type IngestInput = NewUploadInput | ContinueUploadInput;

/** A job spec's `data` block for a stored dataset (paths relative to the data directory). */
export type DataBlock = Extract<DataSource, { type: UploadFormat }>;

export interface DatasetFile {
  /** `path` for a CSV (its data-block key), else the part. */
  readonly part: 'path' | DatasetPart;
  /** Relative to the data directory. */
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}

export interface DatasetRecord {
  readonly id: string;
  readonly name: string;
  readonly format: UploadFormat;
  /** The dataset's directory, relative to the data directory. */
  readonly path: string;
  /** All its files together. */
  readonly bytes: number;
  readonly samples: number;
  readonly sampleShape: number[];
  /** Null (as are `data` and `files` empty) when the manifest is missing from disk. */
  readonly targets: TargetsSummary | null;
  readonly files: readonly DatasetFile[];
  /** Paste as a job spec's `data`. */
  readonly data: DataBlock | null;
  readonly createdAt: Date;
}

export interface PendingPart {
  readonly part: DatasetPart;
  readonly bytes: number;
  readonly sha256: string;
  /** The array's full shape, e.g. [60000, 28, 28]. */
  readonly shape: number[];
}

export interface PendingUpload {
  readonly uploadId: string;
  readonly name: string;
  readonly format: PairFormat;
  readonly options: UploadOptions;
  readonly received: readonly PendingPart[];
  readonly missing: readonly DatasetPart[];
  readonly expiresAt: Date;
}

export type IngestResult = { readonly status: 'created'; readonly dataset: DatasetRecord } | { readonly status: 'pending'; readonly upload: PendingUpload };

export interface ListDatasetsOptions {
  /** 1 to MAX_DATASET_PAGE. @defaultValue 50 */
  readonly limit?: number;
  /** `nextCursor` of the previous page. */
  readonly cursor?: string;
}

export interface DatasetPage {
  readonly datasets: DatasetRecord[];
  /** Pass as `cursor` for the next page; null on the last page. */
  readonly nextCursor: string | null;
}

export interface DatasetStoreOptions {
  readonly prisma: PrismaClient;
  /** The service's data directory (TAS_DATA_DIR); datasets go to `<dataDir>/datasets/`. */
  readonly dataDir: string;
  /** How long a pending upload waits for its second file. @defaultValue 24 h */
  readonly pendingTtlMs?: number;
  /** Checks (worker threads, each holding a dataset in memory) at once. @defaultValue 2 */
  readonly maxConcurrentChecks?: number;
  /** The clock of pending-upload expiry (tests move it instead of waiting). @defaultValue Date.now */
  readonly now?: () => number;
  /** JS heap limit of a check's worker thread; see CheckWorkerOptions. @defaultValue Node's default */
  readonly checkHeapMiB?: number;
  /** Runs a check. @defaultValue checkInWorker (a worker thread per check) */
  readonly check?: (req: CheckRequest) => Promise<CheckResult>;
}

export const MAX_DATASET_PAGE = 500;
const DEFAULT_PAGE = 50;
const UPLOAD_ID = /^[0-9a-f]{32}$/;
const MANIFEST = 'dataset.json';
const PENDING = 'upload.json';

/** upload.json of a pending upload. */
interface PendingFile {
  readonly version: 1;
  /** The uploading tenant (absent in files written before tenants: the tenant `default`). */
  readonly tenantId?: string;
  readonly name: string;
  readonly format: PairFormat;
  readonly options: UploadOptions;
  readonly files: ReadonlyArray<PendingPart & { readonly file: string }>;
  readonly createdAt: number;
}

/** dataset.json of a dataset. */
interface ManifestFile {
  readonly version: 1;
  readonly id: string;
  readonly name: string;
  readonly format: UploadFormat;
  readonly data: DataBlock;
  readonly files: readonly DatasetFile[];
  readonly targets: TargetsSummary;
}

export class DatasetStore {
  private readonly prisma: PrismaClient;
  private readonly dataDir: string;
  private readonly root: string;
  private readonly incoming: string;
  private readonly pendingTtlMs: number;
  private readonly now: () => number;
  private readonly check: (req: CheckRequest) => Promise<CheckResult>;
  private readonly checks: Semaphore;
  private lastSweep = -Infinity;

  constructor(options: DatasetStoreOptions) {
    this.prisma = options.prisma;
    this.dataDir = resolve(options.dataDir);
    this.root = join(this.dataDir, 'datasets');
    this.incoming = join(this.root, '.incoming');
    this.pendingTtlMs = options.pendingTtlMs ?? 24 * 3600 * 1000;
    this.now = options.now ?? Date.now;
    const heap = options.checkHeapMiB;
    this.check = options.check ?? ((req) => checkInWorker(req, heap !== undefined ? { maxHeapMiB: heap } : {}));
    this.checks = new Semaphore(options.maxConcurrentChecks ?? 2);
  }

  /**
   * Receives one file (see the module doc): a CSV or the second file of a pair makes a
   * dataset ('created'); the first file of a pair makes a pending upload ('pending').
   * Throws DatasetError (413 too large, 400 bad option or part, 404 unknown upload, 409
   * racing completion) or the parsers' TrainerError TAS_ERR_DATA_FORMAT; after any error
   * no file of this request is left behind.
   */
  async ingest(input: IngestInput): Promise<IngestResult> {
    await mkdir(this.incoming, { recursive: true });
    await this.sweepIfDue();
    return 'uploadId' in input ? this.continueUpload(input) : this.newUpload(input);
  }

  /** Dataset `id`, if `who` may see it (another tenant's is not found, as a missing one). */
  async get(who: Principal, id: string): Promise<DatasetRecord> {
    const row = UUID.test(id) ? await this.prisma.dataset.findUnique({ where: { id } }) : null;
    if (!row || !canSee(who, row.tenantId)) throw new DbError('TAS_ERR_NOT_FOUND', `no dataset ${JSON.stringify(id)}`);
    return this.recordOf(row);
  }

  /** Newest first; keyset pages on (createdAt, id), so new uploads do not shift them. */
  async list(who: Principal, options: ListDatasetsOptions = {}): Promise<DatasetPage> {
    const limit = options.limit ?? DEFAULT_PAGE;
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_DATASET_PAGE) {
      throw new DbError('TAS_ERR_INVALID_ARGUMENT', `limit must be an integer from 1 to ${MAX_DATASET_PAGE}, got ${limit}`);
    }
    const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
    const tenantId = visibleTenant(who);
    const rows = await this.prisma.dataset.findMany({
      where: {
        ...(tenantId !== null ? { tenantId } : {}),
        ...(after ? { OR: [{ createdAt: { lt: after.createdAt } }, { createdAt: after.createdAt, id: { lt: after.id } }] } : {}),
      },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      take: limit + 1,
    });
    const page = rows.slice(0, limit);
    const last = page[page.length - 1];
    return { datasets: await Promise.all(page.map((r) => this.recordOf(r))), nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
  }

  /**
   * Removes what is left in `.incoming/` from expired pending uploads and from requests
   * that died with the process. Runs by itself at most hourly from `ingest`.
   */
  async sweepIncoming(maxAgeMs: number = this.pendingTtlMs): Promise<number> {
    this.lastSweep = this.now();
    let names: string[];
    try {
      names = await readdir(this.incoming);
    } catch {
      return 0;
    }
    let removed = 0;
    for (const name of names) {
      const full = join(this.incoming, name);
      const s = await stat(full).catch(() => null);
      // File times are the wall clock's, whatever clock `now` is.
      if (s && Date.now() - s.mtimeMs > maxAgeMs) {
        await rm(full, { recursive: true, force: true });
        removed++;
      }
    }
    return removed;
  }

  // ---- the two kinds of upload ---------------------------------------------------

  private async newUpload(input: NewUploadInput): Promise<IngestResult> {
    const format = checkFormat(input.format);
    const name = checkName(input.name);
    const options = checkOptions(format, input.options ?? {});
    if (format === 'csv') {
      if (input.part !== undefined) throw new DatasetError('TAS_ERR_BAD_REQUEST', 'part: a CSV dataset is one file; part applies to npy (x, y) and idx (images, labels)', 'part');
      return { status: 'created', dataset: await this.createCsv(name, options, input) };
    }
    const [a, b] = PARTS[format];
    if (input.part === undefined) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `part: required for ${format}, which is two files: upload ${a} or ${b} first, then the other with the upload_id of the first answer`, 'part');
    }
    if (input.part !== a && input.part !== b) throw new DatasetError('TAS_ERR_BAD_REQUEST', `part: ${format} has parts ${a} and ${b}, not ${input.part}`, 'part');
    return { status: 'pending', upload: await this.createPending(name, format, options, input.part, input) };
  }

  private async createCsv(name: string, options: UploadOptions, input: NewUploadInput): Promise<DatasetRecord> {
    const received = await this.receive(input);
    const id = randomUUID();
    const staging = join(this.incoming, `${id}.new`);
    try {
      await mkdir(staging);
      await rename(received.file, join(staging, 'data.csv'));
      const source: DataBlock = { type: 'csv', path: this.rel(join(staging, 'data.csv')), ...options };
      const result = await this.checkDataset(source);
      const files: DatasetFile[] = [{ part: 'path', path: this.finalPath(id, 'data.csv'), bytes: received.bytes, sha256: received.sha256 }];
      const data: DataBlock = { ...source, path: this.finalPath(id, 'data.csv') };
      return await this.publish(staging, { version: 1, id, name, format: 'csv', data, files, targets: result.targets }, result, input.who.tenantId);
    } catch (err) {
      await rm(received.file, { force: true });
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  private async createPending(name: string, format: PairFormat, options: UploadOptions, part: DatasetPart, input: NewUploadInput): Promise<PendingUpload> {
    const received = await this.receive(input);
    const uploadId = randomBytes(16).toString('hex');
    const staging = join(this.incoming, `${uploadId}.new`);
    try {
      const shape = await this.checkArray(format, part, received.file);
      const file = await fileNameOf(format, part, received.file);
      await mkdir(staging);
      await rename(received.file, join(staging, file));
      const pending: PendingFile = { version: 1, tenantId: input.who.tenantId, name, format, options, files: [{ part, file, bytes: received.bytes, sha256: received.sha256, shape }], createdAt: this.now() };
      await writeFile(join(staging, PENDING), JSON.stringify(pending));
      await rename(staging, join(this.incoming, uploadId));
      return this.pendingView(uploadId, pending);
    } catch (err) {
      await rm(received.file, { force: true });
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  private async continueUpload(input: ContinueUploadInput): Promise<IngestResult> {
    const { uploadId } = input;
    const draftDir = join(this.incoming, UPLOAD_ID.test(uploadId) ? uploadId : '-');
    const pending = await this.readPending(uploadId, draftDir);
    if (!canSee(input.who, pending.tenantId ?? DEFAULT_TENANT_ID)) {
      throw new DatasetError('TAS_ERR_NOT_FOUND', `no pending upload ${JSON.stringify(uploadId)} (it was completed, it expired, or it never existed)`);
    }
    if (input.format !== undefined && input.format !== pending.format) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `format: upload ${uploadId} is ${pending.format}, not ${input.format}`, 'format');
    }
    if (input.name !== undefined && input.name !== pending.name) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `name: upload ${uploadId} is named ${JSON.stringify(pending.name)}, not ${JSON.stringify(input.name)}`, 'name');
    }
    const options = mergeOptions(pending.options, checkOptions(pending.format, input.options ?? {}));
    const have = pending.files[0]!;
    const missing = PARTS[pending.format].find((p) => p !== have.part)!;
    const part = input.part ?? missing;
    if (!PARTS[pending.format].includes(part)) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `part: ${pending.format} has parts ${PARTS[pending.format].join(' and ')}, not ${part}`, 'part');
    }
    if (part !== missing) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `part: upload ${uploadId} already has ${have.part}; the missing part is ${missing}`, 'part');
    }

    const received = await this.receive(input);
    // Claim the pending upload: one rename, so of two racing second parts one wins and
    // the other is told so, instead of both building a dataset from one first file.
    const id = randomUUID();
    const staging = join(this.incoming, `${id}.new`);
    try {
      await rename(draftDir, staging);
    } catch (err) {
      await rm(received.file, { force: true });
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new DatasetError('TAS_ERR_CONFLICT', `upload ${uploadId} was completed (or is being completed) by another request`);
      }
      throw err;
    }
    let secondFile: string | undefined;
    try {
      const file = await fileNameOf(pending.format, part, received.file);
      secondFile = join(staging, file);
      await rename(received.file, secondFile);
      const byPart = new Map<DatasetPart, { file: string; bytes: number; sha256: string }>([
        [have.part, have],
        [part, { file, bytes: received.bytes, sha256: received.sha256 }],
      ]);
      const [first, second] = PARTS[pending.format];
      const f1 = byPart.get(first)!;
      const f2 = byPart.get(second)!;
      const block = (dir: (file: string) => string): DataBlock =>
        pending.format === 'npy'
          ? { type: 'npy', x: dir(f1.file), y: dir(f2.file), ...options }
          : { type: 'idx', images: dir(f1.file), labels: dir(f2.file), ...options };
      const result = await this.checkDataset(block((f) => this.rel(join(staging, f))));
      const files: DatasetFile[] = [
        { part: first, path: this.finalPath(id, f1.file), bytes: f1.bytes, sha256: f1.sha256 },
        { part: second, path: this.finalPath(id, f2.file), bytes: f2.bytes, sha256: f2.sha256 },
      ];
      await rm(join(staging, PENDING));
      try {
        const manifest: ManifestFile = { version: 1, id, name: pending.name, format: pending.format, data: block((f) => this.finalPath(id, f)), files, targets: result.targets };
        return { status: 'created', dataset: await this.publish(staging, manifest, result, pending.tenantId ?? DEFAULT_TENANT_ID) };
      } catch (err) {
        await writeFile(join(staging, PENDING), JSON.stringify(pending)).catch(() => undefined);
        throw err;
      }
    } catch (err) {
      // Back to the pending upload as it was, so the second file can be sent again.
      await rm(received.file, { force: true });
      if (secondFile !== undefined) await rm(secondFile, { force: true });
      await rm(join(staging, MANIFEST), { force: true });
      await rename(staging, draftDir).catch(() => rm(staging, { recursive: true, force: true }));
      throw err;
    }
  }

  // ---- steps ----------------------------------------------------------------------

  /** The body, to a temp file (nothing else is read until it is complete). */
  private async receive(input: { stream: Readable; maxBytes: number }): Promise<{ file: string; bytes: number; sha256: string }> {
    if (!Number.isSafeInteger(input.maxBytes) || input.maxBytes < 1) throw new RangeError(`maxBytes must be a positive integer, got ${input.maxBytes}`);
    const file = join(this.incoming, `${randomBytes(12).toString('hex')}.upload`);
    const got = await receiveToFile(input.stream, file, input.maxBytes);
    return { file, ...got };
  }

  private async checkDataset(source: DataBlock): Promise<Extract<CheckResult, { kind: 'dataset' }>> {
    const r = await this.checks.run(() => this.check({ kind: 'dataset', source, dataDir: this.dataDir }));
    if (r.kind !== 'dataset') throw new Error('dataset check answered for an array');
    return r;
  }

  private async checkArray(format: PairFormat, part: DatasetPart, file: string): Promise<number[]> {
    const r = await this.checks.run(() => this.check({ kind: 'array', format, file, field: `data.${part}` }));
    if (r.kind !== 'array') throw new Error('array check answered for a dataset');
    return r.shape;
  }

  /** Manifest into the assembled directory, the directory into place, then the row. */
  private async publish(staging: string, manifest: ManifestFile, result: Extract<CheckResult, { kind: 'dataset' }>, tenantId: string): Promise<DatasetRecord> {
    await writeFile(join(staging, MANIFEST), JSON.stringify(manifest, null, 2));
    const dir = join(this.root, manifest.id);
    await rename(staging, dir);
    const bytes = manifest.files.reduce((s, f) => s + f.bytes, 0);
    try {
      const row = await this.prisma.dataset.create({
        data: { id: manifest.id, tenantId, name: manifest.name, format: manifest.format, path: this.rel(dir), bytes: BigInt(bytes), samples: result.samples, sampleShape: result.sampleShape },
      });
      return recordFrom(row, manifest);
    } catch (err) {
      await rename(dir, staging).catch(() => rm(dir, { recursive: true, force: true }));
      throw err;
    }
  }

  private async readPending(uploadId: string, draftDir: string): Promise<PendingFile> {
    const gone = () => new DatasetError('TAS_ERR_NOT_FOUND', `no pending upload ${JSON.stringify(uploadId)} (it was completed, it expired, or it never existed)`);
    if (!UPLOAD_ID.test(uploadId)) throw gone();
    let pending: PendingFile;
    try {
      pending = JSON.parse(await readFile(join(draftDir, PENDING), 'utf8')) as PendingFile;
    } catch {
      throw gone();
    }
    if (this.now() - pending.createdAt > this.pendingTtlMs) {
      await rm(draftDir, { recursive: true, force: true });
      throw gone();
    }
    return pending;
  }

  private pendingView(uploadId: string, p: PendingFile): PendingUpload {
    const have = new Set(p.files.map((f) => f.part));
    return {
      uploadId,
      name: p.name,
      format: p.format,
      options: p.options,
      received: p.files.map(({ part, bytes, sha256, shape }) => ({ part, bytes, sha256, shape })),
      missing: PARTS[p.format].filter((x) => !have.has(x)),
      expiresAt: new Date(p.createdAt + this.pendingTtlMs),
    };
  }

  private async recordOf(row: DatasetRow): Promise<DatasetRecord> {
    let manifest: ManifestFile | null = null;
    try {
      manifest = JSON.parse(await readFile(join(this.dataDir, row.path, MANIFEST), 'utf8')) as ManifestFile;
    } catch {
      manifest = null; // removed from disk by hand: the row still lists, without a data block
    }
    return recordFrom(row, manifest);
  }

  private async sweepIfDue(): Promise<void> {
    if (this.now() - this.lastSweep >= Math.min(3600_000, this.pendingTtlMs)) await this.sweepIncoming();
  }

  private rel(full: string): string {
    return relative(this.dataDir, full).split('\\').join('/');
  }

  private finalPath(id: string, file: string): string {
    return `datasets/${id}/${file}`;
  }
}

function recordFrom(row: DatasetRow, manifest: ManifestFile | null): DatasetRecord {
  return {
    id: row.id,
    name: row.name,
    format: row.format as UploadFormat,
    path: row.path,
    bytes: Number(row.bytes),
    samples: row.samples,
    sampleShape: row.sampleShape as number[],
    targets: manifest?.targets ?? null,
    files: manifest?.files ?? [],
    data: manifest?.data ?? null,
    createdAt: row.createdAt,
  };
}

// ---- input checks (the HTTP layer's schemas check types; these check meaning) ------

function checkFormat(format: string): UploadFormat {
  if (!(UPLOAD_FORMATS as readonly string[]).includes(format)) {
    throw new DatasetError('TAS_ERR_BAD_REQUEST', `format: must be one of ${UPLOAD_FORMATS.join(', ')}, got ${JSON.stringify(format)}`, 'format');
  }
  return format as UploadFormat;
}

function checkName(name: string): string {
  if (typeof name !== 'string' || name.trim() === '' || name.length > 200) throw new DatasetError('TAS_ERR_BAD_REQUEST', 'name: must be 1 to 200 characters', 'name');
  return name;
}

function checkOptions(format: UploadFormat, options: UploadOptions): UploadOptions {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(options) as Array<[keyof UploadOptions, unknown]>) {
    if (value === undefined) continue;
    if (!OPTIONS_OF[format].includes(key)) {
      const takers = UPLOAD_FORMATS.filter((f) => OPTIONS_OF[f].includes(key));
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `${key}: applies to ${takers.join(' and ') || 'no format'}, not ${format}`, key);
    }
    const bad = (why: string) => new DatasetError('TAS_ERR_BAD_REQUEST', `${key}: ${why}`, key);
    switch (key) {
      case 'header':
      case 'scale':
        if (typeof value !== 'boolean') throw bad('must be true or false');
        break;
      case 'delimiter':
        if (typeof value !== 'string' || value.length !== 1 || value === '"' || value === '\n' || value === '\r') throw bad('must be one character (not a quote or a line break)');
        break;
      case 'task':
        if (value !== 'classification' && value !== 'regression') throw bad('must be classification or regression');
        break;
      case 'label_column':
        if (!(typeof value === 'string' && value.length > 0) && !Number.isInteger(value)) throw bad('must be a column name or an integer index');
        break;
    }
    out[key] = value;
  }
  return out as UploadOptions;
}

function mergeOptions(first: UploadOptions, second: UploadOptions): UploadOptions {
  for (const [key, value] of Object.entries(second) as Array<[keyof UploadOptions, unknown]>) {
    if (first[key] !== undefined && first[key] !== value) {
      throw new DatasetError('TAS_ERR_BAD_REQUEST', `${key}: the first part was uploaded with ${JSON.stringify(first[key])}, not ${JSON.stringify(value)}`, key);
    }
  }
  return { ...first, ...second };
}

/** x.npy, images.idx, or images.idx.gz when the bytes are gzipped (the loader sniffs either). */
async function fileNameOf(format: PairFormat, part: DatasetPart, file: string): Promise<string> {
  if (format === 'npy') return `${part}.npy`;
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(2);
    const { bytesRead } = await fh.read(head, 0, 2, 0);
    return bytesRead === 2 && head[0] === 0x1f && head[1] === 0x8b ? `${part}.idx.gz` : `${part}.idx`;
  } finally {
    await fh.close();
  }
}
