/**
 * The trainer's error catalogue. Every error the trainer raises on purpose is a
 * `TrainerError` with a stable code; callers (REST, gRPC, CLI) map codes to their own
 * status codes without parsing messages.
 */
export type TrainerErrorCode =
  | 'TAS_ERR_INVALID_SPEC' // a model/train spec fails its JSON schema or a semantic check
  | 'TAS_ERR_SHAPE' // tensor shapes do not fit the model
  | 'TAS_ERR_BN_SINGLE_VALUE' // training BN with one value per channel
  | 'TAS_ERR_DATA_FORMAT' // malformed CSV/NPY/IDX/safetensors input
  | 'TAS_ERR_BACKEND' // requested tensor backend unavailable
  | 'TAS_ERR_COLLECTIVE' // a collective failed (peer gone, mismatch)
  | 'TAS_ERR_CHECKPOINT' // checkpoint/artifact incompatible with the spec
  | 'TAS_ERR_NUMERIC' // NaN/Inf in loss or statistics
  | 'TAS_ERR_CANCELLED' // the job was cancelled
  | 'TAS_ERR_OUT_OF_MEMORY' // the job's estimated memory does not fit the worker (checked before allocating)
  | 'TAS_ERR_ENGINE' // the worker's tensor engine failed (a wasm trap, an allocation failure): the worker restarts
  | 'TAS_ERR_TRANSFER'; // a worker could not fetch its job's files from the service, or send them back

export class TrainerError extends Error {
  readonly code: TrainerErrorCode;
  /** JSON-pointer-like path of the offending field, when the error is about input. */
  readonly field?: string;
  constructor(code: TrainerErrorCode, message: string, field?: string) {
    super(message);
    this.name = 'TrainerError';
    this.code = code;
    if (field !== undefined) this.field = field;
  }
}
