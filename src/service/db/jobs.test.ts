// The jobs repository against the real PostgreSQL, in a fresh migrated schema per suite.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { createPrismaClient, type PrismaClient } from './client.js';
import { isDbError } from './errors.js';
import { JOB_STATUSES, canTransition } from './job-states.js';
import { JobRepository, type Job, type JobStatus } from './jobs.js';
import { migrate } from './migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from './testing/fresh-schema.js';
import { resolveDatabaseUrl } from './url.js';

const unavailable = await databaseUnavailable();

const SPEC = { model: { layers: [{ type: 'linear', in: 4, out: 2 }] }, optimizer: { name: 'sgd', lr: 0.1 } };

/** A migrated schema, a client and a repository for one suite; dropped after it. */
function suiteDatabase() {
  const ctx = {} as { schema: FreshSchema; prisma: PrismaClient; repo: JobRepository };
  before(async () => {
    ctx.schema = await createFreshSchema();
    await migrate(ctx.schema.url);
    ctx.prisma = createPrismaClient(ctx.schema.url);
    ctx.repo = new JobRepository(ctx.prisma);
  });
  after(async () => {
    await ctx.prisma?.$disconnect();
    await ctx.schema?.drop();
  });
  return ctx;
}

async function pgClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: resolveDatabaseUrl(url).connectionString });
  await client.connect();
  return client;
}

describe('createJob / getJob', { skip: unavailable ?? false }, () => {
  const db = suiteDatabase();

  test('a new job is queued, with defaults and its creation recorded', async () => {
    const { job, created } = await db.repo.createJob({ name: 'mlp', spec: SPEC, workers: 2 });
    assert.equal(created, true);
    assert.equal(job.status, 'queued');
    assert.deepEqual(job.spec, SPEC);
    assert.equal(job.workers, 2);
    assert.equal(job.priority, 0);
    assert.equal(job.maxRestarts, 5);
    assert.equal(job.attempts, 0);
    assert.equal(job.idempotencyKey, null);
    assert.deepEqual(await db.repo.getJob(job.id), job);
    const history = await db.repo.history(job.id);
    assert.deepEqual(
      history.map((t) => [t.from, t.to, t.reason]),
      [[null, 'queued', 'created']],
    );
  });

  test('the same idempotency key returns the same job, even with members in another order', async () => {
    const input = { name: 'cnn', spec: SPEC, workers: 4, priority: 3, idempotencyKey: 'req-1' };
    const first = await db.repo.createJob(input);
    const again = await db.repo.createJob({ ...input, spec: { optimizer: SPEC.optimizer, model: SPEC.model } });
    assert.equal(first.created, true);
    assert.equal(again.created, false);
    assert.deepEqual(again.job, first.job);
    assert.equal(await db.prisma.job.count({ where: { idempotencyKey: 'req-1' } }), 1);
    assert.equal(await db.prisma.jobTransition.count({ where: { jobId: first.job.id } }), 1);
  });

  test('racing creates with one key make one job', async () => {
    const input = { name: 'race', spec: SPEC, workers: 1, idempotencyKey: 'req-race' };
    const results = await Promise.all(Array.from({ length: 8 }, () => db.repo.createJob(input)));
    assert.equal(new Set(results.map((r) => r.job.id)).size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal(await db.prisma.job.count({ where: { idempotencyKey: 'req-race' } }), 1);
  });

  test('the same key with a different request is a conflict', async () => {
    await db.repo.createJob({ name: 'a', spec: SPEC, workers: 2, idempotencyKey: 'req-2' });
    for (const changed of [
      { name: 'b', spec: SPEC, workers: 2 },
      { name: 'a', spec: { ...SPEC, seed: 1 }, workers: 2 },
      { name: 'a', spec: SPEC, workers: 3 },
    ]) {
      await assert.rejects(db.repo.createJob({ ...changed, idempotencyKey: 'req-2' }), (err: unknown) => {
        assert.ok(isDbError(err, 'TAS_ERR_IDEMPOTENCY_CONFLICT'));
        return true;
      });
    }
  });

  test('unknown and malformed ids are not found', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'nope', "x'; drop table jobs; --"]) {
      await assert.rejects(db.repo.getJob(id), (err: unknown) => isDbError(err, 'TAS_ERR_NOT_FOUND'));
      await assert.rejects(db.repo.transition(id, 'scheduled'), (err: unknown) => isDbError(err, 'TAS_ERR_NOT_FOUND'));
    }
  });
});

describe('listJobs', { skip: unavailable ?? false }, () => {
  const db = suiteDatabase();

  /** Every page of `status` (or all), `limit` at a time. */
  async function allPages(limit: number, status?: JobStatus | JobStatus[]): Promise<Job[][]> {
    const pages: Job[][] = [];
    let cursor: string | undefined;
    for (;;) {
      const page = await db.repo.listJobs({ limit, ...(status ? { status } : {}), ...(cursor ? { cursor } : {}) });
      pages.push(page.jobs);
      if (page.nextCursor === null) return pages;
      cursor = page.nextCursor;
    }
  }
  const newestFirst = (a: Job, b: Job) =>
    b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);

  test('pages newest first by (createdAt, id), ties on createdAt included, no job twice', async () => {
    // Three jobs share one createdAt: the id decides among them.
    const t0 = Date.parse('2026-01-01T00:00:00.000Z');
    const at = [0, 1000, 1000, 1000, 2000, 3000, 4000];
    await db.prisma.job.createMany({
      data: at.map((ms, i) => ({ name: `j${i}`, spec: SPEC, workers: 1, createdAt: new Date(t0 + ms), status: i % 2 ? 'running' : 'queued' })),
    });
    const all = await db.prisma.job.findMany();
    const expected = [...all].sort(newestFirst).map((j) => j.id);

    for (const limit of [1, 2, 3, 7, 50]) {
      const pages = await allPages(limit);
      assert.ok(pages.every((p) => p.length <= limit));
      assert.equal(pages.length, Math.max(1, Math.ceil(all.length / limit)), `limit ${limit}`);
      assert.deepEqual(pages.flat().map((j) => j.id), expected, `limit ${limit}`);
    }
  });

  test('filters by status, one or several', async () => {
    const all = await db.prisma.job.findMany();
    const running = all.filter((j) => j.status === 'running').sort(newestFirst).map((j) => j.id);
    assert.deepEqual((await allPages(2, 'running')).flat().map((j) => j.id), running);
    assert.deepEqual((await allPages(2, ['running', 'queued'])).flat().length, all.length);
    assert.deepEqual((await allPages(2, 'failed')).flat(), []);
  });

  test('a job created between pages does not shift the next page', async () => {
    const first = await db.repo.listJobs({ limit: 3 });
    await db.repo.createJob({ name: 'newest', spec: SPEC, workers: 1 });
    const second = await db.repo.listJobs({ limit: 3, cursor: first.nextCursor! });
    const all = (await db.prisma.job.findMany()).sort(newestFirst).map((j) => j.id);
    // The new job is first overall; the second page continues right after the first.
    assert.deepEqual(
      second.jobs.map((j) => j.id),
      all.slice(4, 7),
    );
    assert.deepEqual(
      first.jobs.map((j) => j.id),
      all.slice(1, 4),
    );
  });

  test('bad cursors and limits are invalid arguments', async () => {
    for (const options of [{ cursor: 'garbage' }, { cursor: Buffer.from('[1,2]').toString('base64url') }, { limit: 0 }, { limit: 501 }, { limit: 1.5 }]) {
      await assert.rejects(db.repo.listJobs(options), (err: unknown) => isDbError(err, 'TAS_ERR_INVALID_ARGUMENT'));
    }
  });
});

describe('transition', { skip: unavailable ?? false }, () => {
  const db = suiteDatabase();
  const newJob = async () => (await db.repo.createJob({ name: 't', spec: SPEC, workers: 2 })).job;

  test('a job through its life: attempts, timestamps and history', async () => {
    const job = await newJob();
    const scheduled = await db.repo.transition(job.id, 'scheduled', 'placed on w0,w1');
    assert.equal(scheduled.status, 'scheduled');
    assert.equal(scheduled.attempts, 1);
    const running = await db.repo.transition(job.id, 'running');
    assert.ok(running.startedAt instanceof Date);
    const retrying = await db.repo.transition(job.id, 'retrying', 'rank 1 unreachable');
    await db.repo.transition(job.id, 'scheduled', 'restart 1');
    const again = await db.repo.transition(job.id, 'running');
    assert.equal(again.attempts, 2);
    assert.deepEqual(again.startedAt, running.startedAt, 'startedAt is the first start');
    assert.equal(retrying.finishedAt, null);
    const failed = await db.repo.transition(job.id, 'failed', 'NaN in loss');
    assert.equal(failed.error, 'NaN in loss');
    assert.ok(failed.finishedAt instanceof Date);

    const history = await db.repo.history(job.id);
    assert.deepEqual(
      history.map((t) => `${t.from ?? '-'}>${t.to}`),
      ['->queued', 'queued>scheduled', 'scheduled>running', 'running>retrying', 'retrying>scheduled', 'scheduled>running', 'running>failed'],
    );
    assert.equal(history[3]!.reason, 'rank 1 unreachable');
  });

  test('every pair the state machine forbids is refused and changes nothing', async () => {
    const job = await newJob();
    for (const from of JOB_STATUSES) {
      for (const to of JOB_STATUSES) {
        await db.prisma.job.update({ where: { id: job.id }, data: { status: from } });
        const before = await db.prisma.jobTransition.count({ where: { jobId: job.id } });
        if (canTransition(from, to)) {
          assert.equal((await db.repo.transition(job.id, to)).status, to);
          assert.equal(await db.prisma.jobTransition.count({ where: { jobId: job.id } }), before + 1);
          continue;
        }
        await assert.rejects(db.repo.transition(job.id, to, 'x'), (err: unknown) => {
          assert.ok(isDbError(err, 'TAS_ERR_INVALID_TRANSITION'), `${from} -> ${to}`);
          assert.match(err.message, new RegExp(`cannot go from ${from} to ${to}`));
          return true;
        });
        assert.equal((await db.repo.getJob(job.id)).status, from);
        assert.equal(await db.prisma.jobTransition.count({ where: { jobId: job.id } }), before);
      }
    }
  });

  test('two transitions racing from the same state: exactly one wins', async () => {
    const job = await newJob();
    await db.repo.transition(job.id, 'scheduled');
    await db.repo.transition(job.id, 'running');

    // Hold the job's row lock so that both transitions are surely inside their
    // transactions, blocked on the same row, before either can proceed.
    const holder = await pgClient(db.schema.url);
    const observer = await pgClient(db.schema.url);
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]);
      const racing = [db.repo.transition(job.id, 'succeeded', 'done'), db.repo.transition(job.id, 'failed', 'crash')];
      await waitForLockWaiters(observer, db.schema.schema, 2);
      await holder.query('COMMIT');

      const settled = await Promise.allSettled(racing);
      const won = settled.filter((r) => r.status === 'fulfilled');
      const lost = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      assert.equal(won.length, 1);
      assert.equal(lost.length, 1);
      assert.ok(isDbError(lost[0]!.reason, 'TAS_ERR_INVALID_TRANSITION'), String(lost[0]!.reason));
      const final = await db.repo.getJob(job.id);
      assert.equal(final.status, won[0]!.value.status);
      const endings = (await db.repo.history(job.id)).filter((t) => t.from === 'running');
      assert.equal(endings.length, 1);
      assert.equal(endings[0]!.to, final.status);
    } finally {
      await holder.end();
      await observer.end();
    }
  });

  test('eight racers for the same move: one succeeds, seven are refused', async () => {
    const job = await newJob();
    const settled = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => db.repo.transition(job.id, 'scheduled', `scheduler ${i}`)));
    assert.equal(settled.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of settled) {
      if (r.status === 'rejected') assert.ok(isDbError(r.reason, 'TAS_ERR_INVALID_TRANSITION'));
    }
    const final = await db.repo.getJob(job.id);
    assert.equal(final.attempts, 1);
    assert.equal((await db.repo.history(job.id)).filter((t) => t.to === 'scheduled').length, 1);
  });
});

/**
 * Resolves once `count` connections of this test's schema (application_name) wait on a
 * lock. Polls pg_stat_activity from its own connection (outside a transaction, where the
 * view is not a snapshot); each poll is a round trip, no timer.
 */
async function waitForLockWaiters(observer: pg.Client, applicationName: string, count: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { rows } = await observer.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
      [applicationName],
    );
    if (rows[0]!.n >= count) return;
    if (Date.now() > deadline) throw new Error(`only ${rows[0]!.n} of ${count} transitions reached the row lock`);
  }
}
