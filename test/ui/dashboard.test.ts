// The dashboard in a real browser (Debian's Chromium), against `tas serve` as a child
// process on real PostgreSQL and Redis: what a person sees, found by role and text.
// Submit the quickstart from the form (after a bad spec whose error shows at its field),
// watch progress and the curves fill, open a BN layer's statistics, see the pool, call
// the model; cancel another job with the button; page through 1,000 jobs.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { createPrismaClient } from '../../src/service/db/client.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { postJson, serviceEnvironment, startServe, waitFor, type JobStatusView, type Served } from '../service/harness.js';
import { browserUnavailable, buildDashboard, chartPoints, launch, screenshot, untilChartHas } from './browser.js';

const skip = (await databaseUnavailable()) ?? (await browserUnavailable());
if (skip) console.log(`# skipping the dashboard browser tests: ${skip}`);
const QUICKSTART = JSON.parse(await readFile(new URL('../../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;

describe('dashboard in a browser', { skip: skip ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  let browser: Browser;
  let page: Page;

  before(async () => {
    await buildDashboard();
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2 });
    browser = await launch();
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    page.setDefaultTimeout(30_000);
  });
  after(async () => {
    await browser?.close();
    await served?.stop();
    await env?.cleanup();
  });

  test('serves the dashboard: / redirects to /ui/, assets are immutable, index.html is revalidated', async () => {
    const root = await fetch(`${served.url}/`, { redirect: 'manual' });
    assert.equal(root.status, 302);
    assert.equal(root.headers.get('location'), '/ui/');
    const index = await fetch(`${served.url}/ui/`, { headers: { 'accept-encoding': 'gzip' } });
    assert.equal(index.status, 200);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    assert.match(index.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    const html = await index.text();
    const js = /src="(assets\/app-[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(js, html);
    const asset = await fetch(`${served.url}/ui/${js}`);
    assert.equal(asset.status, 200);
    assert.match(asset.headers.get('cache-control') ?? '', /immutable/);
    assert.match(asset.headers.get('content-type') ?? '', /javascript/);
    const again = await fetch(`${served.url}/ui/`, { headers: { 'if-none-match': index.headers.get('etag')! } });
    assert.equal(again.status, 304);
    // Nothing from another origin: the page works offline.
    assert.doesNotMatch(html, /https?:\/\//);
    assert.equal((await fetch(`${served.url}/ui/assets/nope.js`)).status, 404);
  });

  test('submit the quickstart from the form, watch it train, open a BN layer, call the model', async () => {
    await page.goto(`${served.url}/`);
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Submit' }).click();
    await page.getByRole('heading', { name: 'Submit a job' }).waitFor();

    // A bad spec first: the API's error shows at the field it names.
    const bad = { ...QUICKSTART, optimizer: { type: 'sgd', lr: -1 } };
    await page.getByRole('textbox', { name: 'Job spec (JSON)' }).fill(JSON.stringify(bad, null, 2));
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.innerText(), /optimizer\.lr/);
    assert.match(await alert.innerText(), />= 0/);
    assert.equal(await page.getByRole('textbox', { name: 'Job spec (JSON)' }).getAttribute('aria-invalid'), 'true');
    // The service field has an input of its own, and its error shows there.
    await page.getByRole('button', { name: 'Use the quickstart' }).click();
    await page.getByRole('textbox', { name: 'Priority' }).fill('high');
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.getByRole('textbox', { name: 'Priority' }).and(page.locator('[aria-invalid="true"]')).waitFor();
    await page.getByRole('textbox', { name: 'Priority' }).fill('');
    await screenshot(page, 'submit');

    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.getByRole('heading', { name: /quickstart-spirals-syncbn/ }).waitFor();
    const id = /#\/jobs\/([0-9a-f-]{36})/.exec(page.url())?.[1];
    assert.ok(id, page.url());

    // Progress moves and the curves fill with points while it trains.
    await page.getByRole('progressbar', { name: /^step [1-9]\d* of 570$/ }).first().waitFor({ timeout: 60_000 });
    await untilChartHas(page, 'Loss and accuracy', 20, 60_000);
    await untilChartHas(page, 'Time split per step \\(ms, stacked\\)', 20);
    await page.getByText('succeeded', { exact: true }).first().waitFor({ timeout: 120_000 });
    // Finished: every step's curve is there (570 steps, fewer than the 600 points asked).
    await untilChartHas(page, 'Loss and accuracy', 570);
    assert.equal(await chartPoints(page, 'Learning rate'), 570);
    assert.match(await page.getByText(/The per-layer BN barriers take [\d.]+% of a step/).innerText(), /%/);
    // The timeline and the ranks.
    const timeline = page.getByRole('region', { name: 'Timeline' });
    for (const s of ['queued', 'scheduled', 'running', 'succeeded']) await timeline.getByText(s, { exact: true }).first().waitFor();
    assert.equal(await page.getByRole('region', { name: 'Ranks and devices' }).getByRole('row').count(), 3);
    await page.getByRole('log', { name: 'Job log' }).getByText(/published model quickstart-spirals-syncbn version 1/).waitFor();

    // A BN layer's statistics: small multiples, then one layer opened.
    const bn = page.getByRole('region', { name: 'BatchNorm running statistics' });
    const layerButtons = bn.getByRole('button', { name: /^BN .+ · 64 channels$/ });
    assert.equal(await layerButtons.count(), 2);
    await layerButtons.first().click();
    const detail = page.getByRole('region', { name: /^BN .+ statistics$/ });
    await detail.waitFor();
    await detail.getByRole('rowheader', { name: 'after recalibration (exact)', exact: true }).waitFor();
    // Workers record BN statistics at up to 500 steps of a run.
    const layerName = (await detail.getAttribute('aria-label'))!.replace(/ statistics$/, '');
    assert.ok((await chartPoints(page, `${layerName} running mean over steps`)) >= 400);
    await screenshot(page, 'job', { fullPage: true });

    // The model: served, one version, and an inference request answered.
    await page.getByRole('link', { name: 'quickstart-spirals-syncbn v1' }).first().click();
    await page.getByRole('heading', { name: 'quickstart-spirals-syncbn: versions' }).waitFor();
    await page.getByRole('button', { name: 'Send' }).click();
    const answer = page.getByRole('status', { name: 'Inference answer' });
    await answer.waitFor();
    await answer.getByText('logits [1, 3] FP32').waitFor();
    await screenshot(page, 'models', { fullPage: true });

    // The pool: both workers, idle again.
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Pool' }).click();
    await page.getByText(/^2 workers: 2 idle, 0 busy, 0 offline$/).waitFor();
    await screenshot(page, 'pool');
  });

  test('cancel a job with the button, after confirming', async () => {
    const long = { ...QUICKSTART, name: 'long-run', epochs: 3000 };
    const submitted = await postJson<JobStatusView>(`${served.url}/v1/jobs`, long);
    assert.equal(submitted.status, 201);
    const id = submitted.body.id;
    await waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => j.status === 'running');
    await page.goto(`${served.url}/ui/#/jobs/${id}`);
    await page.getByRole('heading', { name: /long-run/ }).getByText('running').waitFor();
    await page.getByRole('button', { name: 'Cancel job' }).click();
    const confirm = page.getByRole('dialog', { name: 'Cancel long-run?' });
    await confirm.waitFor();
    // Changing one's mind cancels nothing.
    await confirm.getByRole('button', { name: 'Keep it running' }).click();
    await confirm.waitFor({ state: 'hidden' });
    await page.getByRole('button', { name: 'Cancel job' }).click();
    await confirm.getByRole('button', { name: 'Yes, cancel it' }).click();
    await page.getByRole('heading', { name: /long-run/ }).getByText('cancelled').waitFor();
    await page.getByRole('region', { name: 'Timeline' }).getByText('cancelled by request').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Cancel job' }).count(), 0);
    const final = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => j.status === 'cancelled');
    assert.equal(final.status, 'cancelled');
  });

  test('page through 1,000 jobs', async () => {
    const prisma = createPrismaClient(env.databaseUrl);
    try {
      const t0 = Date.UTC(2025, 0, 1);
      await prisma.job.createMany({
        data: Array.from({ length: 1000 }, (_, i) => ({ name: `bulk-${String(i).padStart(4, '0')}`, spec: {}, workers: 2, status: 'failed' as const, error: 'imported', createdAt: new Date(t0 + i * 1000), step: i, totalSteps: 1000 })),
      });
    } finally {
      await prisma.$disconnect();
    }
    await page.goto(`${served.url}/ui/#/jobs?status=failed`);
    await page.getByRole('combobox', { name: 'Per page' }).selectOption('100');
    const pager = page.getByRole('navigation', { name: 'Pages' });
    await pager.getByText('Page 1 · jobs 1–100').waitFor();
    await page.getByRole('link', { name: 'bulk-0999' }).waitFor();
    await screenshot(page, 'jobs');
    for (let p = 2; p <= 10; p++) {
      await pager.getByRole('button', { name: 'Older' }).click();
      await pager.getByText(`Page ${p} · jobs ${(p - 1) * 100 + 1}–${p * 100}`).waitFor();
    }
    await page.getByRole('link', { name: 'bulk-0000' }).waitFor();
    assert.equal(await page.getByRole('link', { name: /^bulk-\d{4}$/ }).count(), 100);
    assert.ok(await pager.getByRole('button', { name: 'Older' }).isDisabled());
    await pager.getByRole('button', { name: 'Newer' }).click();
    await pager.getByText('Page 9 · jobs 801–900').waitFor();
    await pager.getByRole('button', { name: 'Newest' }).click();
    await pager.getByText('Page 1 · jobs 1–100').waitFor();
    // Filtering by another status leaves the imported jobs out.
    await page.getByRole('combobox', { name: 'Status' }).selectOption({ label: 'Succeeded' });
    await page.getByRole('link', { name: 'quickstart-spirals-syncbn', exact: true }).waitFor();
    assert.equal(await page.getByRole('link', { name: /^bulk-/ }).count(), 0);
  });
});
