-- Which scheduler runs an attempt, and until when its lease holds (renewed while it
-- runs): a scheduler that finds the job running takes it over only once the lease has
-- lapsed, so an attempt is never run twice, even after Redis lost its queue and locks.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- AlterTable
ALTER TABLE "job_attempts" ADD COLUMN     "scheduler_id" TEXT,
ADD COLUMN     "lease_until" TIMESTAMPTZ(3);
