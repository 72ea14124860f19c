import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WORKER_MALLOC_ENV, WORKER_NODE_FLAGS, workerEnv, workerNodeFlags } from './worker-env.js';

describe('worker process settings', () => {
  it('adds the malloc settings and huge pages to the environment, keeping everything else', () => {
    const env = workerEnv({ PATH: '/bin', CUDA_VISIBLE_DEVICES: '1' });
    assert.equal(env.PATH, '/bin');
    assert.equal(env.CUDA_VISIBLE_DEVICES, '1');
    for (const [k, v] of Object.entries(WORKER_MALLOC_ENV)) assert.equal(env[k], v);
    assert.equal(env.GLIBC_TUNABLES, 'glibc.malloc.hugetlb=1');
  });

  it("an operator's own values win; other glibc tunables are kept", () => {
    const env = workerEnv({ MALLOC_TRIM_THRESHOLD_: '0', GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' });
    assert.equal(env.MALLOC_TRIM_THRESHOLD_, '0');
    assert.equal(env.GLIBC_TUNABLES, 'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1');
    assert.equal(workerEnv({ GLIBC_TUNABLES: 'glibc.malloc.hugetlb=0' }).GLIBC_TUNABLES, 'glibc.malloc.hugetlb=0');
  });

  it('single-threaded GC only when the workers leave no core free', () => {
    assert.deepEqual(workerNodeFlags(2, 8), [...WORKER_NODE_FLAGS]);
    assert.deepEqual(workerNodeFlags(2, 2), [...WORKER_NODE_FLAGS, '--single-threaded-gc']);
    assert.deepEqual(workerNodeFlags(4, 2), [...WORKER_NODE_FLAGS, '--single-threaded-gc']);
  });
});
