/** Typed messages of proto/worker.proto (keepCase: snake_case as on the wire). */
export interface WorkerInfoMsg {
  worker_id: string;
  device_kind: 'gpu' | 'cpu';
  device_index: number;
  device_name: string;
  device_memory_mib: number;
  backend: string;
  backend_package: string;
  rss_bytes: number;
  busy_job_id: string;
  /** Port of the worker's Collective server, on the worker's host (0: none reported). */
  collective_port: number;
  /** The same server's Unix socket ('' when none). */
  collective_unix_path: string;
  /** Identifies the worker's host ('' when unknown): equal ids can reach each other's socket. */
  host_id: string;
  /** CPU cores of the worker's host (0: unknown; workers of older versions). */
  host_cores: number;
}

export interface RunRequestMsg {
  job_id: string;
  generation: number;
  rank: number;
  world_size: number;
  peers: string[];
  spec_json: string;
  out_dir: string;
  data_dir: string;
  resume: boolean;
  timeout_ms: number;
  /** The attempt's collective secret (every rank the same); '' from an older pool. */
  collective_token: string;
}

export interface StepMsg {
  global_step: number;
  total_steps: number;
  epoch: number;
  loss: number;
  accuracy: number;
  lr: number;
  samples_per_sec: number;
  compute_ms: number;
  bn_forward_sync_ms: number;
  bn_backward_sync_ms: number;
  grad_sync_ms: number;
  /** Empty on steps that record no BN statistics (proto-loader's `defaults` gives [] for an absent repeated field). */
  bn_stats: BnLayerStatsMsg[];
}

/** proto BnLayerStats: a `BnLayerSummary` (trainer/math/bn-summary.ts) flattened for the wire. */
export interface BnLayerStatsMsg {
  layer: string;
  channels: number;
  mean_mean: number;
  mean_min: number;
  mean_max: number;
  mean_l2: number;
  var_mean: number;
  var_min: number;
  var_max: number;
}

export interface DoneMsg {
  completed: boolean;
  global_steps: number;
  artifact_path: string;
  summary_json: string;
}

export interface RunEventMsg {
  step?: StepMsg;
  done?: DoneMsg;
  event?: 'step' | 'done';
}
