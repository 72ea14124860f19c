/**
 * Who a request comes from, for both bindings (REST: the Authorization header; gRPC: the
 * `authorization` metadata entry): `Bearer <key>`, where the key is a tenant's API key,
 * the admin key, or TAS_ADMIN_TOKEN. With auth off every request is the admin (the
 * service then listens on loopback only, unless told otherwise).
 */
import { tokensEqual } from '../service/tenants/api-keys.js';
import { adminPrincipal, type Principal } from '../service/tenants/principal.js';
import type { TenantStore } from '../service/tenants/tenant-store.js';

export type AuthMode = 'on' | 'off';

export interface AuthenticatorOptions {
  readonly mode: AuthMode;
  /** The keys' store; required with auth on. */
  readonly tenants: TenantStore | null;
  /** TAS_ADMIN_TOKEN: an admin key kept outside the database. */
  readonly adminToken?: string | null;
  /** TAS_METRICS_TOKEN: a key that may read /metrics and nothing else. */
  readonly metricsToken?: string | null;
}

/** Why a request has no principal: the message a client sees (401). */
export class Unauthenticated extends Error {
  readonly code = 'TAS_ERR_UNAUTHENTICATED';
  constructor(message: string) {
    super(message);
    this.name = 'Unauthenticated';
  }
}

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

export class Authenticator {
  constructor(private readonly options: AuthenticatorOptions) {
    if (options.mode === 'on' && !options.tenants) throw new Error('auth on needs the tenant store');
  }

  get on(): boolean {
    return this.options.mode === 'on';
  }

  /** The principal of an Authorization value (`Bearer <key>`); throws Unauthenticated. */
  async principal(authorization: string | undefined): Promise<Principal> {
    if (!this.on) return adminPrincipal();
    const token = tokenOf(authorization);
    const admin = this.options.adminToken;
    if (admin && tokensEqual(token, admin)) return adminPrincipal();
    const p = await this.options.tenants!.authenticate(token);
    if (!p) throw new Unauthenticated('invalid or revoked API key');
    return p;
  }

  /**
   * The admin acting in tenant `tenantName` (`?tenant=` on routes that name a model): the
   * admin sees every tenant's rows by id, but names are per tenant. Null: no such tenant.
   */
  async actAs(admin: Principal, tenantName: string): Promise<Principal | null> {
    if (admin.role !== 'admin' || !this.options.tenants) return null;
    const t = await this.options.tenants.byName(tenantName);
    return t ? { ...admin, tenantId: t.id, tenantName: t.name } : null;
  }

  /** Whether an Authorization value may read /metrics: the admin, or TAS_METRICS_TOKEN. */
  async mayReadMetrics(authorization: string | undefined): Promise<boolean> {
    if (!this.on) return true;
    const metrics = this.options.metricsToken;
    if (metrics && authorization !== undefined && BEARER.test(authorization) && tokensEqual(tokenOf(authorization), metrics)) return true;
    return (await this.principal(authorization)).role === 'admin';
  }
}

function tokenOf(authorization: string | undefined): string {
  if (authorization === undefined || authorization.trim() === '') throw new Unauthenticated('an API key is required: send Authorization: Bearer <key>');
  const m = BEARER.exec(authorization);
  if (!m) throw new Unauthenticated("Authorization: expected 'Bearer <key>'");
  return m[1]!;
}
