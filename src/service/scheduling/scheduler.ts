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
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
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
import { JobQueue, type QueueNames, type QueuedJob } from './job-queue.js';
import type { ReserveOptions, ReservedWorker, WorkerRegistry } from './worker-registry.js';
import { jobMemory } from './admission.js';
import { resolveTrainSpec } from '../../trainer/engine/job-spec.js';
import { within, type RedisHealth } from './redis-health.js';

export interface SchedulerOptions {
  readonly prisma: PrismaClient;
  readonly registry: WorkerRegistry;
  /** BullMQ's connection (a blocking one: not shared with commands). */
  readonly connection: ConnectionOptions;
  /** A connection for the cancel channel (subscriber mode). */
  readonly subscriber: Redis;
  /** The service's queue and channel names. */
  readonly names: QueueNames;
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
  /** Whether Redis answers: errors are not logged while it is known to be down, and every unfinished job is queued again when it is back. */
  readonly redisHealth?: Pick<RedisHealth, 'up' | 'onUp'>;
}

/** Errors a restart cannot fix. */
const FINAL_ERRORS: ReadonlySet<TrainerErrorCode> = new Set([
  'TAS_ERR_INVALID_SPEC',
  'TAS_ERR_DATA_FORMAT',
  'TAS_ERR_SHAPE',
  'TAS_ERR_BN_SINGLE_VALUE',
  'TAS_ERR_NUMERIC',
  'TAS_ERR_CHECKPOINT',
  'TAS_ERR_OUT_OF_MEMORY',
]);

type AbortWhy = 'cancel' | 'shutdown';

/** On close: how long running jobs have to stop their ranks and be handed back. */
const HAND_BACK_MS = 6000;
/** On close: how long each of BullMQ's own closing steps may wait for Redis. */
const REDIS_CLOSE_MS = 1000;

export class Scheduler {
  private readonly repo: JobRepository;
  private readonly models: ModelStore;
  private readonly queue: JobQueue;
  private worker: BullWorker<QueuedJob> | null = null;
  private readonly running = new Map<string, AbortController>();
  /** Jobs whose queue entry Redis lost while they ran here (reported once each). */
  private readonly lostEntries = new Set<string>();
  /** process() calls under way (close() waits for them to hand their jobs back). */
  private readonly processing = new Set<Promise<string>>();
  private reconcileTimer: NodeJS.Timeout | null = null;
  private reconciling: Promise<number> | null = null;
  private readonly log: (message: string) => void;
  /** This scheduler's name on the attempts it runs (their lease holder). */
  readonly id = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  /** How long an attempt's lease holds without renewal (renewed every third of it). */
  private readonly leaseMs: number;

  constructor(private readonly options: SchedulerOptions) {
    this.repo = new JobRepository(options.prisma);
    this.models = new ModelStore(options.prisma);
    this.queue = new JobQueue(options.connection, options.names.queue);
    this.log = options.log ?? (() => undefined);
    this.leaseMs = options.lockDurationMs ?? 30_000;
  }

  async start(): Promise<void> {
    const cancels = this.options.names.cancelChannel;
    await this.options.subscriber.subscribe(cancels);
    this.options.subscriber.on('message', (channel: string, jobId: string) => {
      if (channel === cancels) this.running.get(jobId)?.abort('cancel' satisfies AbortWhy);
    });
    await this.reconcile();
    const lockDuration = this.options.lockDurationMs ?? 30_000;
    this.worker = new BullWorker<QueuedJob>(this.options.names.queue, (job) => this.process(job), {
      connection: this.options.connection,
      concurrency: this.options.concurrency ?? 32,
      lockDuration,
      stalledInterval: Math.max(1000, Math.floor(lockDuration / 2)),
      // A job stalls when its scheduler dies; the database counts its real attempts.
      maxStalledCount: 100,
    });
    // While Redis is known to be down, RedisHealth has said so once; BullMQ's errors for
    // each reconnection attempt would only repeat it.
    this.worker.on('error', (e) => {
      if (this.options.redisHealth?.up === false) return;
      // A job whose queue entry went with Redis's data finished here: its outcome is in
      // the database, and BullMQ can only say that the entry is gone.
      const lost = /^Missing (?:key|lock) for job ([^ .]+)/.exec(e.message);
      if (lost) {
        if (this.lostEntries.has(lost[1]!)) return;
        this.lostEntries.add(lost[1]!);
        if (this.lostEntries.size > 1000) this.lostEntries.clear();
        this.log(`job ${lost[1]}: its queue entry was lost with Redis's data; its outcome is recorded in the database`);
        return;
      }
      this.log(`queue error: ${e.message}`);
    });
    const reconcile = () =>
      void this.reconcile().catch((e: Error) => {
        if (this.options.redisHealth?.up !== false) this.log(`reconcile failed: ${e.message}`);
      });
    this.reconcileTimer = setInterval(reconcile, this.options.reconcileIntervalMs ?? 15_000);
    this.reconcileTimer.unref();
    // A Redis that comes back may have lost its data (a restarted private server keeps
    // nothing): queue every unfinished job again at once. Jobs this scheduler runs are
    // left alone when they come back (process() sees them in `running`).
    this.options.redisHealth?.onUp(() => {
      this.log('redis is back: queueing every unfinished job again (jobs running here carry on)');
      reconcile();
    });
  }

  /**
   * Stops taking jobs and hands running ones back: every rank is cancelled, the attempt
   * recorded as stopped and the job `retrying` in the database, to resume from its latest
   * checkpoint on the next scheduler. That part needs only PostgreSQL and the workers;
   * what BullMQ does afterwards (it needs Redis, which may be gone) is bounded.
   */
  async close(): Promise<void> {
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    void this.worker?.pause(true).catch(() => undefined);
    for (const ctl of this.running.values()) ctl.abort('shutdown' satisfies AbortWhy);
    await within(Promise.allSettled([...this.processing]), HAND_BACK_MS, () => new Error('timeout')).catch(() =>
      this.log(`stop: ${this.running.size} jobs were not handed back within ${HAND_BACK_MS} ms; the next scheduler takes them over when their leases lapse`),
    );
    const bounded = (p: Promise<unknown> | undefined) => within(p ?? Promise.resolve(), REDIS_CLOSE_MS, () => new Error('timeout')).catch(() => undefined);
    await bounded(this.worker?.close());
    await bounded(this.worker?.close(true));
    await bounded(this.queue.close());
    await bounded(this.options.subscriber.unsubscribe(this.options.names.cancelChannel));
  }

  /**
   * Re-queue every unfinished job the database has (idempotent: the queue id is the job
   * id). One at a time; skipped while Redis is known to be down (its commands would wait).
   */
  reconcile(): Promise<number> {
    if (this.options.redisHealth?.up === false) return Promise.resolve(0);
    this.reconciling ??= (async () => {
      const open = await this.options.prisma.job.findMany({
        where: { status: { in: ['queued', 'scheduled', 'running', 'retrying'] } },
        select: { id: true, priority: true },
      });
      for (const j of open) await this.queue.enqueue(j.id, j.priority);
      return open.length;
    })().finally(() => (this.reconciling = null));
    return this.reconciling;
  }

  private process(bull: BullJob<QueuedJob>): Promise<string> {
    const p = this.processJob(bull.data.jobId);
    this.processing.add(p);
    void p.finally(() => this.processing.delete(p)).catch(() => undefined);
    return p;
  }

  private async processJob(jobId: string): Promise<string> {
    // The same job again while this scheduler runs it: Redis lost its queue and the job
    // was queued again by reconciliation. The run here carries on and records the outcome.
    if (this.running.has(jobId)) return 'already running in this scheduler';
    const ctl = new AbortController();
    this.running.set(jobId, ctl);
    try {
      return await this.runJob(jobId, ctl);
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

  private async runJob(jobId: string, ctl: AbortController): Promise<string> {
    const signal = ctl.signal;
    let job = await this.repo.getJob(jobId);
    if (job.status === 'scheduled' || job.status === 'running') {
      // Another scheduler may still be running it (its lease holds): wait until it ends
      // the attempt or stops renewing, never run the job beside it.
      if (!(await this.waitForLease(jobId, signal))) return 'interrupted';
      job = await this.repo.getJob(jobId);
    }
    if (isTerminal(job.status)) return job.status;
    if (job.status === 'scheduled' || job.status === 'running') {
      // The scheduler that ran this attempt stopped (crash or shutdown).
      await this.options.registry.release(jobId);
      await this.endOpenAttempts(jobId, 'failed', 'the scheduler running this attempt stopped');
      job = await this.repo.transition(jobId, 'retrying', 'the scheduler running this job stopped; resuming from the latest checkpoint');
      await this.jobLog(jobId, 'warn', 'the scheduler running this job stopped; resuming from the latest checkpoint');
    }
    let lastError = job.error ?? 'unknown error';
    // Only workers that can hold the job are reserved; a retry avoids the failed attempt's workers while others are free.
    const memoryNeed = await this.memoryNeed(job);
    let avoid: string[] = [];
    for (;;) {
      if (job.status === 'retrying' && job.attempts > job.maxRestarts) {
        const reason = `failed after ${job.attempts} attempts (max_restarts ${job.maxRestarts}): ${lastError}`;
        await this.repo.transition(jobId, 'failed', reason);
        await this.jobLog(jobId, 'error', reason);
        return 'failed';
      }
      const gang = await this.waitForGang(job, signal, { avoid, ...(memoryNeed ? { memoryNeed } : {}) });
      if (!gang) return this.stopped(jobId, signal);

      job = await this.repo.transition(jobId, 'scheduled', `placed on ${gang.map((g) => g.address).join(', ')}`);
      const attemptNo = job.attempts;
      const addresses = gang.map((g) => g.address);
      await this.options.prisma.jobAttempt.create({
        data: { jobId, number: attemptNo, generation: attemptNo, workerIds: gang.map((g) => g.id), addresses, schedulerId: this.id, leaseUntil: new Date(Date.now() + this.leaseMs) },
      });
      job = await this.repo.transition(jobId, 'running', `attempt ${attemptNo}`);
      await this.jobLog(jobId, 'info', `attempt ${attemptNo} (generation ${attemptNo}) on ${addresses.length} workers: ${addresses.join(', ')}${attemptNo > 1 ? '; resuming from the latest checkpoint' : ''}`);

      const sink = new ProgressSink(this.options.prisma, jobId);
      const lease = this.holdLease(jobId, attemptNo, ctl);
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
        lease.stop();
        await sink.flush().catch(() => undefined);
        if (signal.aborted) {
          await this.finishAttempt(jobId, attemptNo, 'cancelled', String(signal.reason));
          return this.stopped(jobId, signal);
        }
        const message = e instanceof Error ? e.message : String(e);
        lastError = message;
        await this.finishAttempt(jobId, attemptNo, 'failed', message);
        await this.jobLog(jobId, 'error', `attempt ${attemptNo} failed: ${message}`);
        // Dead workers go offline, and workers whose engine failed draining, before the
        // gang is released, so no job is placed on them.
        await this.options.registry.probeAll();
        await this.options.registry.release(jobId);
        avoid = gang.map((g) => g.id);
        if (e instanceof TrainerError && FINAL_ERRORS.has(e.code)) {
          await this.repo.transition(jobId, 'failed', message);
          return 'failed';
        }
        job = await this.repo.transition(jobId, 'retrying', message);
      } finally {
        lease.stop();
      }
    }
  }

  /**
   * Keep this attempt's lease alive while it runs, and watch the job's row: a cancel
   * recorded while Redis could not carry its notice still stops the ranks within a third
   * of the lease.
   */
  private holdLease(jobId: string, number: number, ctl: AbortController): { stop(): void } {
    let failing = false;
    const renew = async () => {
      try {
        await this.options.prisma.jobAttempt.updateMany({ where: { jobId, number, status: 'running' }, data: { leaseUntil: new Date(Date.now() + this.leaseMs) } });
        const row = await this.options.prisma.job.findUnique({ where: { id: jobId }, select: { status: true } });
        if (row?.status === 'cancelled') ctl.abort('cancel' satisfies AbortWhy);
        if (failing) this.log(`job ${jobId}: attempt ${number}'s lease renewed again`);
        failing = false;
      } catch (e) {
        if (!failing) this.log(`job ${jobId}: could not renew attempt ${number}'s lease (${(e as Error).message}); retrying`);
        failing = true;
      }
    };
    const timer = setInterval(() => void renew(), Math.max(100, Math.floor(this.leaseMs / 3)));
    timer.unref();
    return { stop: () => clearInterval(timer) };
  }

  /**
   * Resolves true once no other scheduler holds a live lease on the job's running attempt
   * (it ended the attempt, or stopped renewing: it died); false when aborted first.
   */
  private async waitForLease(jobId: string, signal: AbortSignal): Promise<boolean> {
    let logged = false;
    while (!signal.aborted) {
      const job = await this.repo.getJob(jobId);
      if (job.status !== 'scheduled' && job.status !== 'running') return true;
      const a = await this.options.prisma.jobAttempt.findFirst({ where: { jobId, status: 'running' }, orderBy: { number: 'desc' }, select: { number: true, schedulerId: true, leaseUntil: true } });
      const left = a?.leaseUntil ? a.leaseUntil.getTime() - Date.now() : 0;
      if (!a || a.schedulerId === this.id || left <= 0) return true;
      if (!logged) {
        this.log(`job ${jobId}: attempt ${a.number} is held by scheduler ${a.schedulerId} for ${left} ms more; waiting for it to end or lapse`);
        logged = true;
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.min(left + 50, this.leaseMs));
        function done(): void {
          clearTimeout(timer);
          signal.removeEventListener('abort', done);
          resolve();
        }
        signal.addEventListener('abort', done, { once: true });
      });
    }
    return false;
  }

  /** The job's estimated memory on a worker of a backend; undefined when its spec cannot be read (its workers report why). */
  private async memoryNeed(job: Job): Promise<((backend: string | null) => number) | undefined> {
    try {
      const estimate = await jobMemory(resolveTrainSpec(job.spec), this.options.dataDir);
      return (backend) => estimate(backend).bytes;
    } catch {
      return undefined;
    }
  }

  /** Reserve a gang, waiting while none is free; null when aborted. */
  private async waitForGang(job: Job, signal: AbortSignal, options: ReserveOptions): Promise<ReservedWorker[] | null> {
    let logged = false;
    const tenant = await this.options.prisma.tenant.findUniqueOrThrow({ where: { id: job.tenantId }, select: { name: true, maxWorkers: true } });
    const quota = tenant.maxWorkers === null ? undefined : { tenantId: job.tenantId, maxWorkers: tenant.maxWorkers };
    while (!signal.aborted) {
      const gang = await this.options.registry.reserve(job.id, job.workers, { ...options, ...(quota ? { quota } : {}) });
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
