/**
 * Tenants and their API keys in PostgreSQL: create a tenant with its first key, issue and
 * revoke keys, list tenants, turn a presented key into a Principal, and make the admin
 * key on the first start with auth on.
 *
 * Checking a key reads its row once and keeps it in this process for `cacheMs`; a revoked
 * key must stop working at once in every API process, so a revocation is published on
 * `KeyRevocations` (Redis pub/sub in the service) and every process drops that key from
 * its cache when the notice arrives. Should a notice be lost (Redis away), the cache's age
 * bounds how long a revoked key keeps working.
 */
import { Prisma, type PrismaClient } from '../db/client.js';
import { ServiceError } from '../errors.js';
import { issueKey, parseKey, secretMatches } from './api-keys.js';
import { adminPrincipal, DEFAULT_TENANT_ID, type Principal, type TenantLimits } from './principal.js';

/** Cross-process notices of revoked keys. */
export interface KeyRevocations {
  notify(keyId: string): Promise<void>;
  subscribe(onRevoked: (keyId: string) => void): Promise<void>;
}

export interface TenantInput extends Partial<TenantLimits> {
  readonly name: string;
}

export interface TenantView {
  readonly name: string;
  readonly max_workers: number | null;
  readonly max_queued_jobs: number | null;
  readonly requests_per_minute: number | null;
  readonly created_at: string;
  readonly keys: Array<{ id: string; created_at: string; revoked_at: string | null }>;
}

/** A key as issued: the whole key is shown once, here, and never again. */
export interface NewKey {
  readonly key_id: string;
  readonly api_key: string;
}

export interface TenantStoreOptions {
  readonly revocations?: KeyRevocations;
  /** How long a checked key's row is kept in this process. @defaultValue 30000 */
  readonly cacheMs?: number;
}

/** Tenant names: lower-case letters, digits, `-` and `_`; they appear in logs and metrics. */
export const TENANT_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

interface CachedKey {
  readonly at: number;
  /** null: no such key, or revoked. */
  readonly row: { salt: string; hash: string; admin: boolean; tenantId: string; tenantName: string; limits: TenantLimits } | null;
}

type TenantRow = Prisma.TenantGetPayload<{ include: { keys: true } }>;

function viewOf(t: TenantRow): TenantView {
  return {
    name: t.name,
    max_workers: t.maxWorkers,
    max_queued_jobs: t.maxQueuedJobs,
    requests_per_minute: t.requestsPerMinute,
    created_at: t.createdAt.toISOString(),
    keys: t.keys
      .filter((k) => !k.admin)
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .map((k) => ({ id: k.id, created_at: k.createdAt.toISOString(), revoked_at: k.revokedAt?.toISOString() ?? null })),
  };
}

function uniqueViolation(err: unknown): boolean {
  return err instanceof Prisma.PrismaClientKnownRequestError && err.code === 'P2002';
}

export class TenantStore {
  private readonly cache = new Map<string, CachedKey>();
  private readonly cacheMs: number;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly options: TenantStoreOptions = {},
  ) {
    this.cacheMs = options.cacheMs ?? 30_000;
  }

  /** Listen for other processes' revocations. */
  async start(): Promise<void> {
    await this.options.revocations?.subscribe((keyId) => this.cache.delete(keyId));
  }

  async createTenant(input: TenantInput): Promise<{ tenant: TenantView } & NewKey> {
    if (!TENANT_NAME.test(input.name)) {
      throw new ServiceError('TAS_ERR_BAD_REQUEST', 'name: 1 to 63 lower-case letters, digits, - or _, starting with a letter or digit', { field: 'name' });
    }
    const k = issueKey();
    try {
      const tenant = await this.prisma.tenant.create({
        data: {
          name: input.name,
          maxWorkers: input.maxWorkers ?? null,
          maxQueuedJobs: input.maxQueuedJobs ?? null,
          requestsPerMinute: input.requestsPerMinute ?? null,
          keys: { create: { id: k.id, salt: k.salt, hash: k.hash } },
        },
        include: { keys: true },
      });
      return { tenant: viewOf(tenant), key_id: k.id, api_key: k.key };
    } catch (err) {
      if (uniqueViolation(err)) throw new ServiceError('TAS_ERR_CONFLICT', `name: a tenant named ${JSON.stringify(input.name)} exists`, { field: 'name' });
      throw err;
    }
  }

  async createKey(tenantName: string): Promise<NewKey> {
    const tenant = await this.prisma.tenant.findUnique({ where: { name: tenantName }, select: { id: true } });
    if (!tenant) throw new ServiceError('TAS_ERR_NOT_FOUND', `no tenant named ${JSON.stringify(tenantName)}`);
    const k = issueKey();
    await this.prisma.apiKey.create({ data: { id: k.id, tenantId: tenant.id, salt: k.salt, hash: k.hash } });
    return { key_id: k.id, api_key: k.key };
  }

  /** Revoke a tenant's key, here at once and in every other process when the notice arrives. */
  async revokeKey(tenantName: string, keyId: string): Promise<void> {
    const revoked = await this.prisma.apiKey.updateMany({
      where: { id: keyId, admin: false, tenant: { name: tenantName } },
      data: { revokedAt: new Date() },
    });
    if (revoked.count === 0) throw new ServiceError('TAS_ERR_NOT_FOUND', `tenant ${JSON.stringify(tenantName)} has no key ${JSON.stringify(keyId)}`);
    this.cache.delete(keyId);
    await this.options.revocations?.notify(keyId);
  }

  async list(): Promise<TenantView[]> {
    const tenants = await this.prisma.tenant.findMany({ orderBy: { name: 'asc' }, include: { keys: true } });
    return tenants.map(viewOf);
  }

  /** A tenant's id and limits by name; null when there is none. */
  async byName(name: string): Promise<{ id: string; name: string; limits: TenantLimits } | null> {
    const t = await this.prisma.tenant.findUnique({ where: { name } });
    return t ? { id: t.id, name: t.name, limits: { maxWorkers: t.maxWorkers, maxQueuedJobs: t.maxQueuedJobs, requestsPerMinute: t.requestsPerMinute } } : null;
  }

  /** The limits of a tenant, by id (the scheduler's quota checks). */
  async limits(tenantId: string): Promise<TenantLimits> {
    const t = await this.prisma.tenant.findUnique({ where: { id: tenantId } });
    return { maxWorkers: t?.maxWorkers ?? null, maxQueuedJobs: t?.maxQueuedJobs ?? null, requestsPerMinute: t?.requestsPerMinute ?? null };
  }

  /** The principal a presented key stands for; null when it is not a live key. */
  async authenticate(key: string): Promise<Principal | null> {
    const parts = parseKey(key);
    if (!parts) return null;
    const row = await this.keyRow(parts.id);
    if (!row || !secretMatches(parts.secret, row.salt, row.hash)) return null;
    if (row.admin) return adminPrincipal(parts.id);
    return { role: 'tenant', tenantId: row.tenantId, tenantName: row.tenantName, keyId: parts.id, limits: row.limits };
  }

  private async keyRow(id: string): Promise<CachedKey['row']> {
    const hit = this.cache.get(id);
    if (hit && Date.now() - hit.at < this.cacheMs) return hit.row;
    const k = await this.prisma.apiKey.findUnique({ where: { id }, include: { tenant: true } });
    const row =
      k && k.revokedAt === null
        ? {
            salt: k.salt,
            hash: k.hash,
            admin: k.admin,
            tenantId: k.tenantId,
            tenantName: k.tenant.name,
            limits: { maxWorkers: k.tenant.maxWorkers, maxQueuedJobs: k.tenant.maxQueuedJobs, requestsPerMinute: k.tenant.requestsPerMinute },
          }
        : null;
    this.cache.set(id, { at: Date.now(), row });
    if (this.cache.size > 10_000) this.cache.delete(this.cache.keys().next().value!);
    return row;
  }

  /**
   * The admin key: made on the first start with auth on, when no live one exists; only its
   * hash is stored. Returns the new key (the caller shows it once and writes it for the
   * CLI), or null when one exists, also when another process made it at the same moment.
   */
  async ensureAdminKey(): Promise<NewKey | null> {
    if ((await this.prisma.apiKey.count({ where: { admin: true, revokedAt: null } })) > 0) return null;
    const k = issueKey();
    try {
      await this.prisma.apiKey.create({ data: { id: k.id, tenantId: DEFAULT_TENANT_ID, admin: true, salt: k.salt, hash: k.hash } });
    } catch (err) {
      if (uniqueViolation(err)) return null;
      throw err;
    }
    return { key_id: k.id, api_key: k.key };
  }
}

/** Revocation notices on a Redis channel (named after the queue, as the model notices are). */
export function redisKeyRevocations(publisher: { publish(channel: string, message: string): Promise<number> }, subscriber: { on(event: 'message', fn: (channel: string, message: string) => void): unknown; subscribe(channel: string): Promise<unknown> }, channel: string): KeyRevocations {
  return {
    notify: async (keyId) => void (await publisher.publish(channel, keyId)),
    subscribe: async (onRevoked) => {
      subscriber.on('message', (ch, message) => {
        if (ch === channel) onRevoked(message);
      });
      await subscriber.subscribe(channel);
    },
  };
}

export function keyRevocationsChannel(queueName: string): string {
  return `tas:${queueName}:keys`;
}
