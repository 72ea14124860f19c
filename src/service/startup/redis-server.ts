/**
 * Redis for the job queue without setup: use the Redis at REDIS_URL when one answers;
 * when none does and the URL names this machine, start a private `redis-server` (if it
 * is installed) on a free loopback port for the life of this process; otherwise stop
 * start-up with a ServiceStartError that says how to get one.
 *
 * The private server keeps nothing on disk (`--save "" --appendonly no`): the queue is
 * rebuilt from PostgreSQL, which is the record of every job. It runs with
 * `maxmemory-policy noeviction`, which BullMQ requires (an evicted key is a lost job).
 *
 * It never outlives this process, however this process ends: it is started through a
 * small `sh` wrapper that kills it when its stdin, a pipe from this process, reaches
 * end-of-file, which the kernel delivers when this process exits for any reason
 * (including SIGKILL, when no exit handler runs). stop() closes that pipe and waits.
 *
 * And it is supervised: a private server that dies (killed, out of memory) is started
 * again on the same port, so every connection (ioredis reconnects by itself) finds it at
 * the same URL. It comes back empty; the scheduler queues every unfinished job again
 * from PostgreSQL when Redis answers again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { accessSync, constants as fsConstants, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { Redis } from 'ioredis';
import { ServiceStartError } from './start-errors.js';

export interface EnsureRedisOptions {
  /** Start a private redis-server when none answers at a local URL. @defaultValue true */
  readonly startIfMissing?: boolean;
  /** Working directory of a private redis-server (`<dataDir>/redis`). @defaultValue the OS temp dir */
  readonly dataDir?: string;
  /** How long to wait for an answer from an existing Redis. @defaultValue 1000 */
  readonly connectTimeoutMs?: number;
  /** How long a private redis-server may take to answer PING. @defaultValue 10000 */
  readonly startTimeoutMs?: number;
  /** Where a private server's exits and restarts are told. */
  readonly log?: (message: string) => void;
}

export interface RedisHandle {
  /** The Redis to use: `url` itself, or the private server's `redis://127.0.0.1:<port>`. */
  readonly url: string;
  /** True when a private redis-server was started (stop() ends it). */
  readonly started: boolean;
  /** checkRedisPolicy's warning for this Redis, or null when its policy is noeviction. */
  readonly policyWarning: string | null;
  /** Ends a private server (waits for it to exit); nothing for an existing one. */
  stop(): Promise<void>;
}

const NOEVICTION = 'noeviction';

export async function ensureRedis(url: string, opts: EnsureRedisOptions = {}): Promise<RedisHandle> {
  const parsed = parseRedisUrl(url);
  const probe = await probeRedis(url, opts.connectTimeoutMs ?? 1000);
  if (probe.ok) {
    return { url, started: false, policyWarning: probe.policyWarning, stop: async () => undefined };
  }
  if (probe.refused) {
    // Something answered and refused us (a password, ACLs): starting another server
    // would hide the misconfiguration.
    throw new ServiceStartError(
      'TAS_ERR_REDIS_UNAVAILABLE',
      `the Redis at ${redactRedisUrl(url)} refused the connection: ${probe.reason}. Fix the credentials in REDIS_URL.`,
    );
  }
  const whyNotStart =
    opts.startIfMissing === false
      ? 'starting a private redis-server was not asked for'
      : !isLocalHost(parsed.hostname)
        ? `${parsed.hostname} is not this machine, so no private redis-server is started`
        : findOnPath('redis-server') === null
          ? 'redis-server is not installed (not on PATH), so no private one can be started'
          : null;
  if (whyNotStart !== null) {
    throw new ServiceStartError(
      'TAS_ERR_REDIS_UNAVAILABLE',
      `no Redis answers at ${redactRedisUrl(url)} (${probe.reason}); ${whyNotStart}. ` +
        'The job queue needs Redis: install redis-server (Debian/Ubuntu: `apt install redis-server`, ' +
        'macOS: `brew install redis`) and the service starts a private one when none answers on this machine, ' +
        'or set REDIS_URL to a running Redis (with maxmemory-policy noeviction).',
    );
  }
  return startPrivateRedis(parsed, opts);
}

/**
 * A warning when the server's maxmemory-policy is not noeviction (BullMQ's requirement:
 * with eviction, Redis may drop queue keys under memory pressure, losing jobs), or when
 * the policy cannot be read (CONFIG disabled, as on some managed services); null when
 * it is noeviction.
 */
export async function checkRedisPolicy(client: Pick<Redis, 'call'>): Promise<string | null> {
  let policy: string | null;
  try {
    policy = configValue(await client.call('CONFIG', 'GET', 'maxmemory-policy'), 'maxmemory-policy');
  } catch (err) {
    return `could not read Redis's maxmemory-policy (${errorMessage(err)}); BullMQ needs it to be ${NOEVICTION}`;
  }
  if (policy === NOEVICTION) return null;
  return (
    `Redis's maxmemory-policy is ${policy ?? 'unknown'}, not ${NOEVICTION}: under memory pressure Redis may evict ` +
    `queue keys and jobs would be lost. Set \`maxmemory-policy ${NOEVICTION}\` in redis.conf ` +
    `(or CONFIG SET maxmemory-policy ${NOEVICTION}).`
  );
}

/** CONFIG GET's answer: [name, value] in RESP2, {name: value} (or a Map) in RESP3. */
function configValue(reply: unknown, name: string): string | null {
  if (Array.isArray(reply)) {
    const i = reply.indexOf(name);
    const value: unknown = i >= 0 ? reply[i + 1] : undefined;
    return typeof value === 'string' ? value : null;
  }
  if (reply instanceof Map) {
    const value: unknown = reply.get(name);
    return typeof value === 'string' ? value : null;
  }
  if (typeof reply === 'object' && reply !== null) {
    const value: unknown = (reply as Record<string, unknown>)[name];
    return typeof value === 'string' ? value : null;
  }
  return null;
}

type Probe = { ok: true; policyWarning: string | null } | { ok: false; refused: boolean; reason: string };

/**
 * One connection attempt and a PING, bounded by `timeoutMs`, with no reconnection
 * (ioredis would otherwise retry forever) and every error event consumed (an 'error'
 * without a listener would be an uncaught exception).
 */
async function probeRedis(url: string, timeoutMs: number): Promise<Probe> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    reconnectOnError: () => false,
  });
  let lastError: Error | undefined;
  client.on('error', (err: Error) => {
    lastError = err;
  });
  try {
    await client.connect();
    await client.ping();
    return { ok: true, policyWarning: await checkRedisPolicy(client) };
  } catch (err) {
    // connect() rejects with "Connection is closed."; the cause came as an error event.
    const cause = lastError ?? (err instanceof Error ? err : new Error(String(err)));
    return { ok: false, refused: isAuthError(cause) || isAuthError(err), reason: cause.message };
  } finally {
    client.disconnect();
  }
}

function isAuthError(err: unknown): boolean {
  return err instanceof Error && /NOAUTH|WRONGPASS|NOPERM|invalid (username-)?password/i.test(err.message);
}

async function startPrivateRedis(origin: URL, opts: EnsureRedisOptions): Promise<RedisHandle> {
  const dir = opts.dataDir !== undefined ? join(opts.dataDir, 'redis') : tmpdir();
  mkdirSync(dir, { recursive: true });
  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);
  let lastFailure = '';
  // A free port can be taken between finding it and redis-server binding it: try again.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const server = spawnRedis(port, dir);
    const url = `redis://127.0.0.1:${port}${origin.pathname.length > 1 ? origin.pathname : ''}`;
    const outcome = await waitUntilAnswering(url, server, deadline);
    if (outcome === 'ready') {
      const policyWarning = await probeRedis(url, 1000).then((p) => (p.ok ? p.policyWarning : null));
      return { url, started: true, policyWarning, stop: supervise(server, port, dir, url, opts) };
    }
    await server.stop();
    lastFailure = server.log();
    if (outcome === 'timeout' || !/Address already in use/i.test(lastFailure)) {
      throw new ServiceStartError(
        'TAS_ERR_REDIS_START_FAILED',
        outcome === 'timeout'
          ? `the private redis-server on port ${port} did not answer PING within ${opts.startTimeoutMs ?? 10_000} ms; its output:\n${lastFailure}`
          : `the private redis-server on port ${port} exited at start; its output:\n${lastFailure}`,
      );
    }
  }
  throw new ServiceStartError('TAS_ERR_REDIS_START_FAILED', `redis-server found no free port; its output:\n${lastFailure}`);
}

/** How long to wait between attempts to restart a private server that keeps failing. */
const RESTART_PAUSE_MS = [200, 1000, 5000] as const;

/**
 * Watches a private server and starts it again on the same port whenever it exits while
 * this process still wants it; returns the stop() of the handle.
 */
function supervise(first: RedisProcess, port: number, dir: string, url: string, opts: EnsureRedisOptions): () => Promise<void> {
  const log = opts.log ?? (() => undefined);
  let current = first;
  let stopping = false;
  let restarting: Promise<void> | null = null;
  const watch = (server: RedisProcess) =>
    void server.whenExited.then(() => {
      if (stopping) return;
      log(`redis: the private redis-server on port ${port} exited (${server.exitReason()}); starting it again on the same port`);
      restarting = restart().finally(() => (restarting = null));
    });
  const restart = async () => {
    for (let attempt = 0; !stopping; attempt++) {
      const next = spawnRedis(port, dir);
      current = next;
      const outcome = await waitUntilAnswering(url, next, Date.now() + (opts.startTimeoutMs ?? 10_000));
      if (outcome === 'ready' && !stopping) {
        log(`redis: private redis-server restarted on port ${port} (it starts empty; unfinished jobs are queued again from PostgreSQL)`);
        watch(next);
        return;
      }
      await next.stop();
      if (stopping) return;
      if (attempt === 0) log(`redis: the private redis-server did not come back on port ${port} (${outcome}): ${next.log().split('\n').pop() ?? ''}; trying again`);
      const pause = RESTART_PAUSE_MS[Math.min(attempt, RESTART_PAUSE_MS.length - 1)]!;
      await new Promise((r) => setTimeout(r, pause).unref());
    }
  };
  watch(first);
  return async () => {
    stopping = true;
    await restarting;
    await current.stop();
  };
}

interface RedisProcess {
  readonly child: ChildProcess;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Resolves when it has exited. */
  readonly whenExited: Promise<void>;
  /** The last lines it printed. */
  log(): string;
  /** How it exited ('' while it runs). */
  exitReason(): string;
  stop(): Promise<void>;
}

// redis-server reads nothing from stdin, so the wrapper keeps our pipe on fd 3 and a
// background `cat` waits for its end-of-file, then kills the server. (A background job
// of a non-interactive shell gets /dev/null as stdin unless redirected, hence fd 3.)
// `wait` makes the wrapper exit when the server does, so a failed start is seen at once.
const WRAPPER = 'exec 3<&0; redis-server "$@" </dev/null 3<&- & r=$!; (cat <&3 >/dev/null; kill $r 2>/dev/null) & wait $r';

function spawnRedis(port: number, dir: string): RedisProcess {
  const args = [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--maxmemory-policy', NOEVICTION,
    '--dir', dir,
    '--daemonize', 'no',
  ];
  // Its own process group: a terminal's Ctrl-C reaches only the service, which stops it in order.
  const child = spawn('sh', ['-c', WRAPPER, 'tas-redis', ...args], { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
  const lines: string[] = [];
  const collect = (chunk: Buffer) => {
    lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.trim() !== ''));
    if (lines.length > 40) lines.splice(0, lines.length - 40);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  child.stdin?.on('error', () => undefined); // EPIPE once the wrapper is gone
  let exited = false;
  let reason = '';
  const exit = once(child, 'exit').then((args: unknown[]) => {
    const [code, signal] = args as [number | null, NodeJS.Signals | null];
    // The wrapper's `wait` returns 128 + the signal number of a server killed by a signal.
    reason = signal ? `signal ${signal}` : code !== null && code > 128 ? `killed by signal ${code - 128}` : `exit status ${code}`;
    exited = true;
    child.stdin?.destroy(); // lets the background cat of a server that died on its own finish
  });
  // Belt and braces for a normal exit (the kernel closes the pipe anyway).
  const onExit = () => child.stdin?.destroy();
  process.on('exit', onExit);
  let stopping: Promise<void> | undefined;
  return {
    child,
    exited: () => exited,
    whenExited: exit,
    log: () => lines.join('\n'),
    exitReason: () => reason,
    stop: () =>
      (stopping ??= (async () => {
        process.off('exit', onExit);
        if (!exited) {
          child.stdin?.end();
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
          await exit;
          clearTimeout(timer);
        }
      })()),
  };
}

/** Polls PING (with a growing pause between tries) until it answers, the process exits, or the deadline. */
async function waitUntilAnswering(url: string, server: RedisProcess, deadline: number): Promise<'ready' | 'exited' | 'timeout'> {
  let pause = 10;
  for (;;) {
    if (server.exited()) return 'exited';
    const probe = await probeRedis(url, 500);
    if (probe.ok) return 'ready';
    if (server.exited()) return 'exited';
    if (Date.now() + pause > deadline) return 'timeout';
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, pause))), server.whenExited]);
    clearTimeout(timer);
    pause = Math.min(pause * 2, 200);
  }
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  server.close();
  await once(server, 'close');
  if (port === 0) throw new Error('could not find a free port');
  return port;
}

function parseRedisUrl(url: string): URL {
  try {
    const parsed = new URL(url);
    if (parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') return parsed;
  } catch {
    // reported below
  }
  throw new ServiceStartError('TAS_ERR_REDIS_UNAVAILABLE', `REDIS_URL must be redis://host:port[/db], got ${redactRedisUrl(url)}`);
}

/** Whether `hostname` (from a URL: IPv6 in brackets) is this machine. */
export function isLocalHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  if (host === 'localhost' || host === '' || host === '0.0.0.0' || host === '::' || host === '::1') return true;
  if (/^127\.\d+\.\d+\.\d+$/.test(host)) return true;
  return Object.values(networkInterfaces()).some((list) => list?.some((i) => i.address.toLowerCase() === host));
}

/** The path of `name` on PATH, or null. */
function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

function redactRedisUrl(url: string): string {
  return url.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@]*):[^@]*@/, '$1:***@');
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
