// The change feed against the real PostgreSQL: the migration's triggers announce job,
// worker and tenant changes at commit; the feed hears its own schema's only, and after
// its connection is killed it reconnects and says changes may have been missed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { ChangeFeed } from './change-feed.js';
import { createPrismaClient, type PrismaClient } from './client.js';
import { migrate } from './migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from './testing/fresh-schema.js';
import { resolveDatabaseUrl } from './url.js';

const unavailable = await databaseUnavailable();

/** The next topics the feed reports, `n` of them. */
function next(feed: ChangeFeed, n = 1): Promise<Array<string | null>> {
  return new Promise((resolve) => {
    const seen: Array<string | null> = [];
    const off = feed.subscribe((topic) => {
      seen.push(topic);
      if (seen.length === n) {
        off();
        resolve(seen);
      }
    });
  });
}

describe('ChangeFeed', { skip: unavailable ?? false }, () => {
  const ctx = {} as { schema: FreshSchema; other: FreshSchema; prisma: PrismaClient; otherPrisma: PrismaClient; feed: ChangeFeed };
  before(async () => {
    ctx.schema = await createFreshSchema();
    ctx.other = await createFreshSchema();
    await migrate(ctx.schema.url);
    await migrate(ctx.other.url);
    ctx.prisma = createPrismaClient(ctx.schema.url);
    ctx.otherPrisma = createPrismaClient(ctx.other.url);
    ctx.feed = new ChangeFeed(ctx.schema.url, { retryMs: 20, pingMs: 60_000 });
    const first = next(ctx.feed);
    await ctx.feed.start();
    assert.equal(ctx.feed.live, true);
    // Listening: anything before it may have been missed.
    assert.deepEqual(await first, [null]);
  });
  after(async () => {
    await ctx.feed?.close();
    await ctx.prisma?.$disconnect();
    await ctx.otherPrisma?.$disconnect();
    await ctx.schema?.drop();
    await ctx.other?.drop();
  });

  test('a job row, the workers and the tenants are announced at commit; another schema is not heard', async () => {
    const tenant = await ctx.prisma.tenant.findFirstOrThrow();
    // The other schema's change first: were it heard, it would be the first topic.
    const heard = next(ctx.feed, 3);
    const otherTenant = await ctx.otherPrisma.tenant.findFirstOrThrow();
    await ctx.otherPrisma.job.create({ data: { name: 'elsewhere', spec: {}, workers: 1, tenantId: otherTenant.id } });
    const job = await ctx.prisma.job.create({ data: { name: 'here', spec: {}, workers: 1, tenantId: tenant.id } });
    await ctx.prisma.worker.create({ data: { id: 'w0', address: '127.0.0.1:7000', deviceKind: 'cpu', deviceIndex: 0 } });
    await ctx.prisma.tenant.update({ where: { id: tenant.id }, data: { maxWorkers: 3 } });
    assert.deepEqual(await heard, [`job:${job.id}`, 'pool', 'tenants']);
    // A progress write (an update) is announced too; repeats within a transaction fold into one.
    const progress = next(ctx.feed, 2);
    await ctx.prisma.$transaction([ctx.prisma.job.update({ where: { id: job.id }, data: { step: 1 } }), ctx.prisma.job.update({ where: { id: job.id }, data: { step: 2 } })]);
    await ctx.prisma.worker.delete({ where: { id: 'w0' } });
    assert.deepEqual(await progress, [`job:${job.id}`, 'pool']);
  });

  test('after its connection is killed it listens again, reports null (changes may have been missed) and hears changes', async () => {
    const admin = new pg.Client({ connectionString: resolveDatabaseUrl(ctx.schema.url).connectionString });
    await admin.connect();
    try {
      const back = next(ctx.feed);
      const killed = await admin.query("SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND query = 'LISTEN tas_changes'", [ctx.schema.schema]);
      assert.equal(killed.rowCount, 1);
      assert.deepEqual(await back, [null]);
      assert.equal(ctx.feed.live, true);
      // And it hears changes again.
      const heard = next(ctx.feed);
      await ctx.prisma.worker.create({ data: { id: 'w1', address: '127.0.0.1:7001', deviceKind: 'cpu', deviceIndex: 1 } });
      assert.deepEqual(await heard, ['pool']);
    } finally {
      await admin.end();
    }
  });
});
