/**
 * Test support for the service end to end: `tas serve` as a real child process (so a
 * test can SIGKILL it), on a fresh PostgreSQL schema, the real Redis with a queue of its
 * own, and a temporary data directory; plus an HTTP client that long-polls instead of
 * sleeping (`?wait=` with If-None-Match: the server answers when the resource changes).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createFreshSchema, type FreshSchema } from '../../src/service/db/testing/fresh-schema.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface ServeEnv {
  readonly databaseUrl: string;
  readonly redisUrl: string;
  readonly queue: string;
  readonly dataDir: string;
}

/** A database schema, a queue name and a data directory shared by the serve processes of one test. */
export async function serviceEnvironment(): Promise<ServeEnv & { schema: FreshSchema; cleanup(): Promise<void> }> {
  const schema = await createFreshSchema();
  const dataDir = await mkdtemp(join(tmpdir(), 'tas-e2e-'));
  return {
    schema,
    databaseUrl: schema.url,
    redisUrl: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    queue: `tas-test-${randomBytes(4).toString('hex')}`,
    dataDir,
    async cleanup() {
      await schema.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Served {
  readonly url: string;
  /** host:port of gRPC inference. */
  readonly grpc: string;
  readonly process: ChildProcess;
  readonly workers: Array<{ address: string; pid: number }>;
  /** Everything the process wrote to stderr (its log), for failure messages. */
  readonly log: string[];
  stop(): Promise<void>;
}

/** Start `tas serve` (or `tas api`) with `workers` local workers; resolves when it listens. */
export async function startServe(env: ServeEnv, opts: { workers?: number; lockDurationMs?: number; command?: 'serve' | 'api'; env?: Record<string, string> } = {}): Promise<Served> {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, opts.command ?? 'serve'], {
    env: {
      ...process.env,
      DATABASE_URL: env.databaseUrl,
      REDIS_URL: env.redisUrl,
      TAS_QUEUE: env.queue,
      TAS_DATA_DIR: env.dataDir,
      TAS_HTTP_PORT: '0',
      TAS_GRPC_PORT: '0',
      TAS_HOST: '127.0.0.1',
      TAS_WORKERS: String(opts.workers ?? 2),
      TAS_PROBE_INTERVAL_MS: '500',
      TAS_LOCK_DURATION_MS: String(opts.lockDurationMs ?? 4000),
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log: string[] = [];
  createInterface({ input: child.stderr! }).on('line', (l) => {
    log.push(l);
    if (process.env.TAS_TEST_VERBOSE) process.stderr.write(`[serve ${child.pid}] ${l}\n`);
  });
  const listening = await new Promise<{ http: string; grpc: string; workers: Array<{ address: string; pid: number }> }>((resolve, reject) => {
    child.once('exit', (code, sig) => reject(new Error(`tas serve exited during start-up (${sig ?? code}):\n${log.join('\n')}`)));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        const msg = JSON.parse(l) as { listening?: { http: string; grpc: string; workers: Array<{ address: string; pid: number }> } };
        if (msg.listening) resolve(msg.listening);
      } catch {
        log.push(l);
      }
    });
  });
  child.removeAllListeners('exit');
  return {
    url: listening.http,
    grpc: listening.grpc,
    process: child,
    workers: listening.workers,
    log,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

export interface JobStatusView {
  id: string;
  status: string;
  attempts: number;
  progress: { step: number; total_steps: number | null; epoch: number };
  attempt_history: Array<{ number: number; status: string; error: string | null; workers: string[]; started_at: string; ended_at: string | null }>;
  transitions: Array<{ from: string | null; to: string; reason: string | null }>;
  model: { name: string; version: number } | null;
  error: string | null;
  devices: Array<{ worker: string }>;
  started_at: string | null;
  finished_at: string | null;
}

export async function getJson<T>(url: string, init?: RequestInit): Promise<{ status: number; body: T; headers: Headers }> {
  const r = await fetch(url, init);
  const text = await r.text();
  return { status: r.status, body: (text ? JSON.parse(text) : null) as T, headers: r.headers };
}

export async function postJson<T>(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: T }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as T };
}

/**
 * Follow a resource by long polling until `done(body)` holds: each request returns when
 * the resource changed (or after `waitS`, with 304), so no fixed sleeps. Fails after
 * `timeoutMs` with the last body seen. `authorization`: the header, where keys are required.
 */
export async function waitFor<T>(url: string, done: (body: T) => boolean, timeoutMs = 120_000, waitS = 5, authorization?: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let etag: string | null = null;
  let last: T | null = null;
  while (Date.now() < deadline) {
    const headers: Record<string, string> = { ...(etag ? { 'if-none-match': etag } : {}), ...(authorization ? { authorization } : {}) };
    const r: Response = await fetch(`${url}${url.includes('?') ? '&' : '?'}wait=${waitS}`, { headers });
    if (r.status === 304) continue;
    if (r.status !== 200) throw new Error(`GET ${url}: ${r.status} ${await r.text()}`);
    etag = r.headers.get('etag');
    last = (await r.json()) as T;
    if (done(last)) return last;
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting on ${url}; last: ${JSON.stringify(last)}`);
}

export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
