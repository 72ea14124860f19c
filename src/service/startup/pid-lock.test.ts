// The data directory lock: held, refused, stale (dead owner, our own pid from an earlier
// life of this container, garbage) and released.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { isServiceStartError } from './start-errors.js';
import { acquirePidLock } from './pid-lock.js';

const dir = mkdtempSync(join(tmpdir(), 'tas-pidlock-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** The pid of a process that has exited (reaped), so nothing runs under it now. */
function deadPid(): number {
  const res = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(res.stdout);
}

test('held once: a second acquire in this process is refused; release frees it', () => {
  const path = join(dir, 'a.lock');
  const lock = acquirePidLock(path, 'thing A');
  assert.equal(readFileSync(path, 'utf8').trim(), String(process.pid));
  assert.throws(
    () => acquirePidLock(path, 'thing A'),
    (err) => isServiceStartError(err, 'TAS_ERR_DATA_DIR_LOCKED') && /thing A is already open in this process/.test(err.message),
  );
  lock.release();
  lock.release();
  assert.equal(existsSync(path), false);
  acquirePidLock(path, 'thing A').release();
});

test('a lock of a live process is refused and names it', () => {
  const path = join(dir, 'b.lock');
  writeFileSync(path, `${process.ppid}\n`);
  assert.throws(
    () => acquirePidLock(path, 'thing B'),
    (err) => isServiceStartError(err, 'TAS_ERR_DATA_DIR_LOCKED') && err.message.includes(`in use by process ${process.ppid}`),
  );
  assert.equal(readFileSync(path, 'utf8').trim(), String(process.ppid), 'left alone');
});

test('stale locks are taken over: a dead owner, our own pid not held here, garbage', () => {
  for (const content of [`${deadPid()}\n`, `${process.pid}\n`, 'not a pid']) {
    const path = join(dir, 'c.lock');
    writeFileSync(path, content);
    const lock = acquirePidLock(path, 'thing C');
    assert.equal(readFileSync(path, 'utf8').trim(), String(process.pid), JSON.stringify(content));
    lock.release();
  }
});
