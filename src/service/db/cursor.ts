/**
 * Keyset-pagination cursors over (created_at, id), newest first: opaque to clients
 * (base64url JSON), checked on the way back in so a forged or stale one is a 400, never
 * a database error.
 */
import { DbError } from './errors.js';

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface Cursor {
  readonly createdAt: Date;
  readonly id: string;
}

export function encodeCursor(row: Cursor): string {
  return Buffer.from(JSON.stringify([row.createdAt.toISOString(), row.id])).toString('base64url');
}

export function decodeCursor(cursor: string): Cursor {
  const invalid = () => new DbError('TAS_ERR_INVALID_ARGUMENT', `invalid cursor ${JSON.stringify(cursor)}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2) throw invalid();
  const [at, id] = parsed as unknown[];
  if (typeof at !== 'string' || typeof id !== 'string' || !UUID.test(id)) throw invalid();
  const createdAt = new Date(at);
  if (Number.isNaN(createdAt.getTime())) throw invalid();
  return { createdAt, id };
}
