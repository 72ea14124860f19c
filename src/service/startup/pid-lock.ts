/**
 * A lock file holding the owner's process id, so two service processes never open the
 * same embedded database directory (PGlite has no postmaster.pid of its own: two
 * processes writing one data directory corrupt it).
 *
 * A lock whose process is gone (a crash, kill -9) is stale and taken over. A lock with
 * this process's own pid that this process does not hold is stale too: in a container
 * the service is pid 1 after every restart. Liveness is `kill(pid, 0)` on this machine,
 * so the directory must not be shared between machines (a network volume mounted by two
 * hosts is not protected). Taking over a stale lock has a small window in which two
 * processes starting at the same instant could both succeed; the lock guards against
 * operator mistakes (a second `tas serve` on the same --data-dir), not against that.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { ServiceStartError } from './start-errors.js';

const held = new Set<string>();

export interface PidLock {
  readonly path: string;
  /** Removes the lock file (once; later calls do nothing). */
  release(): void;
}

/** Takes `path` for this process or throws TAS_ERR_DATA_DIR_LOCKED naming the holder. */
export function acquirePidLock(path: string, what: string): PidLock {
  if (held.has(path)) {
    throw new ServiceStartError('TAS_ERR_DATA_DIR_LOCKED', `${what} is already open in this process (lock ${path})`);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(path, `${process.pid}\n`, { flag: 'wx' });
      held.add(path);
      let released = false;
      return {
        path,
        release() {
          if (released) return;
          released = true;
          held.delete(path);
          rmSync(path, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = readOwner(path);
    if (owner !== null && owner !== process.pid && isAlive(owner)) {
      throw new ServiceStartError(
        'TAS_ERR_DATA_DIR_LOCKED',
        `${what} is in use by process ${owner} (lock ${path}); stop that process or use another data directory`,
      );
    }
    rmSync(path, { force: true }); // stale: its process is gone
  }
  throw new ServiceStartError('TAS_ERR_DATA_DIR_LOCKED', `could not take the lock ${path} for ${what}`);
}

function readOwner(path: string): number | null {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
