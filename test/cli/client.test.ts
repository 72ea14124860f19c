// `tas` as a client of a running service: the real command (bin/tas.js) as a child
// process against `tas serve` on real PostgreSQL and Redis. Submit and follow, errors as
// one line naming the field, exit codes, Ctrl-C detaching, cancel, the key it sends.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, test } from 'node:test';
import { clientConfig, TasClient } from '../../src/cli/client.js';
import { followJob, progressBar, type Output } from '../../src/cli/client-commands.js';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { ROOT, runTas, TAS, type TasRun } from './run-tas.js';
import { getJson, postJson, serviceEnvironment, startServe, waitFor, type JobStatusView, type Served } from '../service/harness.js';

const unavailable = await databaseUnavailable();
const QUICKSTART = JSON.parse(await readFile(new URL('../../examples/quickstart.json', import.meta.url), 'utf8')) as Record<string, unknown>;

type Run = TasRun;
const tas = runTas;

describe('tas client commands', { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  let dir: string;
  let run: (args: string[]) => Promise<Run>;
  let jobId: string;

  before(async () => {
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2 });
    dir = await mkdtemp(join(tmpdir(), 'tas-cli-'));
    // No key anywhere: TAS_DATA_DIR points at an empty directory.
    run = (args) => tas(args, { TAS_URL: served.url, TAS_DATA_DIR: dir });
  });
  after(async () => {
    await served?.stop();
    await env?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('submit --follow prints JSON lines as the job trains and exits 0 when it succeeds', async () => {
    const r = await run(['submit', 'examples/quickstart.json', '--follow', '--name', 'cli-quickstart']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; status: string; step: number; total_steps: number | null; done?: boolean; model?: { name: string; version: number } });
    const last = lines[lines.length - 1]!;
    assert.equal(last.done, true);
    assert.equal(last.status, 'succeeded');
    // The model is named after the job: --name names both.
    assert.equal(last.model?.name, 'cli-quickstart');
    const progress = lines.filter((l) => !l.done);
    assert.ok(progress.length >= 2, r.stdout);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]!.step >= progress[i - 1]!.step);
    assert.equal(progress[progress.length - 1]!.step, 570);
    jobId = last.id;
    const job = await getJson<JobStatusView & { name: string }>(`${served.url}/v1/jobs/${jobId}`);
    assert.equal(job.body.name, 'cli-quickstart');
  });

  test('jobs, status, logs, models, infer', async () => {
    const jobs = await run(['jobs', '--status', 'succeeded']);
    assert.equal(jobs.code, 0, jobs.stderr);
    assert.match(jobs.stdout, /^ID\s+NAME\s+STATUS/);
    assert.match(jobs.stdout, new RegExp(`${jobId}\\s+cli-quickstart\\s+succeeded\\s+570/570`));
    const status = await run(['status', jobId]);
    assert.equal(status.code, 0);
    assert.equal((JSON.parse(status.stdout) as { status: string }).status, 'succeeded');
    const logs = await run(['logs', jobId]);
    assert.equal(logs.code, 0);
    assert.match(logs.stdout, /published model cli-quickstart version 1/);
    const models = await run(['models']);
    assert.match(models.stdout, /cli-quickstart\s+1\s+1\s+yes/);
    await writeFile(join(dir, 'rows.json'), JSON.stringify([[0.5, -1.2], [1.0, 0.3]]));
    const infer = await run(['infer', 'cli-quickstart', '--input', join(dir, 'rows.json')]);
    assert.equal(infer.code, 0, infer.stderr);
    const answer = JSON.parse(infer.stdout) as { outputs: Array<{ name: string; shape: number[] }> };
    assert.deepEqual(answer.outputs[0]!.shape, [2, 3]);
  });

  test('API errors print as one line naming the code and the field; bad usage exits 2', async () => {
    await writeFile(join(dir, 'bad.json'), JSON.stringify({ ...QUICKSTART, optimizer: { type: 'sgd', lr: -1 } }));
    const bad = await run(['submit', join(dir, 'bad.json')]);
    assert.equal(bad.code, 1);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /^error TAS_ERR_INVALID_SPEC \(optimizer\.lr\): optimizer\.lr: must be >= 0/);
    const missing = await run(['status', '00000000-0000-4000-8000-000000000000']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error TAS_ERR_NOT_FOUND/);
    assert.equal((await run(['submit'])).code, 2);
    assert.equal((await run(['jobs', '--bogus'])).code, 2);
    assert.equal((await run(['submit', join(dir, 'nope.json')])).code, 2);
    const down = await tas(['jobs'], { TAS_URL: 'http://127.0.0.1:9', TAS_DATA_DIR: dir });
    assert.equal(down.code, 1);
    assert.match(down.stderr, /^error: cannot reach tas at http:\/\/127\.0\.0\.1:9/);
  });

  test('Ctrl-C detaches without cancelling and says so; cancel stops the job, and a second cancel is an error', async () => {
    await writeFile(join(dir, 'long.json'), JSON.stringify({ ...QUICKSTART, name: 'cli-long', epochs: 3000 }));
    const child = spawn(process.execPath, [TAS, 'submit', join(dir, 'long.json'), '--follow'], { cwd: ROOT, env: { ...process.env, TAS_URL: served.url, TAS_DATA_DIR: dir, TAS_API_KEY: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    let id = '';
    // Wait (bounded by the test runner's timeout) for a line showing it running.
    for await (const line of createInterface({ input: child.stdout })) {
      const l = JSON.parse(line) as { id: string; status: string; step: number };
      id = l.id;
      if (l.status === 'running' && l.step > 0) break;
    }
    child.kill('SIGINT');
    const [code] = (await once(child, 'close')) as [number];
    assert.equal(code, 130);
    assert.match(stderr, new RegExp(`detached from job ${id}: it keeps running`));
    assert.equal((await getJson<JobStatusView>(`${served.url}/v1/jobs/${id}`)).body.status, 'running');

    const cancel = await run(['cancel', id]);
    assert.equal(cancel.code, 0, cancel.stderr);
    assert.match(cancel.stdout, new RegExp(`job ${id} \\(cli-long\\) cancelled`));
    assert.equal((await waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, (j) => j.status === 'cancelled')).status, 'cancelled');
    const again = await run(['cancel', id]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error TAS_ERR_CONFLICT/);
    // Following a cancelled job ends at once, with status 1.
    const follow = await run(['logs', id, '--follow']);
    assert.equal(follow.code, 1);
    assert.match(follow.stdout, /cancel requested/);
  });

  test('on a terminal: a progress bar redrawn in place', async () => {
    const written: string[] = [];
    const tty: Output = { tty: true, columns: 120, out: (t) => written.push(t), err: () => undefined };
    const submitted = await postJson<JobStatusView>(`${served.url}/v1/jobs`, { ...QUICKSTART, epochs: 3 });
    const code = await followJob(new TasClient({ url: served.url, key: null, keySource: null }), tty, submitted.body.id);
    assert.equal(code, 0);
    const frames = written.filter((w) => w.startsWith('\r\x1b[2K'));
    assert.ok(frames.length >= 1);
    assert.match(frames[frames.length - 1]!, /succeeded\s+\[#{24}\]\s+57\/57\s+epoch 3\s+loss \d\.\d{4}/);
    assert.match(progressBar({ id: 'x', status: 'running', step: 50, total_steps: 100, epoch: 4, loss: 0.25, accuracy: 0.9, samples_per_s: 12_345, eta_s: 75 }, 200), /^running\s+\[#{12}\.{12}\]\s+50\/100\s+epoch 5\s+loss 0\.2500\s+12k samples\/s\s+ETA 1m15s$/);
  });
});

describe('the key the client sends', () => {
  test('TAS_API_KEY, else <data>/admin.key; a 401 says which key was refused', async () => {
    const seen: Array<string | undefined> = [];
    const server = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(401, { 'content-type': 'application/json', 'www-authenticate': 'Bearer' });
      res.end(JSON.stringify({ error: { code: 'TAS_ERR_UNAUTHENTICATED', message: 'unknown API key' } }));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const data = await mkdtemp(join(tmpdir(), 'tas-cli-key-'));
    try {
      const withEnv = await tas(['jobs'], { TAS_URL: url, TAS_API_KEY: 'from-env', TAS_DATA_DIR: data });
      assert.equal(withEnv.code, 1);
      assert.match(withEnv.stderr, /^error TAS_ERR_UNAUTHENTICATED: unknown API key \(the key from TAS_API_KEY was refused\)/);
      await writeFile(join(data, 'admin.key'), 'from-file\n', { mode: 0o600 });
      const withFile = await tas(['jobs'], { TAS_URL: url, TAS_DATA_DIR: data });
      assert.match(withFile.stderr, /the key from .*admin\.key was refused/);
      assert.deepEqual(seen, ['Bearer from-env', 'Bearer from-file']);
      assert.deepEqual(clientConfig({ TAS_DATA_DIR: join(data, 'none') }), { url: 'http://127.0.0.1:8000', key: null, keySource: null });
    } finally {
      server.close();
      await rm(data, { recursive: true, force: true });
    }
  });
});
