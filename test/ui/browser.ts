/**
 * Test support for the dashboard in a real browser: Debian's Chromium driven by
 * playwright-core (which never downloads a browser of its own), the dashboard built from
 * ui/src as `npm ci` builds it, and screenshots when TAS_SCREENSHOTS names a folder.
 */
import { execFile } from 'node:child_process';
import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type Browser, type Page } from 'playwright-core';

export const CHROMIUM = process.env.TAS_CHROMIUM ?? '/usr/bin/chromium';

/**
 * Why the browser tests cannot run here (printed as the skip reason), or null. `.ci/run`
 * installs Chromium and sets TAS_REQUIRE_BROWSER=1, which turns a missing one into a failure.
 */
export async function browserUnavailable(): Promise<string | null> {
  const missing = await access(CHROMIUM).then(
    () => null,
    () => `no Chromium at ${CHROMIUM} (apt-get install chromium, or set TAS_CHROMIUM)`,
  );
  if (missing && process.env.TAS_REQUIRE_BROWSER === '1') throw new Error(missing);
  return missing;
}

/** Builds the dashboard into ui/dist, as `npm ci` does, so the test sees the current sources. */
export async function buildDashboard(): Promise<void> {
  await promisify(execFile)(process.execPath, [fileURLToPath(new URL('../../ui/build.mjs', import.meta.url)), '--quiet']);
}

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A screenshot into TAS_SCREENSHOTS (the README's pictures: `npm run screenshots`); nothing otherwise. */
export async function screenshot(page: Page, name: string, options: { fullPage?: boolean } = {}): Promise<void> {
  const dir = process.env.TAS_SCREENSHOTS;
  if (!dir) return;
  await mkdir(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: options.fullPage ?? false });
}

/** The number in a chart's accessible name ("Loss and accuracy: 57 points"). */
export async function chartPoints(page: Page, title: string): Promise<number> {
  const label = await page.getByRole('img', { name: new RegExp(`^${title}: \\d+ points$`) }).getAttribute('aria-label');
  return Number(/: (\d+) points$/.exec(label ?? '')?.[1] ?? 0);
}

/** Waits (bounded) until the chart titled `title` shows at least `n` points. */
export async function untilChartHas(page: Page, title: string, n: number, timeout = 60_000): Promise<number> {
  const handle = await page.waitForFunction(
    ({ title, n }) => {
      for (const el of document.querySelectorAll('[role="img"]')) {
        const m = new RegExp(`^${title}: (\\d+) points$`).exec(el.getAttribute('aria-label') ?? '');
        if (m && Number(m[1]) >= n) return Number(m[1]);
      }
      return false;
    },
    { title, n },
    { timeout },
  );
  return (await handle.jsonValue()) as number;
}
