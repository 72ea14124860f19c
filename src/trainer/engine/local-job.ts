/**
 * Run a whole job on this machine: N ranks in this process over the in-process
 * collective (the gRPC worker pool replaces the group, not this logic), the artifact and
 * checkpoints written by rank 0 under `outDir`.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { artifactMetadata, encodeStateDict, readArtifact, writeAtomic } from '../artifact/artifact.js';
import { decodeCheckpoint, encodeCheckpoint, specFingerprint, type Checkpoint } from '../artifact/checkpoint.js';
import { backendInfo } from '../backend.js';
import { InProcessGroup } from '../collective/in-process.js';
import { loadDataset } from '../data/load.js';
import { resolveTrainSpec, type ResolvedTrainSpec } from './job-spec.js';
import { trainRank, type StepMetrics, type TrainRankResult } from './train.js';

export interface LocalJobOptions {
  /** Where model.safetensors and checkpoint.safetensors go. */
  outDir: string;
  /** Base directory for relative data paths. */
  dataDir?: string;
  /** Resume from outDir/checkpoint.safetensors when it exists (default true). */
  resume?: boolean;
  onStep?: (m: StepMetrics) => void;
  stopAfterGlobalStep?: number;
  signal?: AbortSignal;
}

export interface LocalJobResult {
  spec: ResolvedTrainSpec;
  artifactPath: string | null;
  checkpointPath: string;
  rank0: TrainRankResult;
  resumedFrom: number | null;
}

export const ARTIFACT_FILE = 'model.safetensors';
export const CHECKPOINT_FILE = 'checkpoint.safetensors';

/** Rank 0's model, its metadata and how its running statistics were obtained, as `outDir/model.safetensors`. */
export async function saveArtifact(outDir: string, spec: ResolvedTrainSpec, specHash: string, rank0: TrainRankResult): Promise<string> {
  const path = join(outDir, ARTIFACT_FILE);
  const meta = artifactMetadata({
    model: spec.model,
    runningStats: rank0.recalibration ? { source: 'recalibration', record: rank0.recalibration } : { source: 'training' },
    training: {
      steps: rank0.globalSteps,
      epochs: spec.epochs,
      workers: spec.workers,
      local_batch_sizes: spec.localBatchSizes,
      backend: backendInfo().name,
      // The native backend's bits depend on its BLAS thread count (see docs/ARCHITECTURE.md).
      compute_threads: backendInfo().threads,
      evaluation: rank0.evaluation,
      spec_hash: specHash,
    },
  });
  await writeAtomic(path, encodeStateDict(rank0.model.stateDict(), meta));
  return path;
}

/** The checkpoint of `outDir` for this spec, when there is one. */
export async function readCheckpointIn(outDir: string, specHash: string): Promise<Checkpoint | undefined> {
  const path = join(outDir, CHECKPOINT_FILE);
  return existsSync(path) ? decodeCheckpoint(new Uint8Array(await readFile(path)), specHash) : undefined;
}

export async function runLocalJob(rawSpec: unknown, o: LocalJobOptions): Promise<LocalJobResult> {
  const spec = resolveTrainSpec(rawSpec);
  const specHash = specFingerprint(spec.raw);
  await mkdir(o.outDir, { recursive: true });
  const dataset = await loadDataset(spec.data, o.dataDir);
  const ckptPath = join(o.outDir, CHECKPOINT_FILE);
  const resume = o.resume !== false ? await readCheckpointIn(o.outDir, specHash) : undefined;
  const init = !resume && spec.initFrom ? (await readArtifact(resolve(o.dataDir ?? process.cwd(), spec.initFrom))).state : undefined;

  const group = new InProcessGroup(spec.workers);
  const results = await Promise.all(
    Array.from({ length: spec.workers }, (_, rank) =>
      trainRank({
        spec,
        dataset,
        collective: group.member(rank),
        specHash,
        ...(resume ? { resume } : {}),
        ...(init ? { init } : {}),
        ...(rank === 0 && o.onStep ? { onStep: o.onStep } : {}),
        ...(o.stopAfterGlobalStep !== undefined ? { stopAfterGlobalStep: o.stopAfterGlobalStep } : {}),
        ...(o.signal ? { signal: o.signal } : {}),
        onCheckpoint: (c) => writeAtomic(ckptPath, encodeCheckpoint(c)),
      }).catch((e: Error) => {
        group.abort(e); // one rank's failure fails every rank's pending collective: no hang
        throw e;
      }),
    ),
  );
  const rank0 = results[0];
  const artifactPath = rank0.completed ? await saveArtifact(o.outDir, spec, specHash, rank0) : null;
  for (const r of results) r.model.dispose();
  return { spec, artifactPath, checkpointPath: ckptPath, rank0, resumedFrom: resume ? resume.globalStep : null };
}
