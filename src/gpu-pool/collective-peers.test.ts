import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkerInfoMsg } from './messages.js';
import { collectivePeers } from './pool.js';

function info(collective_port: number): WorkerInfoMsg {
  return { worker_id: 'h:1', device_kind: 'cpu', device_index: 0, device_name: 'cpu', device_memory_mib: 0, backend: 'wasm', backend_package: '', rss_bytes: 0, busy_job_id: '', collective_port };
}

describe('collectivePeers', () => {
  it('dials each worker at the host the pool reached it at, on its Collective port', () => {
    assert.deepEqual(collectivePeers([info(7071), info(40001), info(9)], ['gpu-a.example:7070', '127.0.0.1:50000', '[::1]:7070']), ['gpu-a.example:7071', '127.0.0.1:40001', '[::1]:9']);
  });
  it('falls back to the worker address when it reports no Collective port', () => {
    assert.deepEqual(collectivePeers([info(0), info(7071)], ['a:7070', 'b:7070']), ['a:7070', 'b:7071']);
  });
});
