/**
 * The Worker gRPC service (proto/worker.proto): one process, one device, one rank of one
 * job at a time. `Run` trains the rank with `trainRank` over a Collective to its peers,
 * streaming progress; rank 0 writes checkpoints and the artifact.
 */
import { mkdir } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import * as grpc from '@grpc/grpc-js';
import { encodeCheckpoint, specFingerprint } from '../trainer/artifact/checkpoint.js';
import { writeAtomic } from '../trainer/artifact/artifact.js';
import { backendInfo } from '../trainer/backend.js';
import type { Collective } from '../trainer/collective/collective.js';
import { loadDataset } from '../trainer/data/load.js';
import { TrainerError, type TrainerErrorCode } from '../trainer/errors.js';
import { resolveTrainSpec } from '../trainer/engine/job-spec.js';
import { CHECKPOINT_FILE, readCheckpointIn, saveArtifact } from '../trainer/engine/local-job.js';
import { trainRank } from '../trainer/engine/train.js';
import type { BnLayerSummary } from '../trainer/math/bn-summary.js';
import { join } from 'node:path';
import type { DeviceAssignment } from './device.js';
import type { BnLayerStatsMsg, RunEventMsg, RunRequestMsg, WorkerInfoMsg } from './messages.js';
import { NOT_YOUR_WORKER, presentsToken, workerToken } from './worker-token.js';
import { workerProto } from '../grpc/proto.js';

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
      if (running.size > 0) {
        // emit('error'), not destroy(): grpc-js sends the status from the stream's error
        // handler; a destroyed stream never sends one and the client waits forever.
        call.emit('error', Object.assign(new Error(`worker busy with job ${[...running.keys()][0]}`), { code: grpc.status.RESOURCE_EXHAUSTED }));
        return;
      }
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
          const s = toStatus(e);
          call.emit('error', Object.assign(new Error(s.details), { code: s.code, details: s.details }));
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
  const dataset = await loadDataset(spec.data, req.data_dir || process.cwd());
  if (req.rank === 0) await mkdir(req.out_dir, { recursive: true });
  const resume = req.resume ? await readCheckpointIn(req.out_dir, specHash) : undefined;
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
    onCheckpoint: (c) => writeAtomic(join(req.out_dir, CHECKPOINT_FILE), encodeCheckpoint(c)),
    onStep: (m) => {
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
    const artifactPath = req.rank === 0 && result.completed ? await saveArtifact(req.out_dir, spec, specHash, result) : '';
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
