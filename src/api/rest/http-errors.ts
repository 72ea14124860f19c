/**
 * The REST boundary's error model. Every error the API answers with on purpose is an
 * `ApiError` with a stable code and the HTTP status it maps to; the body is always
 *
 *   {"error": {"code": "TAS_ERR_...", "message": "...", "field": "..."?}}
 *
 * Errors of the layers below (TrainerError, DbError, OnnxExportError) are mapped by
 * code, never by parsing messages; anything else becomes a 500 whose body says only
 * "internal error" (the stack goes to the log, never to the client).
 */
import { OnnxExportError } from '../../inference/onnx-export.js';
import { DB_ERROR_HTTP_STATUS, DbError } from '../../service/db/errors.js';
import { TrainerError, type TrainerErrorCode } from '../../trainer/errors.js';

export type ApiErrorCode =
  | 'TAS_ERR_BAD_REQUEST' // malformed request (body, query, header)
  | 'TAS_ERR_INVALID_SPEC' // a job spec fails validation (field named)
  | 'TAS_ERR_DATA_FORMAT' // an uploaded dataset is malformed
  | 'TAS_ERR_PAYLOAD_TOO_LARGE' // an upload over the size limit
  | 'TAS_ERR_UNSUPPORTED_MEDIA_TYPE'
  | 'TAS_ERR_NOT_FOUND'
  | 'TAS_ERR_CONFLICT' // a state or idempotency conflict
  | 'TAS_ERR_POOL_TOO_SMALL' // a job asks for more workers than the pool has
  | 'TAS_ERR_NOT_EXPORTABLE' // a stored model cannot be exported in the asked format (ONNX)
  | 'TAS_ERR_UNAVAILABLE' // a dependency (database, Redis) is down
  | 'TAS_ERR_INTERNAL';

export interface ApiErrorBody {
  error: { code: string; message: string; field?: string };
}

export class ApiError extends Error {
  readonly code: ApiErrorCode | TrainerErrorCode | DbError['code'] | OnnxExportError['code'];
  readonly statusCode: number;
  readonly field?: string;
  constructor(statusCode: number, code: ApiError['code'], message: string, field?: string) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = statusCode;
    this.code = code;
    if (field !== undefined) this.field = field;
  }

  body(): ApiErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.field !== undefined ? { field: this.field } : {}) } };
  }
}

export const badRequest = (message: string, field?: string): ApiError => new ApiError(400, 'TAS_ERR_BAD_REQUEST', message, field);
export const notFound = (message: string): ApiError => new ApiError(404, 'TAS_ERR_NOT_FOUND', message);

/** HTTP status of each trainer error code, when one reaches the API (spec validation). */
const TRAINER_STATUS: Readonly<Record<TrainerErrorCode, number>> = {
  TAS_ERR_INVALID_SPEC: 400,
  TAS_ERR_SHAPE: 400,
  TAS_ERR_BN_SINGLE_VALUE: 400,
  TAS_ERR_DATA_FORMAT: 400,
  TAS_ERR_BACKEND: 503,
  TAS_ERR_COLLECTIVE: 503,
  TAS_ERR_CHECKPOINT: 409,
  TAS_ERR_NUMERIC: 422,
  TAS_ERR_CANCELLED: 409,
};

/** Any thrown value as an ApiError (unknown errors become an opaque 500). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof TrainerError) return new ApiError(TRAINER_STATUS[err.code], err.code, err.message, err.field);
  if (err instanceof DbError) return new ApiError(DB_ERROR_HTTP_STATUS[err.code], err.code, err.message);
  // The request was well formed; the stored model is what cannot be exported.
  if (err instanceof OnnxExportError) return new ApiError(422, err.code, err.message);
  return new ApiError(500, 'TAS_ERR_INTERNAL', 'internal error');
}
