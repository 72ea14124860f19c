import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hashSecret, issueKey, parseKey, secretMatches, tokensEqual } from './api-keys.js';

test('a key is tas_<id>_<secret>; only the salted hash of the secret is kept, and it checks', () => {
  const k = issueKey();
  const parts = parseKey(k.key);
  assert.ok(parts, k.key);
  assert.equal(parts.id, k.id);
  assert.ok(!k.hash.includes(parts.secret) && k.hash !== hashSecret(parts.secret, 'other salt'));
  assert.ok(secretMatches(parts.secret, k.salt, k.hash));
  assert.ok(!secretMatches(`${parts.secret.slice(0, -1)}x`, k.salt, k.hash));
  assert.notEqual(issueKey().key, k.key);
});

test('anything not of the form is no key', () => {
  for (const bad of ['', 'tas_', 'tas_0123456789ab_short', `tas_0123456789AB_${'a'.repeat(32)}`, `Bearer tas_0123456789ab_${'a'.repeat(32)}`, `tas_0123456789ab_${'a'.repeat(32)}x`]) {
    assert.equal(parseKey(bad), null, bad);
  }
  assert.ok(parseKey(`tas_0123456789ab_${'a'.repeat(32)}`));
});

test('tokens compare equal only when equal', () => {
  assert.ok(tokensEqual('metrics-token-123456', 'metrics-token-123456'));
  assert.ok(!tokensEqual('metrics-token-123456', 'metrics-token-123457'));
  assert.ok(!tokensEqual('short', 'metrics-token-123456'));
});
