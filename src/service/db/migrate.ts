/**
 * Applies pending migrations at start-up without Prisma's schema engine (it is a binary
 * downloaded at run time, which is not possible everywhere this runs). Same contract as
 * `prisma migrate deploy`, so either can migrate a database the other migrated:
 *
 * - history in `_prisma_migrations` (Prisma's table, created with Prisma's DDL) in the
 *   URL's schema, checksums as Prisma computes them (`migration-files.ts`);
 * - serialised by Prisma's own session advisory lock (72707369), so two service
 *   processes starting together, or this and `prisma migrate deploy`, never race: the
 *   second waits, then finds nothing pending;
 * - an applied migration whose file changed, or one recorded as failed, stops start-up
 *   with an error that names it (Prisma: P3006-like drift, P3009).
 *
 * Unlike Prisma, each migration runs in one transaction with its history row, so a
 * failure leaves neither half a schema nor a failed row behind: fix the SQL and restart.
 * (So a migration cannot use statements that refuse transactions, such as
 * CREATE INDEX CONCURRENTLY.) The lock is a session lock: migrate through a direct
 * connection, not a transaction-mode pooler (PgBouncer), which would lose it.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { DbError } from './errors.js';
import { checksumMatches, MIGRATIONS_DIR, readMigrations, type MigrationFile } from './migration-files.js';
import { quoteIdent, resolveDatabaseUrl } from './url.js';

/** Prisma Migrate's advisory lock key (prisma-engines, postgres flavour). */
export const PRISMA_MIGRATE_LOCK_KEY = 72707369;

export interface MigrateOptions {
  /** Directory in Prisma's layout. @defaultValue the repository's `prisma/migrations/` */
  readonly migrationsDir?: string;
  /** How long to wait for another migrator's lock. @defaultValue 60000 */
  readonly lockTimeoutMs?: number;
  /** Told about each migration applied. @defaultValue no output */
  readonly log?: (message: string) => void;
}

export interface MigrateResult {
  /** Migrations applied by this call, in order. */
  readonly applied: string[];
  /** Migrations that were already applied (checksums verified). */
  readonly alreadyApplied: string[];
  /**
   * Migrations recorded in the database but absent here: a newer release migrated this
   * database. Not an error (an older process may restart during a rolling deploy).
   */
  readonly unknownInDatabase: string[];
}

interface HistoryRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
  logs: string | null;
}

// Prisma's DDL for the history table (sql-schema-connector, postgres flavour).
const CREATE_HISTORY_TABLE = `CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

/** Applies every pending migration of `options.migrationsDir` to the database of `databaseUrl`. */
export async function migrate(databaseUrl: string, options: MigrateOptions = {}): Promise<MigrateResult> {
  const files = readMigrations(options.migrationsDir ?? MIGRATIONS_DIR);
  const target = resolveDatabaseUrl(databaseUrl);
  const client = new pg.Client({ connectionString: target.connectionString });
  // A dropped connection also rejects the query in flight, which is what reports it;
  // without a listener the 'error' event would kill the process.
  client.on('error', () => undefined);
  await client.connect();
  try {
    await acquireLock(client, options.lockTimeoutMs ?? 60_000);
    try {
      await ensureSchema(client, target.schema);
      await client.query(CREATE_HISTORY_TABLE);
      const history = await readHistory(client);
      const plan = planMigrations(files, history);
      for (const file of plan.pending) {
        await applyOne(client, file);
        options.log?.(`applied migration ${file.name}`);
      }
      return {
        applied: plan.pending.map((f) => f.name),
        alreadyApplied: plan.alreadyApplied,
        unknownInDatabase: plan.unknownInDatabase,
      };
    } finally {
      // If the connection broke, the server already released the session's lock.
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    await client.end();
  }
}

async function acquireLock(client: pg.Client, timeoutMs: number): Promise<void> {
  // lock_timeout bounds the wait for the advisory lock; reset at once so the migrations
  // themselves are not bounded by it.
  await client.query(`SET lock_timeout = ${Math.max(1, Math.floor(timeoutMs))}`);
  try {
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_LOCK_KEY]);
  } catch (err) {
    if (pgCode(err) === '55P03') {
      throw new DbError(
        'TAS_ERR_MIGRATION_LOCK_TIMEOUT',
        `another migrator held the migration lock (pg_advisory_lock(${PRISMA_MIGRATE_LOCK_KEY})) for more than ${timeoutMs} ms`,
        { cause: err },
      );
    }
    throw err;
  } finally {
    await client.query('RESET lock_timeout');
  }
}

/**
 * Creates the URL's schema when missing. Inside the lock, because CREATE SCHEMA IF NOT
 * EXISTS is not safe against a concurrent CREATE; looked up first, because CREATE SCHEMA
 * checks the CREATE privilege on the database even when the schema exists, and a
 * production role may own its schema without that privilege.
 */
async function ensureSchema(client: pg.Client, schema: string): Promise<void> {
  const found = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  if (found.rowCount === 0) await client.query(`CREATE SCHEMA ${quoteIdent(schema)}`);
}

async function readHistory(client: pg.Client): Promise<HistoryRow[]> {
  const res = await client.query<HistoryRow>(
    'SELECT migration_name, checksum, finished_at, rolled_back_at, logs FROM _prisma_migrations ORDER BY started_at, migration_name',
  );
  return res.rows;
}

interface Plan {
  pending: MigrationFile[];
  alreadyApplied: string[];
  unknownInDatabase: string[];
}

/** Checks the whole history before anything is applied, as Prisma does. */
function planMigrations(files: MigrationFile[], history: HistoryRow[]): Plan {
  // A row marked rolled back (`prisma migrate resolve --rolled-back`) no longer counts.
  const live = history.filter((row) => row.rolled_back_at === null);
  const failed = live.find((row) => row.finished_at === null);
  if (failed) {
    throw new DbError(
      'TAS_ERR_MIGRATION_FAILED',
      `migration ${failed.migration_name} is recorded as started but not finished in _prisma_migrations ` +
        `(a failed \`prisma migrate deploy\`?): repair the database, then mark it with ` +
        `\`prisma migrate resolve --rolled-back ${failed.migration_name}\` or --applied` +
        (failed.logs ? `; its log: ${failed.logs}` : ''),
    );
  }
  const appliedByName = new Map(live.map((row) => [row.migration_name, row]));
  const pending: MigrationFile[] = [];
  const alreadyApplied: string[] = [];
  for (const file of files) {
    const row = appliedByName.get(file.name);
    if (!row) {
      pending.push(file);
      continue;
    }
    if (!checksumMatches(file.sql, row.checksum)) {
      throw new DbError(
        'TAS_ERR_MIGRATION_CHECKSUM',
        `migration ${file.name} was modified after it was applied: its checksum is ${file.checksum}, ` +
          `the database recorded ${row.checksum}. Restore the file and put the change in a new migration.`,
      );
    }
    alreadyApplied.push(file.name);
  }
  const known = new Set(files.map((f) => f.name));
  const unknownInDatabase = [...appliedByName.keys()].filter((name) => !known.has(name));
  return { pending, alreadyApplied, unknownInDatabase };
}

async function applyOne(client: pg.Client, file: MigrationFile): Promise<void> {
  await client.query('BEGIN');
  try {
    // No bind parameters: the simple query protocol runs a multi-statement script.
    await client.query(file.sql);
    await client.query(
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, finished_at, applied_steps_count)
       VALUES ($1, $2, $3, now(), clock_timestamp(), 1)`,
      [randomUUID(), file.checksum, file.name],
    );
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    const detail = err instanceof Error ? err.message : String(err);
    throw new DbError('TAS_ERR_MIGRATION_FAILED', `migration ${file.name} failed and was rolled back: ${detail}`, {
      cause: err,
    });
  }
}

function pgCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}
