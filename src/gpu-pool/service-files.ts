/**
 * A joined worker's side of its jobs' files (it does not share the service's filesystem):
 *
 * - `stageInputs(job)`: the job's input files, fetched from the service, streamed to
 *   disk, each checked against the SHA-256 the service gives and kept in a cache by that
 *   hash (`<cache>/blobs/<sha256>`), so a dataset crosses the network once per host
 *   whatever the number of jobs and attempts that read it. Returns a directory where the
 *   spec's relative paths resolve (links into the cache).
 * - `fetchJobFile(job, name)`: the job's latest checkpoint as the service holds it (to
 *   resume an attempt on another host).
 * - `putJobFile(job, generation, name, bytes)`: a checkpoint or the artifact sent back,
 *   with its SHA-256; `CheckpointUploads` sends checkpoints in the background, the newest
 *   replacing one not yet sent, so training never waits for the network.
 *
 * Every request carries the workers' token. Network failures are retried a bounded number
 * of times; then TAS_ERR_TRANSFER fails the rank (the attempt is retried).
 */
import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, symlink, utimes } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { pipeline } from 'node:stream/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { TrainerError } from '../trainer/errors.js';

export interface ServiceFilesOptions {
  /** The service's REST base URL (the one the worker joined). */
  readonly baseUrl: string;
  /** TAS_WORKER_TOKEN; null with auth off. */
  readonly token: string | null;
  /** Where fetched files are kept. */
  readonly cacheDir: string;
  /** The cache's size bound: least recently used files beyond it are removed. @defaultValue 10 GiB */
  readonly maxCacheBytes?: number;
  /** Tries per request. @defaultValue 4 */
  readonly attempts?: number;
  readonly log?: (message: string) => void;
}

interface InputFile {
  readonly field: string;
  readonly path: string;
  readonly bytes: number;
  readonly sha256: string;
}

/** What staging did, for the log. */
export interface StageResult {
  readonly dir: string;
  readonly fetched: number;
  readonly cached: number;
  readonly bytesFetched: number;
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export class ServiceFiles {
  private readonly base: string;
  private readonly blobs: string;

  constructor(private readonly options: ServiceFilesOptions) {
    this.base = options.baseUrl.replace(/\/+$/, '');
    this.blobs = join(options.cacheDir, 'blobs');
  }

  /** The local directory of one rank of a job (its staged inputs; rank 0's checkpoint and artifact before they are sent). */
  jobDir(jobId: string, rank: number): string {
    return join(this.options.cacheDir, 'jobs', jobId, String(rank));
  }

  async stageInputs(jobId: string, rank: number): Promise<StageResult> {
    const { files } = await this.json<{ files: InputFile[] }>(`/v1/worker-files/jobs/${jobId}/inputs`);
    const dir = join(this.jobDir(jobId, rank), 'inputs');
    await mkdir(this.blobs, { recursive: true });
    let fetched = 0;
    let bytesFetched = 0;
    for (const f of files) {
      const blob = join(this.blobs, f.sha256);
      const have = await stat(blob).catch(() => null);
      if (have?.size === f.bytes) {
        const now = new Date();
        await utimes(blob, now, now); // recently used: kept by the cache's bound
      } else {
        await this.download(jobId, f, blob);
        fetched++;
        bytesFetched += f.bytes;
      }
      // The spec's relative path, under the job's directory, pointing at the blob.
      const link = resolve(dir, f.path);
      const rel = relative(dir, link);
      if (rel.startsWith('..') || isAbsolute(rel)) throw new TrainerError('TAS_ERR_TRANSFER', `${f.field}: the service named a file outside the job's directory: ${f.path}`);
      await mkdir(dirname(link), { recursive: true });
      const tmp = `${link}.${randomBytes(4).toString('hex')}.link`;
      await symlink(blob, tmp);
      await rename(tmp, link);
    }
    await this.trimCache(new Set(files.map((f) => f.sha256)));
    return { dir, fetched, cached: files.length - fetched, bytesFetched };
  }

  /** A file of the job's directory on the service (its checkpoint); null when it has none. */
  async fetchJobFile(jobId: string, name: string): Promise<Uint8Array | null> {
    return this.retry(`fetching ${name} of job ${jobId}`, async () => {
      const r = await this.request(`/v1/worker-files/jobs/${jobId}/files/${name}`);
      if (r.status === 404) return null;
      await ok(r);
      const bytes = new Uint8Array(await r.arrayBuffer());
      const want = r.headers.get('x-tas-sha256');
      const got = createHash('sha256').update(bytes).digest('hex');
      if (want !== got) throw new Error(`${name}: received ${bytes.length} bytes hashing to ${got}, the service announced ${want}`);
      return bytes;
    });
  }

  /** Sends a file of the job's directory (a checkpoint, the artifact) from attempt `generation`. */
  async putJobFile(jobId: string, generation: number, name: string, bytes: Uint8Array): Promise<void> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    await this.retry(`sending ${name} of job ${jobId}`, async () => {
      const r = await this.request(`/v1/worker-files/jobs/${jobId}/files/${name}?generation=${generation}`, {
        method: 'PUT',
        headers: { 'content-type': 'application/octet-stream', 'x-tas-sha256': sha256 },
        // A copy typed as the fetch API wants it (a plain ArrayBuffer).
        body: new Uint8Array(bytes),
      });
      await ok(r);
    });
  }

  /** Removes the rank's local directory (its inputs are links: the cache keeps the files). */
  async forget(jobId: string, rank: number): Promise<void> {
    await rm(this.jobDir(jobId, rank), { recursive: true, force: true });
    await rm(join(this.options.cacheDir, 'jobs', jobId)).catch(() => undefined); // when no other rank's is left
  }

  private async download(jobId: string, f: InputFile, blob: string): Promise<void> {
    await this.retry(`fetching ${f.field} (${f.path}) of job ${jobId}`, async () => {
      const r = await this.request(`/v1/worker-files/jobs/${jobId}/input?path=${encodeURIComponent(f.path)}`);
      await ok(r);
      if (!r.body) throw new Error('empty answer');
      const tmp = `${blob}.${randomBytes(6).toString('hex')}.part`;
      const hash = createHash('sha256');
      let bytes = 0;
      try {
        const body = Readable.fromWeb(r.body as WebReadableStream<Uint8Array>);
        body.on('data', (chunk: Buffer) => {
          hash.update(chunk);
          bytes += chunk.length;
        });
        await pipeline(body, createWriteStream(tmp));
        const got = hash.digest('hex');
        if (got !== f.sha256 || bytes !== f.bytes) throw new Error(`${f.path}: received ${bytes} bytes hashing to ${got}, expected ${f.bytes} bytes hashing to ${f.sha256}`);
        await rename(tmp, blob);
      } finally {
        await rm(tmp, { force: true });
      }
    });
  }

  /** Removes the least recently used blobs beyond the bound (never those of the job being staged). */
  private async trimCache(keep: ReadonlySet<string>): Promise<void> {
    const max = this.options.maxCacheBytes ?? 10 * 1024 ** 3;
    const names = await readdir(this.blobs).catch(() => [] as string[]);
    const entries = (await Promise.all(names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map(async (n) => ({ n, s: await stat(join(this.blobs, n)).catch(() => null) })))).filter(
      (e): e is { n: string; s: NonNullable<typeof e.s> } => e.s !== null,
    );
    let total = entries.reduce((a, e) => a + e.s.size, 0);
    for (const e of entries.sort((a, b) => a.s.mtimeMs - b.s.mtimeMs)) {
      if (total <= max) break;
      if (keep.has(e.n)) continue;
      await rm(join(this.blobs, e.n), { force: true });
      total -= e.s.size;
      this.options.log?.(`cache: removed ${e.n.slice(0, 12)} (${e.s.size} bytes, least recently used) to stay under ${max} bytes`);
    }
  }

  private request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.options.token) headers.set('authorization', `Bearer ${this.options.token}`);
    return fetch(`${this.base}${path}`, { ...init, headers, signal: AbortSignal.timeout(10 * 60_000) });
  }

  private async json<T>(path: string): Promise<T> {
    return this.retry(`asking ${path}`, async () => {
      const r = await this.request(path);
      await ok(r);
      return (await r.json()) as T;
    });
  }

  /** Retries network failures and 5xx answers; a 4xx answer is final. */
  private async retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const attempts = this.options.attempts ?? 4;
    for (let i = 1; ; i++) {
      try {
        return await fn();
      } catch (e) {
        const final = e instanceof HttpFailure && e.status < 500;
        if (final || i >= attempts) {
          throw new TrainerError('TAS_ERR_TRANSFER', `${what} from ${this.base} failed${final ? '' : ` after ${i} tries`}: ${(e as Error).message}`);
        }
        this.options.log?.(`${what}: ${(e as Error).message}; trying again`);
        await delay(250 * 2 ** (i - 1));
      }
    }
  }
}

async function ok(r: Response): Promise<void> {
  if (r.ok) return;
  const text = await r.text().catch(() => '');
  let message = text.slice(0, 500);
  try {
    message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
  } catch {
    /* not JSON */
  }
  throw new HttpFailure(r.status, `HTTP ${r.status}: ${message}`);
}

/**
 * Sends rank 0's checkpoints in the background, one at a time; a checkpoint made while
 * one is being sent replaces any still waiting (only the newest matters). `flush()`
 * waits until what was handed over is sent; a failure is logged, not thrown: the next
 * checkpoint tries again, and the artifact (sent after a flush) is what must arrive.
 */
export class CheckpointUploads {
  private waiting: Uint8Array | null = null;
  private sending: Promise<void> | null = null;

  constructor(
    private readonly send: (bytes: Uint8Array) => Promise<void>,
    private readonly log: (message: string) => void,
  ) {}

  offer(bytes: Uint8Array): void {
    this.waiting = bytes;
    this.sending ??= this.drain();
  }

  async flush(): Promise<void> {
    while (this.sending) await this.sending;
  }

  private async drain(): Promise<void> {
    try {
      while (this.waiting) {
        const bytes = this.waiting;
        this.waiting = null;
        await this.send(bytes).catch((e: Error) => this.log(`checkpoint not sent to the service (${e.message}); the next one tries again`));
      }
    } finally {
      this.sending = null;
    }
  }
}
