/**
 * Which host this process runs on, to choose a Unix socket over TCP between two ranks:
 * the host name and the kernel's boot id (Linux), so that two machines, or one machine
 * before and after a reboot, differ. Two containers on one host differ by host name (their
 * temp directories, where the sockets are, differ too).
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

let cached: string | undefined;

export function hostId(): string {
  if (cached === undefined) {
    let boot = '';
    try {
      boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      /* not Linux: the host name alone */
    }
    cached = boot ? `${hostname()}/${boot}` : hostname();
  }
  return cached;
}
