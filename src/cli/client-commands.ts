/**
 * `tas` as a client of a running service (TAS_URL, TAS_API_KEY: see ./client.ts):
 *
 *   tas submit SPEC.json [--follow] [--name N]   submit a job (prints its id), and follow it
 *   tas jobs [--status S] [--limit N] [--cursor C] [--json]
 *   tas status ID [--json]
 *   tas logs ID [--follow]
 *   tas cancel ID
 *   tas models [--json]
 *   tas infer MODEL --input FILE.json [--version V]
 *
 * Following a job draws a progress bar on a terminal (step/total, epoch, loss, samples/s,
 * ETA) and prints one JSON line per change otherwise. Exit status: 0 done (a followed job
 * succeeded), 1 an API error, or a followed job failed or was cancelled, 2 bad usage,
 * 130 Ctrl-C (which detaches: the job keeps running, and the command says so). API errors
 * print as one line naming the code and the field.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { JobView } from '../service/jobs/job-service.js';
import type { JobMetricsView } from '../service/jobs/metrics-view.js';
import { ClientError, clientConfig, TasClient, type Answer } from './client.js';

export const CLIENT_COMMANDS = new Set(['submit', 'jobs', 'status', 'logs', 'cancel', 'models', 'infer']);

export const CLIENT_USAGE = `  tas submit SPEC.json [--follow] [--name N]   submit a job to the service at TAS_URL (default ${'http://127.0.0.1:8000'})
  tas jobs [--status S[,S]] [--limit N] [--cursor C] [--json]
  tas status ID [--json]
  tas logs ID [--follow]
  tas cancel ID
  tas models [--json]
  tas infer MODEL --input FILE.json [--version V]   FILE: an inference request ({"inputs": [...]}) or rows ([[...], ...])
    (client commands send TAS_API_KEY, else <TAS_DATA_DIR or ./data>/admin.key, as a Bearer key;
     exit 0 ok, 1 API error or a followed job failed/cancelled, 2 bad usage, 130 detached by Ctrl-C)`;

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
/** Seconds a follow's long poll may be held by the server. */
const WAIT_S = 25;

export class ClientUsageError extends Error {}

/** Where a command writes: a terminal gets a progress bar, anything else JSON lines. */
export interface Output {
  readonly tty: boolean;
  readonly columns: number;
  out(text: string): void;
  err(text: string): void;
}

export function processOutput(): Output {
  return {
    tty: Boolean(process.stdout.isTTY),
    columns: process.stdout.columns ?? 100,
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
  };
}

const OPTIONS = {
  follow: { type: 'boolean', short: 'f' },
  name: { type: 'string' },
  status: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  json: { type: 'boolean' },
  input: { type: 'string' },
  version: { type: 'string' },
} as const;

/** Runs one client command; resolves with the exit status. */
export async function runClientCommand(argv: readonly string[], output: Output = processOutput(), client = new TasClient(clientConfig())): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new ClientUsageError((e as Error).message);
  }
  const { values: v, positionals } = parsed;
  const [cmd, arg, ...extra] = positionals;
  if (extra.length > 0) throw new ClientUsageError(`tas ${cmd}: unexpected arguments ${extra.join(' ')}`);
  const need = (what: string): string => {
    if (!arg) throw new ClientUsageError(`tas ${cmd} needs ${what}`);
    return arg;
  };
  const noArg = () => {
    if (arg) throw new ClientUsageError(`tas ${cmd} takes no argument, got ${JSON.stringify(arg)}`);
  };
  try {
    switch (cmd) {
      case 'submit':
        return await submit(client, output, need('a spec file (SPEC.json)'), v.name, Boolean(v.follow));
      case 'jobs':
        noArg();
        return await jobs(client, output, v);
      case 'status':
        return await status(client, output, need('a job id'), Boolean(v.json));
      case 'logs':
        return await logs(client, output, need('a job id'), Boolean(v.follow));
      case 'cancel': {
        const job = (await client.post<JobView>(`/v1/jobs/${encodeURIComponent(need('a job id'))}/cancel`)).body;
        output.out(`job ${job.id} (${job.name}) cancelled\n`);
        return 0;
      }
      case 'models':
        noArg();
        return await models(client, output, Boolean(v.json));
      case 'infer':
        if (!v.input) throw new ClientUsageError('tas infer needs --input FILE.json');
        return await infer(client, output, need('a model name'), v.input, v.version);
      default:
        throw new ClientUsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    if (e instanceof ClientError) {
      output.err(`${e.line()}\n`);
      return 1;
    }
    throw e;
  }
}

async function readJson(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ClientUsageError(`${what} ${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ClientUsageError(`${what} ${path}: not JSON (${(e as Error).message})`);
  }
}

async function submit(client: TasClient, output: Output, specPath: string, name: string | undefined, follow: boolean): Promise<number> {
  const spec = await readJson(specPath, 'spec');
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) throw new ClientUsageError(`spec ${specPath}: must be a JSON object`);
  const body = { ...(spec as Record<string, unknown>), ...(name !== undefined ? { name } : {}) };
  // The same key if this request is retried: the service then returns the job it made.
  const { body: job } = await client.post<JobView>('/v1/jobs', body, { 'idempotency-key': randomUUID() });
  if (!follow) {
    output.out(output.tty ? `submitted ${job.id} (${job.name}): ${job.status}; follow it with: tas logs ${job.id} --follow\n` : `${JSON.stringify({ id: job.id, name: job.name, status: job.status })}\n`);
    return 0;
  }
  if (output.tty) output.err(`submitted ${job.id} (${job.name}); Ctrl-C detaches (the job keeps running)\n`);
  return followJob(client, output, job.id);
}

interface Seen {
  at: number;
  step: number;
}

/** Steps per second over the last minute of updates. */
function rate(history: Seen[]): number | null {
  if (history.length < 2) return null;
  const a = history[0]!;
  const b = history[history.length - 1]!;
  return b.at > a.at && b.step > a.step ? ((b.step - a.step) * 1000) / (b.at - a.at) : null;
}

function fmtDuration(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '–';
  const t = Math.round(s);
  return t < 60 ? `${t}s` : t < 3600 ? `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s` : `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

function fmtRate(x: number | null): string {
  if (x === null) return '–';
  return x >= 10_000 ? `${(x / 1000).toFixed(0)}k` : x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0);
}

export interface FollowLine {
  id: string;
  status: string;
  step: number;
  total_steps: number | null;
  epoch: number;
  loss: number | null;
  accuracy: number | null;
  samples_per_s: number | null;
  eta_s: number | null;
}

/** The progress bar's line, fitted to `columns`. */
export function progressBar(l: FollowLine, columns: number): string {
  const total = l.total_steps;
  const fraction = l.status === 'succeeded' ? 1 : total ? Math.min(1, l.step / total) : 0;
  const width = 24;
  const filled = Math.round(fraction * width);
  const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
  const parts = [
    l.status.padEnd(9),
    bar,
    total ? `${l.step}/${total}` : `step ${l.step}`,
    `epoch ${l.epoch + (l.step > 0 ? 1 : 0)}`,
    `loss ${l.loss === null ? '–' : l.loss.toFixed(4)}`,
    `${fmtRate(l.samples_per_s)} samples/s`,
    `ETA ${l.eta_s === null ? '–' : fmtDuration(l.eta_s)}`,
  ];
  return parts.join('  ').slice(0, Math.max(20, columns - 1));
}

/** Follows a job until it ends (or Ctrl-C); the exit status is its outcome. */
export async function followJob(client: TasClient, output: Output, id: string, signal?: AbortSignal): Promise<number> {
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  if (!signal) process.once('SIGINT', onSigint);
  else signal.addEventListener('abort', onSigint, { once: true });
  const history: Seen[] = [];
  let etag: string | null = null;
  let job: JobView | null = null;
  let speed: number | null = null;
  let speedAt = 0;
  let drawn = false;
  try {
    for (;;) {
      const r: Answer<JobView> = await client.get<JobView>(`/v1/jobs/${encodeURIComponent(id)}${etag ? `?wait=${WAIT_S}` : ''}`, { headers: etag ? { 'if-none-match': etag } : {}, signal: ac.signal });
      if (r.status === 304) continue;
      etag = r.etag;
      const j: JobView = r.body;
      job = j;
      const now = Date.now();
      if (history.length > 0 && j.progress.step < history[history.length - 1]!.step) history.length = 0;
      history.push({ at: now, step: j.progress.step });
      while (history.length > 2 && now - history[0]!.at > 60_000) history.shift();
      if (j.status === 'running' && now - speedAt >= 1000) {
        speedAt = now;
        const m = await client.get<JobMetricsView>(`/v1/jobs/${encodeURIComponent(id)}/metrics?max_points=2`, { signal: ac.signal }).catch(() => null);
        speed = m?.body?.points[m.body.points.length - 1]?.samples_per_sec ?? speed;
      }
      const stepsPerS = rate(history);
      const left = j.progress.total_steps !== null ? j.progress.total_steps - j.progress.step : null;
      const line: FollowLine = {
        id: j.id,
        status: j.status,
        step: j.progress.step,
        total_steps: j.progress.total_steps,
        epoch: j.progress.epoch,
        loss: j.latest.loss,
        accuracy: j.latest.accuracy,
        samples_per_s: j.status === 'running' ? speed : null,
        eta_s: j.status === 'running' && stepsPerS && left !== null ? left / stepsPerS : null,
      };
      if (output.tty) {
        output.out(`\r\x1b[2K${progressBar(line, output.columns)}`);
        drawn = true;
      } else {
        output.out(`${JSON.stringify(line)}\n`);
      }
      if (TERMINAL.has(j.status)) break;
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
    if (drawn) output.out('\n');
    output.err(`detached from job ${id}: it keeps running (tas status ${id}; tas logs ${id} --follow; tas cancel ${id})\n`);
    return 130;
  } finally {
    if (!signal) process.off('SIGINT', onSigint);
  }
  if (drawn) output.out('\n');
  if (!job) throw new Error('unreachable: the follow loop ends with a job');
  const outcome = job.model ? `; model ${job.model.name} version ${job.model.version}` : job.error ? `: ${job.error}` : '';
  if (output.tty) output.err(`job ${job.id} ${job.status}${outcome}\n`);
  else output.out(`${JSON.stringify({ id: job.id, status: job.status, done: true, model: job.model, error: job.error })}\n`);
  return job.status === 'succeeded' ? 0 : 1;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ').trimEnd()).join('\n') + '\n';
}

async function jobs(client: TasClient, output: Output, v: { status?: string; limit?: string; cursor?: string; json?: boolean }): Promise<number> {
  const q = new URLSearchParams();
  if (v.status) q.set('status', v.status);
  if (v.limit) q.set('limit', v.limit);
  if (v.cursor) q.set('cursor', v.cursor);
  const { body } = await client.get<{ jobs: JobView[]; next_cursor: string | null }>(`/v1/jobs${q.size > 0 ? `?${q}` : ''}`);
  if (v.json) {
    output.out(`${JSON.stringify(body)}\n`);
    return 0;
  }
  if (body.jobs.length === 0) {
    output.out(v.status ? `no ${v.status} jobs\n` : 'no jobs\n');
    return 0;
  }
  const rows = [['ID', 'NAME', 'STATUS', 'PROGRESS', 'LOSS', 'WORKERS', 'MODEL', 'CREATED']];
  for (const j of body.jobs) {
    rows.push([
      j.id,
      j.name,
      j.status,
      j.progress.total_steps ? `${j.progress.step}/${j.progress.total_steps}` : String(j.progress.step),
      j.latest.loss === null ? '-' : j.latest.loss.toFixed(4),
      String(j.workers),
      j.model ? `${j.model.name} v${j.model.version}` : '-',
      j.created_at,
    ]);
  }
  output.out(table(rows));
  if (body.next_cursor) output.err(`more: tas jobs${v.status ? ` --status ${v.status}` : ''}${v.limit ? ` --limit ${v.limit}` : ''} --cursor ${body.next_cursor}\n`);
  return 0;
}

async function status(client: TasClient, output: Output, id: string, json: boolean): Promise<number> {
  const { body: j } = await client.get<JobView>(`/v1/jobs/${encodeURIComponent(id)}`);
  if (json || !output.tty) {
    output.out(`${JSON.stringify(j)}\n`);
    return 0;
  }
  const lines = [
    `${j.name}  ${j.id}`,
    `status      ${j.status}${j.error ? ` (${j.error})` : ''}`,
    `progress    ${j.progress.total_steps ? `${j.progress.step}/${j.progress.total_steps}` : j.progress.step} steps, epoch ${j.progress.epoch + (j.progress.step > 0 ? 1 : 0)}`,
    `latest      loss ${j.latest.loss ?? '-'}  accuracy ${j.latest.accuracy ?? '-'}`,
    `workers     ${j.workers}${j.devices.length > 0 ? ` (${j.devices.map((d, r) => `rank ${r}: ${d.worker} ${d.device_kind}${d.backend ? `/${d.backend}` : ''}`).join(', ')})` : ''}`,
    `attempts    ${j.attempts} of up to ${j.max_restarts + 1}`,
    `model       ${j.model ? `${j.model.name} version ${j.model.version}` : '-'}`,
    `created     ${j.created_at}`,
    `updated     ${j.updated_at}`,
    ...(j.waiting_for ? [`waiting     ${j.waiting_for.reason}`] : []),
    'transitions',
    ...j.transitions.map((t) => `  ${t.at}  ${t.to}${t.reason ? `  ${t.reason}` : ''}`),
  ];
  output.out(`${lines.join('\n')}\n`);
  return 0;
}

interface LogPage {
  lines: Array<{ id: string; level: string; message: string; at: string }>;
  next_after: string | null;
}

async function logs(client: TasClient, output: Output, id: string, follow: boolean): Promise<number> {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  let after: string | null = null;
  const drain = async (signal?: AbortSignal) => {
    for (;;) {
      const q: string = new URLSearchParams({ limit: '1000', ...(after ? { after } : {}) }).toString();
      const { body }: { body: LogPage } = await client.get<LogPage>(`${path}/logs?${q}`, signal ? { signal } : {});
      for (const l of body.lines) output.out(`${l.at}  ${l.level.padEnd(5)}  ${l.message}\n`);
      after = body.next_after;
      if (body.lines.length < 1000) return;
    }
  };
  if (!follow) {
    await drain();
    return 0;
  }
  const ac = new AbortController();
  const onSigint = () => ac.abort();
  process.once('SIGINT', onSigint);
  try {
    let etag: string | null = null;
    for (;;) {
      const r: Answer<JobView> = await client.get<JobView>(`${path}${etag ? `?wait=${WAIT_S}` : ''}`, { headers: etag ? { 'if-none-match': etag } : {}, signal: ac.signal });
      if (r.status === 304) continue;
      etag = r.etag;
      // The job's state first, then its log: a job seen finished has written its last line.
      await drain(ac.signal);
      if (TERMINAL.has(r.body.status)) return r.body.status === 'succeeded' ? 0 : 1;
    }
  } catch (e) {
    if (!ac.signal.aborted) throw e;
    output.err(`detached from job ${id}: it keeps running (tas cancel ${id} stops it)\n`);
    return 130;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

interface ModelsPage {
  models: Array<{ name: string; latest_version: number | null; versions: number; serving: { loaded: boolean } }>;
}

async function models(client: TasClient, output: Output, json: boolean): Promise<number> {
  const { body } = await client.get<ModelsPage>('/v1/models');
  if (json) {
    output.out(`${JSON.stringify(body)}\n`);
    return 0;
  }
  if (body.models.length === 0) {
    output.out('no models\n');
    return 0;
  }
  output.out(table([['NAME', 'LATEST', 'VERSIONS', 'SERVED'], ...body.models.map((m) => [m.name, String(m.latest_version ?? '-'), String(m.versions), m.serving.loaded ? 'yes' : 'no'])]));
  return 0;
}

interface ModelMetadata {
  inputs: Array<{ name: string; datatype: string; shape: number[] }>;
}

async function infer(client: TasClient, output: Output, model: string, inputPath: string, version: string | undefined): Promise<number> {
  const input = await readJson(inputPath, 'input');
  const base = `/v2/models/${encodeURIComponent(model)}${version ? `/versions/${encodeURIComponent(version)}` : ''}`;
  let request: unknown = input;
  if (Array.isArray(input)) {
    // Rows: the model's first input, shaped [rows, ...the rest of its shape].
    const meta = (await client.get<ModelMetadata>(base)).body;
    const first = meta.inputs[0];
    if (!first) throw new ClientUsageError(`model ${model} declares no input`);
    const rows = input as unknown[];
    const flat = rows.flat(Infinity) as unknown[];
    const rowShape = first.shape.slice(1).map((d) => (d < 0 ? flat.length / Math.max(1, rows.length) : d));
    request = { inputs: [{ name: first.name, datatype: first.datatype, shape: [rows.length, ...rowShape], data: flat }] };
  } else if (typeof input !== 'object' || input === null || !('inputs' in input)) {
    throw new ClientUsageError(`input ${inputPath}: an inference request ({"inputs": [...]}) or an array of rows`);
  }
  const { body } = await client.post<unknown>(`${base}/infer`, request);
  output.out(`${JSON.stringify(body)}\n`);
  return 0;
}
