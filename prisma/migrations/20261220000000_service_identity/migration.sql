-- The database's identity: one row, made when the schema is created. Services that share
-- a database derive their Redis queue and channel names from it, so services on one
-- Redis with different databases never take each other's jobs.
-- Written by hand to match prisma/schema.prisma (see the first migration's header).

-- CreateTable
CREATE TABLE "service_identity" (
    "id" UUID NOT NULL DEFAULT gen_random_uuid(),
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "service_identity_pkey" PRIMARY KEY ("id")
);

INSERT INTO "service_identity" DEFAULT VALUES;
