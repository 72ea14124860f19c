/** Test support: the real `tas` command (bin/tas.js) as a child process, its exit code and output. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const TAS = fileURLToPath(new URL('../../bin/tas.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface TasRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tas ARGS` from the checkout with `env` over this process's (and no TAS_API_KEY unless given). */
export function runTas(args: string[], env: Record<string, string>): Promise<TasRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [TAS, ...args], { cwd: ROOT, env: { ...process.env, TAS_API_KEY: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
