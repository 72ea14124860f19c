/**
 * Prometheus metrics at /metrics: HTTP request counts and durations per route, plus
 * gauges read at scrape time from the shared state (jobs by status from PostgreSQL,
 * workers by state, queue depth from Redis), so any API process reports the same pool.
 */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { STALE_PROBES } from '../../service/scheduling/worker-registry.js';
import type { JobQueue } from '../../service/scheduling/job-queue.js';
import type { PrismaClient } from '../../service/db/client.js';

export interface PrometheusOptions {
  readonly prisma: PrismaClient;
  readonly queue: JobQueue;
  readonly probeIntervalMs: number;
  /** Where to register; others (inference) may register in it too. @defaultValue a new one */
  readonly registry?: Registry;
}

export function registerPrometheus(app: FastifyInstance, options: PrometheusOptions): Registry {
  const registry = options.registry ?? new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tas_process_' });
  const requests = new Counter({ name: 'tas_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'] as const, registers: [registry] });
  const duration = new Histogram({
    name: 'tas_http_request_duration_seconds',
    help: 'HTTP request duration by route',
    labelNames: ['route', 'method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [registry],
  });
  new Gauge({
    name: 'tas_jobs',
    help: 'Jobs by status',
    labelNames: ['status'] as const,
    registers: [registry],
    async collect() {
      const rows = await options.prisma.job.groupBy({ by: ['status'], _count: { _all: true } });
      this.reset();
      for (const r of rows) this.set({ status: r.status }, r._count._all);
    },
  });
  new Gauge({
    name: 'tas_workers',
    help: 'Workers by state (stale probes count as offline)',
    labelNames: ['state', 'device_kind'] as const,
    registers: [registry],
    async collect() {
      const rows = await options.prisma.worker.findMany({ select: { state: true, deviceKind: true, lastSeenAt: true } });
      const stale = Date.now() - STALE_PROBES * options.probeIntervalMs;
      this.reset();
      for (const state of ['idle', 'busy', 'draining', 'offline']) for (const kind of ['gpu', 'cpu']) this.set({ state, device_kind: kind }, 0);
      for (const w of rows) this.inc({ state: w.state !== 'offline' && w.lastSeenAt.getTime() < stale ? 'offline' : w.state, device_kind: w.deviceKind });
    },
  });
  new Gauge({
    name: 'tas_queue_jobs',
    help: 'Jobs in the Redis queue: waiting, or active (placed or waiting for a gang)',
    labelNames: ['state'] as const,
    registers: [registry],
    async collect() {
      const d = await options.queue.depth();
      this.set({ state: 'waiting' }, d.waiting);
      this.set({ state: 'active' }, d.active);
    },
  });

  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    requests.inc({ route, method: request.method, status: String(reply.statusCode) });
    duration.observe({ route, method: request.method }, reply.elapsedTime / 1000);
  });
  app.get('/metrics', { config: { access: 'metrics' }, schema: { tags: ['health'], summary: 'Prometheus metrics (with auth on: the admin key or TAS_METRICS_TOKEN)', hide: false } }, async (_request, reply) => {
    return reply.header('content-type', registry.contentType).send(await registry.metrics());
  });
  return registry;
}
