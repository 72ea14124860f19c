/**
 * The Worker gRPC service (proto/worker.proto): one process, one device, one rank of one
 * job at a time. `Run` trains the rank with `trainRank` over a Collective to its peers,
 * streaming progress; rank 0 writes checkpoints and the artifact (into `out_dir`, or, for a
 * worker that joined by URL, sent to the service: service-files.ts).
 *
 * Two guards keep a worker sound. Before it allocates anything, `Run` estimates the
 * rank's memory (trainer/engine/memory.ts) and refuses a job that cannot fit the worker's
 * limit (TAS_ERR_OUT_OF_MEMORY, naming the layer). And a failure of the tensor engine
 * that may leave it corrupt (a WebAssembly trap, an allocation failure: `engineFailure`)
 * ends the rank with TAS_ERR_ENGINE and marks the worker: Info says `needs_restart`, it
 * takes no other job, and `onEngineFailure` has it restarted (worker-main.ts exits, and
 * the pool starts a fresh process) before it is offered again.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { decodeCheckpoint, encodeCheckpoint, specFingerprint } from '../trainer/artifact/checkpoint.js';
import { readArtifact, writeAtomic } from '../trainer/artifact/artifact.js';
import { backendInfo } from '../trainer/backend.js';
import type { Collective } from '../trainer/collective/collective.js';
import { loadDataset } from '../trainer/data/load.js';
import { TrainerError, type TrainerErrorCode } from '../trainer/errors.js';
import { resolveTrainSpec } from '../trainer/engine/job-spec.js';
import { ARTIFACT_FILE, CHECKPOINT_FILE, readCheckpointIn, saveArtifact } from '../trainer/engine/local-job.js';
import { CheckpointUploads, type ServiceFiles } from './service-files.js';
import { checkMemoryFits, estimateJobMemory } from '../trainer/engine/memory.js';
import { dataFileBytes } from '../trainer/data/load.js';
import { armed, wasmTrap, type Failpoint } from './failpoints.js';
import { trainRank } from '../trainer/engine/train.js';
import type { BnLayerSummary } from '../trainer/math/bn-summary.js';
import { join, resolve } from 'node:path';
import type { DeviceAssignment } from './device.js';
import type { BnLayerStatsMsg, RunEventMsg, RunRequestMsg, WorkerInfoMsg } from './messages.js';
import { NOT_YOUR_WORKER, presentsToken, workerToken } from './worker-token.js';
import { workerProto } from '../grpc/proto.js';

/** The exit status of a worker process that stops because its tensor engine failed (its supervisor starts a fresh one). */
export const ENGINE_FAILURE_EXIT_CODE = 75;

export interface CollectiveRequest {
  jobId: string;
  generation: number;
  rank: number;
  worldSize: number;
  peers: string[];
  timeoutMs: number;
  /** Only HELLOs carrying it join (RunRequest.collective_token). */
  token: string;
}

export interface WorkerDeps {
  device: DeviceAssignment;
  /** This worker's Collective server (Info reports it); absent: none. */
  collective?: { port: number; unixPath?: string; hostId: string };
  /** A Collective to the job's peers (the gRPC transport in workers; in-process in tests). */
  connectCollective(req: CollectiveRequest): Promise<Collective>;
  /** The memory a job may use here (device.ts `workerMemoryLimitBytes`); Info reports it, Run checks against it. Absent: no check. */
  memoryLimitBytes?: number;
  /** Told once, after the Run whose engine failed has answered: the worker must be restarted. */
  onEngineFailure?: (reason: string) => void;
  /** Faults to inject (failpoints.ts; the fault suite's). */
  failpoints?: readonly Failpoint[];
  /**
   * A worker that joined by URL shares no filesystem with the service: it fetches its
   * job's inputs and checkpoint from there and sends checkpoints and the artifact back
   * (service-files.ts); `data_dir` and `out_dir` then name the service's directories.
   * Absent: they are on this worker's filesystem.
   */
  files?: ServiceFiles;
  log?: (message: string) => void;
}

/**
 * Whether an error is a failure of the tensor engine that may leave it corrupt, and
 * what it was: a WebAssembly trap (a RuntimeError: out-of-bounds access, unreachable, a
 * heap that could not grow), or an allocation that failed. Null for everything else:
 * trainer errors, collective errors, cancellation, which leave the engine sound.
 */
export function engineFailure(e: unknown): string | null {
  if (e instanceof TrainerError) return null;
  const message = e instanceof Error ? e.message : String(e);
  if (typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.RuntimeError) return `WebAssembly trap: ${message}`;
  if (e instanceof RangeError && /allocation failed|Invalid (typed )?array (buffer )?length|out of memory/i.test(message)) return `out of memory: ${message}`;
  if (/memory access out of bounds|Cannot enlarge memory|out of memory|^Aborted\(/i.test(message)) return `engine abort: ${message}`;
  return null;
}

/**
 * The worker control plane's mapping: the gRPC status a failed `Run` ends with for each
 * TrainerError code (the code itself travels in the details, `CODE: message`, and the
 * pool's client rebuilds the TrainerError from it). The public gRPC boundary, inference,
 * has its own table (src/api/grpc/grpc-status.ts); docs/ERRORS.md lists both.
 */
export const WORKER_GRPC_STATUS: Readonly<Record<TrainerErrorCode, grpc.status>> = {
  TAS_ERR_INVALID_SPEC: grpc.status.INVALID_ARGUMENT,
  TAS_ERR_SHAPE: grpc.status.INVALID_ARGUMENT,
  TAS_ERR_BN_SINGLE_VALUE: grpc.status.INVALID_ARGUMENT,
  TAS_ERR_DATA_FORMAT: grpc.status.INVALID_ARGUMENT,
  TAS_ERR_BACKEND: grpc.status.FAILED_PRECONDITION,
  TAS_ERR_COLLECTIVE: grpc.status.UNAVAILABLE,
  TAS_ERR_CHECKPOINT: grpc.status.FAILED_PRECONDITION,
  TAS_ERR_NUMERIC: grpc.status.ABORTED,
  TAS_ERR_CANCELLED: grpc.status.CANCELLED,
  TAS_ERR_OUT_OF_MEMORY: grpc.status.RESOURCE_EXHAUSTED,
  TAS_ERR_ENGINE: grpc.status.INTERNAL,
  TAS_ERR_TRANSFER: grpc.status.UNAVAILABLE,
};

export function toStatus(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof TrainerError) return { code: WORKER_GRPC_STATUS[e.code], details: `${e.code}: ${e.message}` };
  // Anything unexpected is UNKNOWN with its message; the stack stays in the worker's log.
  process.stderr.write(`[tas worker] unexpected error: ${(e as Error).stack ?? String(e)}\n`);
  return { code: grpc.status.UNKNOWN, details: (e as Error).message ?? String(e) };
}

/** A BN summary flattened into proto BnLayerStats (num_batches_tracked stays out: it tracks the step). */
export function bnLayerStatsMsg(s: BnLayerSummary): BnLayerStatsMsg {
  return {
    layer: s.layer,
    channels: s.channels,
    mean_mean: s.mean.mean,
    mean_min: s.mean.min,
    mean_max: s.mean.max,
    mean_l2: s.mean.l2,
    var_mean: s.var.mean,
    var_min: s.var.min,
    var_max: s.var.max,
  };
}

export function addWorkerService(server: grpc.Server, deps: WorkerDeps): void {
  const running = new Map<string, { abort: AbortController; collective: Collective | null }>();
  /** Why the engine failed; from then on the worker takes no job (it is being restarted). */
  let broken: string | null = null;
  const { service } = workerProto();
  const info = (): WorkerInfoMsg => {
    const b = backendInfo();
    return {
      worker_id: `${hostname()}:${process.pid}`,
      device_kind: deps.device.kind,
      device_index: deps.device.index,
      device_name: deps.device.name,
      device_memory_mib: deps.device.memoryMiB,
      backend: b.name,
      backend_package: b.package,
      rss_bytes: process.memoryUsage().rss,
      busy_job_id: [...running.keys()][0] ?? '',
      collective_port: deps.collective?.port ?? 0,
      collective_unix_path: deps.collective?.unixPath ?? '',
      host_id: deps.collective?.hostId ?? '',
      host_cores: availableParallelism(),
      memory_limit_bytes: deps.memoryLimitBytes ?? 0,
      needs_restart: broken !== null,
    };
  };

  // With a worker token, only its scheduler may call (worker-token.ts).
  const token = workerToken();
  server.addService(service, {
    Info: (call: grpc.ServerUnaryCall<unknown, WorkerInfoMsg>, cb: grpc.sendUnaryData<WorkerInfoMsg>) => {
      if (!presentsToken(call.metadata, token)) return cb(NOT_YOUR_WORKER);
      cb(null, info());
    },

    Cancel: (call: grpc.ServerUnaryCall<{ job_id: string }, { cancelled: boolean }>, cb: grpc.sendUnaryData<{ cancelled: boolean }>) => {
      if (!presentsToken(call.metadata, token)) return cb(NOT_YOUR_WORKER);
      const job = running.get(call.request.job_id);
      if (job) {
        job.abort.abort();
        void job.collective?.close();
      }
      cb(null, { cancelled: job !== undefined });
    },

    Run: (call: grpc.ServerWritableStream<RunRequestMsg, RunEventMsg>) => {
      const req = call.request;
      if (!presentsToken(call.metadata, token)) {
        call.emit('error', Object.assign(new Error(NOT_YOUR_WORKER.details), NOT_YOUR_WORKER));
        return;
      }
      if (broken !== null) {
        const details = `TAS_ERR_ENGINE: this worker's tensor engine failed (${broken}); it is being restarted`;
        call.emit('error', Object.assign(new Error(details), { code: WORKER_GRPC_STATUS.TAS_ERR_ENGINE, details }));
        return;
      }
      if (running.size > 0) {
        // emit('error'), not destroy(): grpc-js sends the status from the stream's error
        // handler; a destroyed stream never sends one and the client waits forever.
        call.emit('error', Object.assign(new Error(`worker busy with job ${[...running.keys()][0]}`), { code: grpc.status.RESOURCE_EXHAUSTED }));
        return;
      }
      if (call.cancelled) return; // ended by the caller before it started
      const abort = new AbortController();
      const entry = { abort, collective: null as Collective | null };
      running.set(req.job_id, entry);
      call.on('cancelled', () => {
        abort.abort();
        void entry.collective?.close();
      });
      runRank(req, deps, abort.signal, (c) => (entry.collective = c), (ev) => call.write(ev))
        .then((done) => {
          call.write({ done });
          call.end();
        })
        .catch((e: unknown) => {
          const failed = engineFailure(e);
          if (failed !== null) {
            broken ??= failed;
            process.stderr.write(`[tas worker] tensor engine failed: ${(e as Error).stack ?? failed}\n`);
          }
          const s = toStatus(failed !== null ? new TrainerError('TAS_ERR_ENGINE', `the worker's tensor engine failed (${failed}); the worker restarts before it takes another job`) : e);
          if (!abort.signal.aborted) deps.log?.(`job ${req.job_id} rank ${req.rank} (generation ${req.generation}) failed: ${s.details}`);
          call.emit('error', Object.assign(new Error(s.details), { code: s.code, details: s.details }));
          // After the status is on its way: the worker is restarted (worker-main.ts exits).
          if (failed !== null) setImmediate(() => deps.onEngineFailure?.(failed));
        })
        .finally(() => {
          running.delete(req.job_id);
          void entry.collective?.close();
        });
    },
  });
}

async function runRank(
  req: RunRequestMsg,
  deps: WorkerDeps,
  signal: AbortSignal,
  onCollective: (c: Collective) => void,
  emit: (ev: RunEventMsg) => void,
): Promise<NonNullable<RunEventMsg['done']>> {
  let raw: unknown;
  try {
    raw = JSON.parse(req.spec_json);
  } catch (e) {
    throw new TrainerError('TAS_ERR_INVALID_SPEC', `spec_json: ${(e as Error).message}`, 'spec_json');
  }
  const spec = resolveTrainSpec(raw);
  const specHash = specFingerprint(spec.raw);
  const files = deps.files;
  try {
    return await runRankIn(req, deps, spec, specHash, signal, onCollective, emit);
  } finally {
    await files?.forget(req.job_id, req.rank).catch(() => undefined);
  }
}

async function runRankIn(
  req: RunRequestMsg,
  deps: WorkerDeps,
  spec: ReturnType<typeof resolveTrainSpec>,
  specHash: string,
  signal: AbortSignal,
  onCollective: (c: Collective) => void,
  emit: (ev: RunEventMsg) => void,
): Promise<NonNullable<RunEventMsg['done']>> {
  const files = deps.files;
  // Where the spec's relative paths resolve, and where rank 0 writes: the service's
  // directories, or, for a joined worker, this worker's copies of them.
  let dataDir = req.data_dir || process.cwd();
  let outDir = req.out_dir;
  if (files) {
    const staged = await files.stageInputs(req.job_id, req.rank);
    if (staged.fetched + staged.cached > 0) deps.log?.(`job ${req.job_id} rank ${req.rank}: inputs from the service: ${staged.fetched} fetched (${staged.bytesFetched} bytes), ${staged.cached} from the cache`);
    dataDir = staged.dir;
    outDir = files.jobDir(req.job_id, req.rank);
  }
  if (deps.memoryLimitBytes) {
    // Before anything is allocated (the dataset, the model): a job that cannot fit is refused, never half-run.
    const estimate = estimateJobMemory(spec, {
      rank: req.rank,
      ...(spec.data.type === 'synthetic' ? { samples: spec.data.n } : { dataBytes: await dataFileBytes(spec.data, dataDir) }),
      backend: backendInfo().name,
    });
    checkMemoryFits(estimate, deps.memoryLimitBytes, `this worker (${deps.device.kind} ${deps.device.index}, ${backendInfo().name} backend) has`);
  }
  const dataset = await loadDataset(spec.data, dataDir);
  if (req.rank === 0) await mkdir(outDir, { recursive: true });
  const resume = !req.resume ? undefined : files ? await fetchCheckpoint(files, req.job_id, specHash) : await readCheckpointIn(outDir, specHash);
  // A fine-tune starts from an artifact's weights, unless it resumes from its own checkpoint.
  const init = !resume && spec.initFrom ? (await readArtifact(resolve(dataDir, spec.initFrom))).state : undefined;
  const uploads = files ? new CheckpointUploads((bytes) => files.putJobFile(req.job_id, req.generation, CHECKPOINT_FILE, bytes), (m) => deps.log?.(`job ${req.job_id}: ${m}`)) : null;
  const collective = await deps.connectCollective({
    jobId: req.job_id,
    generation: req.generation,
    rank: req.rank,
    worldSize: req.world_size,
    peers: req.peers,
    timeoutMs: req.timeout_ms || 5000,
    token: req.collective_token ?? '',
  });
  onCollective(collective);
  const result = await trainRank({
    spec,
    dataset,
    collective,
    specHash,
    signal,
    ...(resume ? { resume } : {}),
    ...(init ? { init } : {}),
    onCheckpoint: async (c) => (uploads ? uploads.offer(encodeCheckpoint(c)) : writeAtomic(join(outDir, CHECKPOINT_FILE), encodeCheckpoint(c))),
    onStep: (m) => {
      if (deps.failpoints && armed(deps.failpoints, { job: spec.name, rank: req.rank, step: m.globalStep, generation: req.generation })) wasmTrap();
      if (req.rank !== 0) return;
      emit({
        step: {
          global_step: m.globalStep,
          total_steps: m.totalSteps,
          epoch: m.epoch,
          loss: m.loss,
          accuracy: m.accuracy,
          lr: m.lr,
          samples_per_sec: m.samplesPerSec,
          compute_ms: m.timings.computeMs,
          bn_forward_sync_ms: m.timings.bnForwardSyncMs,
          bn_backward_sync_ms: m.timings.bnBackwardSyncMs,
          grad_sync_ms: m.timings.gradSyncMs,
          bn_stats: m.bnStats?.map(bnLayerStatsMsg) ?? [],
        },
      });
    },
  });
  try {
    let artifactPath = req.rank === 0 && result.completed ? await saveArtifact(outDir, spec, specHash, result) : '';
    await uploads?.flush();
    if (files && artifactPath) {
      // The service keeps the artifact where it would have been written: `out_dir`.
      await files.putJobFile(req.job_id, req.generation, ARTIFACT_FILE, new Uint8Array(await readFile(artifactPath)));
      artifactPath = join(req.out_dir, ARTIFACT_FILE);
    }
    return {
      completed: result.completed,
      global_steps: result.globalSteps,
      artifact_path: artifactPath,
      summary_json: JSON.stringify({
        evaluation: result.evaluation,
        recalibration: result.recalibration,
        backend: backendInfo().name,
        resumed_from_step: resume?.globalStep ?? null,
        // The final (post-recalibration) BN statistics, as BnLayerSummary JSON; NaN (a diverged layer) becomes null.
        bn_final: result.bnFinal,
      }),
    };
  } finally {
    result.model.dispose();
  }
}

/** The checkpoint the service holds for the job, when it has one. */
async function fetchCheckpoint(files: ServiceFiles, jobId: string, specHash: string) {
  const bytes = await files.fetchJobFile(jobId, CHECKPOINT_FILE);
  return bytes ? decodeCheckpoint(bytes, specHash) : undefined;
}
