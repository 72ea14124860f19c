/**
 * The inference boundary's error catalogue. Every error the serving layer answers with
 * on purpose is an `InferenceError` whose code fixes both its gRPC status and its HTTP
 * status; messages follow Triton's wording where Triton has one, because clients and
 * their users grep for those ("unexpected shape for input 'x' for model 'm'. Expected
 * [-1,784], got [3,5]").
 *
 * REST answers `{"error": "<message>"}` (the Open Inference Protocol's error body).
 * Anything that is not an InferenceError becomes INTERNAL with an opaque message; the
 * cause goes to the log, never to the client (house rule: no internals on the wire).
 */
import { status as GrpcStatus } from '@grpc/grpc-js';

export type InferenceErrorCode =
  /** No such model, or no such version of it. */
  | 'MODEL_NOT_FOUND'
  /** The model exists but is not loaded (unloaded on request, or still loading). */
  | 'MODEL_NOT_READY'
  /** A malformed request: missing/unknown inputs or outputs, bad contents, element counts. */
  | 'INVALID_INPUT'
  /** An input's datatype the model cannot take. */
  | 'DATATYPE_MISMATCH'
  /** An input's shape other than the model's. */
  | 'SHAPE_MISMATCH'
  /** More rows than one request may carry. */
  | 'BATCH_TOO_LARGE'
  /** The server is stopping, or the inference threads are gone. */
  | 'UNAVAILABLE'
  | 'INTERNAL';

interface Mapping {
  readonly grpc: GrpcStatus;
  readonly http: number;
}

/**
 * gRPC and HTTP status of each code. Input errors are HTTP 400 as the protocol's REST
 * binding asks; unknown models 404 and models that are not ready 503, as Triton answers
 * them, so a load balancer can tell "wrong request" from "try elsewhere".
 */
export const INFERENCE_ERROR_STATUS: Readonly<Record<InferenceErrorCode, Mapping>> = {
  MODEL_NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, http: 404 },
  MODEL_NOT_READY: { grpc: GrpcStatus.UNAVAILABLE, http: 503 },
  INVALID_INPUT: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400 },
  DATATYPE_MISMATCH: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400 },
  SHAPE_MISMATCH: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400 },
  BATCH_TOO_LARGE: { grpc: GrpcStatus.INVALID_ARGUMENT, http: 400 },
  UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, http: 503 },
  INTERNAL: { grpc: GrpcStatus.INTERNAL, http: 500 },
};

export class InferenceError extends Error {
  readonly code: InferenceErrorCode;
  constructor(code: InferenceErrorCode, message: string) {
    super(message);
    this.name = 'InferenceError';
    this.code = code;
  }
  get grpcStatus(): GrpcStatus {
    return INFERENCE_ERROR_STATUS[this.code].grpc;
  }
  get httpStatus(): number {
    return INFERENCE_ERROR_STATUS[this.code].http;
  }
}

/** Any thrown value as an InferenceError (unknown errors become an opaque INTERNAL). */
export function toInferenceError(err: unknown): InferenceError {
  return err instanceof InferenceError ? err : new InferenceError('INTERNAL', 'internal error');
}

/** Triton's shape notation: `[-1,784]`, no spaces. */
export function shapeText(shape: readonly number[]): string {
  return `[${shape.join(',')}]`;
}

export const modelNotFound = (model: string, version?: string): InferenceError =>
  new InferenceError('MODEL_NOT_FOUND', version ? `Request for unknown model: '${model}' version ${version} is not found` : `Request for unknown model: '${model}' is not found`);
