/**
 * The persistence layer's errors: `ServiceError`s (../errors.ts, the service's catalogue)
 * narrowed to the codes persistence raises. The REST binding maps codes to HTTP statuses;
 * nothing here knows of HTTP.
 */
import { ServiceError, type ServiceErrorCode } from '../errors.js';

export type DbErrorCode = Extract<
  ServiceErrorCode,
  | 'TAS_ERR_NOT_FOUND' // no job (or other row) with that id
  | 'TAS_ERR_INVALID_TRANSITION' // the job state machine does not allow from -> to
  | 'TAS_ERR_IDEMPOTENCY_CONFLICT' // an idempotency key reused with a different request
  | 'TAS_ERR_INVALID_ARGUMENT' // a malformed cursor, limit or id
  | 'TAS_ERR_MIGRATION_CHECKSUM' // an applied migration's migration.sql was edited
  | 'TAS_ERR_MIGRATION_FAILED' // a migration failed now, or one is recorded as failed
  | 'TAS_ERR_MIGRATION_LOCK_TIMEOUT' // another migrator held the lock too long
>;

export class DbError extends ServiceError<DbErrorCode> {
  constructor(code: DbErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'DbError';
  }
}

export function isDbError(err: unknown, code?: DbErrorCode): err is DbError {
  return err instanceof DbError && (code === undefined || err.code === code);
}
