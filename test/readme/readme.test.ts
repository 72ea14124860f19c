// The README's commands, as written: the curl commands of "The quickstart over REST" and
// of "Your own data" are read out of the README and run by bash against a started
// service (only the address changes), and the PyTorch snippet of "The artifact in
// PyTorch" is run by Debian's python3 on the artifact they downloaded. grpcurl cannot be
// installed here; its two lines are reported as not run.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { databaseUnavailable } from '../../src/service/db/testing/fresh-schema.js';
import { serviceEnvironment, startServe, TERMINAL, waitFor, type JobStatusView, type Served } from '../service/harness.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README = await readFile(join(ROOT, 'README.md'), 'utf8');
const PYTHON = '/usr/bin/python3';
const unavailable = await databaseUnavailable();
const noTorch = await new Promise<string | null>((resolve) =>
  execFile(PYTHON, ['-c', 'import torch'], (e) => resolve(e ? `${PYTHON} cannot import torch (apt-get install python3-torch): ${e.message}` : null)),
);

/** The indented code blocks of the README section that starts with `heading`, up to the next heading. */
function section(heading: string): string[] {
  const start = README.indexOf(`\n${heading}\n`);
  assert.ok(start >= 0, `README has no section ${heading}`);
  const rest = README.slice(start + heading.length + 2);
  const end = rest.search(/\n#{1,3} /);
  return (end >= 0 ? rest.slice(0, end) : rest).split('\n');
}

/** Shell commands of the code lines (continuations joined, comments and blank lines dropped). */
function commands(lines: string[]): string[] {
  const out: string[] = [];
  let current = '';
  for (const raw of lines) {
    if (!raw.startsWith('    ')) continue;
    const line = raw.slice(4);
    if (current === '' && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    current += current ? `\n${line}` : line;
    if (!line.endsWith('\\')) {
      out.push(current);
      current = '';
    }
  }
  return out;
}

/** The lines of the first indented block after the README text `marker`. */
function blockAfter(marker: string): string[] {
  const at = README.indexOf(marker);
  assert.ok(at >= 0, `README has no ${JSON.stringify(marker)}`);
  const block: string[] = [];
  for (const line of README.slice(at).split('\n').slice(1)) {
    if (line.startsWith('    ') || (line === '' && block.length > 0)) block.push(line);
    else if (block.length > 0) break;
  }
  while (block.length > 0 && block[block.length - 1] === '') block.pop();
  return block;
}

interface Ran {
  readonly command: string;
  readonly status: number;
  readonly output: string;
}

/**
 * Runs `cmds` in one bash, in `dir`, with the README's address replaced by the service's:
 * curl fails on an HTTP error (--fail-with-body), and each command's status and output
 * are recorded.
 */
function runAll(cmds: string[], dir: string, url: string): Promise<Ran[]> {
  const address = url.replace(/^http:\/\//, '');
  const script = [
    'set -u -o pipefail',
    'curl() { command curl --fail-with-body --max-time 30 "$@"; }',
    ...cmds.map((c, i) => `{ ${c.replaceAll('localhost:8000', address)}\n} > out.${i} 2>&1; echo $? > status.${i}`),
  ].join('\n');
  return new Promise((resolve, reject) =>
    execFile('bash', ['-c', script], { cwd: dir, timeout: 120_000 }, async (e) => {
      if (e) return reject(e);
      resolve(await Promise.all(cmds.map(async (command, i) => ({ command, status: Number(await readFile(join(dir, `status.${i}`), 'utf8')), output: await readFile(join(dir, `out.${i}`), 'utf8') }))));
    }),
  );
}

const ok = (r: Ran) => assert.equal(r.status, 0, `README command failed (exit ${r.status}):\n${r.command}\n${r.output}`);

describe("the README's commands, as written", { skip: unavailable ?? false }, () => {
  let env: Awaited<ReturnType<typeof serviceEnvironment>>;
  let served: Served;
  let dir: string;
  /** The served logits of the README's inference request. */
  let inferred: number[] | undefined;
  before(async () => {
    env = await serviceEnvironment();
    served = await startServe(env, { workers: 2 });
    dir = await mkdtemp(join(tmpdir(), 'tas-readme-'));
    // The README's commands run in the repository's folder (they read examples/).
    await symlink(join(ROOT, 'examples'), join(dir, 'examples'));
  });
  after(async () => {
    await served?.stop();
    await env?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the quickstart over REST, the inference calls, the artifact in PyTorch, an upload of your own data', async (t) => {
    const quickstart = commands(section('## The quickstart over REST'));
    const skipped = quickstart.filter((c) => c.startsWith('grpcurl'));
    assert.equal(skipped.length, 2);
    t.diagnostic(`not run (grpcurl cannot be installed here): ${skipped.map((c) => c.split('\n')[0]).join(' | ')}`);
    const runnable = quickstart.filter((c) => !c.startsWith('grpcurl'));
    // Submitted and followed while it runs; the rest once it succeeded (as a reader would).
    const split = runnable.findIndex((c) => c.includes('/metrics'));
    assert.ok(split > 0);
    const first = await runAll(runnable.slice(0, split), dir, served.url);
    first.forEach(ok);
    assert.match(first[0]!.output, /"status":"queued"/);
    const jobId = JSON.parse(first[0]!.output) as { id: string };
    // The conditional GET answered: 200 with the new status, or 304 when nothing changed for 10 s.
    assert.match(first[first.length - 1]!.output, /^HTTP\/1\.1 (200|304)/);
    const job = await waitFor<JobStatusView>(`${served.url}/v1/jobs/${jobId.id}`, (j) => TERMINAL.has(j.status));
    assert.equal(job.status, 'succeeded', job.error ?? '');

    // The rest, with the variable assignments of the first part again (JOB is the same job).
    const assignments = runnable.slice(0, split).filter((c) => /^[A-Z]+=/.test(c) && !c.startsWith('ETAG='));
    const second = await runAll([...assignments, ...runnable.slice(split)], dir, served.url);
    for (const r of second) {
      // Cancelling the job once it ended is a conflict, as the README says.
      if (r.command.includes('/cancel')) {
        assert.equal(r.status, 22, r.output);
        assert.match(r.output, /"code":"TAS_ERR_CONFLICT"/);
        continue;
      }
      ok(r);
    }
    assert.ok((await stat(join(dir, 'model.safetensors'))).size > 0);
    assert.ok((await stat(join(dir, 'model.onnx'))).size > 0);
    const infer = second.filter((r) => r.command.includes('/infer'));
    assert.equal(infer.length, 2);
    const logits = infer.map((r) => (JSON.parse(r.output) as { outputs: Array<{ shape: number[]; data: number[] }> }).outputs[0]!);
    assert.deepEqual(logits[0]!.shape, [2, 3]);
    assert.deepEqual(logits[1], logits[0], 'the request from examples/quickstart-infer.json is the one written out');

    inferred = logits[0]!.data;

    // Your own data: the upload, with a CSV of the reader's (here a small one).
    await writeFile(join(dir, 'iris.csv'), 'sepal_length,sepal_width,species\n5.1,3.5,setosa\n7.0,3.2,versicolor\n6.3,3.3,virginica\n4.9,3.0,setosa\n');
    const upload = commands(blockAfter('Your own data:'));
    assert.equal(upload.length, 1);
    const [uploaded] = await runAll(upload, dir, served.url);
    ok(uploaded!);
    assert.match(JSON.parse(uploaded!.output).path, /^datasets\/[0-9a-f-]+\/data\.csv$/);
  });

  test('the PyTorch snippet loads the artifact and gives the served logits', { skip: noTorch ?? false }, async () => {
    assert.ok(inferred, 'needs the downloaded artifact and the inference answer of the test above');
    const code = blockAfter('### The artifact in PyTorch').map((l) => l.slice(4)).join('\n');
    const out = await new Promise<string>((resolve, reject) =>
      execFile(PYTHON, ['-c', code], { cwd: dir, timeout: 120_000 }, (e, stdout, stderr) => (e ? reject(new Error(`${e.message}\n${stderr}`)) : resolve(stdout))),
    );
    const torch = (JSON.parse(out.trim()) as number[][]).flat();
    assert.equal(torch.length, inferred!.length);
    for (let i = 0; i < torch.length; i++) assert.ok(Math.abs(torch[i]! - inferred![i]!) <= 1e-4 * Math.max(1, Math.abs(inferred![i]!)), `logit ${i}: PyTorch ${torch[i]}, served ${inferred![i]}`);
  });
});
