/** /v1/pool: the workers, their devices and state, and the job each one runs. */
import type { FastifyPluginAsync } from 'fastify';
import { STALE_PROBES } from '../../../service/scheduling/worker-registry.js';
import type { PrismaClient } from '../../../service/db/client.js';
import { ChangeWatch } from '../long-poll.js';
import { canSee, visibleTenant, type Principal } from '../../../service/tenants/principal.js';
import { sendWhenChanged, waitQuery } from './jobs.js';

export interface PoolRouteOptions {
  readonly prisma: PrismaClient;
  readonly probeIntervalMs: number;
}

export const poolRoutes: FastifyPluginAsync<PoolRouteOptions> = async (app, { prisma, probeIntervalMs }) => {
  const watch = new ChangeWatch();
  // Closing (shutdown) answers held long polls at once.
  app.addHook('preClose', async () => watch.close());
  // Every key sees the whole pool; a tenant sees only its own jobs' ids on it.
  const read = async (who: Principal) => {
    const rows = await prisma.worker.findMany({ orderBy: { id: 'asc' }, include: { currentJob: { select: { tenantId: true } } } });
    const staleBefore = Date.now() - STALE_PROBES * probeIntervalMs;
    const workers = rows.map((w) => ({
      id: w.id,
      address: w.address,
      // A worker whose probes stopped (its pool died) shows offline, whatever its row says.
      state: w.state !== 'offline' && w.lastSeenAt.getTime() < staleBefore ? 'offline' : w.state,
      device_kind: w.deviceKind,
      device_index: w.deviceIndex,
      device_name: w.deviceName,
      device_memory_mib: w.deviceMemoryMiB,
      // The memory a job may use there (jobs are admitted against it).
      memory_limit_bytes: w.memoryLimitBytes === null ? null : Number(w.memoryLimitBytes),
      backend: w.backend,
      pid: w.pid,
      rss_bytes: w.rssBytes === null ? null : Number(w.rssBytes),
      current_job_id: w.currentJob && canSee(who, w.currentJob.tenantId) ? w.currentJobId : null,
      last_seen_at: w.lastSeenAt.toISOString(),
    }));
    const count = (s: string) => workers.filter((w) => w.state === s).length;
    return { workers, summary: { total: workers.length, idle: count('idle'), busy: count('busy'), offline: count('offline') } };
  };
  app.get<{ Querystring: { wait?: number } }>(
    '/v1/pool',
    {
      schema: {
        tags: ['pool'],
        summary: 'Workers, devices, state, current job (ETag; ?wait=S long-polls)',
        querystring: { type: 'object', properties: waitQuery, additionalProperties: false },
        response: { 200: { type: 'object', properties: { workers: { type: 'array', items: { $ref: 'PoolWorker#' } } }, additionalProperties: true } },
      },
    },
    // The ETag covers last_seen_at and memory too, so a long poll also ends at each probe.
    // Long polls share reads per view of the pool: one per tenant (and one for the admin).
    async (request, reply) => sendWhenChanged(request, reply, watch, `pool:${visibleTenant(request.principal) ?? '*'}`, () => read(request.principal), request.query.wait),
  );
};
