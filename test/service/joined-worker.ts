/**
 * `tas worker --join URL` as a real child process, as a user starts one on another host:
 * started like the pool's own workers (worker-env.ts), resolved once it has joined (its
 * log says so), or rejected with its log when it exits first. `spawn` runs it elsewhere
 * (in a network namespace: test/netns/hosts.ts).
 */
import { spawn as spawnChild, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { workerEnv, workerNodeFlags } from '../../src/gpu-pool/worker-env.js';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

export interface JoinedWorker {
  readonly process: ChildProcess;
  /** host:port it advertised (its id in the pool). */
  readonly address: string;
  readonly log: string[];
  /** Signal it and wait for its exit; resolves with its exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export interface JoinedWorkerOptions {
  readonly advertise: string;
  readonly cacheDir: string;
  /** Where it listens. @defaultValue the advertised host */
  readonly host?: string;
  readonly env?: Record<string, string>;
  readonly spawn?: (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;
  /** Resolve when it is ready, before it joined (for a worker the service must refuse). */
  readonly untilJoined?: boolean;
}

export async function startJoinedWorker(url: string, o: JoinedWorkerOptions): Promise<JoinedWorker> {
  const args = [...workerNodeFlags(1), '--import', 'tsx', MAIN, 'worker', '--join', url, '--advertise', o.advertise, '--host', o.host ?? o.advertise, '--cache-dir', o.cacheDir];
  const child = (o.spawn ?? spawnChild)(process.execPath, args, {
    env: { ...workerEnv(), TAS_COMPUTE_THREADS: '1', ...o.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log: string[] = [];
  let address = '';
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const joined = new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stderr! }).on('line', (l) => {
      log.push(l);
      if (process.env.TAS_TEST_VERBOSE) process.stderr.write(`[worker ${child.pid}] ${l}\n`);
      if (/joined the pool of/.test(l)) resolve();
    });
    createInterface({ input: child.stdout! }).on('line', (l) => {
      try {
        const msg = JSON.parse(l) as { ready?: { advertised?: string } };
        if (msg.ready?.advertised) {
          address = msg.ready.advertised;
          if (o.untilJoined === false) resolve();
        }
      } catch {
        log.push(l);
      }
    });
    void exited.then(([code, sig]) => reject(new Error(`tas worker --join exited (${sig ?? code}) before it joined:\n${log.join('\n')}`)));
  });
  await joined;
  return {
    process: child,
    get address() {
      return address;
    },
    log,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const [code] = await exited;
      return code;
    },
  };
}
