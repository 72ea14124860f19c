// The start-up migrator against the real PostgreSQL: each test migrates its own fresh
// schema (see testing/fresh-schema.ts), dropped at the end.
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { isDbError } from './errors.js';
import { PRISMA_MIGRATE_LOCK_KEY, migrate } from './migrate.js';
import { MIGRATIONS_DIR, readMigrations, renderChecksum } from './migration-files.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from './testing/fresh-schema.js';
import { resolveDatabaseUrl } from './url.js';

const unavailable = await databaseUnavailable();

const schemas: FreshSchema[] = [];
const dirs: string[] = [];
async function freshSchema(): Promise<FreshSchema> {
  const s = await createFreshSchema();
  schemas.push(s);
  return s;
}
/** A copy of the repository's migrations that a test may change. */
function migrationsCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tas-migrations-'));
  cpSync(MIGRATIONS_DIR, dir, { recursive: true });
  dirs.push(dir);
  return dir;
}
async function query<R extends pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: resolveDatabaseUrl(url).connectionString });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

interface HistoryRow {
  id: string;
  checksum: string;
  migration_name: string;
  finished_at: Date | null;
  started_at: Date;
  rolled_back_at: Date | null;
  applied_steps_count: number;
  logs: string | null;
}
const history = (url: string) =>
  query<HistoryRow>(url, 'SELECT * FROM _prisma_migrations ORDER BY started_at, migration_name');

describe('migrate', { skip: unavailable ?? false }, () => {
  after(async () => {
    for (const s of schemas) await s.drop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  test('applies every migration once, records it as Prisma does, and is idempotent', async () => {
    const s = await freshSchema();
    const names = readMigrations().map((m) => m.name);
    const first = await migrate(s.url);
    assert.deepEqual(first, { applied: names, alreadyApplied: [], unknownInDatabase: [] });
    const second = await migrate(s.url);
    assert.deepEqual(second, { applied: [], alreadyApplied: names, unknownInDatabase: [] });

    const rows = await history(s.url);
    assert.deepEqual(
      rows.map((r) => r.migration_name),
      names,
    );
    const init = rows[0]!;
    const sql = readFileSync(join(MIGRATIONS_DIR, init.migration_name, 'migration.sql'), 'utf8');
    assert.equal(init.checksum, renderChecksum(sql));
    assert.match(init.id, /^[0-9a-f-]{36}$/);
    assert.equal(init.applied_steps_count, 1);
    assert.equal(init.logs, null);
    assert.equal(init.rolled_back_at, null);
    assert.ok(init.finished_at instanceof Date && init.finished_at >= init.started_at);

    // The tables exist in this schema and only there.
    const tables = await query<{ table_name: string }>(
      s.url,
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name`,
      [s.schema],
    );
    assert.deepEqual(
      tables.map((t) => t.table_name),
      ['_prisma_migrations', 'api_keys', 'datasets', 'job_attempts', 'job_logs', 'job_metrics', 'job_transitions', 'jobs', 'model_versions', 'models', 'tenants', 'workers'],
    );
    // Prisma's history table, column for column.
    const columns = await query<{ column_name: string; data_type: string; is_nullable: string }>(
      s.url,
      `SELECT column_name, data_type, is_nullable FROM information_schema.columns
       WHERE table_schema = $1 AND table_name = '_prisma_migrations' ORDER BY ordinal_position`,
      [s.schema],
    );
    assert.deepEqual(
      columns.map((c) => `${c.column_name} ${c.data_type} ${c.is_nullable}`),
      [
        'id character varying NO',
        'checksum character varying NO',
        'finished_at timestamp with time zone YES',
        'migration_name character varying NO',
        'logs text YES',
        'rolled_back_at timestamp with time zone YES',
        'started_at timestamp with time zone NO',
        'applied_steps_count integer NO',
      ],
    );
  });

  test('creates the schema of the URL when it does not exist', async () => {
    const s = await freshSchema();
    await query(s.url, `DROP SCHEMA ${s.schema}`);
    const result = await migrate(s.url);
    assert.equal(result.applied.length, readMigrations().length);
    assert.equal((await history(s.url)).length, result.applied.length);
  });

  test('two migrators started together: one applies, the other waits and finds nothing to do', async () => {
    const s = await freshSchema();
    const names = readMigrations().map((m) => m.name);
    const [a, b] = await Promise.all([migrate(s.url), migrate(s.url)]);
    assert.deepEqual([a.applied, b.applied].sort((x, y) => y.length - x.length), [names, []]);
    assert.deepEqual([a.alreadyApplied, b.alreadyApplied].sort((x, y) => x.length - y.length), [[], names]);
    assert.equal((await history(s.url)).length, names.length);
  });

  test('an applied migration whose file changed is refused, naming it', async () => {
    const s = await freshSchema();
    const dir = migrationsCopy();
    await migrate(s.url, { migrationsDir: dir });
    const [init] = readMigrations(dir);
    writeFileSync(join(dir, init!.name, 'migration.sql'), `${init!.sql}\n-- edited afterwards\n`);
    await assert.rejects(migrate(s.url, { migrationsDir: dir }), (err: unknown) => {
      assert.ok(isDbError(err, 'TAS_ERR_MIGRATION_CHECKSUM'));
      assert.match(err.message, new RegExp(`migration ${init!.name} was modified after it was applied`));
      return true;
    });
  });

  test('a checkout with CRLF line endings matches the recorded checksum (as in Prisma)', async () => {
    const s = await freshSchema();
    const dir = migrationsCopy();
    await migrate(s.url, { migrationsDir: dir });
    for (const m of readMigrations(dir)) {
      writeFileSync(join(dir, m.name, 'migration.sql'), m.sql.replace(/\n/g, '\r\n'));
    }
    const again = await migrate(s.url, { migrationsDir: dir });
    assert.deepEqual(again.applied, []);
  });

  test('a new migration is applied after the others; a failing one is rolled back and not recorded', async () => {
    const s = await freshSchema();
    const dir = migrationsCopy();
    await migrate(s.url, { migrationsDir: dir });

    mkdirSync(join(dir, '29990101000000_add_note'));
    writeFileSync(join(dir, '29990101000000_add_note', 'migration.sql'), 'ALTER TABLE "jobs" ADD COLUMN "note" TEXT;\n');
    assert.deepEqual((await migrate(s.url, { migrationsDir: dir })).applied, ['29990101000000_add_note']);

    mkdirSync(join(dir, '29990102000000_broken'));
    writeFileSync(
      join(dir, '29990102000000_broken', 'migration.sql'),
      'CREATE TABLE "half_done" (x INT);\nALTER TABLE "no_such_table" ADD COLUMN y INT;\n',
    );
    await assert.rejects(migrate(s.url, { migrationsDir: dir }), (err: unknown) => {
      assert.ok(isDbError(err, 'TAS_ERR_MIGRATION_FAILED'));
      assert.match(err.message, /migration 29990102000000_broken failed and was rolled back: .*no_such_table/);
      return true;
    });
    const halfDone = await query(s.url, `SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'half_done'`, [s.schema]);
    assert.equal(halfDone.length, 0, 'the first statement of the failed migration was rolled back');
    assert.deepEqual(
      (await history(s.url)).map((r) => r.migration_name).slice(-1),
      ['29990101000000_add_note'],
    );

    // Fixed, it applies on the next start.
    writeFileSync(join(dir, '29990102000000_broken', 'migration.sql'), 'CREATE TABLE "half_done" (x INT);\n');
    assert.deepEqual((await migrate(s.url, { migrationsDir: dir })).applied, ['29990102000000_broken']);
  });

  test('a migration recorded as failed by Prisma stops start-up; rolled back rows do not count', async () => {
    const s = await freshSchema();
    const dir = migrationsCopy();
    await migrate(s.url, { migrationsDir: dir });
    await query(
      s.url,
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, logs, started_at, applied_steps_count)
       VALUES ('00000000-0000-0000-0000-000000000001', $1, '29990101000000_x', 'syntax error', now(), 0)`,
      [renderChecksum('x')],
    );
    await assert.rejects(migrate(s.url, { migrationsDir: dir }), (err: unknown) => {
      assert.ok(isDbError(err, 'TAS_ERR_MIGRATION_FAILED'));
      assert.match(err.message, /29990101000000_x is recorded as started but not finished.*syntax error/);
      return true;
    });
    // `prisma migrate resolve --rolled-back 29990101000000_x`
    await query(s.url, `UPDATE _prisma_migrations SET rolled_back_at = now() WHERE migration_name = '29990101000000_x'`);
    assert.deepEqual(await migrate(s.url, { migrationsDir: dir }), {
      applied: [],
      alreadyApplied: readMigrations(dir).map((m) => m.name),
      unknownInDatabase: [],
    });
  });

  test('migrations the database has but this release lacks are reported, not fatal', async () => {
    const s = await freshSchema();
    const dir = migrationsCopy();
    mkdirSync(join(dir, '29990101000000_newer'));
    writeFileSync(join(dir, '29990101000000_newer', 'migration.sql'), 'SELECT 1;\n');
    await migrate(s.url, { migrationsDir: dir });
    rmSync(join(dir, '29990101000000_newer'), { recursive: true });
    const result = await migrate(s.url, { migrationsDir: dir });
    assert.deepEqual(result.unknownInDatabase, ['29990101000000_newer']);
    assert.deepEqual(result.applied, []);
  });

  test("waiting for another migrator's lock is bounded", async () => {
    const s = await freshSchema();
    const holder = new pg.Client({ connectionString: resolveDatabaseUrl(s.url).connectionString });
    await holder.connect();
    try {
      await holder.query('SELECT pg_advisory_lock($1)', [PRISMA_MIGRATE_LOCK_KEY]);
      await assert.rejects(migrate(s.url, { lockTimeoutMs: 200 }), (err: unknown) => {
        assert.ok(isDbError(err, 'TAS_ERR_MIGRATION_LOCK_TIMEOUT'));
        assert.match(err.message, /pg_advisory_lock\(72707369\)/);
        return true;
      });
      await holder.query('SELECT pg_advisory_unlock($1)', [PRISMA_MIGRATE_LOCK_KEY]);
      // Default timeout here: a migrator of another test file may hold the lock briefly.
      assert.ok((await migrate(s.url)).applied.length > 0);
    } finally {
      await holder.end();
    }
  });
});
