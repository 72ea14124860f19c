/**
 * The service layer's error catalogue (jobs, datasets, models, scheduling, persistence).
 * Every error the service raises on purpose is a `ServiceError` with a stable code from
 * `SERVICE_ERROR_CODES` and, when a request field is at fault, that field. The service
 * knows nothing of HTTP: the REST binding maps each code to a status in one table
 * (src/api/rest/http-errors.ts), and docs/ERRORS.md lists every code; a test holds the
 * three together.
 *
 * `DbError` (persistence) and `DatasetError` (ingestion) are ServiceErrors narrowed to the
 * codes their part raises; callers that only care about the layer test `ServiceError`.
 */

/** Every code the service raises, with what it means. */
export const SERVICE_ERROR_CODES = {
  TAS_ERR_BAD_REQUEST: 'a request the service cannot take: not a JSON object, an option or part that does not fit the format (the field is named)',
  TAS_ERR_INVALID_ARGUMENT: 'a malformed cursor, page size, id or job status',
  TAS_ERR_NOT_FOUND: 'no job, dataset, model, version or pending upload with that id',
  TAS_ERR_CONFLICT: 'the request conflicts with the current state: cancelling a finished job, completing an upload another request is completing',
  TAS_ERR_INVALID_TRANSITION: 'the job state machine does not allow this change of state',
  TAS_ERR_IDEMPOTENCY_CONFLICT: 'an Idempotency-Key reused with a different request',
  TAS_ERR_PAYLOAD_TOO_LARGE: 'an upload passed the byte limit (the partial file is gone)',
  TAS_ERR_POOL_TOO_SMALL: 'a job asks for more workers than the pool has online of one device kind',
  TAS_ERR_QUOTA: "a job asks for more workers than its tenant's max_workers (the limit is named)",
  TAS_ERR_QUEUE_FULL: "the tenant already has max_queued_jobs jobs waiting",
  TAS_ERR_MIGRATION_CHECKSUM: "an applied migration's migration.sql was edited",
  TAS_ERR_MIGRATION_FAILED: 'a migration failed now, or one is recorded as failed',
  TAS_ERR_MIGRATION_LOCK_TIMEOUT: 'another migrator held the migration lock too long',
} as const;

export type ServiceErrorCode = keyof typeof SERVICE_ERROR_CODES;

export interface ServiceErrorOptions {
  /** The request field at fault (`workers`, `format`, `after`, ...). */
  readonly field?: string;
  readonly cause?: unknown;
}

export class ServiceError<Code extends ServiceErrorCode = ServiceErrorCode> extends Error {
  readonly code: Code;
  readonly field?: string;
  constructor(code: Code, message: string, options: ServiceErrorOptions = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'ServiceError';
    this.code = code;
    if (options.field !== undefined) this.field = options.field;
  }
}

export function isServiceError(err: unknown, code?: ServiceErrorCode): err is ServiceError {
  return err instanceof ServiceError && (code === undefined || err.code === code);
}
