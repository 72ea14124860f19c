/**
 * The job state machine (pure: no I/O). A job is queued, placed on a gang of workers
 * (scheduled), runs, and ends succeeded, failed or cancelled; a failed attempt that may
 * restart goes to retrying and back to scheduled (resuming from its checkpoint).
 *
 *   queued ─► scheduled ─► running ─► succeeded | failed
 *                 ▲  │        │
 *                 │  ▼        │
 *                 retrying ◄──┘ ─► failed   (restarts used up)
 *   queued | scheduled | running | retrying ─► cancelled
 */
import { JobStatus } from './generated/enums.js';

export { JobStatus };

export const JOB_STATUSES: readonly JobStatus[] = Object.values(JobStatus);

const NEXT: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  queued: ['scheduled', 'cancelled'],
  scheduled: ['running', 'retrying', 'cancelled'],
  running: ['succeeded', 'failed', 'retrying', 'cancelled'],
  retrying: ['scheduled', 'failed', 'cancelled'],
  succeeded: [],
  failed: [],
  cancelled: [],
};

/** The states `from` may move to. */
export function nextStates(from: JobStatus): readonly JobStatus[] {
  return NEXT[from];
}

export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return NEXT[from].includes(to);
}

/** Succeeded, failed and cancelled jobs never change state again. */
export function isTerminal(status: JobStatus): boolean {
  return NEXT[status].length === 0;
}

export function isJobStatus(value: unknown): value is JobStatus {
  return typeof value === 'string' && (JOB_STATUSES as readonly string[]).includes(value);
}
