/**
 * Training progress into the database: rank 0's step events are buffered and written
 * in batches (one multi-row insert into job_metrics and one update of the job's row per
 * flush), so a fast job's hundreds of steps per second cost a few statements per
 * second, and the job's status shows progress while it runs.
 */
import type { Prisma, PrismaClient } from '../db/client.js';
import type { StepMsg } from '../../gpu-pool/messages.js';

export interface ProgressSinkOptions {
  /** Longest time a step waits before it is written. @defaultValue 500 */
  readonly flushIntervalMs?: number;
  /** Steps that trigger a write at once. @defaultValue 200 */
  readonly maxBuffered?: number;
}

export class ProgressSink {
  private buffer: StepMsg[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private failure: unknown = null;
  private readonly flushIntervalMs: number;
  private readonly maxBuffered: number;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly jobId: string,
    options: ProgressSinkOptions = {},
  ) {
    this.flushIntervalMs = options.flushIntervalMs ?? 500;
    this.maxBuffered = options.maxBuffered ?? 200;
  }

  push(step: StepMsg): void {
    this.buffer.push(step);
    if (this.buffer.length >= this.maxBuffered) void this.flush();
    else if (!this.timer) this.timer = setTimeout(() => void this.flush(), this.flushIntervalMs);
  }

  /** Writes everything buffered; resolves when it is stored (rejects if a write failed). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const steps = this.buffer;
    this.buffer = [];
    // Writes are chained so rows and the job's latest step arrive in order.
    this.writing = this.writing.then(() => (steps.length > 0 ? this.write(steps) : undefined)).catch((e: unknown) => {
      this.failure = e;
    });
    return this.writing.then(() => {
      if (this.failure) throw this.failure;
    });
  }

  private async write(steps: StepMsg[]): Promise<void> {
    const last = steps[steps.length - 1]!;
    const finite = (v: number) => (Number.isFinite(v) ? v : null);
    await this.prisma.$transaction([
      this.prisma.jobMetric.createMany({
        data: steps.map((s) => ({
          jobId: this.jobId,
          step: Number(s.global_step),
          loss: finite(s.loss),
          accuracy: finite(s.accuracy),
          lr: finite(s.lr),
          samplesPerSec: finite(s.samples_per_sec),
          computeMs: s.compute_ms,
          bnFwdMs: s.bn_forward_sync_ms,
          bnBwdMs: s.bn_backward_sync_ms,
          gradMs: s.grad_sync_ms,
          ...bnStatsOf(s),
        })),
      }),
      this.prisma.job.update({
        where: { id: this.jobId },
        data: {
          step: Number(last.global_step),
          totalSteps: Number(last.total_steps),
          epoch: last.epoch,
          loss: finite(last.loss),
          accuracy: finite(last.accuracy),
          updatedAt: new Date(),
        },
      }),
    ]);
  }
}

/** The step's per-layer BN summaries, when the worker sent them (see trainer/math/bn-summary.ts). */
function bnStatsOf(s: StepMsg): { bnStats?: Prisma.InputJsonValue } {
  const stats = (s as StepMsg & { bn_stats?: unknown[] }).bn_stats;
  return Array.isArray(stats) && stats.length > 0 ? { bnStats: stats as Prisma.InputJsonValue } : {};
}
