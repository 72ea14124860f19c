-- The learning rate of each recorded step, for the dashboard's curves.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- AlterTable
ALTER TABLE "job_metrics" ADD COLUMN     "lr" DOUBLE PRECISION;
