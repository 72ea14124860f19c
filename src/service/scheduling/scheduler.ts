/**
 * The scheduler: takes jobs from the BullMQ queue, places each on a gang of N workers
 * reserved together, runs its ranks there (pool.ts), and drives the job through its
 * states in PostgreSQL until it succeeds, fails or is cancelled.
 *
 * Why it cannot lose a run to a BullMQ lock stall: the ranks train in the worker
 * processes, so this process's event loop only relays gRPC progress and renews the
 * BullMQ lock on time. If this process dies, its lock expires, BullMQ moves the job
 * back to the queue as stalled, and the next scheduler finds the job `running` in the
 * database: it frees the old gang, moves the job to `retrying`, and resumes it from its
 * latest checkpoint on a fresh gang under a new generation (the old generation's frames
 * are refused by the collective). Start-up and a periodic reconciliation re-queue every
 * job the database says is unfinished, so even a Redis that lost its data loses no job.
 *
 * Restarts: a failed attempt (a worker died, a peer hung) restarts from the checkpoint
 * up to the job's `maxRestarts`; errors that a restart cannot fix (an invalid spec, a
 * malformed dataset, a NaN loss) fail the job at once.
 */
import { join } from 'node:path';
import { Worker as BullWorker, type ConnectionOptions, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Prisma, PrismaClient } from '../db/client.js';
import { isDbError } from '../db/errors.js';
import { isTerminal } from '../db/job-states.js';
import { JobRepository, type Job } from '../db/jobs.js';
import { appendJobLog, type LogLevel } from '../jobs/job-log.js';
import { ModelStore } from '../models/model-store.js';
import { TrainerError, type TrainerErrorCode } from '../../trainer/errors.js';
import type { TlsFiles } from '../../grpc/tls-files.js';
import { runJobOnWorkers } from '../../gpu-pool/pool.js';
import { ProgressSink } from './progress.js';
import { quotaWait, tenantWorkersHeld } from './tenant-quota.js';
import { CANCEL_CHANNEL, DEFAULT_QUEUE_NAME, JobQueue, type QueuedJob } from './job-queue.js';
import type { ReservedWorker, WorkerRegistry } from './worker-registry.js';

export interface SchedulerOptions {
  readonly prisma: PrismaClient;
  readonly registry: WorkerRegistry;
  /** BullMQ's connection (a blocking one: not shared with commands). */
  readonly connection: ConnectionOptions;
  /** A connection for the cancel channel (subscriber mode). */
  readonly subscriber: Redis;
  readonly queueName?: string;
  /** Job outputs go to `<dataDir>/jobs/<id>/`; relative data paths resolve here. */
  readonly dataDir: string;
  /** A collective peer silent this long fails the attempt. @defaultValue 5000 */
  readonly collectiveTimeoutMs?: number;
  /** BullMQ lock duration: how long a dead scheduler's job waits to be re-run. @defaultValue 30000 */
  readonly lockDurationMs?: number;
  /** How often the database is reconciled with the queue. @defaultValue 15000 */
  readonly reconcileIntervalMs?: number;
  /** Jobs handled at once (running or waiting for a gang). @defaultValue 32 */
  readonly concurrency?: number;
  readonly tls?: TlsFiles;
  readonly log?: (message: string) => void;
  /** Told after a job published a model version (the inference servers load it). */
  readonly onModelPublished?: (model: string, version: number) => Promise<void>;
}

/** Errors a restart cannot fix. */
const FINAL_ERRORS: ReadonlySet<TrainerErrorCode> = new Set([
  'TAS_ERR_INVALID_SPEC',
  'TAS_ERR_DATA_FORMAT',
  'TAS_ERR_SHAPE',
  'TAS_ERR_BN_SINGLE_VALUE',
  'TAS_ERR_NUMERIC',
  'TAS_ERR_CHECKPOINT',
]);

type AbortWhy = 'cancel' | 'shutdown';

export class Scheduler {
  private readonly repo: JobRepository;
  private readonly models: ModelStore;
  private readonly queue: JobQueue;
  private worker: BullWorker<QueuedJob> | null = null;
  private readonly running = new Map<string, AbortController>();
  private reconcileTimer: NodeJS.Timeout | null = null;
  private readonly log: (message: string) => void;

  constructor(private readonly options: SchedulerOptions) {
    this.repo = new JobRepository(options.prisma);
    this.models = new ModelStore(options.prisma);
    this.queue = new JobQueue(options.connection, options.queueName ?? DEFAULT_QUEUE_NAME);
    this.log = options.log ?? (() => undefined);
  }

  async start(): Promise<void> {
    await this.options.subscriber.subscribe(CANCEL_CHANNEL);
    this.options.subscriber.on('message', (channel: string, jobId: string) => {
      if (channel === CANCEL_CHANNEL) this.running.get(jobId)?.abort('cancel' satisfies AbortWhy);
    });
    await this.reconcile();
    const lockDuration = this.options.lockDurationMs ?? 30_000;
    this.worker = new BullWorker<QueuedJob>(this.options.queueName ?? DEFAULT_QUEUE_NAME, (job) => this.process(job), {
      connection: this.options.connection,
      concurrency: this.options.concurrency ?? 32,
      lockDuration,
      stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)),
      // A job stalls when its scheduler dies; the database counts its real attempts.
      maxStalledCount: 100,
    });
    this.worker.on('error', (e) => this.log(`queue error: ${e.message}`));
    this.reconcileTimer = setInterval(() => void this.reconcile().catch((e: Error) => this.log(`reconcile failed: ${e.message}`)), this.options.reconcileIntervalMs ?? 15_000);
    this.reconcileTimer.unref();
  }

  /** Stops taking jobs; running attempts stop and resume on the next scheduler. */
  async close(): Promise<void> {
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    for (const ctl of this.running.values()) ctl.abort('shutdown' satisfies AbortWhy);
    await this.worker?.close();
    await this.queue.close();
    await this.options.subscriber.unsubscribe(CANCEL_CHANNEL).catch(() => undefined);
  }

  /** Re-queue every unfinished job the database has (idempotent: the queue id is the job id). */
  async reconcile(): Promise<number> {
    const open = await this.options.prisma.job.findMany({
      where: { status: { in: ['queued', 'scheduled', 'running', 'retrying'] } },
      select: { id: true, priority: true },
    });
    for (const j of open) await this.queue.enqueue(j.id, j.priority);
    return open.length;
  }

  private async process(bull: BullJob<QueuedJob>): Promise<string> {
    const jobId = bull.data.jobId;
    const ctl = new AbortController();
    this.running.set(jobId, ctl);
    try {
      return await this.runJob(jobId, ctl.signal);
    } catch (e) {
      // A cancel that raced a transition, or the database went away: the job's state in
      // the database is what it is; log and let reconciliation pick it up if unfinished.
      if (isDbError(e, 'TAS_ERR_INVALID_TRANSITION') || isDbError(e, 'TAS_ERR_NOT_FOUND')) return `stopped: ${(e as Error).message}`;
      this.log(`job ${jobId}: ${(e as Error).message}`);
      throw e;
    } finally {
      this.running.delete(jobId);
      await this.options.registry.release(jobId).catch(() => undefined);
    }
  }

  private async runJob(jobId: string, signal: AbortSignal): Promise<string> {
    let job = await this.repo.getJob(jobId);
    if (isTerminal(job.status)) return job.status;
    if (job.status === 'scheduled' || job.status === 'running') {
      // The scheduler that ran this attempt stopped (crash or shutdown).
      await this.options.registry.release(jobId);
      await this.endOpenAttempts(jobId, 'failed', 'the scheduler running this attempt stopped');
      job = await this.repo.transition(jobId, 'retrying', 'the scheduler running this job stopped; resuming from the latest checkpoint');
      await this.jobLog(jobId, 'warn', 'the scheduler running this job stopped; resuming from the latest checkpoint');
    }
    let lastError = job.error ?? 'unknown error';
    for (;;) {
      if (job.status === 'retrying' && job.attempts > job.maxRestarts) {
        const reason = `failed after ${job.attempts} attempts (max_restarts ${job.maxRestarts}): ${lastError}`;
        await this.repo.transition(jobId, 'failed', reason);
        await this.jobLog(jobId, 'error', reason);
        return 'failed';
      }
      const gang = await this.waitForGang(job, signal);
      if (!gang) return this.stopped(jobId, signal);

      job = await this.repo.transition(jobId, 'scheduled', `placed on ${gang.map((g) => g.address).join(', ')}`);
      const attemptNo = job.attempts;
      const addresses = gang.map((g) => g.address);
      await this.options.prisma.jobAttempt.create({ data: { jobId, number: attemptNo, generation: attemptNo, workerIds: gang.map((g) => g.id), addresses } });
      job = await this.repo.transition(jobId, 'running', `attempt ${attemptNo}`);
      await this.jobLog(jobId, 'info', `attempt ${attemptNo} (generation ${attemptNo}) on ${addresses.length} workers: ${addresses.join(', ')}${attemptNo > 1 ? '; resuming from the latest checkpoint' : ''}`);

      const sink = new ProgressSink(this.options.prisma, jobId);
      try {
        const result = await runJobOnWorkers(job.spec, addresses, {
          jobId,
          generation: attemptNo,
          outDir: join(this.options.dataDir, 'jobs', jobId),
          dataDir: this.options.dataDir,
          resume: true,
          timeoutMs: this.options.collectiveTimeoutMs ?? 5000,
          signal,
          ...(this.options.tls ? { tls: this.options.tls } : {}),
          onStep: (s) => sink.push(s),
          onStart: (infos) => {
            const backends = [...new Set(infos.map((i) => i.backend))].join(',');
            void this.options.prisma.job.update({ where: { id: jobId }, data: { backend: backends, updatedAt: new Date() } }).catch(() => undefined);
          },
        });
        await sink.flush();
        await this.finishAttempt(jobId, attemptNo, 'succeeded', null);
        const summary = parseSummary(result.done.summary_json);
        const name = modelName(job);
        const version = await this.models.publish({
          tenantId: job.tenantId,
          name,
          jobId,
          artifactPath: result.done.artifact_path,
          metadata: {
            job_id: jobId,
            global_steps: Number(result.done.global_steps),
            workers: result.workers.map((w) => ({ worker_id: w.worker_id, device_kind: w.device_kind, device_name: w.device_name, backend: w.backend })),
            ...summary,
          } as Prisma.InputJsonValue,
        });
        // Before the job shows succeeded, so a client that sees it can call the new version.
        await this.options.onModelPublished?.(name, version).catch((e: Error) => this.log(`model ${name} version ${version}: could not notify the inference servers (${e.message}); they pick it up within seconds`));
        await this.repo.transition(jobId, 'succeeded', `model ${name} version ${version}`);
        await this.jobLog(jobId, 'info', `succeeded after ${Number(result.done.global_steps)} steps; published model ${name} version ${version}`);
        return 'succeeded';
      } catch (e) {
        await sink.flush().catch(() => undefined);
        if (signal.aborted) {
          await this.finishAttempt(jobId, attemptNo, 'cancelled', String(signal.reason));
          return this.stopped(jobId, signal);
        }
        const message = e instanceof Error ? e.message : String(e);
        lastError = message;
        await this.finishAttempt(jobId, attemptNo, 'failed', message);
        await this.jobLog(jobId, 'error', `attempt ${attemptNo} failed: ${message}`);
        // Dead workers go offline before the gang is released, so no job is placed on them.
        await this.options.registry.probeAll();
        await this.options.registry.release(jobId);
        if (e instanceof TrainerError && FINAL_ERRORS.has(e.code)) {
          await this.repo.transition(jobId, 'failed', message);
          return 'failed';
        }
        job = await this.repo.transition(jobId, 'retrying', message);
      }
    }
  }

  /** Reserve a gang, waiting while none is free; null when aborted. */
  private async waitForGang(job: Job, signal: AbortSignal): Promise<ReservedWorker[] | null> {
    let logged = false;
    const tenant = await this.options.prisma.tenant.findUniqueOrThrow({ where: { id: job.tenantId }, select: { name: true, maxWorkers: true } });
    const quota = tenant.maxWorkers === null ? undefined : { tenantId: job.tenantId, maxWorkers: tenant.maxWorkers };
    while (!signal.aborted) {
      const gang = await this.options.registry.reserve(job.id, job.workers, quota);
      if (gang) return gang;
      if (!logged) {
        const c = await this.options.registry.counts();
        const held = quota ? await tenantWorkersHeld(this.options.prisma, job.tenantId, job.id) : 0;
        const why = quotaWait(tenant.name, held, tenant.maxWorkers, job.workers) ?? `waiting for ${job.workers} free workers (free: ${Math.max(c.idle.cpu, c.idle.gpu)})`;
        await this.jobLog(job.id, 'info', why);
        logged = true;
      }
      // Woken by a release in this process; the timeout covers other processes' changes.
      await this.options.registry.changed(this.options.registry.probeIntervalMs, signal);
    }
    return null;
  }

  /** After an abort: a cancel was recorded by the API; a shutdown leaves the job to resume. */
  private async stopped(jobId: string, signal: AbortSignal): Promise<string> {
    await this.options.registry.release(jobId);
    if (signal.reason === 'shutdown') {
      const job = await this.repo.getJob(jobId);
      if (job.status === 'running' || job.status === 'scheduled') {
        await this.repo.transition(jobId, 'retrying', 'the scheduler stopped; the job resumes from its latest checkpoint');
      }
      return 'interrupted';
    }
    await this.jobLog(jobId, 'info', 'cancelled: every rank stopped and the workers are free');
    return 'cancelled';
  }

  private async finishAttempt(jobId: string, number: number, status: 'succeeded' | 'failed' | 'cancelled', error: string | null): Promise<void> {
    const now = new Date();
    // The job's updated_at is its status version (pollers' ETags): an attempt's end moves it.
    await this.options.prisma.$transaction([
      this.options.prisma.jobAttempt.update({ where: { jobId_number: { jobId, number } }, data: { status, error, endedAt: now } }),
      this.options.prisma.job.update({ where: { id: jobId }, data: { updatedAt: now } }),
    ]);
  }

  private async endOpenAttempts(jobId: string, status: 'failed', error: string): Promise<void> {
    const now = new Date();
    await this.options.prisma.$transaction([
      this.options.prisma.jobAttempt.updateMany({ where: { jobId, status: 'running' }, data: { status, error, endedAt: now } }),
      this.options.prisma.job.update({ where: { id: jobId }, data: { updatedAt: now } }),
    ]);
  }

  private async jobLog(jobId: string, level: LogLevel, message: string): Promise<void> {
    this.log(`job ${jobId}: ${message}`);
    await appendJobLog(this.options.prisma, jobId, level, message).catch(() => undefined);
  }
}

function modelName(job: Job): string {
  const spec = job.spec as { name?: unknown } | null;
  return typeof spec?.name === 'string' && spec.name.length > 0 ? spec.name : job.name;
}

function parseSummary(json: string): Record<string, unknown> {
  try {
    const v = JSON.parse(json) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}
