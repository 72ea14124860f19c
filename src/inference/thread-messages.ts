/**
 * The messages between the serving event loop and its inference threads
 * (`inference-thread.ts`): typed, one union per direction, matched by `id`.
 */
import type { InferenceErrorCode } from './errors.js';

export type ToThread =
  | { readonly kind: 'load'; readonly id: number; readonly key: string; readonly artifactPath: string }
  | { readonly kind: 'unload'; readonly id: number; readonly key: string }
  /** `input` is transferred, not copied. */
  | { readonly kind: 'infer'; readonly id: number; readonly key: string; readonly rows: number; readonly input: Float32Array };

export interface LoadedSignature {
  readonly inputShape: number[];
  readonly outputShape: number[];
  readonly batchDependent: boolean;
}

export type FromThread =
  | { readonly kind: 'ready'; readonly backend: string }
  | { readonly kind: 'loaded'; readonly id: number; readonly signature: LoadedSignature }
  | { readonly kind: 'unloaded'; readonly id: number }
  /** `output` is transferred, not copied. */
  | { readonly kind: 'result'; readonly id: number; readonly output: Float32Array; readonly computeMs: number }
  | { readonly kind: 'error'; readonly id: number; readonly code: InferenceErrorCode; readonly message: string };
