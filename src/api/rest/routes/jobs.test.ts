// /v1/jobs reads as a dashboard makes them, over real HTTP on a fresh PostgreSQL schema:
// the list's pages (cached per version) against the repository, the list and a job
// long-polled until a row changes, and the metrics downsampled with ETags.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pg from 'pg';
import type { PrismaClient } from '../../../service/db/client.js';
import { databaseUnavailable } from '../../../service/db/testing/fresh-schema.js';
import { resolveDatabaseUrl } from '../../../service/db/url.js';
import type { JobService } from '../../../service/jobs/job-service.js';
import type { JobMetricsView } from '../../../service/jobs/metrics-view.js';
import { jobServiceFixture, type JobServiceFixture } from '../../../service/jobs/testing/job-service-fixture.js';
import { adminPrincipal } from '../../../service/tenants/principal.js';
import { createBaseApp } from '../app.js';
import { addSharedSchemas } from '../schemas.js';
import { jobKeyAffected, jobRoutes } from './jobs.js';

const unavailable = await databaseUnavailable();

interface Page {
  jobs: Array<{ id: string; name: string; status: string; progress: { step: number }; updated_at: string }>;
  next_cursor: string | null;
}

describe('job routes for dashboards', { skip: unavailable ?? false }, () => {
  let fixture: JobServiceFixture;
  let prisma: PrismaClient;
  let app: FastifyInstance;
  let base: string;
  let jobs: JobService;
  const ids: string[] = [];

  before(async () => {
    fixture = await jobServiceFixture();
    ({ prisma, jobs } = fixture);
    app = createBaseApp();
    addSharedSchemas(app);
    await app.register(jobRoutes, { jobs, longPollCheckMs: 10 });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    // 120 jobs, one a millisecond apart, some running with an attempt on a worker.
    const t0 = Date.UTC(2026, 0, 1);
    for (let i = 0; i < 120; i++) {
      const status = i % 3 === 0 ? 'succeeded' : i % 3 === 1 ? 'running' : 'queued';
      const job = await prisma.job.create({ data: { name: `job-${i}`, spec: {}, workers: 2, status, createdAt: new Date(t0 + i), step: i, totalSteps: 200 } });
      ids.push(job.id);
    }
    await prisma.worker.create({ data: { id: 'w0', address: '127.0.0.1:7000', deviceKind: 'cpu', state: 'busy', currentJobId: ids[1]! } });
    await prisma.jobAttempt.create({ data: { jobId: ids[4]!, number: 1, generation: 1, workerIds: ['w0'], addresses: ['127.0.0.1:7000'] } });
  });
  after(async () => {
    await app?.close();
    await fixture?.close();
  });

  test('pages through every job once, newest first, equal to the uncached list', async () => {
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const r: Response = await fetch(`${base}/v1/jobs?limit=50${cursor ? `&cursor=${cursor}` : ''}`);
      assert.equal(r.status, 200);
      const page = (await r.json()) as Page;
      // The cached page is the page the repository gives.
      assert.deepEqual(page, JSON.parse(JSON.stringify(await jobs.list(adminPrincipal(), { limit: 50, ...(cursor ? { cursor } : {}) }))));
      seen.push(...page.jobs.map((j) => j.id));
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    assert.deepEqual(seen, [...ids].reverse());
    const running = (await (await fetch(`${base}/v1/jobs?status=running&limit=500`)).json()) as Page;
    assert.equal(running.jobs.length, 40);
    assert.ok(running.jobs.every((j) => j.status === 'running'));
    const held = running.jobs.find((j) => j.id === ids[1]) as unknown as { devices: Array<{ worker: string }> };
    assert.deepEqual(held.devices.map((d) => d.worker), ['127.0.0.1:7000']);
    const lastAttempt = running.jobs.find((j) => j.id === ids[4]) as unknown as { devices: Array<{ worker: string }> };
    assert.deepEqual(lastAttempt.devices.map((d) => d.worker), ['127.0.0.1:7000'], "no gang holds it: the last attempt's workers");
  });

  test('the list long-polls: 304 when the wait ends unchanged, the new page when a job on it moves', async () => {
    const first = await fetch(`${base}/v1/jobs?limit=5`);
    const etag = first.headers.get('etag')!;
    assert.match(etag, /^W\//);
    await first.arrayBuffer();
    const unchanged = await fetch(`${base}/v1/jobs?limit=5&wait=0.2`, { headers: { 'if-none-match': etag } });
    assert.equal(unchanged.status, 304);

    const t0 = performance.now();
    const waiting = fetch(`${base}/v1/jobs?limit=5&wait=30`, { headers: { 'if-none-match': etag } });
    // The newest job makes progress, as a scheduler's progress write does.
    await prisma.job.update({ where: { id: ids[119]! }, data: { step: 150, updatedAt: new Date() } });
    const r = await waiting;
    assert.equal(r.status, 200);
    assert.notEqual(r.headers.get('etag'), etag);
    assert.ok(performance.now() - t0 < 10_000, 'answered on the change, not at the end of the wait');
    const page = (await r.json()) as Page;
    assert.equal(page.jobs[0]!.progress.step, 150);
  });

  test('a job long-polls through the shared watch; a missing job is a 404', async () => {
    const id = ids[118]!;
    const first = await fetch(`${base}/v1/jobs/${id}`);
    const etag = first.headers.get('etag')!;
    await first.arrayBuffer();
    const waits = Array.from({ length: 20 }, () => fetch(`${base}/v1/jobs/${id}?wait=30`, { headers: { 'if-none-match': etag } }));
    await prisma.job.update({ where: { id }, data: { step: 7, updatedAt: new Date() } });
    for (const r of await Promise.all(waits)) {
      assert.equal(r.status, 200);
      assert.equal(((await r.json()) as { progress: { step: number } }).progress.step, 7);
    }
    const missing = await fetch(`${base}/v1/jobs/00000000-0000-4000-8000-000000000000?wait=1`, { headers: { 'if-none-match': etag } });
    assert.equal(missing.status, 404);
  });

  test('metrics: max_points bounds every series and keeps the spike; the ETag answers 304', async () => {
    const id = ids[117]!;
    await prisma.jobMetric.createMany({
      data: Array.from({ length: 3000 }, (_, i) => ({ jobId: id, step: i + 1, loss: i === 2222 ? 40 : 0.5, accuracy: 0.9, lr: 0.1, samplesPerSec: 5000, computeMs: 2, bnFwdMs: 0.5, bnBwdMs: 0.5, gradMs: 0.3 })),
    });
    await prisma.job.update({ where: { id }, data: { step: 3000, updatedAt: new Date() } });
    const r = await fetch(`${base}/v1/jobs/${id}/metrics?max_points=100`);
    assert.equal(r.status, 200);
    const v = (await r.json()) as JobMetricsView;
    assert.equal(v.steps_recorded, 3000);
    assert.ok(v.points.length <= 100, `${v.points.length} points`);
    assert.ok(v.points.some((p) => p.step === 2223 && p.loss === 40));
    assert.equal(v.points[0]!.lr, 0.1);
    const again = await fetch(`${base}/v1/jobs/${id}/metrics?max_points=100`, { headers: { 'if-none-match': r.headers.get('etag')! } });
    assert.equal(again.status, 304);
    const bad = await fetch(`${base}/v1/jobs/${id}/metrics?max_points=1`);
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as { error: { field: string } }).error.field, 'max_points');
  });
});

describe('job long polls on the database change feed', { skip: unavailable ?? false }, () => {
  let fixture: JobServiceFixture;
  let app: FastifyInstance;
  let base: string;

  before(async () => {
    fixture = await jobServiceFixture({ changes: true });
    assert.equal(fixture.changes?.live, true);
    app = createBaseApp();
    addSharedSchemas(app);
    // A minute between periodic reads: only the announcement of a change can answer in time.
    await app.register(jobRoutes, { jobs: fixture.jobs, longPollCheckMs: 10, longPollQuietMs: 60_000, changes: fixture.changes! });
    base = await app.listen({ port: 0, host: '127.0.0.1' });
  });
  after(async () => {
    await app?.close();
    await fixture?.close();
  });

  test('a change committed by another connection answers the job and the list long polls at once', { timeout: 20_000 }, async () => {
    const { prisma, schema } = fixture;
    const job = await prisma.job.create({ data: { name: 'watched', spec: {}, workers: 1, status: 'running', totalSteps: 100 } });
    const other = await prisma.job.create({ data: { name: 'other', spec: {}, workers: 1, status: 'running', totalSteps: 100, createdAt: new Date(Date.now() - 60_000) } });
    const tagOf = async (url: string) => {
      const r = await fetch(url);
      await r.arrayBuffer();
      return r.headers.get('etag')!;
    };
    const jobUrl = `${base}/v1/jobs/${job.id}`;
    const listUrl = `${base}/v1/jobs?limit=5`;
    const [jobTag, listTag] = [await tagOf(jobUrl), await tagOf(listUrl)];
    const waits = Array.from({ length: 10 }, () => fetch(`${jobUrl}?wait=50`, { headers: { 'if-none-match': jobTag } }));
    const listWait = fetch(`${listUrl}&wait=50`, { headers: { 'if-none-match': listTag } });
    // First another job moves: the list's poll is answered, the job's polls keep waiting (their ETag stands).
    const writer = new pg.Client({ connectionString: resolveDatabaseUrl(schema.url).connectionString });
    await writer.connect();
    try {
      await writer.query('UPDATE jobs SET step = 3, updated_at = now() WHERE id = $1', [other.id]);
      const list = await listWait;
      assert.equal(list.status, 200);
      assert.equal(((await list.json()) as Page).jobs.find((j) => j.id === other.id)!.progress.step, 3);
      // As a scheduler in another process writes progress.
      await writer.query('UPDATE jobs SET step = 42, updated_at = now() WHERE id = $1', [job.id]);
      for (const r of await Promise.all(waits)) {
        assert.equal(r.status, 200);
        assert.equal(((await r.json()) as { progress: { step: number } }).progress.step, 42);
      }
    } finally {
      await writer.end();
    }
  });

  test('which announced changes reach which long-polled keys', () => {
    const id = '0b8f3c1e-0000-4000-8000-000000000001';
    assert.equal(jobKeyAffected(`job:*:${id}`, `job:${id}`), true);
    assert.equal(jobKeyAffected(`job:tenant-a:${id}`, 'job:0b8f3c1e-0000-4000-8000-000000000002'), false);
    assert.equal(jobKeyAffected('list:*:{"limit":50}', `job:${id}`), true);
    assert.equal(jobKeyAffected(`job:*:${id}`, 'pool'), true);
    assert.equal(jobKeyAffected('list:*:{}', 'tenants'), true);
  });
});
