-- Workers that join by themselves (`tas worker --join URL`): when they joined and their
-- latest heartbeat. Null for the service's own workers and the fixed list. A joined
-- worker whose heartbeats stop leaves the pool after TAS_WORKER_LEAVE_AFTER_MS.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- AlterTable
ALTER TABLE "workers" ADD COLUMN     "joined_at" TIMESTAMPTZ(3),
ADD COLUMN     "heartbeat_at" TIMESTAMPTZ(3);
