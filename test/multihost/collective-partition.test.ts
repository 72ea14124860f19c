// A partition between two hosts of a collective: three ranks, each on a host of its own
// (network namespaces), all-reducing in a loop; hosts 0 and 1 lose each other while both
// still reach host 2. Every rank fails within the collective's timeout (and a margin),
// naming the peer: ranks 0 and 1 each other, rank 2 the pair.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { makeNetwork, netnsUnavailable, type Network } from '../netns/hosts.js';

const noNetns = netnsUnavailable();
const CHILD = fileURLToPath(new URL('./rank-loop.ts', import.meta.url));
const TIMEOUT_MS = 2000;

interface Msg {
  type: 'port' | 'running' | 'failed';
  port?: number;
  at?: number;
  message?: string;
  failedRank?: number | null;
}

describe('a partition between two ranks of a collective across hosts', { skip: noNetns ?? false }, () => {
  let net: Network;
  const children: ChildProcess[] = [];
  before(async () => {
    net = await makeNetwork(3, { rateMbit: 1000 });
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await net?.close();
  });

  test('every rank fails fast, naming the peer it lost', async () => {
    const inbox = net.hosts.map(() => [] as Msg[]);
    const waiters = net.hosts.map(() => null as ((m: Msg) => void) | null);
    const next = (r: number) => new Promise<Msg>((resolve) => (inbox[r]!.length ? resolve(inbox[r]!.shift()!) : (waiters[r] = resolve)));
    for (const h of net.hosts) {
      const child = h.spawn(process.execPath, ['--import', 'tsx', CHILD, '3', String(h.index), String(TIMEOUT_MS)], {
        env: { ...process.env, GOLDEN_HOST: h.ip },
        serialization: 'advanced',
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      children.push(child);
      child.on('message', (m: Msg) => {
        const w = waiters[h.index];
        if (w) {
          waiters[h.index] = null;
          w(m);
        } else inbox[h.index]!.push(m);
      });
    }
    const ports = await Promise.all(net.hosts.map((h) => next(h.index)));
    const peers = ports.map((m, r) => `${net.hosts[r]!.ip}:${m.port}`);
    children.forEach((c) => c.send({ peers }));
    assert.deepEqual((await Promise.all(net.hosts.map((h) => next(h.index)))).map((m) => m.type), ['running', 'running', 'running']);

    const t0 = Date.now();
    await net.partition(0, 1);
    const failures = await Promise.all(net.hosts.map((h) => next(h.index)));
    assert.deepEqual(failures.map((f) => f.type), ['failed', 'failed', 'failed']);
    for (const [r, f] of failures.entries()) assert.ok(f.at! - t0 < TIMEOUT_MS + 3000, `rank ${r} failed ${f.at! - t0} ms after the partition: ${f.message}`);
    // Ranks 0 and 1 each name the other: as the peer it lost, or (told by rank 2, which
    // reaches both) as the one that lost it, with its address.
    assert.match(failures[0]!.message!, new RegExp(`rank 0 got no heartbeat from rank 1 \\(${peers[1]}\\)|rank 1 got no heartbeat from rank 0`));
    assert.match(failures[1]!.message!, new RegExp(`rank 1 got no heartbeat from rank 0 \\(${peers[0]}\\)|rank 0 got no heartbeat from rank 1`));
    assert.match(failures[2]!.message!, /rank [01] got no heartbeat from rank [01] .*\(reported by rank [01]\)/);
    assert.ok([0, 1].includes(failures[2]!.failedRank!), failures[2]!.message);
    await net.heal(0, 1);
  });
});
