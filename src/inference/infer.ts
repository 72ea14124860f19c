/**
 * One inference request, whatever the binding: check it against the model's signature
 * (Triton's messages), decode its input, run it through the model's dynamic batcher, and
 * shape the answer. The gRPC and REST bindings only translate their wire formats to
 * `InferRequest` and from `InferResponse`.
 */
import { InferenceError, toInferenceError } from './errors.js';
import type { InferenceMetrics, Protocol } from './metrics.js';
import type { ModelRepository } from './repository.js';
import { checkInput, type InputDatatype, type InputHeader } from './tensors.js';

export interface InferInput extends InputHeader {
  /** Decodes the contents once the header has been checked (binding-specific). */
  decode(model: string, checked: InputHeader & { datatype: InputDatatype }): Float32Array;
}

export interface InferRequest {
  /** The caller's tenant: model names are per tenant. */
  readonly tenant: string;
  readonly model: string;
  /** "" = the default version. */
  readonly version: string;
  readonly id: string;
  readonly inputs: readonly InferInput[];
  /** Requested output names; empty = all. */
  readonly outputs: readonly string[];
  /** Binding-specific checks of the whole request (throw InferenceError), run first and counted like the others. */
  readonly check?: () => void;
}

export interface InferResponse {
  readonly model: string;
  readonly version: string;
  readonly id: string;
  readonly outputs: ReadonlyArray<{ readonly name: string; readonly datatype: 'FP32'; readonly shape: number[]; readonly data: Float32Array }>;
}

export interface InferOptions {
  /** Most rows one request may carry. @defaultValue 1024 */
  readonly maxRequestRows: number;
  readonly metrics?: InferenceMetrics;
}

export async function infer(repo: ModelRepository, req: InferRequest, protocol: Protocol, options: InferOptions): Promise<InferResponse> {
  let version = req.version;
  try {
    req.check?.();
    const served = await repo.resolve(req.tenant, req.model, req.version);
    version = String(served.version);
    if (req.inputs.length !== 1) {
      throw new InferenceError('INVALID_INPUT', `expected 1 inputs but got ${req.inputs.length} inputs for model '${req.model}'`);
    }
    const input = req.inputs[0]!;
    if (input.name !== served.input.name) {
      throw new InferenceError('INVALID_INPUT', `unexpected inference input '${input.name}' for model '${req.model}'`);
    }
    for (const name of req.outputs) {
      if (name !== served.output.name) throw new InferenceError('INVALID_INPUT', `unexpected inference output '${name}' for model '${req.model}'`);
    }
    const { rows, datatype } = checkInput(req.model, served.input, input);
    if (rows > options.maxRequestRows) {
      throw new InferenceError('BATCH_TOO_LARGE', `inference request batch-size must be <= ${options.maxRequestRows} for '${req.model}'`);
    }
    const data = input.decode(req.model, { name: input.name, shape: input.shape, datatype });
    const result = await served.batcher.submit(data, rows);
    options.metrics?.succeeded(req.model, version, protocol, result.queueMs);
    return {
      model: req.model,
      version,
      id: req.id,
      outputs: [{ name: served.output.name, datatype: 'FP32', shape: [rows, ...served.output.shape.slice(1)], data: result.output }],
    };
  } catch (e) {
    const err = toInferenceError(e);
    options.metrics?.failed(req.model, version, protocol, err.code);
    throw err === e ? err : Object.assign(err, { cause: e });
  }
}
