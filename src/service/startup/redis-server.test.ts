// ensureRedis against the real Redis on 127.0.0.1:6379 and against private
// redis-servers it starts; checkRedisPolicy against a real server and fake replies.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { isServiceStartError } from './start-errors.js';
import { checkRedisPolicy, ensureRedis, isLocalHost, type RedisHandle } from './redis-server.js';
import { alive } from '../../../test/support/alive.js';
import { freePort } from '../../../test/support/ports.js';

const SHARED_REDIS = 'redis://127.0.0.1:6379';
const CHILD = fileURLToPath(new URL('./testing/private-redis-child.ts', import.meta.url));
const dataDir = mkdtempSync(join(tmpdir(), 'tas-redis-'));
const handles: RedisHandle[] = [];
after(async () => {
  for (const h of handles) await h.stop();
  rmSync(dataDir, { recursive: true, force: true });
});


async function serverPid(url: string): Promise<number> {
  const client = new Redis(url, { maxRetriesPerRequest: 0, retryStrategy: () => null });
  try {
    return Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
}


/** Resolves when the server at `port` closes a connection held open to it (it exited). */
async function connectionClosedBy(port: number): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  // A server killed by a signal resets the connection: 'close' follows the 'error'.
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** A connection held open to the server at `port`, once connected: `closed` resolves when the server closes it (it exited). */
async function heldConnection(port: number): Promise<{ closed: Promise<void> }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  // A server killed by a signal resets the connection: 'close' follows the 'error'.
  return { closed: new Promise((resolve) => socket.once('close', () => resolve())) };
}

describe('ensureRedis', () => {
  test('uses the Redis that answers at the URL; starts nothing', async () => {
    const redis = await ensureRedis(SHARED_REDIS, { startIfMissing: true, dataDir });
    assert.equal(redis.url, SHARED_REDIS);
    assert.equal(redis.started, false);
    await redis.stop();
    const client = new Redis(SHARED_REDIS);
    try {
      assert.equal(await client.ping(), 'PONG', 'stop() of a Redis it did not start leaves it running');
    } finally {
      client.disconnect();
    }
  });

  test('nothing at a local URL: starts a private redis-server that answers, configured for BullMQ; stop() ends it', async () => {
    const port = await freePort();
    const redis = await ensureRedis(`redis://127.0.0.1:${port}/2`, { startIfMissing: true, dataDir });
    handles.push(redis);
    assert.equal(redis.started, true);
    assert.match(redis.url, /^redis:\/\/127\.0\.0\.1:\d+\/2$/);
    assert.notEqual(redis.url, `redis://127.0.0.1:${port}/2`);
    assert.equal(redis.policyWarning, null);

    const client = new Redis(redis.url);
    let pid: number;
    try {
      assert.equal(await client.ping(), 'PONG');
      assert.deepEqual(await client.call('CONFIG', 'GET', 'maxmemory-policy'), ['maxmemory-policy', 'noeviction']);
      assert.deepEqual(await client.call('CONFIG', 'GET', 'save'), ['save', '']);
      assert.deepEqual(await client.call('CONFIG', 'GET', 'appendonly'), ['appendonly', 'no']);
      assert.deepEqual(await client.call('CONFIG', 'GET', 'bind'), ['bind', '127.0.0.1']);
      assert.deepEqual(await client.call('CONFIG', 'GET', 'dir'), ['dir', join(dataDir, 'redis')]);
      pid = await serverPid(redis.url);
      assert.ok(alive(pid));
    } finally {
      client.disconnect();
    }
    const redisPort = Number(new URL(redis.url).port);
    const closed = connectionClosedBy(redisPort);
    await redis.stop();
    await closed;
    assert.equal(alive(pid), false, `redis-server ${pid} still runs after stop()`);
    await assert.rejects(ensureRedis(redis.url, { startIfMissing: false }), (err) => isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'));
  });

  test('a private server that dies is started again on the same port; stop() ends it for good', { timeout: 60_000 }, async () => {
    const lines: string[] = [];
    const redis = await ensureRedis(`redis://127.0.0.1:${await freePort()}`, { dataDir, log: (m) => lines.push(m) });
    handles.push(redis);
    const port = Number(new URL(redis.url).port);
    const first = await serverPid(redis.url);
    // A client that stays connected: ioredis reconnects to the restarted server by itself.
    const client = new Redis(redis.url, { maxRetriesPerRequest: null });
    client.on('error', () => undefined);
    try {
      await client.set('k', 'v');
      const held = await heldConnection(port);
      process.kill(first, 'SIGKILL');
      await held.closed;
      // The same URL answers again (bounded: a restart takes well under a second here).
      let timer: NodeJS.Timeout | undefined;
      const noAnswer = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('no answer within 15 s'), 15_000)));
      assert.equal(await Promise.race([client.ping(), noAnswer]), 'PONG', lines.join('\n'));
      clearTimeout(timer);
      const second = await serverPid(redis.url);
      assert.notEqual(second, first);
      assert.equal(await client.get('k'), null, 'it comes back empty');
      assert.deepEqual(lines.length, 2, lines.join('\n'));
      assert.match(lines[0]!, new RegExp(`private redis-server on port ${port} exited \\(killed by signal 9\\)`));
      assert.match(lines[1]!, new RegExp(`restarted on port ${port}`));

      const last = await heldConnection(port);
      await redis.stop();
      await last.closed;
      const deadline = Date.now() + 5000;
      while (alive(second) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      assert.equal(alive(second), false);
      assert.equal(lines.length, 2, 'no restart after stop()');
      await assert.rejects(ensureRedis(redis.url, { startIfMissing: false }), (err) => isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'));
    } finally {
      client.disconnect();
    }
  });

  test('startIfMissing: false and nothing answers: a typed error saying how to get Redis', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    await assert.rejects(ensureRedis(url, { startIfMissing: false }), (err) => {
      assert.ok(isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'), String(err));
      assert.ok(err.message.startsWith(`no Redis answers at ${url} (connect ECONNREFUSED`), err.message);
      assert.match(err.message, /starting a private redis-server was not asked for/);
      assert.match(err.message, /apt install redis-server/);
      assert.match(err.message, /set REDIS_URL/);
      return true;
    });
  });

  test('a URL of another machine is never replaced by a private server', async () => {
    await assert.rejects(ensureRedis('redis://redis.invalid:6379', { startIfMissing: true, connectTimeoutMs: 500 }), (err) => {
      assert.ok(isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'), String(err));
      assert.match(err.message, /redis\.invalid is not this machine/);
      return true;
    });
  });

  test('without redis-server on PATH: the error says to install it', async () => {
    const url = `redis://127.0.0.1:${await freePort()}`;
    const saved = process.env.PATH;
    process.env.PATH = dataDir; // a directory without redis-server
    try {
      await assert.rejects(ensureRedis(url, { startIfMissing: true }), (err) => {
        assert.ok(isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'), String(err));
        assert.match(err.message, /redis-server is not installed \(not on PATH\)/);
        assert.match(err.message, /apt install redis-server/);
        return true;
      });
    } finally {
      process.env.PATH = saved;
    }
  });

  test('a Redis that refuses our credentials is an error, not a reason to start another', async () => {
    const redis = await ensureRedis(`redis://127.0.0.1:${await freePort()}`, { dataDir });
    handles.push(redis);
    const admin = new Redis(redis.url);
    await admin.call('CONFIG', 'SET', 'requirepass', 's3cret');
    admin.disconnect();
    const port = new URL(redis.url).port;
    for (const url of [`redis://127.0.0.1:${port}`, `redis://:wrong@127.0.0.1:${port}`]) {
      await assert.rejects(ensureRedis(url, { startIfMissing: true }), (err) => {
        assert.ok(isServiceStartError(err, 'TAS_ERR_REDIS_UNAVAILABLE'), String(err));
        assert.match(err.message, /refused the connection: (NOAUTH|WRONGPASS)/);
        assert.doesNotMatch(err.message, /wrong/);
        return true;
      });
    }
    const ok = await ensureRedis(`redis://:s3cret@127.0.0.1:${port}`, { startIfMissing: false });
    assert.equal(ok.started, false);
  });

  test('a private server does not outlive its process, even after SIGKILL', { timeout: 60_000 }, async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, `redis://127.0.0.1:${await freePort()}`], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = once(child, 'exit');
    try {
      const [line] = (await Promise.race([
        once(createInterface({ input: child.stdout }), 'line'),
        exited.then(([code]) => {
          throw new Error(`the child exited (${String(code)}) before starting redis`);
        }),
      ])) as [string];
      const { url, started, pid } = JSON.parse(line) as { url: string; started: boolean; pid: number };
      assert.equal(started, true);
      assert.ok(alive(pid));
      const closed = connectionClosedBy(Number(new URL(url).port));
      child.kill('SIGKILL');
      await closed;
      await exited;
      // Its sockets close inside the kernel's exit path, a moment before the process is
      // gone: wait for that (bounded), so only a server that keeps running fails.
      const deadline = Date.now() + 5000;
      while (alive(pid) && Date.now() < deadline) await new Promise((r) => setImmediate(r));
      assert.equal(alive(pid), false, `redis-server ${pid} outlived its process`);
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });
});

describe('checkRedisPolicy', () => {
  test('null for noeviction; a warning naming the policy otherwise', async () => {
    const redis = await ensureRedis(`redis://127.0.0.1:${await freePort()}`, { dataDir });
    handles.push(redis);
    const client = new Redis(redis.url);
    try {
      assert.equal(await checkRedisPolicy(client), null);
      await client.call('CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
      const warning = await checkRedisPolicy(client);
      assert.match(warning ?? '', /maxmemory-policy is allkeys-lru, not noeviction/);
      assert.match(warning ?? '', /jobs would be lost/);
      const again = await ensureRedis(redis.url, { startIfMissing: false });
      assert.equal(again.policyWarning, warning, 'ensureRedis reports it too');
    } finally {
      client.disconnect();
    }
  });

  test('RESP3 replies, and a server that does not allow CONFIG', async () => {
    assert.equal(await checkRedisPolicy({ call: async () => new Map([['maxmemory-policy', 'noeviction']]) }), null);
    assert.match((await checkRedisPolicy({ call: async () => ({ 'maxmemory-policy': 'volatile-lru' }) })) ?? '', /is volatile-lru/);
    const denied = await checkRedisPolicy({
      call: async () => {
        throw new Error("ERR unknown command 'CONFIG'");
      },
    });
    assert.match(denied ?? '', /could not read Redis's maxmemory-policy \(ERR unknown command 'CONFIG'\)/);
  });
});

test('isLocalHost', () => {
  for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '[::1]', '::1', '0.0.0.0']) assert.equal(isLocalHost(h), true, h);
  for (const h of ['redis', 'redis.invalid', '10.255.1.1', '[2001:db8::1]']) assert.equal(isLocalHost(h), false, h);
});
