import { readFileSync } from 'node:fs';

/**
 * Whether `pid` is a live process. A process that has exited but is not reaped yet (a
 * zombie: its parent may die first and leave the reaping to init) still answers
 * kill(pid, 0), so on Linux its state is read from /proc.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ...": the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return process.platform !== 'linux';
  }
}
