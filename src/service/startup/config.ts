/**
 * The service's configuration from environment variables: read once at start-up,
 * validated as a whole, and handed to the parts as one plain object. Pure (the
 * environment and the working directory are parameters), so every rule is unit-tested.
 *
 * A bad value stops start-up with a ConfigError naming the variable, the rule and the
 * value (`TAS_HTTP_PORT: must be an integer from 0 to 65535, got 'abc'`) instead of the
 * service failing later somewhere far from the cause. An empty variable counts as unset
 * (`FOO= tas serve` is how a shell unsets one for a command).
 */
import { resolve } from 'node:path';
import { isValidSchemaName } from '../db/url.js';

export interface ServiceConfig {
  /** REST API port (TAS_HTTP_PORT). @defaultValue 8000 */
  readonly httpPort: number;
  /** gRPC (Open Inference Protocol) port (TAS_GRPC_PORT). @defaultValue 8001 */
  readonly grpcPort: number;
  /** Address the API listens on (TAS_HOST; the container image sets 0.0.0.0). @defaultValue '127.0.0.1' */
  readonly host: string;
  /** API keys required (TAS_AUTH=on|off). @defaultValue on, unless every listener is on loopback */
  readonly auth: 'on' | 'off';
  /** An admin key kept outside the database (TAS_ADMIN_TOKEN); null: one is made on the first start with auth on. */
  readonly adminToken: string | null;
  /** A key that may read /metrics and nothing else (TAS_METRICS_TOKEN). @defaultValue null */
  readonly metricsToken: string | null;
  /** Origins that may call the API from a browser (TAS_CORS_ORIGINS, comma-separated). @defaultValue [] (CORS off) */
  readonly corsOrigins: readonly string[];
  /** Absolute data directory: datasets, checkpoints, artifacts, the embedded database (TAS_DATA_DIR). @defaultValue ./data */
  readonly dataDir: string;
  /** PostgreSQL URL (DATABASE_URL); null = the embedded database under dataDir. */
  readonly databaseUrl: string | null;
  /** Redis for the job queue (REDIS_URL). @defaultValue 'redis://127.0.0.1:6379' */
  readonly redisUrl: string;
  /** Local worker processes to start (TAS_WORKERS); null = one per GPU, else 2. */
  readonly workers: number | null;
  /** Remote workers' `host:port` addresses (TAS_WORKERS_AT, comma-separated). @defaultValue [] */
  readonly workersAt: readonly string[];
  /** Largest dataset upload in bytes (TAS_MAX_UPLOAD_BYTES; `512MiB` style units accepted). @defaultValue 512 MiB */
  readonly maxUploadBytes: number;
  /** A rank silent this long fails the collective (TAS_COLLECTIVE_TIMEOUT_MS). @defaultValue 5000 */
  readonly collectiveTimeoutMs: number;
  /** BullMQ queue name (TAS_QUEUE). @defaultValue 'tas-jobs' */
  readonly queueName: string;
  /** How often the worker registry probes each worker (TAS_PROBE_INTERVAL_MS). @defaultValue 2000 */
  readonly probeIntervalMs: number;
  /** BullMQ lock duration of a running job; a scheduler silent this long loses it (TAS_LOCK_DURATION_MS). @defaultValue 30000 */
  readonly lockDurationMs: number;
  /** Inference threads (TAS_INFER_THREADS): batches run at once, off the event loop. @defaultValue 1 */
  readonly inferThreads: number;
  /** Most rows one inference request may carry (TAS_INFER_MAX_ROWS). @defaultValue 1024 */
  readonly inferMaxRows: number;
  /** Largest inference request, gRPC message or REST body (TAS_INFER_MAX_MESSAGE_BYTES). @defaultValue 32 MiB */
  readonly inferMaxMessageBytes: number;
}

export const CONFIG_DEFAULTS = {
  httpPort: 8000,
  grpcPort: 8001,
  host: '127.0.0.1',
  dataDir: './data',
  redisUrl: 'redis://127.0.0.1:6379',
  maxUploadBytes: 512 * 1024 * 1024,
  collectiveTimeoutMs: 5000,
  queueName: 'tas-jobs',
  probeIntervalMs: 2000,
  lockDurationMs: 30_000,
  inferThreads: 1,
  inferMaxRows: 1024,
  inferMaxMessageBytes: 32 * 1024 * 1024,
} as const;

/** A configuration variable with a bad value: `${variable}: ${reason}, got '${value}'`. */
export class ConfigError extends Error {
  readonly code = 'TAS_ERR_CONFIG';
  readonly variable: string;
  readonly reason: string;
  constructor(variable: string, reason: string, value: string) {
    super(`${variable}: ${reason}, got '${value}'`);
    this.name = 'ConfigError';
    this.variable = variable;
    this.reason = reason;
  }
}

type Env = Readonly<Record<string, string | undefined>>;

export function loadConfig(env: Env = process.env, cwd: string = process.cwd()): ServiceConfig {
  const httpPort = port(env, 'TAS_HTTP_PORT', CONFIG_DEFAULTS.httpPort);
  const grpcPort = port(env, 'TAS_GRPC_PORT', CONFIG_DEFAULTS.grpcPort);
  if (httpPort !== 0 && httpPort === grpcPort) {
    throw new ConfigError('TAS_GRPC_PORT', `must differ from TAS_HTTP_PORT (${httpPort})`, String(grpcPort));
  }
  const listenHost = host(env);
  return {
    httpPort,
    grpcPort,
    host: listenHost,
    auth: authMode(env, listenHost),
    adminToken: token(env, 'TAS_ADMIN_TOKEN'),
    metricsToken: token(env, 'TAS_METRICS_TOKEN'),
    corsOrigins: corsOrigins(env),
    dataDir: resolve(cwd, get(env, 'TAS_DATA_DIR') ?? CONFIG_DEFAULTS.dataDir),
    databaseUrl: databaseUrl(env),
    redisUrl: redisUrl(env),
    workers: optionalInteger(env, 'TAS_WORKERS', 1, 1024),
    workersAt: workersAt(env),
    maxUploadBytes: bytes(env, 'TAS_MAX_UPLOAD_BYTES', CONFIG_DEFAULTS.maxUploadBytes),
    collectiveTimeoutMs: optionalInteger(env, 'TAS_COLLECTIVE_TIMEOUT_MS', 1, 3_600_000) ?? CONFIG_DEFAULTS.collectiveTimeoutMs,
    queueName: queueName(env),
    probeIntervalMs: optionalInteger(env, 'TAS_PROBE_INTERVAL_MS', 10, 3_600_000) ?? CONFIG_DEFAULTS.probeIntervalMs,
    lockDurationMs: optionalInteger(env, 'TAS_LOCK_DURATION_MS', 1000, 86_400_000) ?? CONFIG_DEFAULTS.lockDurationMs,
    inferThreads: optionalInteger(env, 'TAS_INFER_THREADS', 1, 256) ?? CONFIG_DEFAULTS.inferThreads,
    inferMaxRows: optionalInteger(env, 'TAS_INFER_MAX_ROWS', 1, 1_000_000) ?? CONFIG_DEFAULTS.inferMaxRows,
    inferMaxMessageBytes: bytes(env, 'TAS_INFER_MAX_MESSAGE_BYTES', CONFIG_DEFAULTS.inferMaxMessageBytes),
  };
}

/** The variable's value, trimmed; undefined when unset or blank. */
function get(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

const DIGITS = /^\d+$/;

function optionalInteger(env: Env, name: string, min: number, max: number): number | null {
  const raw = get(env, name);
  if (raw === undefined) return null;
  const n = DIGITS.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be an integer from ${min} to ${max}`, raw);
  }
  return n;
}

function port(env: Env, name: string, fallback: number): number {
  return optionalInteger(env, name, 0, 65535) ?? fallback;
}

function host(env: Env): string {
  const raw = get(env, 'TAS_HOST');
  if (raw === undefined) return CONFIG_DEFAULTS.host;
  if (/[\s/]/.test(raw)) throw new ConfigError('TAS_HOST', 'must be a host name or an IP address', raw);
  return raw;
}

/** Whether `host` is a loopback address (only this machine reaches it). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function authMode(env: Env, listenHost: string): 'on' | 'off' {
  const raw = get(env, 'TAS_AUTH');
  if (raw === undefined) return isLoopback(listenHost) ? 'off' : 'on';
  const v = raw.toLowerCase();
  if (v !== 'on' && v !== 'off') throw new ConfigError('TAS_AUTH', 'must be on or off', raw);
  return v;
}

function token(env: Env, name: string): string | null {
  const raw = get(env, name);
  if (raw === undefined) return null;
  if (raw.length < 16 || /\s/.test(raw)) throw new ConfigError(name, 'must be at least 16 characters without spaces', '***');
  return raw;
}

function corsOrigins(env: Env): string[] {
  const raw = get(env, 'TAS_CORS_ORIGINS');
  if (raw === undefined) return [];
  const origins = raw.split(',').map((o) => o.trim()).filter((o) => o !== '');
  for (const o of origins) {
    let url: URL | null = null;
    try {
      url = new URL(o);
    } catch {
      url = null;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== o) {
      throw new ConfigError('TAS_CORS_ORIGINS', `'${o}' is not an origin (scheme://host[:port], nothing after)`, raw);
    }
  }
  return origins;
}

function databaseUrl(env: Env): string | null {
  const raw = get(env, 'DATABASE_URL');
  if (raw === undefined) return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('DATABASE_URL', 'must be a URL postgresql://user[:password]@host:port/db[?schema=name]', redact(raw));
  }
  if (url.protocol !== 'postgresql:' && url.protocol !== 'postgres:') {
    throw new ConfigError('DATABASE_URL', 'must start with postgresql:// (unset it for the embedded database)', redact(raw));
  }
  const schema = url.searchParams.get('schema');
  if (schema !== null && !isValidSchemaName(schema)) {
    throw new ConfigError('DATABASE_URL', `schema=${schema} must be a plain identifier (letters, digits, _)`, redact(raw));
  }
  return raw;
}

function redisUrl(env: Env): string {
  const raw = get(env, 'REDIS_URL');
  if (raw === undefined) return CONFIG_DEFAULTS.redisUrl;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError('REDIS_URL', 'must be a URL redis://[user:password@]host:port[/db]', redact(raw));
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError('REDIS_URL', 'must start with redis:// or rediss://', redact(raw));
  }
  if (url.hostname === '') throw new ConfigError('REDIS_URL', 'must name a host', redact(raw));
  return raw;
}

// host:port with a DNS name, an IPv4 address or a bracketed IPv6 address.
const ADDRESS = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$/;

function workersAt(env: Env): string[] {
  const raw = get(env, 'TAS_WORKERS_AT');
  if (raw === undefined) return [];
  const addresses = raw
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  const seen = new Set<string>();
  for (const address of addresses) {
    const match = ADDRESS.exec(address);
    const portNumber = match ? Number(match[1]) : 0;
    if (!match || portNumber < 1 || portNumber > 65535) {
      throw new ConfigError('TAS_WORKERS_AT', `'${address}' is not host:port (a port from 1 to 65535)`, raw);
    }
    if (seen.has(address)) throw new ConfigError('TAS_WORKERS_AT', `'${address}' is listed twice`, raw);
    seen.add(address);
  }
  return addresses;
}

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
};

function bytes(env: Env, name: string, fallback: number): number {
  const raw = get(env, name);
  if (raw === undefined) return fallback;
  const match = /^(\d+)\s*([A-Za-z]*)$/.exec(raw);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  const n = match && unit !== undefined ? Number(match[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new ConfigError(name, 'must be a positive number of bytes (optionally with KiB, MiB, GiB, kB, MB or GB)', raw);
  }
  return n;
}

// BullMQ keys are `bull:<name>:...`: no ':' in the name.
const QUEUE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$/;

function queueName(env: Env): string {
  const raw = get(env, 'TAS_QUEUE');
  if (raw === undefined) return CONFIG_DEFAULTS.queueName;
  if (!QUEUE_NAME.test(raw)) {
    throw new ConfigError('TAS_QUEUE', 'must be 1 to 100 letters, digits, _, . or - (no :), starting with a letter or digit', raw);
  }
  return raw;
}

/** The value with a URL password replaced by *** (messages end up in logs); otherwise as given. */
function redact(raw: string): string {
  return raw.replace(/^([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@]*):[^@]*@/, '$1:***@');
}
