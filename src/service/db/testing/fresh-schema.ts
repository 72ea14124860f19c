/**
 * Test support: a fresh PostgreSQL schema per test file on the real database
 * (DATABASE_URL, default the local `test` database), dropped afterwards, so test files
 * are isolated from each other and from earlier runs.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { databaseUrlFromEnv } from '../client.js';
import { quoteIdent, withSchema } from '../url.js';

export interface FreshSchema {
  /** The schema's name, `tas_test_<random>`. */
  readonly schema: string;
  /** DATABASE_URL with `schema=<schema>` (and application_name = the schema's name). */
  readonly url: string;
  /** Drops the schema and everything in it. */
  drop(): Promise<void>;
}

/**
 * Why the database cannot be used, or null when it can. The tests talk to a real
 * PostgreSQL, so an unreachable one fails them; TAS_ALLOW_NO_DB=1 turns that into a
 * skip with this reason (a machine without a database, on purpose).
 */
export async function databaseUnavailable(): Promise<string | null> {
  const url = databaseUrlFromEnv();
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  client.on('error', () => undefined);
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (err) {
    const reason = `PostgreSQL at ${redact(url)} is not reachable (${err instanceof Error ? err.message : String(err)}); set DATABASE_URL`;
    if (process.env.TAS_ALLOW_NO_DB !== '1') throw new Error(reason);
    return reason;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Creates an empty schema; its URL tags connections with application_name = the schema. */
export async function createFreshSchema(): Promise<FreshSchema> {
  const base = databaseUrlFromEnv();
  const schema = `tas_test_${randomBytes(6).toString('hex')}`;
  await adminQuery(base, `CREATE SCHEMA ${quoteIdent(schema)}`);
  const url = new URL(withSchema(base, schema));
  url.searchParams.set('application_name', schema);
  return {
    schema,
    url: url.toString(),
    drop: () => adminQuery(base, `DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`),
  };
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}
