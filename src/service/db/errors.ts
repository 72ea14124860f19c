/**
 * The persistence layer's error catalogue. Every error this layer raises on purpose is
 * a `DbError` with a stable code; the REST layer maps codes to HTTP statuses (see
 * `DB_ERROR_HTTP_STATUS`) without parsing messages.
 */
export type DbErrorCode =
  | 'TAS_ERR_NOT_FOUND' // no job (or other row) with that id
  | 'TAS_ERR_INVALID_TRANSITION' // the job state machine does not allow from -> to
  | 'TAS_ERR_IDEMPOTENCY_CONFLICT' // an idempotency key reused with a different request
  | 'TAS_ERR_INVALID_ARGUMENT' // a malformed cursor, limit or id
  | 'TAS_ERR_MIGRATION_CHECKSUM' // an applied migration's migration.sql was edited
  | 'TAS_ERR_MIGRATION_FAILED' // a migration failed now, or one is recorded as failed
  | 'TAS_ERR_MIGRATION_LOCK_TIMEOUT'; // another migrator held the lock too long

/** HTTP status for each code, for the REST boundary. */
export const DB_ERROR_HTTP_STATUS: Readonly<Record<DbErrorCode, number>> = {
  TAS_ERR_NOT_FOUND: 404,
  TAS_ERR_INVALID_TRANSITION: 409,
  TAS_ERR_IDEMPOTENCY_CONFLICT: 409,
  TAS_ERR_INVALID_ARGUMENT: 400,
  TAS_ERR_MIGRATION_CHECKSUM: 500,
  TAS_ERR_MIGRATION_FAILED: 500,
  TAS_ERR_MIGRATION_LOCK_TIMEOUT: 503,
};

export class DbError extends Error {
  readonly code: DbErrorCode;
  constructor(code: DbErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'DbError';
    this.code = code;
  }
}

export function isDbError(err: unknown, code?: DbErrorCode): err is DbError {
  return err instanceof DbError && (code === undefined || err.code === code);
}
