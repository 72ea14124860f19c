/**
 * The inference service's error catalogue. Every error the inference layer answers with
 * on purpose is an `InferenceError` with a code from `INFERENCE_ERROR_CODES`; messages
 * follow Triton's wording where Triton has one, because clients and their users grep for
 * those ("unexpected shape for input 'x' for model 'm'. Expected [-1,784], got [3,5]").
 *
 * The codes carry no protocol status: the gRPC binding maps each to a gRPC status
 * (src/api/grpc/grpc-status.ts) and the REST binding to an HTTP status
 * (src/api/rest/http-errors.ts), where REST answers `{"error": "<message>"}` (the Open
 * Inference Protocol's error body). Anything that is not an InferenceError becomes
 * INTERNAL with an opaque message; the cause goes to the log, never to the client.
 */

/** Every code, with what it means. */
export const INFERENCE_ERROR_CODES = {
  MODEL_NOT_FOUND: 'no such model, or no such version of it',
  MODEL_NOT_READY: 'the model exists but is not loaded (unloaded on request, or still loading)',
  INVALID_INPUT: "a malformed request: missing or unknown inputs or outputs, bad contents, element counts, values out of the datatype's range or not finite (the input is named)",
  DATATYPE_MISMATCH: "an input's datatype the model cannot take",
  SHAPE_MISMATCH: "an input's shape other than the model's",
  BATCH_TOO_LARGE: 'more rows than one request may carry',
  UNAVAILABLE: 'the server is stopping, or the inference threads are gone',
  INTERNAL: 'anything unexpected (the cause is logged, never sent)',
} as const;

export type InferenceErrorCode = keyof typeof INFERENCE_ERROR_CODES;

export class InferenceError extends Error {
  readonly code: InferenceErrorCode;
  constructor(code: InferenceErrorCode, message: string) {
    super(message);
    this.name = 'InferenceError';
    this.code = code;
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
