/**
 * DATABASE_URL handling shared by the migrator and the Prisma client. The URL follows
 * Prisma's convention: `postgresql://user@host:5432/db?schema=name` (default schema
 * `public`). `pg` does not know `schema`, so it is taken out of the URL and turned into
 * a session `search_path` (so raw SQL and the migrations see the same tables as the
 * Prisma client, which qualifies its own queries with the schema name).
 */

/** The default URL for development and tests: the local PostgreSQL, database `test`. */
export const DEFAULT_DATABASE_URL = 'postgresql://postgres@127.0.0.1:5432/test';

export interface PgTarget {
  /** A URL for `pg` without `schema`, with `options=-c search_path=<schema>`. */
  readonly connectionString: string;
  /** The schema the tables live in. */
  readonly schema: string;
}

// Unquoted identifiers only: the name is interpolated into SQL (CREATE SCHEMA,
// search_path), where no bind parameter is possible.
const SCHEMA_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

export function isValidSchemaName(name: string): boolean {
  return SCHEMA_NAME.test(name);
}

/** `"name"`: a schema name checked by `isValidSchemaName`, quoted for SQL. */
export function quoteIdent(name: string): string {
  if (!isValidSchemaName(name)) throw new Error(`invalid schema name ${JSON.stringify(name)}`);
  return `"${name}"`;
}

export function resolveDatabaseUrl(databaseUrl: string): PgTarget {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new Error('DATABASE_URL is not a URL (expected postgresql://user@host:port/db?schema=name)');
  }
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new Error(`DATABASE_URL must be postgresql://..., got ${url.protocol}//...`);
  }
  const schema = url.searchParams.get('schema') ?? 'public';
  if (!isValidSchemaName(schema)) {
    throw new Error(`DATABASE_URL schema=${JSON.stringify(schema)} is not a plain identifier`);
  }
  url.searchParams.delete('schema');
  // pg's connection-string parser lets the URL's parameters win over explicit config, so
  // the search_path travels in the URL's own `options`, after any options already there.
  const options = [url.searchParams.get('options'), `-c search_path=${schema}`].filter(Boolean).join(' ');
  url.searchParams.set('options', options);
  return { connectionString: url.toString(), schema };
}

/** `url` with `schema=name` set (replacing any schema it had). */
export function withSchema(databaseUrl: string, schema: string): string {
  const url = new URL(databaseUrl);
  url.searchParams.set('schema', schema);
  return url.toString();
}
