/**
 * The service's Prisma client: no query engine binary, queries go through the `pg`
 * driver adapter (`@prisma/adapter-pg`). The client itself is generated from
 * prisma/schema.prisma into ./generated/ (`npm run db:generate`, run by `prepare`).
 */
import { PrismaPg } from '@prisma/adapter-pg';
import { Prisma, PrismaClient } from './generated/client.js';
import { DEFAULT_DATABASE_URL, resolveDatabaseUrl } from './url.js';

export { Prisma, PrismaClient };

export interface DbClientOptions {
  /** Connections in the pool. @defaultValue 10 (pg's default) */
  readonly maxConnections?: number;
  /** Called with errors of idle pooled connections (server restart, network). @defaultValue ignored */
  readonly onPoolError?: (err: Error) => void;
}

/** `DATABASE_URL` from the environment, else the local development database. */
export function databaseUrlFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  return env.DATABASE_URL && env.DATABASE_URL.length > 0 ? env.DATABASE_URL : DEFAULT_DATABASE_URL;
}

/**
 * A PrismaClient for `databaseUrl` (`postgresql://...?schema=name`, Prisma's form). The
 * schema qualifies Prisma's queries and is the session search_path, so `$queryRaw`
 * sees the same tables. Call `$disconnect()` to close the pool.
 */
export function createPrismaClient(databaseUrl: string, options: DbClientOptions = {}): PrismaClient {
  const target = resolveDatabaseUrl(databaseUrl);
  const adapter = new PrismaPg(
    { connectionString: target.connectionString, max: options.maxConnections ?? 10 },
    { schema: target.schema, onPoolError: options.onPoolError ?? (() => undefined) },
  );
  return new PrismaClient({ adapter });
}
