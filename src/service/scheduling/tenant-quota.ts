/**
 * A tenant's hold on the pool: how many workers its jobs hold now, and whether one more
 * job of `n` workers fits under its `max_workers`. The scheduler checks it when it
 * reserves a gang (in the reservation's transaction, so two jobs of one tenant cannot
 * both fit in room for one); the status view says why a job waits.
 */
import type { Prisma, PrismaClient } from '../db/client.js';

type Db = PrismaClient | Prisma.TransactionClient;

/** Workers held by the tenant's jobs, other than `exceptJobId`'s. */
export async function tenantWorkersHeld(db: Db, tenantId: string, exceptJobId?: string): Promise<number> {
  return db.worker.count({ where: { currentJob: { tenantId, ...(exceptJobId ? { id: { not: exceptJobId } } : {}) } } });
}

/** Why a job of `n` workers waits for its tenant's quota; null when it fits. */
export function quotaWait(tenantName: string, held: number, maxWorkers: number | null, n: number): string | null {
  if (maxWorkers === null || held + n <= maxWorkers) return null;
  return `tenant ${tenantName} holds ${held} of its ${maxWorkers} workers (max_workers); waiting until ${held + n - maxWorkers} more of them are free`;
}
