/**
 * Runs a golden case's ranks as separate OS processes talking gRPC: each child
 * (rank-child.ts) runs the same case with a launcher that executes only its own rank over
 * a GrpcCollective and reports its results; the parent's launcher collects them in rank
 * order, so the parent computes the same checks as in-process.
 */
import { fork, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { RankLauncher } from './cases.js';

const CHILD = fileURLToPath(new URL('./rank-child.ts', import.meta.url));

interface ChildMsg {
  type: 'port' | 'result' | 'error';
  port?: number;
  index?: number;
  value?: unknown;
  message?: string;
}

/** Where a rank runs: a host of its own (a network namespace, test/netns/hosts.ts), at `ip`. */
export interface RankPlacement {
  readonly ip: string;
  spawn(command: string, args: readonly string[], options: SpawnOptions): ChildProcess;
}

/**
 * Start `world` children for one (fixture, case) run; returns the launcher that reads their
 * results. With `placement`, rank r runs on placement[r] and its peers dial it there (TCP
 * across the hosts' links); else every rank runs here, on loopback.
 */
export async function processLauncher(fixturePath: string, world: number, timeoutMs = 120_000, placement?: readonly RankPlacement[]): Promise<{ launcher: RankLauncher; stop: () => void }> {
  const children: ChildProcess[] = [];
  const queues: ChildMsg[][] = [];
  const waiting: Array<((m: ChildMsg) => void) | null> = [];
  let failure: Error | null = null;
  const failAll = (e: Error) => {
    failure ??= e;
    waiting.forEach((w, r) => {
      if (w) {
        waiting[r] = null;
        w({ type: 'error', message: e.message });
      }
    });
  };
  for (let r = 0; r < world; r++) {
    const at = placement?.[r];
    const child = at
      ? at.spawn(process.execPath, ['--import', 'tsx', CHILD, fixturePath, String(world), String(r)], {
          env: { ...process.env, GOLDEN_HOST: at.ip },
          serialization: 'advanced',
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        })
      : fork(CHILD, [fixturePath, String(world), String(r)], { execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    children.push(child);
    queues.push([]);
    waiting.push(null);
    child.on('message', (m: ChildMsg) => {
      const w = waiting[r];
      if (w) {
        waiting[r] = null;
        w(m);
      } else queues[r].push(m);
    });
    child.on('exit', (code, sig) => {
      if (code !== 0) failAll(new Error(`rank ${r} process exited (${sig ?? code})`));
    });
  }
  const next = (r: number): Promise<ChildMsg> => {
    const q = queues[r].shift();
    if (q) return Promise.resolve(q);
    if (failure) return Promise.resolve({ type: 'error', message: failure.message });
    return new Promise((resolve) => (waiting[r] = resolve));
  };
  const timer = setTimeout(() => failAll(new Error(`golden ranks did not finish within ${timeoutMs} ms`)), timeoutMs);
  const stop = () => {
    clearTimeout(timer);
    children.forEach((c) => c.exitCode === null && c.kill('SIGKILL'));
  };

  // Rendezvous: every child reports its collective port; then everyone gets every address.
  const ports = await Promise.all(children.map((_, r) => next(r)));
  const bad = ports.find((m) => m.type !== 'port');
  if (bad) {
    stop();
    throw new Error(bad.message ?? 'a rank failed to start');
  }
  const peers = ports.map((m, r) => `${placement?.[r]?.ip ?? '127.0.0.1'}:${m.port}`);
  children.forEach((c) => c.send({ type: 'peers', peers }));

  let invocation = 0;
  const launcher: RankLauncher = async <T>(w: number) => {
    if (w !== world) throw new Error(`launcher started for world ${world}, case asked for ${w}`);
    const index = invocation++;
    const msgs = await Promise.all(children.map((_, r) => next(r)));
    const err = msgs.find((m) => m.type === 'error' || m.index !== index);
    if (err) throw new Error(err.message ?? `rank result out of order (expected invocation ${index})`);
    return msgs.map((m) => m.value as T);
  };
  return { launcher, stop };
}
