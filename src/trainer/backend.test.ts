import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backendInfo, initBackend, parseBackendRequest } from './backend.js';
import { TrainerError } from './errors.js';

describe('backend selection', () => {
  it('parses TAS_BACKEND and rejects unknown values naming the variable', () => {
    assert.equal(parseBackendRequest(undefined), 'auto');
    assert.equal(parseBackendRequest(' WASM '), 'wasm');
    assert.throws(() => parseBackendRequest('cuda'), (e: unknown) => e instanceof TrainerError && e.field === 'TAS_BACKEND');
  });

  it('auto picks the first backend that loads, logs it, and explains the skipped ones', async () => {
    const logs: string[] = [];
    const info = await initBackend('auto', (m) => logs.push(m));
    assert.equal(backendInfo(), info);
    assert.match(logs[0], new RegExp(`tensor backend: ${info.name}`));
    if (info.name !== 'tensorflow') {
      // Without libtensorflow the native packages are skipped with a reason each.
      assert.ok(info.reasons.some((r) => r.startsWith('@tensorflow/tfjs-node:')), info.reasons.join('; '));
    }
  });
});
