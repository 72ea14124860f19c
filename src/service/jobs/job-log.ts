/**
 * A job's log: the lines `GET /v1/jobs/:id/logs` returns (placement, attempts, failures,
 * progress milestones, publication). Stored in PostgreSQL with the job, so any API
 * process can serve them and they outlive the scheduler that wrote them.
 */
import type { PrismaClient } from '../db/client.js';
import type { LogLevel } from '../db/generated/enums.js';

export type { LogLevel };

export interface JobLogLine {
  readonly id: string;
  readonly at: string;
  readonly level: LogLevel;
  readonly message: string;
}

export async function appendJobLog(prisma: PrismaClient, jobId: string, level: LogLevel, message: string): Promise<void> {
  await prisma.jobLog.create({ data: { jobId, level, message } });
}

/** Lines after `afterId` (exclusive), oldest first; `id` is the cursor for the next call. */
export async function readJobLog(prisma: PrismaClient, jobId: string, afterId: bigint | null, limit: number): Promise<JobLogLine[]> {
  const rows = await prisma.jobLog.findMany({
    where: { jobId, ...(afterId !== null ? { id: { gt: afterId } } : {}) },
    orderBy: { id: 'asc' },
    take: limit,
  });
  return rows.map((r) => ({ id: r.id.toString(), at: r.at.toISOString(), level: r.level, message: r.message }));
}
