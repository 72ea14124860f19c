/**
 * The worker registry: which workers the pool has, whether they answer, and which job
 * holds each one. The `workers` table is the shared truth, so an API process, a
 * scheduler and a pool on other machines all see the same pool:
 *
 * - `add(address)` registers a worker (local or remote) after it answered Info;
 * - a probe loop asks every known worker for Info each `probeIntervalMs`, recording
 *   memory and `last_seen_at`; one that does not answer goes `offline`, and one that
 *   answers again comes back `idle` (or stays `busy` if a job holds it);
 * - `reserve(jobId, n)` takes a whole gang or nothing, in one transaction that locks the
 *   idle rows (see gang.ts for why that cannot deadlock); `release(jobId)` frees them.
 *
 * `changed()` resolves on the next change this process saw (a release, a worker back
 * online), which wakes jobs waiting for a gang without polling the database in a loop.
 */
import { EventEmitter } from 'node:events';
import type { PrismaClient } from '../db/client.js';
import type { TlsFiles } from '../../grpc/tls-files.js';
import { tenantWorkersHeld } from './tenant-quota.js';
import { pickGang, type DeviceKind, type GangCandidate, type PoolCounts } from '../../gpu-pool/gang.js';
import type { WorkerInfoMsg } from '../../gpu-pool/messages.js';
import { WorkerClient } from '../../gpu-pool/worker-client.js';

export interface ReservedWorker extends GangCandidate {
  readonly backend: string | null;
}

export interface RegistryOptions {
  /** How often every worker is asked for Info. @defaultValue 2000 */
  readonly probeIntervalMs?: number;
  /** How long one probe may take before the worker counts as offline. @defaultValue 1500 */
  readonly probeTimeoutMs?: number;
  readonly tls?: TlsFiles;
  readonly log?: (message: string) => void;
}

/** A worker whose last probe is older than this many probe intervals counts as offline. */
export const STALE_PROBES = 3;

export class WorkerRegistry {
  private readonly addresses = new Set<string>();
  private readonly events = new EventEmitter();
  private timer: NodeJS.Timeout | null = null;
  private probing: Promise<void> | null = null;
  readonly probeIntervalMs: number;
  private readonly probeTimeoutMs: number;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly options: RegistryOptions = {},
  ) {
    this.probeIntervalMs = options.probeIntervalMs ?? 2000;
    this.probeTimeoutMs = options.probeTimeoutMs ?? 1500;
    this.events.setMaxListeners(0);
  }

  /** Register a worker by address; it must answer Info now. */
  async add(address: string): Promise<WorkerInfoMsg> {
    const info = await this.info(address);
    this.addresses.add(address);
    await this.upsert(address, info, true);
    this.notify();
    return info;
  }

  /** Forget a worker (it stopped on purpose): it shows offline and takes no job. */
  async remove(address: string): Promise<void> {
    this.addresses.delete(address);
    await this.prisma.worker.updateMany({ where: { id: address }, data: { state: 'offline' } });
    this.notify();
  }

  /** Marks a worker offline now (its process died), without waiting for a probe. */
  async markOffline(address: string): Promise<void> {
    await this.prisma.worker.updateMany({ where: { id: address }, data: { state: 'offline' } });
  }

  /** Start probing every registered worker. */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (!this.probing) this.probing = this.probeAll().finally(() => (this.probing = null));
    }, this.probeIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.probing;
  }

  /** Probe every registered worker once (also what the loop does). */
  async probeAll(): Promise<void> {
    let changed = false;
    await Promise.all(
      [...this.addresses].map(async (address) => {
        try {
          const info = await this.info(address);
          changed = (await this.upsert(address, info, false)) || changed;
        } catch {
          const r = await this.prisma.worker.updateMany({ where: { id: address, NOT: { state: 'offline' } }, data: { state: 'offline' } });
          if (r.count > 0) this.options.log?.(`worker ${address} stopped answering; marked offline`);
        }
      }),
    );
    if (changed) this.notify();
  }

  /**
   * Reserve `n` idle workers of one kind for `jobId`, all or none. Returns them, or null
   * when no such gang is free now, or when `quota` is given and the job's tenant would
   * then hold more than its `maxWorkers` (checked under the tenant's row lock, so two
   * jobs of one tenant cannot both take room for one).
   */
  async reserve(jobId: string, n: number, quota?: { tenantId: string; maxWorkers: number }): Promise<ReservedWorker[] | null> {
    const fresh = new Date(Date.now() - STALE_PROBES * this.probeIntervalMs);
    return this.prisma.$transaction(async (tx) => {
      if (quota) {
        // The tenant's row first, then the workers' (one order, no deadlock).
        await tx.$queryRaw`SELECT 1 FROM tenants WHERE id = ${quota.tenantId}::uuid FOR UPDATE`;
        if ((await tenantWorkersHeld(tx, quota.tenantId, jobId)) + n > quota.maxWorkers) return null;
      }
      // Lock the idle rows in one order: concurrent reservations serialise here, and
      // each sees the other's result, so neither can take part of a gang.
      const idle = await tx.$queryRaw<Array<{ id: string; address: string; device_kind: string; backend: string | null }>>`
        SELECT id, address, device_kind, backend FROM workers
        WHERE state = 'idle' AND last_seen_at >= ${fresh}
        ORDER BY id FOR UPDATE`;
      const gang = pickGang(
        idle.map((r) => ({ id: r.id, address: r.address, deviceKind: r.device_kind as DeviceKind, backend: r.backend })),
        n,
      );
      if (!gang) return null;
      await tx.worker.updateMany({ where: { id: { in: gang.map((g) => g.id) } }, data: { state: 'busy', currentJobId: jobId } });
      return gang;
    });
  }

  /** Free the workers `jobId` holds (offline ones stay offline). */
  async release(jobId: string): Promise<void> {
    await this.prisma.$executeRaw`
      UPDATE workers SET state = CASE WHEN state = 'busy' THEN 'idle'::"WorkerState" ELSE state END,
                         current_job_id = NULL
      WHERE current_job_id = ${jobId}::uuid`;
    this.notify();
  }

  /** Online and idle workers by device kind (stale probes count as offline). */
  async counts(): Promise<PoolCounts> {
    return poolCounts(this.prisma, this.probeIntervalMs);
  }

  /** Resolves at the next change seen here, or after `timeoutMs` (other processes' changes). */
  changed(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.events.off('change', done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.events.once('change', done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  notify(): void {
    this.events.emit('change');
  }

  private async info(address: string): Promise<WorkerInfoMsg> {
    const client = new WorkerClient(address, this.options.tls);
    try {
      return await client.info(this.probeTimeoutMs);
    } finally {
      client.close();
    }
  }

  /** Writes a probe's result; true when the worker came (back) online. */
  private async upsert(address: string, info: WorkerInfoMsg, registering: boolean): Promise<boolean> {
    const details = {
      address,
      deviceKind: info.device_kind,
      deviceIndex: info.device_index,
      deviceName: info.device_name,
      deviceMemoryMiB: Number(info.device_memory_mib),
      backend: info.backend,
      pid: Number(info.worker_id.split(':').pop()) || null,
      rssBytes: BigInt(info.rss_bytes),
      lastSeenAt: new Date(),
    };
    const before = await this.prisma.worker.findUnique({ where: { id: address }, select: { state: true, currentJobId: true, pid: true } });
    // A worker that restarted (another pid at this address) holds no job any more.
    const restarted = before !== null && before.pid !== null && before.pid !== details.pid;
    const comesBack = before === null || before.state === 'offline' || restarted || registering;
    const state = comesBack ? (before?.currentJobId && !restarted && !registering ? 'busy' : 'idle') : undefined;
    await this.prisma.worker.upsert({
      where: { id: address },
      create: { id: address, ...details, state: 'idle' },
      update: { ...details, ...(state ? { state } : {}), ...(restarted || registering ? { currentJobId: null } : {}) },
    });
    return comesBack;
  }
}

/** Pool counts straight from the table (the API uses this without a registry). */
export async function poolCounts(prisma: PrismaClient, probeIntervalMs: number): Promise<PoolCounts> {
  const fresh = new Date(Date.now() - STALE_PROBES * probeIntervalMs);
  const rows = await prisma.$queryRaw<Array<{ device_kind: string; state: string; n: bigint }>>`
    SELECT device_kind, state::text AS state, count(*) AS n FROM workers
    WHERE state IN ('idle', 'busy') AND last_seen_at >= ${fresh}
    GROUP BY device_kind, state`;
  const online = { gpu: 0, cpu: 0 };
  const idle = { gpu: 0, cpu: 0 };
  for (const r of rows) {
    const kind = r.device_kind === 'gpu' ? 'gpu' : 'cpu';
    online[kind] += Number(r.n);
    if (r.state === 'idle') idle[kind] += Number(r.n);
  }
  return { online, idle };
}
