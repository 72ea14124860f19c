/**
 * The files of a job, for workers that do not share the service's filesystem (workers
 * that joined by URL, on other hosts): they read the job's input files and its latest
 * checkpoint from the service, and send checkpoints and the artifact back, over HTTP
 * (src/api/rest/routes/worker-files.ts).
 *
 * - Inputs: exactly the files the job's spec names (its data files and `init_from`),
 *   relative to the data directory, each with its size and SHA-256, by which the worker
 *   checks what it received and caches it. A worker reads no other file of the data
 *   directory (its keys, other tenants' datasets).
 * - The job's directory `<data>/jobs/<id>/`: its checkpoint (read to resume, replaced as
 *   training goes) and its artifact (written once, at the end). A write names its
 *   attempt (the generation); one from an attempt that is no longer the job's current
 *   running one is refused, so a worker left over from a failed attempt cannot replace
 *   the checkpoint the next attempt resumes from. A write lands whole or not at all: it
 *   is received into a temporary file, its SHA-256 checked, then renamed into place.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import type { PrismaClient } from '../db/client.js';
import { ServiceError } from '../errors.js';
import { receiveToFile } from '../datasets/upload-stream.js';
import { resolveTrainSpec } from '../../trainer/engine/job-spec.js';
import { dataFiles } from '../../trainer/data/load.js';
import { ARTIFACT_FILE, CHECKPOINT_FILE } from '../../trainer/engine/local-job.js';

/** The files of a job's directory a worker may write. */
export const JOB_FILE_NAMES: readonly string[] = [CHECKPOINT_FILE, ARTIFACT_FILE];

export interface JobInputFile {
  /** The spec field that names it (`data.x`, `init_from`). */
  readonly field: string;
  /** Relative to the data directory, as the spec gives it. */
  readonly path: string;
  readonly bytes: number;
  /** Hex SHA-256 of its bytes. */
  readonly sha256: string;
}

export interface FileStream {
  readonly stream: Readable;
  readonly bytes: number;
  readonly sha256: string;
}

export interface JobFilesOptions {
  readonly prisma: PrismaClient;
  readonly dataDir: string;
  /** Largest file a worker may send. @defaultValue 8 GiB */
  readonly maxBytes?: number;
}

/** Hashes of input files by path, kept while the file's size and mtime stay the same. */
const HASH_CACHE_ENTRIES = 1024;

export class JobFiles {
  private readonly hashes = new Map<string, { bytes: number; mtimeMs: number; sha256: string }>();
  private readonly dataDir: string;

  constructor(private readonly options: JobFilesOptions) {
    this.dataDir = resolve(options.dataDir);
  }

  /** The job's input files, with sizes and hashes. */
  async inputs(jobId: string): Promise<JobInputFile[]> {
    const job = await this.options.prisma.job.findUnique({ where: { id: jobId }, select: { spec: true } });
    if (!job) throw new ServiceError('TAS_ERR_NOT_FOUND', `no job ${jobId}`);
    const spec = resolveTrainSpec(job.spec);
    const named: Array<[string, string]> = [...dataFiles(spec.data)];
    if (spec.initFrom) named.push(['init_from', spec.initFrom]);
    return Promise.all(
      named.map(async ([field, path]) => {
        const full = this.inside(path, field);
        const s = await stat(full).catch(() => null);
        if (!s?.isFile()) throw new ServiceError('TAS_ERR_NOT_FOUND', `${field}: "${path}" is no longer in the data directory`, { field });
        return { field, path, bytes: s.size, sha256: await this.hashOf(full, s.size, s.mtimeMs) };
      }),
    );
  }

  /** One of the job's input files, to stream. */
  async openInput(jobId: string, path: string): Promise<FileStream> {
    const file = (await this.inputs(jobId)).find((f) => f.path === path);
    if (!file) throw new ServiceError('TAS_ERR_NOT_FOUND', `job ${jobId} reads no file "${path}"`, { field: 'path' });
    return { stream: createReadStream(this.inside(path, 'path')), bytes: file.bytes, sha256: file.sha256 };
  }

  /** A file of the job's directory (its checkpoint, its artifact); null when there is none yet. */
  async openJobFile(jobId: string, name: string): Promise<FileStream | null> {
    const path = join(await this.jobDir(jobId), this.fileName(name));
    const s = await stat(path).catch(() => null);
    if (!s?.isFile()) return null;
    // Hashed as read now: a checkpoint is replaced (renamed over), never written in place.
    const sha256 = await hashFile(path);
    return { stream: createReadStream(path), bytes: s.size, sha256 };
  }

  /**
   * Receives a file of the job's directory from attempt `generation`; it replaces the old
   * one only when whole, with the SHA-256 the worker announced, and while that attempt is
   * still the job's current one.
   */
  async writeJobFile(jobId: string, generation: number, name: string, source: Readable, sha256: string): Promise<{ bytes: number }> {
    const file = this.fileName(name);
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new ServiceError('TAS_ERR_BAD_REQUEST', 'x-tas-sha256: expected the hex SHA-256 of the body', { field: 'x-tas-sha256' });
    await this.checkAttempt(jobId, generation);
    const dir = await this.jobDir(jobId);
    await mkdir(dir, { recursive: true });
    const part = join(dir, `.${file}.${randomBytes(6).toString('hex')}.part`);
    try {
      const received = await receiveToFile(source, part, this.options.maxBytes ?? 8 * 1024 ** 3);
      if (received.sha256 !== sha256) {
        throw new ServiceError('TAS_ERR_CHECKSUM_MISMATCH', `${file}: the ${received.bytes} bytes received hash to ${received.sha256}, not the announced ${sha256}; nothing was replaced`);
      }
      // Again: the attempt may have ended while the bytes came.
      await this.checkAttempt(jobId, generation);
      await rename(part, join(dir, file));
      return { bytes: received.bytes };
    } finally {
      await rm(part, { force: true });
    }
  }

  private async checkAttempt(jobId: string, generation: number): Promise<void> {
    const job = await this.options.prisma.job.findUnique({ where: { id: jobId }, select: { status: true, attempts: true } });
    if (!job) throw new ServiceError('TAS_ERR_NOT_FOUND', `no job ${jobId}`);
    if (job.attempts !== generation || (job.status !== 'running' && job.status !== 'scheduled')) {
      throw new ServiceError('TAS_ERR_CONFLICT', `attempt ${generation} of job ${jobId} is not running (the job is ${job.status}, at attempt ${job.attempts}); its files are not replaced`);
    }
  }

  private async jobDir(jobId: string): Promise<string> {
    const job = await this.options.prisma.job.findUnique({ where: { id: jobId }, select: { id: true } });
    if (!job) throw new ServiceError('TAS_ERR_NOT_FOUND', `no job ${jobId}`);
    return join(this.dataDir, 'jobs', job.id);
  }

  private fileName(name: string): string {
    if (!JOB_FILE_NAMES.includes(name)) throw new ServiceError('TAS_ERR_NOT_FOUND', `a job has no file "${name}" (files: ${JOB_FILE_NAMES.join(', ')})`, { field: 'name' });
    return name;
  }

  private inside(path: string, field: string): string {
    const full = resolve(this.dataDir, path);
    const rel = relative(this.dataDir, full);
    if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) throw new ServiceError('TAS_ERR_INVALID_ARGUMENT', `${field}: "${path}" is outside the data directory`, { field });
    return full;
  }

  private async hashOf(full: string, bytes: number, mtimeMs: number): Promise<string> {
    const known = this.hashes.get(full);
    if (known && known.bytes === bytes && known.mtimeMs === mtimeMs) return known.sha256;
    const sha256 = await hashFile(full);
    if (this.hashes.size >= HASH_CACHE_ENTRIES) this.hashes.delete(this.hashes.keys().next().value!);
    this.hashes.set(full, { bytes, mtimeMs, sha256 });
    return sha256;
  }
}

export async function hashFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
