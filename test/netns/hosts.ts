/**
 * Hosts made of Linux network namespaces, for tests and benchmarks of what crosses a
 * network: N namespaces (`<prefix>-h0` ...), each with one interface `eth0` at
 * 10.77.<net>.<i+1>/24, joined by veth pairs to a bridge that lives in a namespace of its
 * own (`<prefix>-sw`), so nothing here touches the machine's own network and nothing has
 * a route out. Links can be rate-limited (tc tbf, both directions), cut and restored, and
 * two hosts partitioned from each other (blackhole routes) while both still reach the rest.
 *
 * Every namespace carries this process's pid in its name; `close()` deletes them all (and
 * with them every link), and a later run deletes what a killed run left behind.
 * Needs root (CAP_NET_ADMIN) and iproute2's `ip` and `tc`.
 */
import { execFile, execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface Host {
  /** The namespace's name. */
  readonly ns: string;
  /** Its address on the bridge. */
  readonly ip: string;
  readonly index: number;
  /** Start a process in this host's namespace. */
  spawn(command: string, args: readonly string[], options?: SpawnOptions): ChildProcess;
}

export interface Network {
  readonly hosts: readonly Host[];
  /** Each link's rate in Mbit/s (both directions); null: unlimited. */
  readonly rateMbit: number | null;
  /** Take host `i`'s link down (its processes stay up, unreachable). */
  cut(i: number): Promise<void>;
  restore(i: number): Promise<void>;
  /** Hosts `a` and `b` can no longer reach each other; both still reach every other host. */
  partition(a: number, b: number): Promise<void>;
  heal(a: number, b: number): Promise<void>;
  /** Delete every namespace (and link) this network made. */
  close(): Promise<void>;
}

/** Why namespaces cannot be made here (not root, no iproute2); null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'network namespaces need root (CAP_NET_ADMIN)';
  for (const tool of ['ip', 'tc']) {
    try {
      execFileSync(tool, ['-V'], { stdio: 'ignore' });
    } catch {
      return `iproute2's ${tool} is not installed (apt-get install iproute2)`;
    }
  }
  return null;
}

const PREFIX = 'tasnet';
let counter = 0;

/** Delete namespaces of earlier runs whose process is gone. */
export async function sweepStale(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list']);
  const gone: string[] = [];
  for (const line of stdout.split('\n')) {
    const name = line.split(' ')[0]!;
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    const pid = Number(m[1]);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch {
      alive = false;
    }
    if (alive) continue;
    await run('ip', ['netns', 'del', name]).catch(() => undefined);
    gone.push(name);
  }
  return gone;
}

async function ip(...args: string[]): Promise<void> {
  await run('ip', args);
}

/** Make `count` hosts on one bridge; `rateMbit` limits every link both ways. */
export async function makeNetwork(count: number, options: { rateMbit?: number } = {}): Promise<Network> {
  await sweepStale();
  const id = `${PREFIX}${process.pid}-${counter++}`;
  const net = 77 + (counter % 100);
  const sw = `${id}-sw`;
  const made: string[] = [];
  const hosts: Host[] = [];
  const rate = options.rateMbit ?? null;
  const close = async () => {
    for (const ns of made.reverse()) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
    made.length = 0;
  };
  // Namespaces go even when the process is interrupted.
  const onExit = () => {
    for (const ns of made) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', onExit);
  try {
    await ip('netns', 'add', sw);
    made.push(sw);
    await ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
    await ip('-n', sw, 'link', 'set', 'br0', 'up');
    for (let i = 0; i < count; i++) {
      const ns = `${id}-h${i}`;
      await ip('netns', 'add', ns);
      made.push(ns);
      const hostEnd = `${id.slice(-6)}h${i}`;
      const swEnd = `${id.slice(-6)}s${i}`;
      await ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', swEnd);
      await ip('link', 'set', hostEnd, 'netns', ns);
      await ip('link', 'set', swEnd, 'netns', sw);
      await ip('-n', ns, 'link', 'set', hostEnd, 'name', 'eth0');
      await ip('-n', sw, 'link', 'set', swEnd, 'master', 'br0');
      await ip('-n', sw, 'link', 'set', swEnd, 'up');
      await ip('-n', ns, 'link', 'set', 'lo', 'up');
      await ip('-n', ns, 'link', 'set', 'eth0', 'up');
      const addr = `10.${net}.0.${i + 1}`;
      await ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
      if (rate !== null) {
        // Both directions: the host's egress, and the switch port's egress (the host's ingress).
        const tbf = ['qdisc', 'add', 'dev', 'X', 'root', 'tbf', 'rate', `${rate}mbit`, 'burst', `${Math.max(64, Math.round(rate / 4))}kb`, 'latency', '50ms'];
        await run('ip', ['netns', 'exec', ns, 'tc', ...tbf.map((a) => (a === 'X' ? 'eth0' : a))]);
        await run('ip', ['netns', 'exec', sw, 'tc', ...tbf.map((a) => (a === 'X' ? swEnd : a))]);
      }
      hosts.push({
        ns,
        ip: addr,
        index: i,
        spawn: (command, args, opts = {}) => spawn('ip', ['netns', 'exec', ns, command, ...args], opts),
      });
    }
  } catch (e) {
    await close();
    process.off('exit', onExit);
    throw e;
  }
  const swEndOf = (i: number) => `${id.slice(-6)}s${i}`;
  return {
    hosts,
    rateMbit: rate,
    cut: (i) => ip('-n', sw, 'link', 'set', swEndOf(i), 'down'),
    restore: (i) => ip('-n', sw, 'link', 'set', swEndOf(i), 'up'),
    partition: async (a, b) => {
      await ip('-n', hosts[a]!.ns, 'route', 'add', 'blackhole', `${hosts[b]!.ip}/32`);
      await ip('-n', hosts[b]!.ns, 'route', 'add', 'blackhole', `${hosts[a]!.ip}/32`);
    },
    heal: async (a, b) => {
      await ip('-n', hosts[a]!.ns, 'route', 'del', 'blackhole', `${hosts[b]!.ip}/32`);
      await ip('-n', hosts[b]!.ns, 'route', 'del', 'blackhole', `${hosts[a]!.ip}/32`);
    },
    close: async () => {
      await close();
      process.off('exit', onExit);
    },
  };
}
