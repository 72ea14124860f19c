import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { collectiveWindowFromEnv } from './worker-server.js';

describe('TAS_COLLECTIVE_WINDOW_KB', () => {
  it('is read in KiB (0: unbounded; unset: the collective default) and a bad value names the variable', () => {
    assert.equal(collectiveWindowFromEnv({}), undefined);
    assert.equal(collectiveWindowFromEnv({ TAS_COLLECTIVE_WINDOW_KB: ' ' }), undefined);
    assert.equal(collectiveWindowFromEnv({ TAS_COLLECTIVE_WINDOW_KB: '0' }), 0);
    assert.equal(collectiveWindowFromEnv({ TAS_COLLECTIVE_WINDOW_KB: '1024' }), 1 << 20);
    for (const bad of ['-1', '1.5', 'big', '9999999']) assert.throws(() => collectiveWindowFromEnv({ TAS_COLLECTIVE_WINDOW_KB: bad }), /TAS_COLLECTIVE_WINDOW_KB/);
  });
});
