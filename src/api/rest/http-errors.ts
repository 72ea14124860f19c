/**
 * The REST boundary's error model and its one mapping from error codes to HTTP statuses.
 *
 * Errors are raised below with stable codes and no HTTP: `TrainerError` (the trainer's
 * catalogue, src/trainer/errors.ts), `ServiceError` and its `DbError` / `DatasetError`
 * (src/service/errors.ts), `OnnxExportError` and `InferenceError` (src/inference/). The
 * REST layer adds its own few codes for requests it refuses itself (`API_ERROR_CODES`).
 * `HTTP_STATUS` gives every one of those codes its status, here and nowhere else; the
 * gRPC binding's twin is src/api/grpc/grpc-status.ts. docs/ERRORS.md lists every code, and
 * error-catalogue.test.ts checks that each maps and is documented.
 *
 * The job API's body is always
 *
 *   {"error": {"code": "TAS_ERR_...", "message": "...", "field": "..."?}}
 *
 * (the inference routes answer the Open Inference Protocol's `{"error": "..."}`). Anything
 * that is not one of the errors above becomes a 500 whose body says only "internal
 * error": the stack goes to the log, never to the client.
 */
import type { InferenceErrorCode } from '../../inference/errors.js';
import { OnnxExportError, type OnnxExportErrorCode } from '../../inference/onnx-export.js';
import { ServiceError, type ServiceErrorCode } from '../../service/errors.js';
import { TrainerError, type TrainerErrorCode } from '../../trainer/errors.js';

/** Codes the REST layer raises itself, about the request as it arrived. */
export const API_ERROR_CODES = {
  TAS_ERR_BAD_REQUEST: 'a malformed request: body, query or header (the field is named)',
  TAS_ERR_NOT_FOUND: 'no such route, or a stored artifact missing from the artifact directory',
  TAS_ERR_PAYLOAD_TOO_LARGE: 'a request body over the size limit',
  TAS_ERR_UNSUPPORTED_MEDIA_TYPE: 'a request body of a content type the route does not take',
  TAS_ERR_NOT_EXPORTABLE: 'a stored model that cannot be exported in the asked format (ONNX)',
  TAS_ERR_UNAVAILABLE: 'a dependency (database, Redis) is down',
  TAS_ERR_INTERNAL: 'anything unexpected (the cause is logged, never sent)',
  TAS_ERR_UNAUTHENTICATED: 'auth is on and the request has no API key, a malformed one, or one that is unknown or revoked',
  TAS_ERR_FORBIDDEN: "the key may not do this: a tenant's key on an admin route (tenants, /metrics)",
  TAS_ERR_RATE_LIMITED: "the key's requests per minute are spent (Retry-After says when to try again)",
  TAS_ERR_CROSS_SITE: 'a state-changing request another site could have made: a browser Origin not allowed, or a form content type',
} as const;

export type ApiErrorCode = keyof typeof API_ERROR_CODES;

/** Every code that can reach the REST boundary. */
export type ErrorCode = ApiErrorCode | TrainerErrorCode | ServiceErrorCode | OnnxExportErrorCode | InferenceErrorCode;

/**
 * The HTTP status of every code. Bad input is 400 and names the field; missing things
 * 404; conflicts with the current state 409; a stored thing that cannot be used as asked
 * 422; a dependency or a worker that is down 503 (try again); never a 500 for bad input.
 */
export const HTTP_STATUS: Readonly<Record<ErrorCode, number>> = {
  // The REST layer's own.
  TAS_ERR_BAD_REQUEST: 400,
  TAS_ERR_NOT_FOUND: 404,
  TAS_ERR_PAYLOAD_TOO_LARGE: 413,
  TAS_ERR_UNSUPPORTED_MEDIA_TYPE: 415,
  TAS_ERR_NOT_EXPORTABLE: 422,
  TAS_ERR_UNAVAILABLE: 503,
  TAS_ERR_INTERNAL: 500,
  TAS_ERR_UNAUTHENTICATED: 401,
  TAS_ERR_FORBIDDEN: 403,
  TAS_ERR_RATE_LIMITED: 429,
  TAS_ERR_CROSS_SITE: 403,
  // The trainer's (spec validation at submission, datasets checked by its parsers).
  TAS_ERR_INVALID_SPEC: 400,
  TAS_ERR_SHAPE: 400,
  TAS_ERR_BN_SINGLE_VALUE: 400,
  TAS_ERR_DATA_FORMAT: 400,
  TAS_ERR_BACKEND: 503,
  TAS_ERR_COLLECTIVE: 503,
  TAS_ERR_CHECKPOINT: 409,
  TAS_ERR_NUMERIC: 422,
  TAS_ERR_CANCELLED: 409,
  // The service's (jobs, datasets, models, persistence).
  TAS_ERR_INVALID_ARGUMENT: 400,
  TAS_ERR_CONFLICT: 409,
  TAS_ERR_INVALID_TRANSITION: 409,
  TAS_ERR_IDEMPOTENCY_CONFLICT: 409,
  TAS_ERR_POOL_TOO_SMALL: 400,
  TAS_ERR_QUOTA: 403,
  TAS_ERR_QUEUE_FULL: 429,
  TAS_ERR_MIGRATION_CHECKSUM: 500,
  TAS_ERR_MIGRATION_FAILED: 500,
  TAS_ERR_MIGRATION_LOCK_TIMEOUT: 503,
  // Inference (the /v2 routes; Triton's statuses: 400 input, 404 unknown, 503 not ready).
  MODEL_NOT_FOUND: 404,
  MODEL_NOT_READY: 503,
  INVALID_INPUT: 400,
  DATATYPE_MISMATCH: 400,
  SHAPE_MISMATCH: 400,
  BATCH_TOO_LARGE: 400,
  UNAVAILABLE: 503,
  INTERNAL: 500,
};

export interface ApiErrorBody {
  error: { code: string; message: string; field?: string };
}

/** An answer of the job API: a code, its HTTP status (from `HTTP_STATUS`), a message, the field at fault. */
export class ApiError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly field?: string;
  constructor(code: ErrorCode, message: string, field?: string) {
    super(message);
    this.name = 'ApiError';
    this.statusCode = HTTP_STATUS[code];
    this.code = code;
    if (field !== undefined) this.field = field;
  }

  body(): ApiErrorBody {
    return { error: { code: this.code, message: this.message, ...(this.field !== undefined ? { field: this.field } : {}) } };
  }
}

export const badRequest = (message: string, field?: string): ApiError => new ApiError('TAS_ERR_BAD_REQUEST', message, field);
export const notFound = (message: string): ApiError => new ApiError('TAS_ERR_NOT_FOUND', message);

/** Any thrown value as an ApiError (unknown errors become an opaque 500). */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof TrainerError || err instanceof ServiceError) return new ApiError(err.code, err.message, err.field);
  // The request was well formed; the stored model is what cannot be exported.
  if (err instanceof OnnxExportError) return new ApiError(err.code, err.message);
  return new ApiError('TAS_ERR_INTERNAL', 'internal error');
}
