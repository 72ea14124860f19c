/**
 * Secrets `tas serve` keeps in the data directory (mode 0600), for this machine only:
 * - `admin.key`: the admin key made on the first start with auth on (the database keeps
 *   only its hash), for the CLI and the operator;
 * - `worker.key`: the workers' shared secret (TAS_WORKER_TOKEN) when auth is on and none
 *   is given, handed to the local workers, so nobody else can start work on them.
 */
import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { WORKER_TOKEN_ENV } from '../gpu-pool/worker-token.js';

export const ADMIN_KEY_FILE = 'admin.key';
export const WORKER_KEY_FILE = 'worker.key';

async function writeSecret(file: string, value: string): Promise<void> {
  await writeFile(file, `${value}\n`, { mode: 0o600 });
  await chmod(file, 0o600);
}

export async function writeAdminKey(dataDir: string, key: string): Promise<string> {
  const file = join(dataDir, ADMIN_KEY_FILE);
  await writeSecret(file, key);
  return file;
}

/**
 * TAS_WORKER_TOKEN for this process and the workers it starts: the environment's, else
 * `<data>/worker.key`'s, else a new one written there.
 */
export async function ensureWorkerToken(dataDir: string, env: NodeJS.ProcessEnv = process.env): Promise<'environment' | 'file' | 'new'> {
  if (env[WORKER_TOKEN_ENV]?.trim()) return 'environment';
  const file = join(dataDir, WORKER_KEY_FILE);
  const stored = await readFile(file, 'utf8').then((t) => t.trim(), () => '');
  if (stored) {
    env[WORKER_TOKEN_ENV] = stored;
    return 'file';
  }
  const token = randomBytes(32).toString('base64url');
  await writeSecret(file, token);
  env[WORKER_TOKEN_ENV] = token;
  return 'new';
}
