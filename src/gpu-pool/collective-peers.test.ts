import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkerInfoMsg } from './messages.js';
import { collectivePeers } from './pool.js';

function info(collective_port: number, host_id = '', collective_unix_path = '', host_cores = 0): WorkerInfoMsg {
  return { worker_id: 'h:1', device_kind: 'cpu', device_index: 0, device_name: 'cpu', device_memory_mib: 0, backend: 'wasm', backend_package: '', rss_bytes: 0, busy_job_id: '', collective_port, collective_unix_path, host_id, host_cores, memory_limit_bytes: 0, needs_restart: false };
}

describe('collectivePeers', () => {
  it('dials a worker of another host at the host the pool reached it at, on its Collective port', () => {
    const infos = [info(7071, 'a', '/tmp/a.sock'), info(40001, 'b', '/tmp/b.sock'), info(9, 'c')];
    assert.deepEqual(collectivePeers(0, infos, ['gpu-a.example:7070', '10.0.0.2:50000', '[::1]:7070']), ['unix:/tmp/a.sock', '10.0.0.2:40001', '[::1]:9']);
  });
  it('dials a worker of the same host through its Unix socket, per rank', () => {
    const infos = [info(7071, 'h1', '/tmp/w0.sock'), info(7072, 'h1', '/tmp/w1.sock'), info(7073, 'h2', '/tmp/w2.sock')];
    const addrs = ['h1:7070', 'h1:7080', 'h2:7070'];
    assert.deepEqual(collectivePeers(1, infos, addrs), ['unix:/tmp/w0.sock', 'unix:/tmp/w1.sock', 'h2:7073']);
    assert.deepEqual(collectivePeers(2, infos, addrs), ['h1:7071', 'h1:7072', 'unix:/tmp/w2.sock']);
  });
  it("same host: Unix sockets only when the host's ranks outnumber its cores (CPU-bound), else loopback TCP", () => {
    const two = [info(7071, 'h', '/tmp/w0.sock', 2), info(7072, 'h', '/tmp/w1.sock', 2)];
    assert.deepEqual(collectivePeers(0, two, ['127.0.0.1:7070', '127.0.0.1:7080']), ['127.0.0.1:7071', '127.0.0.1:7072']);
    const four = [0, 1, 2, 3].map((r) => info(7071 + r, 'h', `/tmp/w${r}.sock`, 2));
    assert.deepEqual(
      collectivePeers(3, four, ['127.0.0.1:1', '127.0.0.1:2', '127.0.0.1:3', '127.0.0.1:4']),
      four.map((w) => `unix:${w.collective_unix_path}`),
    );
    // Two ranks on a 2-core host and one elsewhere: the host's two are not over its cores.
    const mixed = [info(7071, 'h', '/tmp/w0.sock', 2), info(7072, 'h', '/tmp/w1.sock', 2), info(7073, 'g', '/tmp/w2.sock', 2)];
    assert.deepEqual(collectivePeers(0, mixed, ['h:7070', 'h:7080', 'g:7070']), ['h:7071', 'h:7072', 'g:7073']);
  });
  it('uses TCP when host ids are unknown, and the worker address when it reports no Collective port', () => {
    assert.deepEqual(collectivePeers(0, [info(0), info(7071, '', '/tmp/x.sock')], ['a:7070', 'b:7070']), ['a:7070', 'b:7071']);
  });
});
