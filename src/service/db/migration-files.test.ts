// Migration files and checksums, compared with Prisma's own checksum rules.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { checksumMatches, MIGRATIONS_DIR, readMigrations, renderChecksum } from './migration-files.js';

test("renderChecksum is Prisma's (sha256, zero-padded hex)", () => {
  // The value of prisma-engines' own test for render_checksum("hello").
  assert.equal(renderChecksum('hello'), '2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
});

test('checksums match across line endings, and in the old unpadded format', () => {
  const unix = 'ab\ncd\nef\ngh\rab\n';
  const windows = 'ab\r\ncd\r\nef\r\ngh\rab\r\n';
  for (const a of [unix, windows]) {
    for (const b of [unix, windows]) assert.equal(checksumMatches(a, renderChecksum(b)), true);
  }
  assert.equal(checksumMatches('abc', renderChecksum('abcd')), false);
  assert.equal(checksumMatches('abc\n', renderChecksum('abc')), false);
  // prisma-engines#1887: each byte without its leading zero.
  const digest = createHash('sha256').update('select 1;').digest();
  const old = Array.from(digest, (b) => b.toString(16)).join('');
  assert.notEqual(old.length, 64);
  assert.equal(checksumMatches('select 1;', old), true);
  assert.equal(checksumMatches('select 2;', old), false);
});

test('the repository migrations are read in order, with their file checksums', () => {
  const migrations = readMigrations();
  assert.ok(migrations.length >= 1);
  assert.deepEqual(
    migrations.map((m) => m.name),
    [...migrations.map((m) => m.name)].sort(),
  );
  assert.match(migrations[0]!.name, /^\d{14}_init$/);
  for (const m of migrations) {
    const bytes = readFileSync(join(MIGRATIONS_DIR, m.name, 'migration.sql'));
    assert.equal(m.checksum, createHash('sha256').update(bytes).digest('hex'));
  }
  assert.match(readFileSync(join(MIGRATIONS_DIR, 'migration_lock.toml'), 'utf8'), /provider = "postgresql"/);
});
