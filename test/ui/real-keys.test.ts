// The dashboard and the tas client against `tas serve` with API keys on (TAS_AUTH=on):
// the dashboard asks for a key on the service's own 401, then lists and submits with it
// (same-origin writes pass the cross-site rules); the client finds the admin key the
// first start wrote to <data>/admin.key.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { runTas as tas } from '../cli/run-tas.js';
import { serviceEnvironment, startServe, type Served } from '../service/harness.js';
import { browserUnavailable, buildDashboard, launch } from './browser.js';

const skip = (await databaseUnavailable()) ?? (await browserUnavailable());
if (skip) console.log(`# skipping the dashboard tests with API keys: ${skip}`);

describe('dashboard and client with API keys on', { skip: skip ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  let browser: Browser;
  let adminKey: string;

  before(async () => {
    await buildDashboard();
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2, env: { TAS_AUTH: 'on' } });
    adminKey = (await readFile(join(env.dataDir, 'admin.key'), 'utf8')).trim();
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
    await served?.stop();
    await env?.cleanup();
  });

  test('the dashboard loads without a key, asks for one, then lists and submits with it', async () => {
    // The dashboard's own files need no key.
    assert.equal((await fetch(`${served.url}/ui/`)).status, 200);
    const page = await browser.newPage();
    page.setDefaultTimeout(30_000);
    // The job list's first call is answered 401 by the service: the dashboard asks.
    await page.goto(`${served.url}/ui/`);
    const dialog = page.getByRole('dialog', { name: 'API key' });
    await dialog.waitFor();
    await dialog.getByText('This service needs an API key.').waitFor();
    await dialog.getByLabel('API key').fill(adminKey);
    await dialog.getByRole('button', { name: 'Use key' }).click();
    await dialog.waitFor({ state: 'hidden' });
    await page.getByText('No jobs yet. Submit one.').waitFor();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Submit' }).click();
    await page.getByRole('button', { name: 'Use the quickstart' }).click();
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.getByRole('heading', { name: /quickstart-spirals-syncbn/ }).waitFor();
    await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Jobs' }).click();
    await page.getByRole('link', { name: 'quickstart-spirals-syncbn', exact: true }).waitFor();
    await page.close();
  });

  test('the client sends <data>/admin.key; without a key it says so in one line', async () => {
    const withKey = await tas(['jobs', '--json'], { TAS_URL: served.url, TAS_DATA_DIR: env.dataDir });
    assert.equal(withKey.code, 0, withKey.stderr);
    assert.ok((JSON.parse(withKey.stdout) as { jobs: unknown[] }).jobs.length >= 1);
    const without = await tas(['jobs'], { TAS_URL: served.url, TAS_DATA_DIR: join(env.dataDir, 'nowhere') });
    assert.equal(without.code, 1);
    assert.match(without.stderr, /^error TAS_ERR_UNAUTHENTICATED/);
    assert.equal(without.stderr.trim().split('\n').length, 1);
  });
});
