/**
 * Which host this process runs on, to choose a Unix socket over TCP between two ranks:
 * the host name, the kernel's boot id and the network namespace (Linux), so that two
 * machines, one machine before and after a reboot, and two network namespaces of one
 * machine differ. Ranks in different network namespaces talk TCP even when they could
 * reach each other's socket files: their traffic then crosses the links between them,
 * as it would between containers or between the hosts of a test (test/netns/).
 */
import { readFileSync, readlinkSync } from 'node:fs';
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
    let netns = '';
    try {
      netns = readlinkSync('/proc/self/ns/net'); // net:[4026531840]
    } catch {
      /* not Linux */
    }
    cached = [hostname(), boot, netns].filter(Boolean).join('/');
  }
  return cached;
}
