/**
 * Model artifacts: a safetensors file a PyTorch user can load with
 * `model.load_state_dict(safetensors.torch.load_file(path))`: PyTorch state_dict names
 * and layouts (Linear weight [out, in], Conv2d [out, in, kh, kw], BN running_mean /
 * running_var / num_batches_tracked as int64), plus in its metadata the model JSON, the
 * BN conventions, how the running statistics were obtained, and a format version.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { TrainerError } from '../errors.js';
import type { ModelSpec } from '../model/spec.js';
import type { HostTensorMap } from '../tensor-types.js';
import { decodeSafetensors, encodeSafetensors, type SafetensorsInput } from './safetensors.js';

/** Bump when the layout or metadata changes incompatibly; readers accept <= this. */
export const ARTIFACT_FORMAT_VERSION = 1;

export interface ArtifactMeta {
  model: ModelSpec;
  /** How BN running statistics were obtained: during training (EMA), or a recalibration record. */
  runningStats: { source: 'training' } | { source: 'recalibration'; record: unknown };
  /** Free-form training facts: steps, epochs, world size, backend. */
  training: Record<string, unknown>;
}

const INT64_SUFFIX = '.num_batches_tracked';

/** Encode a state dict in PyTorch names (insertion order kept) with its metadata. */
export function encodeStateDict(state: HostTensorMap, metadata: Record<string, string>): Uint8Array {
  const tensors: SafetensorsInput[] = [];
  for (const [name, t] of state) {
    if (name.endsWith(INT64_SUFFIX)) tensors.push({ name, dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(Math.round(t.data[0]))) });
    else tensors.push({ name, dtype: 'F32', shape: t.shape, data: t.data });
  }
  return encodeSafetensors(tensors, metadata);
}

export function decodeStateDict(buf: Uint8Array): { state: HostTensorMap; metadata: Record<string, string> } {
  const { tensors, metadata } = decodeSafetensors(buf);
  const state: HostTensorMap = new Map();
  for (const [name, t] of tensors) {
    let data: Float32Array;
    if (t.data instanceof Float32Array) data = Float32Array.from(t.data);
    else if (t.data instanceof BigInt64Array) data = Float32Array.from(t.data, (v) => Number(v));
    else data = Float32Array.from(t.data as ArrayLike<number>);
    state.set(name, { shape: t.shape, data });
  }
  return { state, metadata };
}

export function artifactMetadata(meta: ArtifactMeta): Record<string, string> {
  const bnLayers = collectBn(meta.model.layers, 'layers');
  return {
    format: 'tas-model',
    format_version: String(ARTIFACT_FORMAT_VERSION),
    model: JSON.stringify(meta.model),
    bn_convention: meta.model.bn_convention ?? 'pytorch',
    bn_layers: JSON.stringify(bnLayers),
    running_stats: JSON.stringify(meta.runningStats),
    training: JSON.stringify(meta.training),
  };
}

function collectBn(layers: ModelSpec['layers'], prefix: string): Array<Record<string, unknown>> {
  return layers.flatMap((l, i) => {
    const p = `${prefix}.${i}`;
    if (l.type === 'batchnorm') return [{ path: p, eps: l.eps ?? null, momentum: l.momentum === undefined ? 'default' : l.momentum, sync: l.sync ?? true, track_running_stats: l.track_running_stats ?? true }];
    if (l.type === 'residual') return [...collectBn(l.body, `${p}.body`), ...collectBn(l.shortcut ?? [], `${p}.shortcut`)];
    return [];
  });
}

export interface LoadedArtifact {
  state: HostTensorMap;
  model: ModelSpec;
  metadata: Record<string, string>;
}

export function parseArtifact(buf: Uint8Array, origin = 'artifact'): LoadedArtifact {
  const { state, metadata } = decodeStateDict(buf);
  if (metadata.format !== 'tas-model') throw new TrainerError('TAS_ERR_CHECKPOINT', `${origin}: not a tas model artifact (metadata.format = ${metadata.format ?? 'missing'})`);
  const v = Number(metadata.format_version);
  if (!(v >= 1 && v <= ARTIFACT_FORMAT_VERSION)) throw new TrainerError('TAS_ERR_CHECKPOINT', `${origin}: format_version ${metadata.format_version} is newer than this server understands (${ARTIFACT_FORMAT_VERSION})`);
  return { state, model: JSON.parse(metadata.model) as ModelSpec, metadata };
}

export async function readArtifact(path: string): Promise<LoadedArtifact> {
  return parseArtifact(new Uint8Array(await readFile(path)), path);
}

/** Write atomically (temp file + rename): a crash never leaves a half-written artifact. */
export async function writeAtomic(path: string, bytes: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, bytes);
  await rename(tmp, path);
}
