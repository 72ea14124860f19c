/**
 * A job as the REST API answers it (`GET /v1/jobs/:id`; its OpenAPI schema is `Job`,
 * src/api/rest/schemas.ts). Types only, with no imports that run: the dashboard and the
 * CLI client read it too.
 */
import type { JobStatus } from '../db/generated/enums.js';

export interface JobView {
  id: string;
  /** The owning tenant's name. */
  tenant: string;
  name: string;
  status: JobStatus;
  priority: number;
  workers: number;
  max_restarts: number;
  attempts: number;
  progress: { step: number; total_steps: number | null; epoch: number; fraction: number | null };
  latest: { loss: number | null; accuracy: number | null };
  backend: string | null;
  devices: Array<{ worker: string; device_kind: string; device_name: string | null; backend: string | null }>;
  attempt_history: Array<{ number: number; generation: number; status: string; workers: string[]; error: string | null; started_at: string; ended_at: string | null }>;
  waiting_for: { requested_workers: number; free_workers: number; online_workers: number; reason: string } | null;
  error: string | null;
  model: { name: string; version: number } | null;
  transitions: Array<{ from: string | null; to: string; reason: string | null; at: string }>;
  created_at: string;
  updated_at: string;
  started_at: string | null;
  finished_at: string | null;
}
