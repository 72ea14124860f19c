/**
 * The worker registry: which workers the pool has, whether they answer, and which job
 * holds each one. The `workers` table is the shared truth, so an API process, a
 * scheduler and a pool on other machines all see the same pool:
 *
 * - `add(address)` registers a worker (local or remote) after it answered Info;
 * - `join(address)` is the same for a worker that joins by itself (`tas worker --join`):
 *   its row records the heartbeat, which it repeats (`heartbeat`) every
 *   `heartbeatMs`; every registry's probe loop takes up the joined workers it finds in
 *   the table (the API that took the join may be another process), and a joined worker
 *   whose heartbeats stop for `leaveAfterMs` leaves the pool; `leave` is its goodbye;
 * - a probe loop asks every known worker for Info each `probeIntervalMs`, recording
 *   memory and `last_seen_at`; one that does not answer goes `offline`, and one that
 *   answers again comes back `idle` (or stays `busy` if a job holds it); one whose
 *   engine failed (Info's `needs_restart`) goes `draining` and takes no job until a
 *   fresh process replaces it;
 * - `reserve(jobId, n)` takes a whole gang or nothing, in one transaction that locks the
 *   idle rows (see gang.ts for why that cannot deadlock); `release(jobId)` frees them;
 * - a worker that stopped, or was replaced by a fresh process, leaves the table at once
 *   (`remove`); one that stays unseen for `pruneAfterMs` (its machine went away, or the
 *   service that ran it was killed) is pruned, so the pool's counts stay those of the
 *   workers that exist.
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
  /** The memory a job may use there; null when the worker did not say. */
  readonly memoryLimitBytes: number | null;
}

/** What a reservation prefers and requires (gang.ts `pickGang`). */
export interface ReserveOptions {
  /** Worker ids to take only when no others are free (a failed attempt's). */
  readonly avoid?: readonly string[];
  /** The job's estimated memory on a worker of this backend; workers with less are not taken. */
  readonly memoryNeed?: (backend: string | null) => number;
  /** The job's tenant's limit on workers held at once (checked under the tenant's row lock). */
  readonly quota?: { readonly tenantId: string; readonly maxWorkers: number };
}

/** A worker that can hold a job needing `need(backend)` bytes (one that did not say its limit is taken on trust). */
export function holds(w: Pick<ReservedWorker, 'backend' | 'memoryLimitBytes'>, need: ((backend: string | null) => number) | undefined): boolean {
  return need === undefined || w.memoryLimitBytes === null || need(w.backend) <= w.memoryLimitBytes;
}

export interface RegistryOptions {
  /** How often every worker is asked for Info. @defaultValue 2000 */
  readonly probeIntervalMs?: number;
  /** How long one probe may take before the worker counts as offline. @defaultValue 1500 */
  readonly probeTimeoutMs?: number;
  /** A worker unseen this long leaves the table. @defaultValue 600000 */
  readonly pruneAfterMs?: number;
  /** A joined worker whose heartbeats stop this long leaves the pool. @defaultValue 30000 */
  readonly leaveAfterMs?: number;
  readonly tls?: TlsFiles;
  readonly log?: (message: string) => void;
}

/** A worker whose last probe is older than this many probe intervals counts as offline. */
export const STALE_PROBES = 3;

export class WorkerRegistry {
  private readonly addresses = new Set<string>();
  private readonly events = new EventEmitter();
  private timer: NodeJS.Timeout | null = null;
  /** The prune under way. */
  private probing: Promise<void> | null = null;
  /** Probes under way, by address. */
  private readonly inFlight = new Map<string, Promise<void>>();
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

  /** Register a worker by address; rejects when it does not answer Info now (it is probed until it does). */
  async add(address: string): Promise<WorkerInfoMsg> {
    this.addresses.add(address);
    const info = await this.info(address);
    await this.upsert(address, info, true);
    this.notify();
    return info;
  }

  /**
   * A worker that joins by itself, or says again that it is there: a new one (or one
   * whose row is gone: pruned, or the database was reset) must answer Info now; a known
   * one only refreshes its heartbeat (the probe loop checks it answers). Rejects when a
   * new worker does not answer.
   */
  async join(address: string): Promise<{ joined: boolean }> {
    const now = new Date();
    const known = await this.prisma.worker.updateMany({ where: { id: address, joinedAt: { not: null } }, data: { heartbeatAt: now } });
    if (known.count > 0) {
      this.addresses.add(address);
      return { joined: false };
    }
    const info = await this.info(address);
    this.addresses.add(address);
    await this.upsert(address, info, true, { joinedAt: now, heartbeatAt: now });
    this.options.log?.(`worker ${address} joined (${info.device_kind} ${info.device_name}, ${info.backend})`);
    this.notify();
    return { joined: true };
  }

  /** A joined worker says goodbye (it is stopping): it leaves the pool at once. */
  async leave(address: string): Promise<boolean> {
    const r = await this.prisma.worker.deleteMany({ where: { id: address, joinedAt: { not: null } } });
    this.addresses.delete(address);
    if (r.count > 0) {
      this.options.log?.(`worker ${address} left the pool (it is stopping)`);
      this.notify();
    }
    return r.count > 0;
  }

  /**
   * Takes up the joined workers of the table this registry does not probe yet, and lets
   * go of those whose heartbeats stopped `leaveAfterMs` ago (their rows go: a job they
   * hold fails over, as with any worker that stops answering).
   */
  async syncJoined(): Promise<void> {
    const leaveAfter = this.options.leaveAfterMs ?? 30_000;
    const rows = await this.prisma.worker.findMany({ where: { joinedAt: { not: null } }, select: { id: true, heartbeatAt: true } });
    const silentBefore = Date.now() - leaveAfter;
    for (const r of rows) {
      if (r.heartbeatAt !== null && r.heartbeatAt.getTime() >= silentBefore) {
        this.addresses.add(r.id);
        continue;
      }
      const gone = await this.prisma.worker.deleteMany({ where: { id: r.id, heartbeatAt: r.heartbeatAt } });
      this.addresses.delete(r.id);
      if (gone.count > 0) {
        this.options.log?.(`worker ${r.id} left the pool: no heartbeat for ${Math.round(leaveAfter / 1000)} s`);
        this.notify();
      }
    }
  }

  /** Forget a worker (it stopped, or its process exited and is replaced): it leaves the pool's table. */
  async remove(address: string): Promise<void> {
    this.addresses.delete(address);
    await this.prisma.worker.deleteMany({ where: { id: address } });
    this.notify();
  }

  /**
   * Removes the workers unseen for `pruneAfterMs`, and at once the stale ones that no
   * registry probes any more (this one does not know them, and one that did would keep
   * them fresh: they were left by a service that is gone, killed without stopping its
   * workers). Returns how many.
   */
  async prune(): Promise<number> {
    const before = new Date(Date.now() - (this.options.pruneAfterMs ?? 600_000));
    const orphanedBefore = new Date(Date.now() - 2 * STALE_PROBES * this.probeIntervalMs);
    const gone = await this.prisma.worker.findMany({
      where: { OR: [{ lastSeenAt: { lt: before } }, { lastSeenAt: { lt: orphanedBefore }, id: { notIn: [...this.addresses] } }] },
      select: { id: true, lastSeenAt: true },
    });
    if (gone.length === 0) return 0;
    // Only rows still as old as read (a worker may have answered meanwhile).
    const r = await this.prisma.worker.deleteMany({ where: { OR: gone.map((g) => ({ id: g.id, lastSeenAt: g.lastSeenAt })) } });
    if (r.count > 0) {
      const known = gone.filter((g) => this.addresses.has(g.id)).map((g) => g.id);
      const orphans = gone.filter((g) => !this.addresses.has(g.id)).map((g) => g.id);
      if (known.length > 0) this.options.log?.(`pruned ${known.length} worker(s) unseen for ${Math.round((this.options.pruneAfterMs ?? 600_000) / 1000)} s: ${known.join(', ')}`);
      if (orphans.length > 0) this.options.log?.(`removed ${orphans.length} worker(s) no scheduler probes any more (left by a service that stopped without them): ${orphans.join(', ')}`);
    }
    return r.count;
  }

  /**
   * Start probing every registered worker. Each worker is probed on its own: one that does
   * not answer (its probe waits `probeTimeoutMs`) never delays the others' probes, whose
   * `last_seen_at` must stay fresh for them to count as online.
   */
  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      for (const address of this.addresses) {
        if (this.inFlight.has(address)) continue;
        const p = this.probeOne(address)
          .then((changed) => void (changed && this.notify()))
          .catch((e: Error) => this.options.log?.(`worker ${address}: probe failed: ${e.message}`))
          .finally(() => this.inFlight.delete(address));
        this.inFlight.set(address, p);
      }
      this.probing ??= this.syncJoined()
        .then(() => this.prune())
        .then(() => undefined, (e: Error) => this.options.log?.(`pruning workers: ${e.message}`))
        .finally(() => (this.probing = null));
    }, this.probeIntervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([this.probing, ...this.inFlight.values()]);
  }

  /** Probe every registered worker once, now. */
  async probeAll(): Promise<void> {
    const changed = await Promise.all([...this.addresses].map((address) => this.probeOne(address)));
    if (changed.some(Boolean)) this.notify();
  }

  /** Ask one worker for Info and record the answer, or its silence; true when it came (back) online. */
  private async probeOne(address: string): Promise<boolean> {
    try {
      const info = await this.info(address);
      return await this.upsert(address, info, false);
    } catch {
      const r = await this.prisma.worker.updateMany({ where: { id: address, NOT: { state: 'offline' } }, data: { state: 'offline' } });
      if (r.count > 0) this.options.log?.(`worker ${address} stopped answering; marked offline`);
      return false;
    }
  }

  /**
   * Reserve `n` idle workers of one kind for `jobId`, all or none. Returns them, or null
   * when no such gang is free now, or when `quota` is given and the job's tenant would
   * then hold more than its `maxWorkers` (checked under the tenant's row lock, so two
   * jobs of one tenant cannot both take room for one).
   */
  async reserve(jobId: string, n: number, options: ReserveOptions = {}): Promise<ReservedWorker[] | null> {
    const { quota } = options;
    const fresh = new Date(Date.now() - STALE_PROBES * this.probeIntervalMs);
    return this.prisma.$transaction(async (tx) => {
      if (quota) {
        // The tenant's row first, then the workers' (one order, no deadlock).
        await tx.$queryRaw`SELECT 1 FROM tenants WHERE id = ${quota.tenantId}::uuid FOR UPDATE`;
        if ((await tenantWorkersHeld(tx, quota.tenantId, jobId)) + n > quota.maxWorkers) return null;
      }
      // Lock the idle rows in one order: concurrent reservations serialise here, and
      // each sees the other's result, so neither can take part of a gang.
      const idle = await tx.$queryRaw<Array<{ id: string; address: string; device_kind: string; backend: string | null; memory_limit_bytes: bigint | null }>>`
        SELECT id, address, device_kind, backend, memory_limit_bytes FROM workers
        WHERE state = 'idle' AND last_seen_at >= ${fresh}
        ORDER BY id FOR UPDATE`;
      const gang = pickGang(
        idle.map((r) => ({ id: r.id, address: r.address, deviceKind: r.device_kind as DeviceKind, backend: r.backend, memoryLimitBytes: r.memory_limit_bytes === null ? null : Number(r.memory_limit_bytes) })),
        n,
        { avoid: new Set(options.avoid ?? []), fits: (w) => holds(w, options.memoryNeed) },
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
  private async upsert(address: string, info: WorkerInfoMsg, registering: boolean, joined?: { joinedAt: Date; heartbeatAt: Date }): Promise<boolean> {
    const details = {
      address,
      deviceKind: info.device_kind,
      deviceIndex: info.device_index,
      deviceName: info.device_name,
      deviceMemoryMiB: Number(info.device_memory_mib),
      backend: info.backend,
      pid: Number(info.worker_id.split(':').pop()) || null,
      rssBytes: BigInt(info.rss_bytes),
      memoryLimitBytes: info.memory_limit_bytes > 0 ? BigInt(info.memory_limit_bytes) : null,
      lastSeenAt: new Date(),
      ...joined,
    };
    const before = await this.prisma.worker.findUnique({ where: { id: address }, select: { state: true, currentJobId: true, pid: true } });
    // A worker that restarted (another pid at this address) holds no job any more.
    const restarted = before !== null && before.pid !== null && before.pid !== details.pid;
    const comesBack = before === null || before.state === 'offline' || restarted || registering;
    // A worker whose engine failed takes no job until a fresh process replaces it.
    const state = info.needs_restart ? 'draining' : comesBack ? (before?.currentJobId && !restarted && !registering ? 'busy' : 'idle') : undefined;
    if (info.needs_restart && before?.state !== 'draining') this.options.log?.(`worker ${address}: its tensor engine failed; draining until it is restarted`);
    await this.prisma.worker.upsert({
      where: { id: address },
      create: { id: address, ...details, state: 'idle' },
      update: { ...details, ...(state ? { state } : {}), ...(restarted || registering ? { currentJobId: null } : {}) },
    });
    return comesBack;
  }
}

/** The online workers (idle or busy, probed lately): their kind, backend and memory, for admission. */
export async function onlineWorkers(prisma: PrismaClient, probeIntervalMs: number): Promise<Array<Pick<ReservedWorker, 'id' | 'deviceKind' | 'backend' | 'memoryLimitBytes'>>> {
  const fresh = new Date(Date.now() - STALE_PROBES * probeIntervalMs);
  const rows = await prisma.worker.findMany({ where: { state: { in: ['idle', 'busy'] }, lastSeenAt: { gte: fresh } }, select: { id: true, deviceKind: true, backend: true, memoryLimitBytes: true }, orderBy: { id: 'asc' } });
  return rows.map((r) => ({ id: r.id, deviceKind: r.deviceKind === 'gpu' ? 'gpu' : 'cpu', backend: r.backend, memoryLimitBytes: r.memoryLimitBytes === null ? null : Number(r.memoryLimitBytes) }));
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
