/**
 * The workers' shared secret (TAS_WORKER_TOKEN): a worker started with it takes Run,
 * Cancel and Info only from callers that present it (`authorization: Bearer <token>`
 * metadata), so nobody but its scheduler can start work on it. The scheduler's side sends
 * it on every call. `tas serve` with auth on makes one (kept in `<data>/worker.key`) and
 * gives it to its local workers; workers on other machines are started with the same.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';

export const WORKER_TOKEN_ENV = 'TAS_WORKER_TOKEN';

/** The token this process uses (as a worker: requires; as a scheduler: sends); null: none. */
export function workerToken(env: NodeJS.ProcessEnv = process.env): string | null {
  const t = env[WORKER_TOKEN_ENV]?.trim();
  return t ? t : null;
}

/** Metadata carrying the token (empty without one). */
export function workerCallMetadata(token: string | null = workerToken()): grpc.Metadata {
  const m = new grpc.Metadata();
  if (token) m.set('authorization', `Bearer ${token}`);
  return m;
}

/** Whether a call presents `token` (always, when the worker has none). */
export function presentsToken(metadata: grpc.Metadata, token: string | null): boolean {
  if (!token) return true;
  const value = metadata.get('authorization')[0];
  if (typeof value !== 'string' || !value.startsWith('Bearer ')) return false;
  const a = createHash('sha256').update(value.slice(7).trim()).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export const NOT_YOUR_WORKER = { code: grpc.status.UNAUTHENTICATED, details: 'this worker takes work only from its scheduler: present its TAS_WORKER_TOKEN' };
