/**
 * API keys: `tas_<id>_<secret>`, where `id` (12 hex digits) is public and names the row,
 * and `secret` (32 base64url characters, 192 random bits) is kept only as a salted
 * SHA-256. A fast hash is enough for random secrets of this length (a slow one protects
 * guessable passwords); it keeps checking a key on every request cheap. Pure: no I/O.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

const KEY = /^tas_([0-9a-f]{12})_([A-Za-z0-9_-]{32})$/;

export interface IssuedKey {
  /** The whole key: shown once, never stored. */
  readonly key: string;
  readonly id: string;
  readonly salt: string;
  readonly hash: string;
}

export function hashSecret(secret: string, salt: string): string {
  return createHash('sha256').update(`${salt}:${secret}`).digest('hex');
}

export function issueKey(): IssuedKey {
  const id = randomBytes(6).toString('hex');
  const secret = randomBytes(24).toString('base64url');
  const salt = randomBytes(16).toString('hex');
  return { key: `tas_${id}_${secret}`, id, salt, hash: hashSecret(secret, salt) };
}

/** The key's parts, or null when it is not a key of this form. */
export function parseKey(key: string): { id: string; secret: string } | null {
  const m = KEY.exec(key);
  return m ? { id: m[1]!, secret: m[2]! } : null;
}

/** Whether `secret` is the one hashed as `hash` with `salt` (constant time). */
export function secretMatches(secret: string, salt: string, hash: string): boolean {
  const a = Buffer.from(hashSecret(secret, salt), 'hex');
  const b = Buffer.from(hash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Constant-time comparison of two tokens (TAS_ADMIN_TOKEN, TAS_METRICS_TOKEN). */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
