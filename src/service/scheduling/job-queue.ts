/**
 * The job queue in Redis (BullMQ). A BullMQ job carries only the database id of a tas
 * job: PostgreSQL holds the job's truth (spec, state, attempts), Redis holds the order in
 * which jobs wait. The BullMQ job id is the tas job id, so adding a job twice (a retried
 * submission, or start-up reconciliation after Redis lost its data) is a no-op.
 *
 * Cancellation crosses processes on a Redis pub/sub channel: the API publishes the job
 * id, and the scheduler running it aborts every rank.
 *
 * Names: the queue and the channels share one prefix, by default derived from the
 * database's identity (`queueNames`), so services that share a Redis but not a database
 * never see each other's jobs, cancels, model notices, key revocations or rate counters.
 */
import { Queue, type ConnectionOptions } from 'bullmq';
import { Redis } from 'ioredis';

/** The Redis names of one service (one database): its queue and its pub/sub channels. */
export interface QueueNames {
  /** The BullMQ queue. */
  readonly queue: string;
  /** Job ids to cancel (API → scheduler). */
  readonly cancelChannel: string;
  /** Model-repository change notices (scheduler, API → every inference server). */
  readonly modelsChannel: string;
  /** Revoked API key ids (API → every API process). */
  readonly keysChannel: string;
  /** Key prefix of the per-key request counters (rate limits, shared by every API process). */
  readonly rateNamespace: string;
}

/** The prefix a database's identity gives (TAS_QUEUE_PREFIX replaces it). */
export function identityPrefix(identity: string): string {
  return `tas-${identity.replace(/-/g, '').slice(0, 16).toLowerCase()}`;
}

export function queueNames(prefix: string): QueueNames {
  return { queue: `${prefix}-jobs`, cancelChannel: `${prefix}:cancel`, modelsChannel: `${prefix}:models`, keysChannel: `${prefix}:keys`, rateNamespace: `${prefix}:rate:` };
}

/** The API's priorities: higher runs first. */
export const MIN_PRIORITY = -1000;
export const MAX_PRIORITY = 1000;

export interface QueuedJob {
  readonly jobId: string;
}

/**
 * BullMQ's priority for a tas priority: BullMQ runs lower numbers first (1 is the
 * highest; 0 would jump ahead of every prioritised job), so map [-1000, 1000] onto
 * [2001, 1].
 */
export function bullPriority(priority: number): number {
  if (!Number.isInteger(priority) || priority < MIN_PRIORITY || priority > MAX_PRIORITY) {
    throw new RangeError(`priority must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}, got ${priority}`);
  }
  return MAX_PRIORITY + 1 - priority;
}

/**
 * An ioredis connection as BullMQ's workers want it (no per-command retry limit; see
 * BullMQ's guide): while Redis is away, commands wait for it to come back. For the
 * scheduler's blocking connection and for subscribers.
 */
export function redisConnection(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, lazyConnect: false });
  // Connection errors are retried by ioredis and surface through RedisHealth and the
  // readiness checks; an unhandled 'error' event would crash the process.
  redis.on('error', () => undefined);
  return redis;
}

/**
 * A connection for requests that must not wait for Redis (BullMQ's advice for a Queue
 * that producers use): while Redis is away a command fails at once instead of queueing,
 * so a submission, a readiness check or /metrics answers instead of hanging. It still
 * reconnects in the background.
 */
export function redisCommandConnection(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, enableReadyCheck: true, lazyConnect: false, commandTimeout: 5000 });
  redis.on('error', () => undefined);
  return redis;
}

export class JobQueue {
  readonly queue: Queue<QueuedJob>;

  constructor(connection: ConnectionOptions, name: string) {
    this.queue = new Queue<QueuedJob>(name, { connection });
    // Connection errors, once per reconnection attempt while Redis is away: RedisHealth
    // reports the outage once. (Without a listener BullMQ prints each with its stack.)
    this.queue.on('error', () => undefined);
  }

  /** Queue `jobId` (idempotent). */
  async enqueue(jobId: string, priority: number): Promise<void> {
    await this.queue.add('train', { jobId }, { jobId, priority: bullPriority(priority), removeOnComplete: true, removeOnFail: true, attempts: 1 });
  }

  /** Take a job that has not started out of the queue; true when it was waiting. */
  async removeWaiting(jobId: string): Promise<boolean> {
    const job = await this.queue.getJob(jobId);
    if (!job) return false;
    const state = await job.getState();
    if (state !== 'waiting' && state !== 'prioritized' && state !== 'delayed') return false;
    await this.queue.remove(jobId).catch(() => 0);
    return true;
  }

  /** Jobs waiting or running in Redis (for /metrics and readiness). */
  async depth(): Promise<{ waiting: number; active: number }> {
    const c = await this.queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed');
    return { waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 };
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
