/**
 * Errors of dataset ingestion that are neither the trainer's (a malformed file is a
 * `TrainerError` TAS_ERR_DATA_FORMAT, raised by the trainer's own parsers) nor the
 * database's (an unknown dataset id is a `DbError` TAS_ERR_NOT_FOUND). Like those, each
 * carries a stable code; the REST layer maps codes to statuses (`DATASET_ERROR_HTTP_STATUS`)
 * so this layer stays free of HTTP.
 */
export type DatasetErrorCode =
  | 'TAS_ERR_PAYLOAD_TOO_LARGE' // the upload passed the byte limit (the partial file is gone)
  | 'TAS_ERR_BAD_REQUEST' // an option or part that does not fit the format (field named)
  | 'TAS_ERR_NOT_FOUND' // no pending upload with that id (completed, expired or never made)
  | 'TAS_ERR_CONFLICT'; // another request is completing the same pending upload

export const DATASET_ERROR_HTTP_STATUS: Readonly<Record<DatasetErrorCode, number>> = {
  TAS_ERR_PAYLOAD_TOO_LARGE: 413,
  TAS_ERR_BAD_REQUEST: 400,
  TAS_ERR_NOT_FOUND: 404,
  TAS_ERR_CONFLICT: 409,
};

export class DatasetError extends Error {
  readonly code: DatasetErrorCode;
  /** The request field at fault (`format`, `part`, `label_column`, ...), when there is one. */
  readonly field?: string;
  constructor(code: DatasetErrorCode, message: string, field?: string) {
    super(message);
    this.name = 'DatasetError';
    this.code = code;
    if (field !== undefined) this.field = field;
  }
}

export function isDatasetError(err: unknown, code?: DatasetErrorCode): err is DatasetError {
  return err instanceof DatasetError && (code === undefined || err.code === code);
}
