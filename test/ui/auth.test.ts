// The dashboard when the API wants a key: an API whose /v1 routes answer 401 (with
// WWW-Authenticate: Bearer) to a request without the right Bearer key, as the service
// does with API keys on. The dashboard asks for a key, keeps it for the tab only
// (sessionStorage), and sends it on every call, long polls included.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import type { Browser } from 'playwright-core';
import { createBaseApp } from '../../src/api/rest/app.js';
import { jobRoutes } from '../../src/api/rest/routes/jobs.js';
import { uiRoutes } from '../../src/api/rest/routes/ui.js';
import { addSharedSchemas } from '../../src/api/rest/schemas.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { jobServiceFixture, type JobServiceFixture } from '../../src/service/jobs/testing/job-service-fixture.js';
import { browserUnavailable, buildDashboard, launch } from './browser.js';

const skip = (await databaseUnavailable()) ?? (await browserUnavailable());
if (skip) console.log(`# skipping the dashboard key test: ${skip}`);

const KEY = 'tas_test_key_1';

describe('dashboard behind API keys', { skip: skip ?? false }, () => {
  let fixture: JobServiceFixture;
  let app: FastifyInstance;
  let base: string;
  let browser: Browser;
  const seen: Array<{ url: string; authorization: string | undefined }> = [];
  let longPollWithKey!: () => void;
  const sawLongPollWithKey = new Promise<void>((resolve) => (longPollWithKey = resolve));

  before(async () => {
    await buildDashboard();
    fixture = await jobServiceFixture();
    await fixture.prisma.job.create({ data: { name: 'behind-a-key', spec: {}, workers: 2, status: 'succeeded' } });
    app = createBaseApp();
    addSharedSchemas(app);
    // The API-key contract: every /v1 route wants `Authorization: Bearer <key>`.
    app.addHook('onRequest', async (request, reply) => {
      if (!request.url.startsWith('/v1/')) return;
      seen.push({ url: request.url, authorization: request.headers.authorization });
      if (request.url.includes('wait=') && request.headers.authorization === `Bearer ${KEY}`) longPollWithKey();
      if (request.headers.authorization !== `Bearer ${KEY}`) {
        return reply
          .code(401)
          .header('www-authenticate', 'Bearer')
          .send({ error: { code: 'TAS_ERR_UNAUTHENTICATED', message: request.headers.authorization ? 'unknown API key' : 'an API key is required (Authorization: Bearer <key>)' } });
      }
    });
    await app.register(jobRoutes, { jobs: fixture.jobs });
    await app.register(uiRoutes);
    base = await app.listen({ port: 0, host: '127.0.0.1' });
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await app?.close();
    await fixture?.close();
  });

  test('a 401 asks for a key; a wrong one is refused; the right one is kept for the tab and sent on every call', async () => {
    const page = await browser.newPage();
    page.setDefaultTimeout(20_000);
    await page.goto(`${base}/ui/`);
    const dialog = page.getByRole('dialog', { name: 'API key' });
    await dialog.waitFor();
    await dialog.getByText('This service needs an API key.').waitFor();
    assert.equal(await page.getByRole('link', { name: 'behind-a-key' }).count(), 0);

    await dialog.getByLabel('API key').fill('wrong');
    await dialog.getByRole('button', { name: 'Use key' }).click();
    await dialog.getByText(/The key was refused \(unknown API key\)/).waitFor();

    await dialog.getByLabel('API key').fill(KEY);
    // The page, once it has it, is followed by long polls that carry the key.
    const longPoll = page.waitForRequest((r) => r.url().includes('wait=') && r.headers().authorization === `Bearer ${KEY}`);
    await dialog.getByRole('button', { name: 'Use key' }).click();
    await page.getByRole('link', { name: 'behind-a-key' }).waitFor();
    await dialog.waitFor({ state: 'hidden' });
    await longPoll;
    await sawLongPollWithKey;
    // Before the key, every call went without one or with the wrong one, and was refused.
    assert.ok(seen.filter((s) => s.authorization !== `Bearer ${KEY}`).length >= 2);
    // Kept in this tab's session storage, nowhere else.
    assert.equal(await page.evaluate(() => sessionStorage.getItem('tas.apiKey')), KEY);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
    assert.equal(await page.evaluate(() => document.cookie), '');
    // Another tab starts without it, and asks.
    const other = await browser.newPage();
    await other.goto(`${base}/ui/`);
    await other.getByRole('dialog', { name: 'API key' }).waitFor();
    await other.close();
    await page.close();
  });
});
