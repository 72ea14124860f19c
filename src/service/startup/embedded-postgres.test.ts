// The embedded database (PGlite over pglite-socket) against the code that will use it:
// the migrator, the Prisma client and the job repository, through the URL it returns.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createPrismaClient, type PrismaClient } from '../db/client.js';
import { isDbError } from '../db/errors.js';
import { JobRepository } from '../db/jobs.js';
import { migrate } from '../db/migrate.js';
import { readMigrations } from '../db/migration-files.js';
import { EMBEDDED_POOL_SIZE, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';
import { isServiceStartError } from './start-errors.js';

const SPEC = { model: { layers: [{ type: 'linear', in: 4, out: 2 }] }, optimizer: { name: 'sgd', lr: 0.1 } };
const MIGRATIONS = readMigrations().map((m) => m.name);
const CHILD = fileURLToPath(new URL('./testing/embedded-postgres-child.ts', import.meta.url));

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'tas-pglite-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/**
 * A raw wire-protocol session (no driver): start-up, then simple queries. Lets a test
 * drop the TCP connection at a chosen point, which `pg` does not expose.
 */
class RawSession {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  static async open(port: number): Promise<RawSession> {
    const socket = connect(port, '127.0.0.1');
    await once(socket, 'connect');
    const session = new RawSession(socket);
    const params = Buffer.from('user\0postgres\0database\0postgres\0\0', 'latin1');
    const startup = Buffer.alloc(8);
    startup.writeInt32BE(8 + params.length, 0);
    startup.writeInt32BE(196608, 4);
    socket.write(Buffer.concat([startup, params]));
    await session.readyForQuery();
    return session;
  }

  /** Runs `sql` as a simple query; resolves with the transaction status of ReadyForQuery. */
  async query(sql: string): Promise<string> {
    const body = Buffer.from(`${sql}\0`, 'utf8');
    const head = Buffer.alloc(5);
    head.write('Q', 0, 'latin1');
    head.writeInt32BE(4 + body.length, 1);
    this.socket.write(Buffer.concat([head, body]));
    return this.readyForQuery();
  }

  /** Waits for ReadyForQuery ('Z'), consuming every message before it. */
  private async readyForQuery(): Promise<string> {
    for (;;) {
      while (this.buffered.length >= 5) {
        const type = String.fromCharCode(this.buffered[0]!);
        const length = this.buffered.readInt32BE(1);
        if (this.buffered.length < 1 + length) break;
        const body = this.buffered.subarray(5, 1 + length);
        this.buffered = this.buffered.subarray(1 + length);
        if (type === 'Z') return String.fromCharCode(body[0]!);
      }
      await new Promise<void>((resolve) => (this.waiter = resolve));
      this.waiter = null;
    }
  }
}

describe('startEmbeddedPostgres', () => {
  let pgServer: EmbeddedPostgres;
  let prisma: PrismaClient;
  let repo: JobRepository;
  let dataDir: string;
  let coldStartMs = 0;

  before(async () => {
    dataDir = tempDir();
    const started = performance.now();
    pgServer = await startEmbeddedPostgres({ dataDir });
    coldStartMs = performance.now() - started;
    const migrated = await migrate(pgServer.url);
    assert.deepEqual(migrated.applied, MIGRATIONS);
    prisma = createPrismaClient(pgServer.url, { maxConnections: pgServer.maxConnections });
    repo = new JobRepository(prisma);
  });
  after(async () => {
    await prisma?.$disconnect();
    await pgServer?.stop();
  });

  test('serves a postgresql:// URL on loopback with a pool size of one', async (t) => {
    t.diagnostic(`cold start (initdb + listen): ${coldStartMs.toFixed(0)} ms`);
    assert.match(pgServer.url, /^postgresql:\/\/postgres@127\.0\.0\.1:\d+\/postgres$/);
    assert.equal(pgServer.url, `postgresql://postgres@127.0.0.1:${pgServer.port}/postgres`);
    assert.equal(pgServer.maxConnections, EMBEDDED_POOL_SIZE);
    assert.equal(pgServer.maxConnections, 1);
    assert.equal(pgServer.dataPath, join(dataDir, 'pglite'));
    const [row] = await prisma.$queryRaw<Array<{ version: string }>>`SELECT version() AS version`;
    assert.match(row?.version ?? '', /PGlite/);
  });

  test('migrate again finds everything applied (advisory lock, history, checksums)', async () => {
    const again = await migrate(pgServer.url);
    assert.deepEqual(again.applied, []);
    assert.deepEqual(again.alreadyApplied, MIGRATIONS);
  });

  test('create with gen_random_uuid ids, idempotent retry, get and history', async () => {
    const input = { name: 'mlp', spec: SPEC, workers: 2, idempotencyKey: 'embedded-1' };
    const first = await repo.createJob(input);
    assert.equal(first.created, true);
    assert.match(first.job.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(first.job.status, 'queued');
    assert.deepEqual(first.job.spec, SPEC);
    const again = await repo.createJob(input);
    assert.equal(again.created, false);
    assert.deepEqual(again.job, first.job);
    await assert.rejects(repo.createJob({ ...input, workers: 3 }), (err) => isDbError(err, 'TAS_ERR_IDEMPOTENCY_CONFLICT'));
    assert.deepEqual(await repo.getJob(first.job.id), first.job);
    const history = await repo.history(first.job.id);
    assert.deepEqual(
      history.map((t) => [t.from, t.to, t.reason]),
      [[null, 'queued', 'created']],
    );
  });

  test('racing creates with one idempotency key make one job', async () => {
    const input = { name: 'race', spec: SPEC, workers: 1, idempotencyKey: 'embedded-race' };
    const results = await Promise.all(Array.from({ length: 8 }, () => repo.createJob(input)));
    assert.equal(new Set(results.map((r) => r.job.id)).size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal(await prisma.job.count({ where: { idempotencyKey: 'embedded-race' } }), 1);
  });

  test('racing transitions from one state: exactly one wins (SELECT ... FOR UPDATE)', async () => {
    const { job } = await repo.createJob({ name: 'transitions', spec: SPEC, workers: 1 });
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => repo.transition(job.id, 'scheduled', 'race')));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) {
      if (r.status === 'rejected') assert.ok(isDbError(r.reason, 'TAS_ERR_INVALID_TRANSITION'), String(r.reason));
    }
    const running = await repo.transition(job.id, 'running');
    assert.equal(running.attempts, 1);
    assert.ok(running.startedAt instanceof Date);
    assert.deepEqual(
      (await repo.history(job.id)).map((t) => [t.from, t.to]),
      [
        [null, 'queued'],
        ['queued', 'scheduled'],
        ['scheduled', 'running'],
      ],
    );
  });

  test('200 job inserts, then listJobs newest first, by status, in keyset pages', async (t) => {
    const before = await prisma.job.count();
    const started = performance.now();
    for (let i = 0; i < 200; i++) await repo.createJob({ name: `bulk-${i}`, spec: SPEC, workers: 1 });
    const insertMs = performance.now() - started;
    t.diagnostic(`200 createJob calls (a job and a transition row each): ${insertMs.toFixed(0)} ms`);
    assert.equal(await prisma.job.count(), before + 200);

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await repo.listJobs({ status: 'queued', limit: 64, ...(cursor ? { cursor } : {}) });
      seen.push(...page.jobs.map((j) => j.id));
      for (const j of page.jobs) assert.equal(j.status, 'queued');
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    const queued = await prisma.job.findMany({
      where: { status: 'queued' },
      orderBy: [{ createdAt: 'desc' }, { id: 'desc' }],
      select: { id: true },
    });
    assert.deepEqual(seen, queued.map((j) => j.id));
    assert.ok(seen.length >= 200);
  });

  test('concurrent connections with large parameters do not interleave their statements', { timeout: 60_000 }, async () => {
    // Over ~64 KiB a client's Parse and Bind arrive in different TCP reads; without the
    // turn tracking of pglite-turns.ts another connection's Parse runs in between.
    const clients = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const client = new pg.Client({ connectionString: pgServer.url });
        client.on('error', () => undefined);
        await client.connect();
        return client;
      }),
    );
    try {
      const big = 'x'.repeat(1_000_000);
      const wrong: string[] = [];
      await Promise.all(
        clients.map(async (client, i) => {
          for (let k = 0; k < 8; k++) {
            try {
              const res =
                i % 2 === 0
                  ? await client.query<Record<string, unknown>>(`SELECT length($1::text) AS n, '${i}' AS c${i}`, [big])
                  : await client.query<Record<string, unknown>>(`SELECT $1::int AS n, '${i}' AS c${i}`, [k]);
              const row = res.rows[0];
              if (row?.[`c${i}`] !== String(i) || row.n !== (i % 2 === 0 ? big.length : k)) {
                wrong.push(`client ${i}: ${JSON.stringify(Object.keys(row ?? {}))}`);
              }
            } catch (err) {
              wrong.push(`client ${i}: ${(err instanceof Error ? err.message : String(err)).slice(0, 80)}`);
            }
          }
        }),
      );
      assert.deepEqual(wrong, []);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  });

  test('a connection lost inside a transaction is rolled back and stops blocking the others', { timeout: 30_000 }, async () => {
    const session = await RawSession.open(pgServer.port);
    assert.equal(await session.query('BEGIN; CREATE TABLE lost_in_tx (x int)'), 'T');
    // While it is open, another connection's query waits (one backend) ...
    let answered = false;
    const other = prisma.$queryRaw<Array<{ r: string | null }>>`SELECT to_regclass('lost_in_tx')::text AS r`.then((rows) => {
      answered = true;
      return rows;
    });
    assert.equal(await session.query('SELECT 1'), 'T');
    assert.equal(answered, false);
    // ... until the connection goes away; its transaction does not commit.
    session.socket.destroy();
    const [row] = await other;
    assert.equal(row?.r, null);
  });

  test('awaiting the outer client inside an interactive transaction waits for its timeout (pool of one)', async () => {
    // The pattern that deadlocks on a single connection: the outer query needs the
    // connection the transaction holds; Prisma's timeout ends it (P2028).
    const started = performance.now();
    await assert.rejects(
      prisma.$transaction(
        async (tx) => {
          await tx.job.count();
          await prisma.job.count();
          return tx.job.count();
        },
        { timeout: 500 },
      ),
      (err: unknown) => typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'P2028',
    );
    assert.ok(performance.now() - started >= 450);
    assert.ok((await prisma.job.count()) > 0, 'the client works afterwards');
  });

  test('a second opener of the same directory is refused while it is open', async () => {
    await assert.rejects(startEmbeddedPostgres({ dataDir }), (err) => {
      assert.ok(isServiceStartError(err, 'TAS_ERR_DATA_DIR_LOCKED'), String(err));
      assert.match(err.message, new RegExp(`in use by process ${process.pid}|already open in this process`));
      return true;
    });
  });
});

describe('embedded database persistence', () => {
  test('jobs survive a stop and a start on the same directory', async (t) => {
    const dataDir = tempDir();
    const first = await startEmbeddedPostgres({ dataDir });
    let id: string;
    try {
      await migrate(first.url);
      const prisma = createPrismaClient(first.url, { maxConnections: first.maxConnections });
      id = (await new JobRepository(prisma).createJob({ name: 'persisted', spec: SPEC, workers: 3 })).job.id;
      await prisma.$disconnect();
    } finally {
      await first.stop();
    }
    const started = performance.now();
    const second = await startEmbeddedPostgres({ dataDir });
    t.diagnostic(`warm start (existing directory): ${(performance.now() - started).toFixed(0)} ms`);
    try {
      assert.deepEqual((await migrate(second.url)).applied, []);
      const prisma = createPrismaClient(second.url, { maxConnections: second.maxConnections });
      const job = await new JobRepository(prisma).getJob(id);
      assert.equal(job.name, 'persisted');
      assert.equal(job.workers, 3);
      assert.deepEqual(job.spec, SPEC);
      await prisma.$disconnect();
    } finally {
      await second.stop();
    }
  });

  test('a job committed before kill -9 survives; the dead process no longer holds the directory', { timeout: 120_000 }, async () => {
    const dataDir = tempDir();
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = once(child, 'exit');
    try {
      const lines = createInterface({ input: child.stdout });
      const [line] = (await Promise.race([
        once(lines, 'line'),
        exited.then(([code]) => {
          throw new Error(`the child exited (${String(code)}) before creating its job`);
        }),
      ])) as [string];
      const { id } = JSON.parse(line) as { id: string };

      await assert.rejects(startEmbeddedPostgres({ dataDir }), (err) => {
        assert.ok(isServiceStartError(err, 'TAS_ERR_DATA_DIR_LOCKED'));
        assert.match(err.message, new RegExp(`in use by process ${child.pid}`));
        return true;
      });

      child.kill('SIGKILL');
      await exited;
      const reopened = await startEmbeddedPostgres({ dataDir });
      try {
        const prisma = createPrismaClient(reopened.url, { maxConnections: reopened.maxConnections });
        const job = await new JobRepository(prisma).getJob(id);
        assert.equal(job.name, 'before-crash');
        await prisma.$disconnect();
      } finally {
        await reopened.stop();
      }
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});
