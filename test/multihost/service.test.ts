// The service across hosts: four Linux network namespaces on a bridge, each link limited
// to 1 Gbit/s (tc tbf). The service runs in the first (`tas serve --no-workers` with its
// embedded database and a private Redis, as `npm start` runs it), listening on its
// address with keys on; a worker joins by URL from each of the other three and shares no
// filesystem with the service. Jobs run with their ranks on different hosts and survive:
// a host's link cut mid-job, a partition between two workers (every rank fails fast,
// naming its peer), a worker host killed, and the API restarted, each time ending with
// the bits of the uninterrupted run. Every namespace and link goes at the end, even when
// a test fails (and a later run removes what a killed run left).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decodeSafetensors, type SafetensorsTensor } from '../../src/trainer/artifact/safetensors.js';
import { makeNetwork, netnsUnavailable, type Network } from '../netns/hosts.js';
import { startServe, waitFor, TERMINAL, type JobStatusView, type Served } from '../service/harness.js';
import { startJoinedWorker, type JoinedWorker } from '../service/joined-worker.js';
import { spiralsCsv } from '../service/spirals-csv.js';
import { assertSameTensors } from '../faults/fault-kit.js';

const noNetns = netnsUnavailable();
const ADMIN = 'admin-token-multihost-0123456789';
const WORKER_TOKEN = 'worker-token-multihost-0123456789';
const auth = { authorization: `Bearer ${ADMIN}` };
/** A rank silent this long fails the collective. */
const COLLECTIVE_TIMEOUT_MS = 3000;
const LEAVE_AFTER_MS = 4000;

describe('the service across hosts (network namespaces)', { skip: noNetns ?? false }, () => {
  let net: Network;
  let served: Served;
  let dataDir: string;
  let cacheRoot: string;
  /** The worker on host i (1..3), by host index. */
  const workers = new Map<number, JoinedWorker>();
  let data: Record<string, unknown>;
  let reference: Map<string, SafetensorsTensor>;

  const serve = () =>
    startServe(
      { databaseUrl: '', redisUrl: 'redis://127.0.0.1:6399', queue: '', dataDir },
      {
        noWorkers: true,
        spawn: (c, a, o) => net.hosts[0]!.spawn(c, a, o),
        env: {
          TAS_HOST: net.hosts[0]!.ip,
          // Fixed, as a real service's: the workers' --join URL outlives a restart.
          TAS_HTTP_PORT: '8000',
          TAS_GRPC_PORT: '8001',
          TAS_ADMIN_TOKEN: ADMIN,
          TAS_WORKER_TOKEN: WORKER_TOKEN,
          TAS_WORKER_HEARTBEAT_MS: '500',
          TAS_WORKER_LEAVE_AFTER_MS: String(LEAVE_AFTER_MS),
          TAS_COLLECTIVE_TIMEOUT_MS: String(COLLECTIVE_TIMEOUT_MS),
        },
      },
    );
  const joinFrom = async (i: number) => {
    const h = net.hosts[i]!;
    const w = await startJoinedWorker(served.url, { advertise: h.ip, cacheDir: join(cacheRoot, `host-${i}`), env: { TAS_WORKER_TOKEN: WORKER_TOKEN }, spawn: (c, a, o) => h.spawn(c, a, o) });
    workers.set(i, w);
    return w;
  };
  const hostOf = (address: string) => net.hosts.findIndex((h) => address.startsWith(`${h.ip}:`));
  const call = async (method: string, path: string, body?: unknown, raw?: { data: string; type: string }) => {
    const r = await fetch(`${served.url}${path}`, {
      method,
      headers: { ...auth, ...(body !== undefined ? { 'content-type': 'application/json' } : raw ? { 'content-type': raw.type } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : raw ? { body: raw.data } : {}),
    });
    return { status: r.status, body: (await r.json()) as any };
  };
  const spec = (name: string) => ({
    name,
    model: { input_shape: [2], layers: [{ type: 'linear', out: 32, bias: false }, { type: 'batchnorm' }, { type: 'relu' }, { type: 'linear', out: 2 }] },
    data,
    optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 },
    epochs: 40,
    workers: 2,
    batch_size: 40,
    seed: 5,
    checkpoint: { every_steps: 5 },
  });
  const submit = async (name: string) => {
    const r = await call('POST', '/v1/jobs', spec(name));
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  };
  const job = (id: string, pred: (j: JobStatusView) => boolean) => waitFor<JobStatusView>(`${served.url}/v1/jobs/${id}`, pred, 180_000, 5, auth.authorization);
  const runningAt = (id: string, step: number) => job(id, (j) => j.status === 'running' && j.progress.step >= step);
  /** Waits until the online workers' ids (all of the pool's with `all`) satisfy `pred`. */
  const poolIds = (pred: (ids: string[]) => boolean, all = false) =>
    waitFor<{ workers: Array<{ id: string; state: string }> }>(`${served.url}/v1/pool`, (p) => pred(p.workers.filter((w) => all || w.state !== 'offline').map((w) => w.id)), 60_000, 2, auth.authorization);
  const artifactOf = async (j: JobStatusView) => {
    const r = await fetch(`${served.url}/v1/models/${j.model!.name}/versions/${j.model!.version}/artifact`, { headers: auth });
    assert.equal(r.status, 200);
    return decodeSafetensors(new Uint8Array(await r.arrayBuffer())).tensors;
  };
  /** The job succeeded once, with the uninterrupted run's bits. */
  const assertSameResult = async (id: string) => {
    const done = await job(id, (j) => TERMINAL.has(j.status));
    assert.equal(done.status, 'succeeded', `${JSON.stringify(done.attempt_history)}\n${served.log.slice(-40).join('\n')}`);
    assertSameTensors(await artifactOf(done), reference);
    return done;
  };

  before(async () => {
    net = await makeNetwork(4, { rateMbit: 1000, gateway: true });
    dataDir = await mkdtemp(join(tmpdir(), 'tas-multihost-'));
    cacheRoot = await mkdtemp(join(tmpdir(), 'tas-multihost-cache-'));
    served = await serve();
    for (const i of [1, 2, 3]) await joinFrom(i);
    await poolIds((ids) => ids.length === 3);
    const up = await call('POST', '/v1/datasets?name=spirals&format=csv&label_column=y', undefined, { data: spiralsCsv(400), type: 'text/csv' });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    data = up.body.data;
  });

  after(async () => {
    for (const w of workers.values()) await w.stop('SIGKILL');
    await served?.stop();
    await net?.close();
    await rm(dataDir, { recursive: true, force: true });
    await rm(cacheRoot, { recursive: true, force: true });
  });

  test('a job trains with its ranks on two hosts, its dataset fetched over the links', async () => {
    const id = await submit('multihost-reference');
    const done = await job(id, (j) => TERMINAL.has(j.status));
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
    const hosts = done.attempt_history[0]!.workers.map(hostOf);
    assert.equal(new Set(hosts).size, 2, `two hosts: ${done.attempt_history[0]!.workers.join(', ')}`);
    assert.ok(hosts.every((h) => h >= 1), 'on the workers joined from other hosts');
    for (const h of hosts) assert.ok(workers.get(h)!.log.some((l) => /inputs from the service: 1 fetched/.test(l)), workers.get(h)!.log.join('\n'));
    reference = await artifactOf(done);
  });

  test("a host's link cut mid-job: the job moves to the other workers and ends with the uninterrupted result; the host rejoins once its link is back", async () => {
    const id = await submit('multihost-link-cut');
    const running = await runningAt(id, 60);
    const cut = hostOf(running.attempt_history.at(-1)!.workers[1]!);
    await net.cut(cut);
    const done = await assertSameResult(id);
    assert.ok(done.attempts >= 2, JSON.stringify(done.attempt_history));
    assert.ok(!done.attempt_history.at(-1)!.workers.some((w) => hostOf(w) === cut), 'the last attempt ran without the cut host');
    await net.restore(cut);
    // Its heartbeats reach the service again: back in the pool (it may have been let go meanwhile).
    await poolIds((ids) => ids.some((a) => hostOf(a) === cut) && ids.length === 3);
  });

  test('a partition between two workers: every rank fails fast naming its peer; the job ends with the uninterrupted result', async () => {
    const id = await submit('multihost-partition');
    const running = await runningAt(id, 60);
    const [a, b] = running.attempt_history.at(-1)!.workers.map(hostOf) as [number, number];
    const logFrom = new Map([a, b].map((h) => [h, workers.get(h)!.log.length]));
    const t0 = Date.now();
    await net.partition(a, b);
    try {
      const failed = await job(id, (j) => j.attempt_history[0]?.status === 'failed' || TERMINAL.has(j.status));
      assert.equal(failed.attempt_history[0]!.status, 'failed', JSON.stringify(failed.attempt_history));
      assert.ok(Date.now() - t0 < COLLECTIVE_TIMEOUT_MS + 6000, `the attempt failed ${Date.now() - t0} ms after the partition`);
      // The attempt's error names the rank that lost its peer, and the peer, with their addresses.
      const peers = running.attempt_history.at(-1)!.workers;
      assert.match(failed.attempt_history[0]!.error!, new RegExp(`rank ([01]) \\(worker (${peers[0]}|${peers[1]})\\): rank \\1 got no heartbeat from rank [01] \\(10\\.77\\.`));
      // A rank's worker logs its failure (the other may be stopped by the scheduler first).
      const lines = [a, b].flatMap((h) => workers.get(h)!.log.slice(logFrom.get(h)));
      assert.ok(lines.some((l) => /rank [01] \(generation 1\) failed: .*got no heartbeat from rank [01]/.test(l)), lines.join('\n'));
    } finally {
      await net.heal(a, b);
    }
    await assertSameResult(id);
    await poolIds((ids) => ids.length === 3);
  });

  test('a worker host killed mid-job: the job resumes on the others from the checkpoint the service holds; the dead worker leaves the pool', async () => {
    const id = await submit('multihost-host-killed');
    const running = await runningAt(id, 60);
    const dead = hostOf(running.attempt_history.at(-1)!.workers[0]!);
    const w = workers.get(dead)!;
    w.process.kill('SIGKILL');
    await once(w.process, 'exit');
    await net.cut(dead);
    const done = await assertSameResult(id);
    const version = await call('GET', `/v1/models/${done.model!.name}/versions/${done.model!.version}`);
    assert.ok(version.body.metadata.resumed_from_step > 0, JSON.stringify(version.body.metadata));
    await poolIds((ids) => !ids.some((x) => hostOf(x) === dead), true);
    assert.ok(served.log.some((l) => l.includes(`worker ${w.address} left the pool: no heartbeat`)), served.log.slice(-30).join('\n'));
    // The host comes back with a fresh worker.
    await net.restore(dead);
    await joinFrom(dead);
    await poolIds((ids) => ids.length === 3);
  });

  test('the API restarted mid-job: the workers stay in the pool, the job resumes and ends with the uninterrupted result', async () => {
    const id = await submit('multihost-api-restart');
    await runningAt(id, 60);
    await served.stop();
    served = await serve();
    await poolIds((ids) => ids.length === 3);
    const done = await assertSameResult(id);
    assert.ok(done.attempts >= 2, JSON.stringify(done.attempt_history));
    assert.ok([...workers.values()].every((w) => w.process.exitCode === null), 'no worker stopped');
  });

  test('every namespace and link the test made goes', async () => {
    const mine = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').filter((l) => l.startsWith(net.hosts[0]!.ns.replace(/-h0$/, '')));
    assert.equal(mine().length, 5, 'four hosts and the switch');
    for (const w of workers.values()) await w.stop('SIGKILL');
    await served.stop();
    await net.close();
    assert.deepEqual(mine(), []);
    assert.doesNotMatch(execFileSync('ip', ['-br', 'addr'], { encoding: 'utf8' }), new RegExp(net.gatewayIp!.replace(/\./g, '\\.')));
  });
});
