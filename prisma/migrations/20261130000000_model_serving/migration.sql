-- Inference serving: which models are loaded, and each model's dynamic-batching settings.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- AlterTable
ALTER TABLE "models" ADD COLUMN     "serving_loaded" BOOLEAN NOT NULL DEFAULT true,
ADD COLUMN     "max_batch_size" INTEGER NOT NULL DEFAULT 64,
ADD COLUMN     "max_queue_delay_us" INTEGER NOT NULL DEFAULT 0;
