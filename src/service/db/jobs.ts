/**
 * The jobs repository: create (idempotent by key), read, list (newest first, keyset
 * pagination on (createdAt, id)) and move jobs through the state machine of
 * `job-states.ts`. A transition takes the job's row lock (SELECT ... FOR UPDATE), so two
 * racing transitions from the same state serialise and exactly one of them wins; each
 * accepted transition is recorded in job_transitions in the same transaction.
 */
import { isDeepStrictEqual } from 'node:util';
import { Prisma, type PrismaClient } from './client.js';
import { decodeCursor, encodeCursor, UUID } from './cursor.js';
import { DbError } from './errors.js';
import type { Job, JobTransition } from './generated/client.js';
import { DEFAULT_TENANT_ID } from './default-tenant.js';
import { canTransition, isJobStatus, isTerminal, nextStates, type JobStatus } from './job-states.js';

export type { Job, JobTransition, JobStatus };

export interface CreateJobInput {
  /** The owner. @defaultValue the tenant `default` */
  readonly tenantId?: string;
  readonly name: string;
  /** The train spec (schemas/train.schema.json), validated by the caller. */
  readonly spec: Prisma.InputJsonValue;
  /** Workers in the gang (world size). */
  readonly workers: number;
  /** Higher runs first. @defaultValue 0 */
  readonly priority?: number;
  /** Restarts from the checkpoint before the job fails. @defaultValue 5 */
  readonly maxRestarts?: number;
  readonly totalSteps?: number | null;
  /**
   * A client's key for this request: creating again with the same key returns the job
   * created the first time (the client may retry a POST whose answer it lost). Keys are
   * per tenant.
   */
  readonly idempotencyKey?: string;
}

export interface CreateJobResult {
  readonly job: Job;
  /** False when the idempotency key named an existing job. */
  readonly created: boolean;
}

export interface ListJobsOptions {
  /** Only this tenant's jobs. @defaultValue every tenant's */
  readonly tenantId?: string;
  /** Only jobs in this state (or these states). */
  readonly status?: JobStatus | readonly JobStatus[];
  /** Page size, 1 to 500. @defaultValue 50 */
  readonly limit?: number;
  /** `nextCursor` of the previous page. */
  readonly cursor?: string;
}

export interface JobPage {
  readonly jobs: Job[];
  /** Pass as `cursor` for the next page; null on the last page. */
  readonly nextCursor: string | null;
}

export const MAX_PAGE_SIZE = 500;
const DEFAULT_PAGE_SIZE = 50;

export class JobRepository {
  constructor(private readonly prisma: PrismaClient) {}

  /**
   * `guard` runs in the insert's transaction, after the owner's tenant row is locked, so
   * checks of the tenant's jobs (its queue quota) and the insert are one step: two
   * submissions of one tenant cannot both pass a check that only one of them fits.
   */
  async createJob(input: CreateJobInput, guard?: (tx: Prisma.TransactionClient) => Promise<void>): Promise<CreateJobResult> {
    const data = {
      tenantId: input.tenantId ?? DEFAULT_TENANT_ID,
      name: input.name,
      spec: input.spec,
      workers: input.workers,
      priority: input.priority ?? 0,
      maxRestarts: input.maxRestarts ?? 5,
      totalSteps: input.totalSteps ?? null,
      idempotencyKey: input.idempotencyKey ?? null,
    };
    try {
      // One transaction: the guard's checks, the job and its creation record.
      const job = await this.prisma.$transaction(async (tx) => {
        if (guard) {
          await tx.$queryRaw`SELECT 1 FROM tenants WHERE id = ${data.tenantId}::uuid FOR UPDATE`;
          await guard(tx);
        }
        return tx.job.create({ data: { ...data, transitions: { create: { from: null, to: 'queued', reason: 'created' } } } });
      });
      return { job, created: true };
    } catch (err) {
      // The unique index on idempotency_key decides between racing creates: the loser
      // waits for the winner's commit, fails with P2002 and returns the winner's job.
      if (input.idempotencyKey === undefined || !isUniqueViolation(err)) throw err;
      const existing = await this.prisma.job.findUnique({ where: { tenantId_idempotencyKey: { tenantId: data.tenantId, idempotencyKey: input.idempotencyKey } } });
      if (!existing) throw err;
      if (!sameRequest(existing, data)) {
        throw new DbError(
          'TAS_ERR_IDEMPOTENCY_CONFLICT',
          `idempotency key ${JSON.stringify(input.idempotencyKey)} was used for a different job request (job ${existing.id})`,
        );
      }
      return { job: existing, created: false };
    }
  }

  async getJob(id: string): Promise<Job> {
    const job = UUID.test(id) ? await this.prisma.job.findUnique({ where: { id } }) : null;
    if (!job) throw notFound(id);
    return job;
  }

  /** Jobs newest first; filter by status; keyset pages so inserts do not shift them. */
  async listJobs(options: ListJobsOptions = {}): Promise<JobPage> {
    const { limit, args } = pageQuery(options);
    const rows = await this.prisma.job.findMany(args);
    const jobs = rows.slice(0, limit);
    const last = jobs[jobs.length - 1];
    return { jobs, nextCursor: rows.length > limit && last ? encodeCursor(last) : null };
  }

  /**
   * What `listJobs` would return, reduced to each row's id, status and update time (and
   * the row past the page, which decides `nextCursor`): a cheap read that changes
   * whenever the page does, for long polls and caches.
   */
  async listJobStamps(options: ListJobsOptions = {}): Promise<Array<{ id: string; status: JobStatus; updatedAt: Date; tenantId: string }>> {
    const { args } = pageQuery(options);
    return this.prisma.job.findMany({ ...args, select: { id: true, status: true, updatedAt: true, tenantId: true } });
  }

  /**
   * Moves job `jobId` to `to` if the state machine allows it from its current state;
   * records the transition with `reason`. Sets startedAt on the first `running`,
   * finishedAt on a terminal state, error (= reason) on `failed`, and counts an attempt
   * on each `scheduled`. Throws TAS_ERR_NOT_FOUND or TAS_ERR_INVALID_TRANSITION.
   */
  async transition(jobId: string, to: JobStatus, reason?: string): Promise<Job> {
    if (!isJobStatus(to)) throw new DbError('TAS_ERR_INVALID_ARGUMENT', `unknown job status ${JSON.stringify(to)}`);
    if (!UUID.test(jobId)) throw notFound(jobId);
    return this.prisma.$transaction(async (tx) => {
      // The row lock: a concurrent transition of this job waits here until we commit,
      // then reads the state we wrote and is refused if it no longer applies.
      const rows = await tx.$queryRaw<Array<{ status: string; started_at: Date | null }>>`
        SELECT status::text AS status, started_at FROM jobs WHERE id = ${jobId}::uuid FOR UPDATE`;
      const row = rows[0];
      if (!row) throw notFound(jobId);
      const from = row.status;
      if (!isJobStatus(from)) throw new Error(`job ${jobId} has an unknown status ${JSON.stringify(from)}`);
      if (!canTransition(from, to)) {
        const allowed = nextStates(from);
        throw new DbError(
          'TAS_ERR_INVALID_TRANSITION',
          `job ${jobId} cannot go from ${from} to ${to}` +
            (allowed.length > 0 ? ` (allowed: ${allowed.join(', ')})` : ` (${from} is final)`),
        );
      }
      const now = new Date();
      const job = await tx.job.update({
        where: { id: jobId },
        data: {
          status: to,
          updatedAt: now,
          ...(to === 'scheduled' ? { attempts: { increment: 1 } } : {}),
          ...(to === 'running' && row.started_at === null ? { startedAt: now } : {}),
          ...(isTerminal(to) ? { finishedAt: now } : {}),
          ...(to === 'failed' && reason !== undefined ? { error: reason } : {}),
        },
      });
      await tx.jobTransition.create({ data: { jobId, from, to, reason: reason ?? null, at: now } });
      return job;
    });
  }

  /** The job's transitions, oldest first (the first is its creation, from null). */
  async history(jobId: string): Promise<JobTransition[]> {
    await this.getJob(jobId);
    // By id: transitions of a job are serialised by its row lock, so ids follow their order.
    return this.prisma.jobTransition.findMany({ where: { jobId }, orderBy: { id: 'asc' } });
  }
}

/** The query of one page of `listJobs`: newest first, one row more than the page. */
function pageQuery(options: ListJobsOptions) {
  const limit = options.limit ?? DEFAULT_PAGE_SIZE;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_SIZE) {
    throw new DbError('TAS_ERR_INVALID_ARGUMENT', `limit must be an integer from 1 to ${MAX_PAGE_SIZE}, got ${limit}`);
  }
  const statuses = options.status === undefined ? undefined : ([] as JobStatus[]).concat(options.status);
  const after = options.cursor === undefined ? undefined : decodeCursor(options.cursor);
  return {
    limit,
    args: {
      where: {
        ...(options.tenantId !== undefined ? { tenantId: options.tenantId } : {}),
        ...(statuses ? { status: { in: statuses } } : {}),
        // (createdAt, id) < (cursor.createdAt, cursor.id): rows after the cursor in
        // descending order, served by the (created_at, id) indexes.
        ...(after ? { OR: [{ createdAt: { lt: after.createdAt } }, { createdAt: after.createdAt, id: { lt: after.id } }] } : {}),
      },
      orderBy: [{ createdAt: 'desc' as const }, { id: 'desc' as const }],
      take: limit + 1,
    },
  };
}

function notFound(id: string): DbError {
  return new DbError('TAS_ERR_NOT_FOUND', `no job with id ${JSON.stringify(id)}`);
}

function isUniqueViolation(err: unknown): boolean {
  return err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002';
}

interface StoredRequest {
  name: string;
  spec: Prisma.InputJsonValue;
  workers: number;
  priority: number;
  maxRestarts: number;
  totalSteps: number | null;
}

/** Whether a retried create asks for the job that the key already names. */
function sameRequest(job: Job, request: StoredRequest): boolean {
  return (
    job.name === request.name &&
    job.workers === request.workers &&
    job.priority === request.priority &&
    job.maxRestarts === request.maxRestarts &&
    job.totalSteps === request.totalSteps &&
    // Through JSON as the database stores it (undefined members dropped); key order
    // does not matter to isDeepStrictEqual, nor to jsonb.
    isDeepStrictEqual(job.spec, JSON.parse(JSON.stringify(request.spec)))
  );
}
