/**
 * The database's identity: a UUID made by the migration that created the schema
 * (`service_identity`). Every process connected to the same database reads the same one,
 * whatever URL it reached the database by; two databases (two embedded data directories,
 * two schemas) never share one.
 */
import type { PrismaClient } from './client.js';

export async function databaseIdentity(prisma: PrismaClient): Promise<string> {
  const first = () => prisma.serviceIdentity.findFirst({ orderBy: [{ createdAt: 'asc' }, { id: 'asc' }], select: { id: true } });
  const row = await first();
  if (row) return row.id;
  // The row was deleted by hand: make a new one (the oldest row is the identity from now on).
  await prisma.serviceIdentity.create({ data: {} });
  return (await first())!.id;
}
