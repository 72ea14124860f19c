-- The memory a job may use on each worker (its Info), for admission: a job whose
-- estimated memory does not fit is refused at submission and never placed there.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- AlterTable
ALTER TABLE "workers" ADD COLUMN     "memory_limit_bytes" BIGINT;
