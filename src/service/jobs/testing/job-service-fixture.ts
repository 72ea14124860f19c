/**
 * Test support: a JobService on a fresh migrated PostgreSQL schema and the real Redis
 * (a queue of its own), for tests of the routes built on it; `close()` undoes it all.
 */
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { createPrismaClient, type PrismaClient } from '../../db/client.js';
import { migrate } from '../../db/migrate.js';
import { createFreshSchema, type FreshSchema } from '../../db/testing/fresh-schema.js';
import { JobQueue, queueNames, redisConnection } from '../../scheduling/job-queue.js';
import { JobService } from '../job-service.js';
import { ChangeFeed } from '../../db/change-feed.js';

export interface JobServiceFixture {
  readonly schema: FreshSchema;
  readonly prisma: PrismaClient;
  readonly jobs: JobService;
  /** The schema's change feed, listening, when asked for (`{ changes: true }`). */
  readonly changes: ChangeFeed | null;
  close(): Promise<void>;
}

export async function jobServiceFixture(options: { changes?: boolean } = {}): Promise<JobServiceFixture> {
  const schema = await createFreshSchema();
  await migrate(schema.url);
  const changes = options.changes ? new ChangeFeed(schema.url) : null;
  await changes?.start();
  const prisma = createPrismaClient(schema.url);
  const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redis: Redis = redisConnection(url);
  const queueConnection: Redis = redisConnection(url);
  const names = queueNames(`tas-test-${randomBytes(4).toString('hex')}`);
  const queue = new JobQueue(queueConnection, names.queue);
  const jobs = new JobService({ prisma, queue, redis, cancelChannel: names.cancelChannel, dataDir: '/nonexistent', probeIntervalMs: 1000, ...(changes ? { changes } : {}) });
  return {
    schema,
    prisma,
    jobs,
    changes,
    async close() {
      await changes?.close();
      await queue.close();
      // BullMQ leaves a connection it was given open.
      queueConnection.disconnect();
      redis.disconnect();
      await prisma.$disconnect();
      await schema.drop();
    },
  };
}
