/**
 * For the tests of one `describe` block: a fresh schema with every migration applied and
 * a Prisma client on it, made before the block's tests and dropped after them.
 */
import { after, before } from 'node:test';
import { createPrismaClient, type PrismaClient } from '../client.js';
import { migrate } from '../migrate.js';
import { createFreshSchema, type FreshSchema } from './fresh-schema.js';

export interface MigratedDatabase {
  readonly schema: FreshSchema;
  readonly prisma: PrismaClient;
}

export function useMigratedDatabase(): MigratedDatabase {
  let schema: FreshSchema | undefined;
  let prisma: PrismaClient | undefined;
  before(async () => {
    schema = await createFreshSchema();
    await migrate(schema.url);
    prisma = createPrismaClient(schema.url);
  });
  after(async () => {
    await prisma?.$disconnect();
    await schema?.drop();
  });
  return {
    get schema() {
      if (!schema) throw new Error('the database is made before the tests run');
      return schema;
    },
    get prisma() {
      if (!prisma) throw new Error('the database is made before the tests run');
      return prisma;
    },
  };
}
