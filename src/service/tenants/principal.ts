/**
 * Who is asking: the admin, or a tenant through one of its keys. Every service call that
 * reads or makes a job, dataset or model takes a Principal; a tenant sees only its own
 * rows (another tenant's answer as if they did not exist), the admin sees every tenant's.
 * What the admin makes belongs to the tenant `default`, as does everything made with
 * auth off, where every request is the admin.
 */

import { DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME } from '../db/default-tenant.js';

export { DEFAULT_TENANT_ID, DEFAULT_TENANT_NAME };

/** A tenant's limits; null: none. */
export interface TenantLimits {
  /** Most workers its jobs may hold at once. */
  readonly maxWorkers: number | null;
  /** Most jobs it may have waiting (queued or retrying). */
  readonly maxQueuedJobs: number | null;
  /** Requests per minute per key, across every API process. */
  readonly requestsPerMinute: number | null;
}

export const NO_LIMITS: TenantLimits = { maxWorkers: null, maxQueuedJobs: null, requestsPerMinute: null };

export interface Principal {
  readonly role: 'admin' | 'tenant';
  /** The tenant it acts as: its own, or `default` for the admin. */
  readonly tenantId: string;
  readonly tenantName: string;
  /** The key it presented (its public id); null for the admin token or with auth off. */
  readonly keyId: string | null;
  readonly limits: TenantLimits;
}

/** Every request with auth off, and the admin key. */
export function adminPrincipal(keyId: string | null = null): Principal {
  return { role: 'admin', tenantId: DEFAULT_TENANT_ID, tenantName: DEFAULT_TENANT_NAME, keyId, limits: NO_LIMITS };
}

/** The tenant whose rows `p` may see; null: every tenant's (the admin). */
export function visibleTenant(p: Principal): string | null {
  return p.role === 'admin' ? null : p.tenantId;
}

/** Whether `p` may see a row owned by `tenantId`. */
export function canSee(p: Principal, tenantId: string): boolean {
  return p.role === 'admin' || p.tenantId === tenantId;
}
