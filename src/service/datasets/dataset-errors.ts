/**
 * Errors of dataset ingestion that are neither the trainer's (a malformed file is a
 * `TrainerError` TAS_ERR_DATA_FORMAT, raised by the trainer's own parsers) nor
 * persistence's (an unknown dataset id is a `DbError` TAS_ERR_NOT_FOUND): `ServiceError`s
 * (../errors.ts) narrowed to the codes ingestion raises. The REST binding maps codes to
 * statuses, so this layer stays free of HTTP.
 */
import { ServiceError, type ServiceErrorCode } from '../errors.js';

export type DatasetErrorCode = Extract<
  ServiceErrorCode,
  | 'TAS_ERR_PAYLOAD_TOO_LARGE' // the upload passed the byte limit (the partial file is gone)
  | 'TAS_ERR_BAD_REQUEST' // an option or part that does not fit the format (field named)
  | 'TAS_ERR_NOT_FOUND' // no pending upload with that id (completed, expired or never made)
  | 'TAS_ERR_CONFLICT' // another request is completing the same pending upload
>;

export class DatasetError extends ServiceError<DatasetErrorCode> {
  constructor(code: DatasetErrorCode, message: string, field?: string) {
    super(code, message, field !== undefined ? { field } : {});
    this.name = 'DatasetError';
  }
}

export function isDatasetError(err: unknown, code?: DatasetErrorCode): err is DatasetError {
  return err instanceof DatasetError && (code === undefined || err.code === code);
}
