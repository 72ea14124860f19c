/**
 * Jobs as the REST API sees them: submission (validation, pool-size check, idempotency,
 * queueing), the status view a dashboard polls, metrics for plots, logs, and cancel.
 * No HTTP here: routes translate requests to these calls and errors to statuses.
 */
import { stat } from 'node:fs/promises';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import type { Redis } from 'ioredis';
import { gangCapacity, waitingFor } from '../../gpu-pool/gang.js';
import type { JobQueue } from '../scheduling/job-queue.js';
import { onlineWorkers, poolCounts } from '../scheduling/worker-registry.js';
import { admitByMemory, jobMemory } from '../scheduling/admission.js';
import { resolveTrainSpec } from '../../trainer/engine/job-spec.js';
import { TrainerError } from '../../trainer/errors.js';
import { validateAgainst } from '../../trainer/schema.js';
import { dataFiles, type DataSource } from '../../trainer/data/load.js';
import type { Prisma, PrismaClient } from '../db/client.js';
import { DbError } from '../db/errors.js';
import { ServiceError } from '../errors.js';
import { isTerminal, type JobStatus } from '../db/job-states.js';
import type { JobView } from './job-view.js';
import { JobRepository, type Job } from '../db/jobs.js';
import { appendJobLog, readJobLog, type JobLogLine } from './job-log.js';
import { summariseMetrics, type JobMetricsView } from './metrics-view.js';
import { ModelStore } from '../models/model-store.js';
import { SingleFlight } from './single-flight.js';
import type { ChangeSubscriptions } from '../db/change-feed.js';
import { within } from '../scheduling/redis-health.js';
import { createHash } from 'node:crypto';
import { canSee, visibleTenant, type Principal } from '../tenants/principal.js';
import { quotaWait, tenantWorkersHeld } from '../scheduling/tenant-quota.js';

export interface JobServiceOptions {
  readonly prisma: PrismaClient;
  readonly queue: JobQueue;
  /** For publishing cancels (a plain command connection). */
  readonly redis: Redis;
  /** The channel cancels are published on (`QueueNames.cancelChannel`). */
  readonly cancelChannel: string;
  readonly dataDir: string;
  /** The registry's probe interval (workers silent for 3 of them count as offline). */
  readonly probeIntervalMs: number;
  /** Whether Redis answers: while it does not, a submission answers 503 at once (nothing is written). */
  readonly redisHealth?: { readonly up: boolean; readonly reason: string };
  readonly log?: (message: string) => void;
  /**
   * Committed changes as the database announces them (`ChangeFeed`): a read shared by
   * pollers that began before a change is not joined after it is announced, so a long
   * poll woken by the change reads it.
   */
  readonly changes?: ChangeSubscriptions;
}

/** How long a submission waits for the queue before leaving the job to the scheduler's reconciliation. */
const ENQUEUE_TIMEOUT_MS = 2000;

export type { JobView };

export interface SubmitResult {
  readonly job: JobView;
  /** False when the Idempotency-Key named a job submitted before. */
  readonly created: boolean;
}

/** A status view with its ETag, as the polling path serves it. */
export interface TaggedView extends Tagged {
  readonly view: JobView;
}

/** Views kept for polling (the most recently built per job). */
const VIEW_CACHE_SIZE = 2000;
/** List pages and metrics views kept for polling (the most recently built of each). */
const PAGE_CACHE_SIZE = 200;
/** Points per series of the metrics view unless the client asks otherwise. */
export const DEFAULT_MAX_POINTS = 1000;

export interface ListOptions {
  readonly status?: JobStatus[];
  readonly limit?: number;
  readonly cursor?: string;
}

/** A JSON answer serialised once (sent as is to every poller), with its ETag. */
export interface Tagged {
  readonly etag: string;
  readonly json: string;
}

function etagOfJson(json: string): string {
  return `W/"${createHash('sha1').update(json).digest('base64url')}"`;
}

function tagged(body: unknown): Tagged {
  const json = JSON.stringify(body);
  return { etag: etagOfJson(json), json };
}

export class JobService {
  readonly repo: JobRepository;
  private readonly models: ModelStore;
  private readonly versionReads = new SingleFlight<string, { version: string; tenantId: string } | null>();
  /** Pool and tenant counts a waiting job's version includes, shared by its pollers. */
  private readonly countReads = new SingleFlight<string, string>();
  private readonly viewBuilds = new SingleFlight<string, TaggedView>();
  private readonly views = new Map<string, { version: string; tagged: TaggedView }>();
  private readonly listReads = new SingleFlight<string, Array<{ id: string; status: JobStatus; updatedAt: Date; tenantId: string }>>();
  private readonly builds = new SingleFlight<string, Tagged>();
  private readonly listPages = new Map<string, { version: string; tagged: Tagged }>();
  private readonly metricViews = new Map<string, { version: string; tagged: Tagged }>();

  constructor(private readonly options: JobServiceOptions) {
    this.repo = new JobRepository(options.prisma);
    this.models = new ModelStore(options.prisma);
    options.changes?.subscribe((topic) => this.changed(topic));
  }

  /** A change was announced (`job:<id>`, `pool`, `tenants`; null: unknown): shared reads it may postdate start anew. */
  private changed(topic: string | null): void {
    this.listReads.forget();
    if (topic !== null && topic.startsWith('job:')) {
      this.versionReads.forget(topic.slice(4));
      return;
    }
    this.versionReads.forget();
    this.countReads.forget();
  }

  /** Submit a job as `who` (the job is its tenant's); quotas of tenant keys apply. */
  async submit(who: Principal, body: unknown, idempotencyKey?: string): Promise<SubmitResult> {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ServiceError('TAS_ERR_BAD_REQUEST', 'body: must be a JSON object (a training spec)', { field: 'body' });
    const { priority, max_restarts, ...trainSpec } = body as Record<string, unknown>;
    const service = validateAgainst<{ priority?: number; max_restarts?: number }>('job-request.schema.json', { priority, max_restarts }, '');
    const spec = resolveTrainSpec(trainSpec);
    await this.checkDataFiles(who, spec.data, spec.initFrom);
    const limits = who.role === 'tenant' ? who.limits : null;
    if (limits?.maxWorkers != null && spec.workers > limits.maxWorkers) {
      throw new ServiceError('TAS_ERR_QUOTA', `workers: the job asks for ${spec.workers} workers; tenant ${who.tenantName} may use at most ${limits.maxWorkers} (max_workers)`, { field: 'workers' });
    }
    const capacity = gangCapacity(await poolCounts(this.options.prisma, this.options.probeIntervalMs));
    if (spec.workers > capacity) {
      throw new ServiceError('TAS_ERR_POOL_TOO_SMALL', `workers: the job asks for ${spec.workers} workers but the pool has at most ${capacity} online workers of one device kind`, { field: 'workers' });
    }
    // Memory: some gang of one kind must hold the job, else 400 naming the layer.
    admitByMemory(await jobMemory(spec, this.options.dataDir), spec.workers, await onlineWorkers(this.options.prisma, this.options.probeIntervalMs));
    // Redis down: refuse now, before anything is written, rather than hang on the queue.
    const redis = this.options.redisHealth;
    if (redis && !redis.up) throw new ServiceError('TAS_ERR_UNAVAILABLE', `the job queue (Redis) is unreachable (${redis.reason}); nothing was submitted, try again later`);
    // A retried submission gets its job back even when the queue is full now.
    const replay = idempotencyKey !== undefined && (await this.options.prisma.job.count({ where: { tenantId: who.tenantId, idempotencyKey } })) > 0;
    const maxQueued = limits?.maxQueuedJobs ?? null;
    const guard =
      maxQueued === null || replay
        ? undefined
        : async (tx: Prisma.TransactionClient) => {
            const waiting = await tx.job.count({ where: { tenantId: who.tenantId, status: { in: ['queued', 'retrying'] } } });
            if (waiting >= maxQueued) {
              throw new ServiceError('TAS_ERR_QUEUE_FULL', `tenant ${who.tenantName} has ${waiting} jobs waiting, its max_queued_jobs; submit again once one has started`);
            }
          };
    const { job, created } = await this.repo.createJob({
      tenantId: who.tenantId,
      name: spec.name,
      spec: trainSpec as Prisma.InputJsonValue,
      workers: spec.workers,
      priority: service.priority ?? 0,
      maxRestarts: service.max_restarts ?? 5,
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
    }, guard);
    if (created) {
      await appendJobLog(this.options.prisma, job.id, 'info', `queued: ${spec.workers} workers, global batch ${spec.globalBatch} (${spec.localBatchSizes.join(' + ')}), ${spec.epochs} epochs`);
    }
    // Also for a replay: if the first request died between the insert and the queue,
    // this queues it now (adding an existing queue id is a no-op). The job is recorded:
    // if Redis went away just now, the scheduler's reconciliation queues it when Redis is
    // back, so the answer is still the job.
    if (!isTerminal(job.status)) {
      await within(this.options.queue.enqueue(job.id, job.priority), ENQUEUE_TIMEOUT_MS, () => new Error(`no answer from Redis within ${ENQUEUE_TIMEOUT_MS} ms`)).catch((e: Error) =>
        this.options.log?.(`job ${job.id}: recorded but not queued (${e.message}); the scheduler queues it when Redis answers`),
      );
    }
    return { job: await this.view(job), created };
  }

  async get(who: Principal, id: string): Promise<JobView> {
    return this.view(await this.visibleJob(who, id));
  }

  /** Job `id` if `who` may see it; another tenant's job is not found, as a missing one. */
  private async visibleJob(who: Principal, id: string): Promise<Job> {
    const job = await this.repo.getJob(id);
    if (!canSee(who, job.tenantId)) throw new DbError('TAS_ERR_NOT_FOUND', `no job with id ${JSON.stringify(id)}`);
    return job;
  }

  /**
   * The status view and its ETag, cheaply: one small read of the job's version (its
   * `updated_at`, which every change the view shows moves forward, plus the pool's
   * counts while the job waits), shared by concurrent pollers; the view itself is built
   * only when that version changed. This is the path a polling dashboard takes.
   */
  async getTagged(who: Principal, id: string): Promise<TaggedView> {
    const read = await this.versionReads.run(id, () => this.version(id));
    if (read === null || !canSee(who, read.tenantId)) throw new DbError('TAS_ERR_NOT_FOUND', `no job with id ${JSON.stringify(id)}`);
    const version = read.version;
    const cached = this.views.get(id);
    if (cached && cached.version === version) return cached.tagged;
    return this.viewBuilds.run(`${id}@${version}`, async () => {
      const view = await this.view(await this.repo.getJob(id));
      const json = JSON.stringify(view);
      const t = { etag: etagOfJson(json), view, json };
      this.views.delete(id);
      this.views.set(id, { version, tagged: t });
      if (this.views.size > VIEW_CACHE_SIZE) this.views.delete(this.views.keys().next().value!);
      return t;
    });
  }

  private async version(id: string): Promise<{ version: string; tenantId: string } | null> {
    if (!/^[0-9a-f-]{36}$/i.test(id)) return null;
    const row = await this.options.prisma.job.findUnique({ where: { id }, select: { updatedAt: true, status: true, tenantId: true } });
    if (!row) return null;
    let v = `${row.updatedAt.getTime()}:${row.status}`;
    if (row.status === 'queued' || row.status === 'retrying') {
      const held = await this.countReads.run(`tenant:${row.tenantId}`, async () => String(await tenantWorkersHeld(this.options.prisma, row.tenantId)));
      v += `:${await this.poolVersion()}:${held}`;
    }
    return { version: v, tenantId: row.tenantId };
  }

  /** `who`'s jobs (every tenant's for the admin), newest first. */
  async list(who: Principal, options: ListOptions): Promise<{ jobs: JobView[]; next_cursor: string | null }> {
    const tenantId = visibleTenant(who);
    const page = await this.repo.listJobs({ ...options, ...(tenantId !== null ? { tenantId } : {}) });
    return { jobs: await this.buildViews(page.jobs, { brief: true }), next_cursor: page.nextCursor };
  }

  /**
   * A page of `who`'s job list with its ETag, as polling dashboards read it: one cheap
   * read of the page's ids, states and update times (plus the pool's counts and the
   * tenants' held workers when a job on it waits) decides whether the page built last
   * time still holds; it is rebuilt, once for all concurrent readers who see the same
   * jobs, only when that changed.
   */
  async listTagged(who: Principal, options: ListOptions): Promise<Tagged> {
    const tenantId = visibleTenant(who);
    const key = JSON.stringify([tenantId, options.status ? [...options.status].sort() : null, options.limit ?? null, options.cursor ?? null]);
    const stamps = await this.listReads.run(key, () => this.repo.listJobStamps({ ...options, ...(tenantId !== null ? { tenantId } : {}) }));
    let version = stamps.map((r) => `${r.id}:${r.updatedAt.getTime()}:${r.status}`).join(',');
    const waitingTenants = [...new Set(stamps.filter((r) => r.status === 'queued' || r.status === 'retrying').map((r) => r.tenantId))];
    if (waitingTenants.length > 0) {
      const held = await Promise.all(waitingTenants.map((t) => this.countReads.run(`tenant:${t}`, async () => String(await tenantWorkersHeld(this.options.prisma, t)))));
      version += `:${await this.poolVersion()}:${held.join(',')}`;
    }
    return this.cached(this.listPages, `list:${key}`, version, async () => tagged(await this.list(who, options)));
  }

  /** The metrics view with its ETag, built once per version of the job (its progress moves it). */
  async metricsTagged(who: Principal, id: string, options: { maxPoints?: number } = {}): Promise<Tagged> {
    const read = await this.versionReads.run(id, () => this.version(id));
    if (read === null || !canSee(who, read.tenantId)) throw new DbError('TAS_ERR_NOT_FOUND', `no job with id ${JSON.stringify(id)}`);
    const maxPoints = options.maxPoints ?? DEFAULT_MAX_POINTS;
    return this.cached(this.metricViews, `metrics:${id}:${maxPoints}`, read.version, async () => tagged(await this.metrics(who, id, { maxPoints })));
  }

  /** `build()`'s result for `key` at `version`: from `cache` when it was built at that version, else built once for all callers. */
  private async cached(cache: Map<string, { version: string; tagged: Tagged }>, key: string, version: string, build: () => Promise<Tagged>): Promise<Tagged> {
    const hit = cache.get(key);
    if (hit && hit.version === version) return hit.tagged;
    return this.builds.run(`${key}@${version}`, async () => {
      const t = await build();
      cache.delete(key);
      cache.set(key, { version, tagged: t });
      if (cache.size > PAGE_CACHE_SIZE) cache.delete(cache.keys().next().value!);
      return t;
    });
  }

  private poolVersion(): Promise<string> {
    return this.countReads.run('pool', async () => JSON.stringify(await poolCounts(this.options.prisma, this.options.probeIntervalMs)));
  }

  /** Cancel: final at once in the database; the scheduler stops every rank and frees the gang. */
  async cancel(who: Principal, id: string): Promise<JobView> {
    const job = await this.visibleJob(who, id);
    if (isTerminal(job.status)) throw new ServiceError('TAS_ERR_CONFLICT', `job ${id} already ${job.status}; only unfinished jobs can be cancelled`);
    await this.repo.transition(id, 'cancelled', 'cancelled by request');
    await appendJobLog(this.options.prisma, id, 'info', `cancel requested (was ${job.status})`);
    // Recorded: the notice below stops the ranks at once; without Redis the scheduler
    // finds the cancel in the database at its next lease renewal.
    await within(this.options.queue.removeWaiting(id), ENQUEUE_TIMEOUT_MS, () => new Error('timeout')).catch(() => false);
    await within(this.options.redis.publish(this.options.cancelChannel, id), ENQUEUE_TIMEOUT_MS, () => new Error('timeout')).catch(() => 0);
    return this.get(who, id);
  }

  async metrics(who: Principal, id: string, options: { maxPoints?: number } = {}): Promise<JobMetricsView> {
    const job = await this.visibleJob(who, id);
    const [rows, version] = await Promise.all([
      this.options.prisma.jobMetric.findMany({ where: { jobId: id }, orderBy: [{ step: 'asc' }, { id: 'asc' }] }),
      this.options.prisma.modelVersion.findFirst({ where: { jobId: id }, orderBy: { createdAt: 'desc' }, select: { metadata: true } }),
    ]);
    const meta = version?.metadata as { bn_final?: unknown; recalibration?: unknown } | undefined;
    return summariseMetrics(job.id, rows, meta?.bn_final ?? null, options.maxPoints ?? DEFAULT_MAX_POINTS, meta?.recalibration ?? null);
  }

  async logs(who: Principal, id: string, after: string | undefined, limit: number): Promise<{ lines: JobLogLine[]; next_after: string | null }> {
    await this.visibleJob(who, id);
    let afterId: bigint | null = null;
    if (after !== undefined) {
      if (!/^\d{1,19}$/.test(after)) throw new ServiceError('TAS_ERR_BAD_REQUEST', `after: must be a log line id, got ${JSON.stringify(after)}`, { field: 'after' });
      afterId = BigInt(after);
    }
    const lines = await readJobLog(this.options.prisma, id, afterId, limit);
    return { lines, next_after: lines.length > 0 ? lines[lines.length - 1]!.id : after ?? null };
  }

  /**
   * Relative data files (and `init_from`) must exist in the data directory now, not fail
   * minutes later. A tenant's job may read only its own datasets (`datasets/<id>/...`)
   * and start from its own jobs' artifacts (`jobs/<id>/...`); the admin's, any file of
   * the data directory.
   */
  private async checkDataFiles(who: Principal, data: DataSource, initFrom: string | null): Promise<void> {
    const files = [...dataFiles(data), ...(initFrom !== null ? [['init_from', initFrom] as [string, string]] : [])];
    for (const [field, path] of files) {
      const full = resolve(this.options.dataDir, path);
      const rel = relative(resolve(this.options.dataDir), full);
      if (rel.startsWith('..') || isAbsolute(rel)) throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: "${path}" is outside the data directory`, field);
      if (who.role === 'tenant') {
        const m = /^(datasets|jobs)\/([0-9a-f-]{36})\//.exec(rel.split(sep).join('/'));
        const where = { id: m?.[2] ?? '', tenantId: who.tenantId };
        const owned = m !== null && (m[1] === 'datasets' ? await this.options.prisma.dataset.count({ where }) : await this.options.prisma.job.count({ where })) > 0;
        const yours = field === 'init_from' ? "one of your jobs' artifacts or datasets" : 'one of your datasets (upload it with POST /v1/datasets)';
        if (!owned) throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: "${path}" is not ${yours}`, field);
      }
      const ok = await stat(full).then((s) => s.isFile(), () => false);
      if (!ok) throw new TrainerError('TAS_ERR_INVALID_SPEC', `${field}: "${path}": no such file in the data directory (upload it with POST /v1/datasets)`, field);
    }
  }

  private async view(job: Job, opts: { brief?: boolean } = {}): Promise<JobView> {
    return (await this.buildViews([job], opts))[0]!;
  }

  /** The views of several jobs, with a fixed number of queries whatever their number (a list page). */
  private async buildViews(jobs: readonly Job[], opts: { brief?: boolean } = {}): Promise<JobView[]> {
    if (jobs.length === 0) return [];
    const ids = jobs.map((j) => j.id);
    const prisma = this.options.prisma;
    const anyWaiting = jobs.some((j) => j.status === 'queued' || j.status === 'retrying');
    const [tenants, attempts, workers, versions, transitions, counts] = await Promise.all([
      prisma.tenant.findMany({ where: { id: { in: [...new Set(jobs.map((j) => j.tenantId))] } }, select: { id: true, name: true, maxWorkers: true } }),
      prisma.jobAttempt.findMany({ where: { jobId: { in: ids } }, orderBy: [{ jobId: 'asc' }, { number: 'asc' }] }),
      prisma.worker.findMany({ where: { currentJobId: { in: ids } }, orderBy: { id: 'asc' } }),
      this.models.byJobs(ids),
      opts.brief ? Promise.resolve([]) : prisma.jobTransition.findMany({ where: { jobId: { in: ids } }, orderBy: { id: 'asc' } }),
      anyWaiting ? poolCounts(prisma, this.options.probeIntervalMs) : Promise.resolve(null),
    ]);
    const byJob = <T>(rows: readonly T[], key: (r: T) => string | null) => {
      const m = new Map<string, T[]>();
      for (const r of rows) {
        const k = key(r);
        if (k !== null) m.set(k, [...(m.get(k) ?? []), r]);
      }
      return m;
    };
    const attemptsOf = byJob(attempts, (a) => a.jobId);
    const holding = byJob(workers, (w) => w.currentJobId);
    const transitionsOf = byJob(transitions, (t) => t.jobId);
    // The devices: the gang holding the job now, else the last attempt's workers.
    const lastWorkerIds = jobs.flatMap((j) => (holding.has(j.id) ? [] : attemptsOf.get(j.id)?.at(-1)?.workerIds ?? []));
    const lastWorkers = lastWorkerIds.length > 0 ? await prisma.worker.findMany({ where: { id: { in: [...new Set(lastWorkerIds)] } }, orderBy: { id: 'asc' } }) : [];
    const tenantOf = new Map(tenants.map((t) => [t.id, t]));
    // A waiting job within its tenant's max_workers waits while the tenant's other jobs hold the rest.
    const quotas = new Map<string, string | null>();
    for (const job of jobs) {
      const tenant = tenantOf.get(job.tenantId);
      if (!counts || (job.status !== 'queued' && job.status !== 'retrying') || !tenant || tenant.maxWorkers === null) continue;
      quotas.set(job.id, quotaWait(tenant.name, await tenantWorkersHeld(prisma, job.tenantId, job.id), tenant.maxWorkers, job.workers));
    }
    return jobs.map((job) => {
      const jobAttempts = attemptsOf.get(job.id) ?? [];
      const last = jobAttempts[jobAttempts.length - 1];
      const held = holding.get(job.id) ?? (last ? lastWorkers.filter((x) => last.workerIds.includes(x.id)) : []);
      const waiting = job.status === 'queued' || job.status === 'retrying';
      const w = waiting && counts ? waitingFor(job.workers, counts) : null;
      const published = versions.get(job.id) ?? [];
      const latestVersion = published[published.length - 1];
      const tenant = tenantOf.get(job.tenantId);
      if (!tenant) throw new DbError('TAS_ERR_NOT_FOUND', `job ${job.id}: no tenant ${job.tenantId}`);
      return {
        id: job.id,
        tenant: tenant.name,
        name: job.name,
        status: job.status,
        priority: job.priority,
        workers: job.workers,
        max_restarts: job.maxRestarts,
        attempts: job.attempts,
        progress: { step: job.step, total_steps: job.totalSteps, epoch: job.epoch, fraction: job.totalSteps ? job.step / job.totalSteps : null },
        latest: { loss: job.loss, accuracy: job.accuracy },
        backend: job.backend,
        devices: held.map((x) => ({ worker: x.address, device_kind: x.deviceKind, device_name: x.deviceName, backend: x.backend })),
        attempt_history: jobAttempts.map((a) => ({
          number: a.number,
          generation: a.generation,
          status: a.status,
          workers: a.addresses,
          error: a.error,
          started_at: a.startedAt.toISOString(),
          ended_at: a.endedAt?.toISOString() ?? null,
        })),
        waiting_for: w ? { requested_workers: w.requestedWorkers, free_workers: w.freeWorkers, online_workers: w.onlineWorkers, reason: quotas.get(job.id) ?? w.reason } : null,
        error: job.error,
        model: latestVersion ? { name: latestVersion.model, version: latestVersion.version } : null,
        transitions: (transitionsOf.get(job.id) ?? []).map((t) => ({ from: t.from, to: t.to, reason: t.reason, at: t.at.toISOString() })),
        created_at: job.createdAt.toISOString(),
        updated_at: job.updatedAt.toISOString(),
        started_at: job.startedAt?.toISOString() ?? null,
        finished_at: job.finishedAt?.toISOString() ?? null,
      };
    });
  }
}
