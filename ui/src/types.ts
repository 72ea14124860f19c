// The REST API's answers as the dashboard reads them (the contract is the OpenAPI at /docs).

export const JOB_STATUSES = ['queued', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

/** A job: the server's own declaration of what it sends. */
export type { JobView as Job } from '../../src/service/jobs/job-view';
import type { JobView as Job } from '../../src/service/jobs/job-view';

export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}

/** The metrics view (pure, no dependencies): the server's own declaration of what it sends. */
export type { JobMetricsView as Metrics } from '../../src/service/jobs/metrics-view';

export interface LogLine {
  id: string;
  level: 'info' | 'warn' | 'error';
  message: string;
  at: string;
}

export interface PoolWorker {
  id: string;
  address: string;
  state: 'idle' | 'busy' | 'draining' | 'offline';
  device_kind: string;
  device_index: number | null;
  device_name: string | null;
  device_memory_mib: number | null;
  backend: string | null;
  pid: number | null;
  rss_bytes: number | null;
  current_job_id: string | null;
  last_seen_at: string;
}

export interface Pool {
  workers: PoolWorker[];
  summary: { total: number; idle: number; busy: number; offline: number };
}

export interface ModelSummary {
  name: string;
  created_at: string;
  latest_version: number | null;
  versions: number;
  serving: { loaded: boolean; max_batch_size: number; max_queue_delay_microseconds: number };
}

export interface ModelVersion {
  model: string;
  version: number;
  job_id: string | null;
  created_at: string;
  artifact_bytes: number | null;
  metadata: {
    evaluation?: Record<string, unknown> | null;
    recalibration?: { mode?: string } & Record<string, unknown>;
    backend?: string;
    global_steps?: number;
    resumed_from_step?: number | null;
    workers?: Array<{ worker_id: string; device_kind: string; device_name: string | null; backend: string | null }>;
  } & Record<string, unknown>;
}

export interface InferenceMetadata {
  name: string;
  versions: string[];
  platform: string;
  inputs: Array<{ name: string; datatype: string; shape: number[] }>;
  outputs: Array<{ name: string; datatype: string; shape: number[] }>;
}

export interface InferResponse {
  model_name: string;
  model_version: string;
  outputs: Array<{ name: string; datatype: string; shape: number[]; data: number[] }>;
}
