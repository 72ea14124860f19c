/**
 * Prometheus metrics of inference, per model and version (what Triton exports as
 * nv_inference_*: request successes and failures, queue and compute durations, pending
 * requests; plus the batch sizes dynamic batching forms). Registered in the API's
 * registry, so `/metrics` shows them beside the job and HTTP metrics.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export type Protocol = 'grpc' | 'rest';

export class InferenceMetrics {
  private readonly success: Counter<'model' | 'version' | 'protocol'>;
  private readonly failure: Counter<'model' | 'version' | 'protocol' | 'reason'>;
  private readonly queue: Histogram<'model' | 'version'>;
  private readonly compute: Histogram<'model' | 'version'>;
  private readonly batch: Histogram<'model' | 'version'>;

  constructor(registry: Registry, pending: () => Iterable<{ model: string; version: string; count: number }>) {
    const registers = [registry];
    this.success = new Counter({ name: 'tas_inference_request_success_total', help: 'Inference requests that succeeded', labelNames: ['model', 'version', 'protocol'], registers });
    this.failure = new Counter({
      name: 'tas_inference_request_failure_total',
      help: 'Inference requests that failed, by reason (the error code)',
      labelNames: ['model', 'version', 'protocol', 'reason'],
      registers,
    });
    this.queue = new Histogram({ name: 'tas_inference_queue_duration_seconds', help: 'Time a request waited for its batch to start', labelNames: ['model', 'version'], buckets: LATENCY_BUCKETS, registers });
    this.compute = new Histogram({ name: 'tas_inference_compute_duration_seconds', help: 'Compute time of each batch', labelNames: ['model', 'version'], buckets: LATENCY_BUCKETS, registers });
    this.batch = new Histogram({ name: 'tas_inference_batch_size', help: 'Rows of each batch run (dynamic batching)', labelNames: ['model', 'version'], buckets: BATCH_BUCKETS, registers });
    new Gauge({
      name: 'tas_inference_pending_requests',
      help: 'Requests waiting for or running in a batch',
      labelNames: ['model', 'version'],
      registers,
      collect() {
        this.reset();
        for (const p of pending()) this.set({ model: p.model, version: p.version }, p.count);
      },
    });
  }

  succeeded(model: string, version: string, protocol: Protocol, queueMs: number): void {
    this.success.inc({ model, version, protocol });
    this.queue.observe({ model, version }, queueMs / 1000);
  }

  /** `model`/`version` as the request named them ("" when it named none). */
  failed(model: string, version: string, protocol: Protocol, reason: string): void {
    this.failure.inc({ model, version, protocol, reason });
  }

  batchRan(model: string, version: string, rows: number, computeMs: number): void {
    this.batch.observe({ model, version }, rows);
    this.compute.observe({ model, version }, computeMs / 1000);
  }
}
