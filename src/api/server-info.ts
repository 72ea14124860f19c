/** What the inference server says about itself in ServerMetadata and ModelMetadata. */
import { readFileSync } from 'node:fs';

export interface ServerIdentity {
  readonly name: string;
  readonly version: string;
  /** Protocol extensions served: Triton's model-repository API (index, load, unload). */
  readonly extensions: readonly string[];
}

/** The platform of every model (Triton names backends the same way: "onnxruntime_onnx"). */
export const PLATFORM = 'tas_safetensors';

export function serverIdentity(): ServerIdentity {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return { name: 'tas', version: pkg.version, extensions: ['model_repository'] };
}
