/**
 * Dynamic batching for one model version: concurrent requests are concatenated row-wise
 * into one batch, run once, and each caller gets exactly its own rows back.
 *
 * Policy (Triton's dynamic batcher, simplified): a batch leaves when it is full
 * (`maxBatchSize` rows), when its oldest request has waited `maxQueueDelayMs`, or at once
 * when the delay is 0; and only while fewer than `maxInFlight` batches run (one per
 * inference thread). Under load the executor is busy, requests pile up meanwhile, and the
 * next batch takes them all: batching costs an idle model nothing with delay 0 and
 * amortises the per-call cost when it is busy. A request bigger than `maxBatchSize` runs
 * alone, never split. No I/O here: the executor is injected.
 */
import { InferenceError } from './errors.js';

export interface BatchRun {
  readonly output: Float32Array;
  /** Time the executor spent computing the batch. */
  readonly computeMs: number;
}

/** Runs one batch: `rows` rows of `rowSize` float32 each, row-major. */
export type BatchExecutor = (input: Float32Array, rows: number) => Promise<BatchRun>;

export interface BatchLimits {
  /** Most rows in one batch. @defaultValue 64 */
  readonly maxBatchSize: number;
  /** How long the oldest request may wait for others while a batch is not full. @defaultValue 0 */
  readonly maxQueueDelayMs: number;
}

export interface BatcherOptions extends BatchLimits {
  /** Input floats per row. */
  readonly rowSize: number;
  /** Output floats per row. */
  readonly outRowSize: number;
  /** Batches running at once (the executor's parallelism). @defaultValue 1 */
  readonly maxInFlight?: number;
  readonly run: BatchExecutor;
  /** Observer of each finished batch (metrics). */
  readonly onBatch?: (b: { rows: number; requests: number; computeMs: number }) => void;
}

export interface BatchResult {
  /** This request's rows of the output (a view into the batch's output). */
  readonly output: Float32Array;
  /** From submit until its batch started. */
  readonly queueMs: number;
  readonly computeMs: number;
  /** Rows of the batch it ran in. */
  readonly batchRows: number;
}

interface Pending {
  readonly input: Float32Array;
  readonly rows: number;
  readonly at: number;
  resolve(r: BatchResult): void;
  reject(e: Error): void;
}

export class DynamicBatcher {
  private limits: BatchLimits;
  private readonly queue: Pending[] = [];
  private queuedRows = 0;
  private inFlight = 0;
  /** Requests in the batches that run. */
  private running = 0;
  private timer: NodeJS.Timeout | null = null;
  private closedWith: Error | null = null;

  constructor(private readonly options: BatcherOptions) {
    this.limits = { maxBatchSize: options.maxBatchSize, maxQueueDelayMs: options.maxQueueDelayMs };
  }

  /** Requests waiting or running. */
  get pending(): number {
    return this.queue.length + this.running;
  }

  setLimits(limits: BatchLimits): void {
    this.limits = limits;
    this.pump();
  }

  submit(input: Float32Array, rows: number): Promise<BatchResult> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (input.length !== rows * this.options.rowSize) {
      return Promise.reject(new InferenceError('INTERNAL', `batcher: ${input.length} values for ${rows} rows of ${this.options.rowSize}`));
    }
    return new Promise<BatchResult>((resolve, reject) => {
      this.queue.push({ input, rows, at: performance.now(), resolve, reject });
      this.queuedRows += rows;
      this.pump();
    });
  }

  /** Reject everything waiting (the model was unloaded or the server stops). */
  close(reason: Error): void {
    this.closedWith = reason;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const p of this.queue.splice(0)) p.reject(reason);
    this.queuedRows = 0;
  }

  private pump(): void {
    const maxInFlight = this.options.maxInFlight ?? 1;
    while (this.queue.length > 0 && this.inFlight < maxInFlight && !this.closedWith) {
      const waited = performance.now() - this.queue[0]!.at;
      const full = this.queuedRows >= this.limits.maxBatchSize;
      if (!full && waited < this.limits.maxQueueDelayMs) {
        this.arm(this.limits.maxQueueDelayMs - waited);
        return;
      }
      this.dispatch(this.take());
    }
  }

  private arm(ms: number): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(0, ms));
  }

  /** The head of the queue, up to maxBatchSize rows (at least one request). */
  private take(): Pending[] {
    const batch: Pending[] = [this.queue.shift()!];
    let rows = batch[0]!.rows;
    while (this.queue.length > 0 && rows + this.queue[0]!.rows <= this.limits.maxBatchSize) {
      const next = this.queue.shift()!;
      rows += next.rows;
      batch.push(next);
    }
    this.queuedRows -= rows;
    if (this.queue.length === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    return batch;
  }

  private dispatch(batch: Pending[]): void {
    const rows = batch.reduce((n, p) => n + p.rows, 0);
    let input: Float32Array;
    if (batch.length === 1) {
      input = batch[0]!.input;
    } else {
      input = new Float32Array(rows * this.options.rowSize);
      let off = 0;
      for (const p of batch) {
        input.set(p.input, off);
        off += p.input.length;
      }
    }
    const started = performance.now();
    this.inFlight++;
    this.running += batch.length;
    const settle = () => {
      this.inFlight--;
      this.running -= batch.length;
      this.pump();
    };
    this.options.run(input, rows).then(
      (r) => {
        const expected = rows * this.options.outRowSize;
        if (r.output.length !== expected) {
          const e = new InferenceError('INTERNAL', `batcher: the model returned ${r.output.length} values for ${rows} rows, expected ${expected}`);
          for (const p of batch) p.reject(e);
        } else {
          this.options.onBatch?.({ rows, requests: batch.length, computeMs: r.computeMs });
          let row = 0;
          for (const p of batch) {
            const output = r.output.subarray(row * this.options.outRowSize, (row + p.rows) * this.options.outRowSize);
            row += p.rows;
            p.resolve({ output, queueMs: started - p.at, computeMs: r.computeMs, batchRows: rows });
          }
        }
        settle();
      },
      (e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        for (const p of batch) p.reject(err);
        settle();
      },
    );
  }
}
