/**
 * Who may do what over REST, checked before any route runs:
 *
 * - Access: each route says who may call it (`config: { access }`): `open` (health,
 *   OpenAPI docs), `tenant` (a tenant's key or the admin; the default under /v1 and /v2),
 *   `admin` (tenants), `metrics` (/metrics: the admin or TAS_METRICS_TOKEN). The request's
 *   Principal is `request.principal`; a route that reads or makes jobs, datasets or
 *   models passes it to the service, which keeps each tenant to its own rows. Model names
 *   are per tenant: the admin names another tenant's with `?tenant=<name>`.
 * - Cross-site requests: a web page a user opens can send "simple" requests to the API
 *   (a form post, a bodiless POST) without asking first. A state-changing request is
 *   refused when a browser says it comes from another site (an `Origin` that is neither
 *   this server's nor in TAS_CORS_ORIGINS, or `Sec-Fetch-Site: cross-site|same-site`), or
 *   when its body has a content type a form can send (text/plain, urlencoded, multipart).
 *   Clients that are not browsers (curl, the CLI, SDKs) send no Origin and are not
 *   affected. CORS is off unless TAS_CORS_ORIGINS lists origins.
 * - Rate limits: each tenant key gets its tenant's requests per minute, counted in Redis
 *   so every API process shares the count (@fastify/rate-limit); over it: 429 with
 *   Retry-After. The admin is not limited.
 *
 * Refusals answer in the route family's error format: the job API's
 * `{"error": {"code", "message"}}`, the inference routes' `{"error": "..."}`.
 */
import cors from '@fastify/cors';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import { adminPrincipal, type Principal } from '../../service/tenants/principal.js';
import { Authenticator, Unauthenticated } from '../auth.js';
import { RATE_WINDOW_MS, rateLimitOf } from '../rate-limit.js';
import { ApiError, type ErrorCode } from './http-errors.js';

export type Access = 'open' | 'tenant' | 'admin' | 'metrics';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who sent the request (set before the handler runs; the admin for `open` routes with auth off). */
    principal: Principal;
  }
  interface FastifyContextConfig {
    /** Who may call the route. @defaultValue 'tenant' under /v1 and /v2, else 'open' */
    access?: Access;
  }
}

export interface AccessOptions {
  readonly auth: Authenticator;
  /** Origins allowed to call the API from a browser (TAS_CORS_ORIGINS). @defaultValue none */
  readonly corsOrigins?: readonly string[];
  /** Where the rate counters live (shared by every API process); null: this process only. */
  readonly redis: Redis | null;
  /** Prefix of the counters' Redis keys (per service, like its queue). */
  readonly rateLimitNamespace: string;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Content types a cross-site HTML form can send without the browser asking first. */
const FORM_TYPES = ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data'];

function accessOf(request: FastifyRequest): Access {
  const configured = request.routeOptions.config?.access;
  if (configured) return configured;
  const url = request.routeOptions.url ?? request.url;
  return url.startsWith('/v1/') || url === '/v2' || url.startsWith('/v2/') ? 'tenant' : 'open';
}

function refuse(request: FastifyRequest, reply: FastifyReply, code: ErrorCode, message: string): FastifyReply {
  const err = new ApiError(code, message);
  if (code === 'TAS_ERR_UNAUTHENTICATED') void reply.header('www-authenticate', 'Bearer');
  const inference = request.url.startsWith('/v2');
  return reply.status(err.statusCode).send(inference ? { error: message } : err.body());
}

/** Why a state-changing request looks like another site's; null when it does not. */
export function crossSiteReason(request: FastifyRequest, allowedOrigins: readonly string[]): string | null {
  if (SAFE_METHODS.has(request.method)) return null;
  const origin = request.headers.origin;
  if (origin !== undefined && origin !== `${request.protocol}://${request.headers.host}` && !allowedOrigins.includes(origin)) {
    return `a request from another site (Origin ${origin}) may not change anything here`;
  }
  const site = request.headers['sec-fetch-site'];
  if (origin === undefined && (site === 'cross-site' || site === 'same-site')) return 'a request from another site may not change anything here';
  const type = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (FORM_TYPES.includes(type)) {
    return `content-type ${type} is what another site's form can send; send application/json (or, for an upload, the file's own type such as text/csv or application/octet-stream)`;
  }
  return null;
}

/** With auth off, as an app gets when it is given no access options (tests, benchmarks). */
export function openAccess(): AccessOptions {
  return { auth: new Authenticator({ mode: 'off', tenants: null }), redis: null, rateLimitNamespace: 'tas:open:rate:' };
}

/** Adds the checks above to `app` (plugins load when the app is ready). */
export function registerAccess(app: FastifyInstance, options: AccessOptions): void {
  const origins = options.corsOrigins ?? [];
  const { auth } = options;
  // Set for every request by the hook below (for open routes: the admin with auth off, else
  // nobody, and open routes do not read it).
  app.decorateRequest('principal', null as unknown as Principal);

  if (origins.length > 0) {
    void app.register(cors, {
      origin: [...origins],
      allowedHeaders: ['authorization', 'content-type', 'if-none-match', 'idempotency-key'],
      exposedHeaders: ['etag', 'location', 'retry-after', 'www-authenticate'],
      maxAge: 600,
    });
  }

  app.addHook('onRequest', async (request, reply) => {
    const access = accessOf(request);
    if (access === 'open' || request.method === 'OPTIONS') {
      if (!auth.on) request.principal = adminPrincipal();
      return;
    }
    const why = crossSiteReason(request, origins);
    if (why) return refuse(request, reply, 'TAS_ERR_CROSS_SITE', why);
    const authorization = request.headers.authorization;
    try {
      if (access === 'metrics') {
        if (!(await auth.mayReadMetrics(authorization))) return refuse(request, reply, 'TAS_ERR_FORBIDDEN', '/metrics needs the admin key or TAS_METRICS_TOKEN');
        return;
      }
      request.principal = await auth.principal(authorization);
    } catch (err) {
      if (err instanceof Unauthenticated) return refuse(request, reply, 'TAS_ERR_UNAUTHENTICATED', err.message);
      throw err;
    }
    if (access === 'admin' && request.principal.role !== 'admin') return refuse(request, reply, 'TAS_ERR_FORBIDDEN', 'this needs the admin key');
    // The admin may name a tenant whose models a route names (`?tenant=acme`); a tenant's
    // key always means its own tenant.
    const tenant = (request.query as Record<string, unknown> | undefined)?.tenant;
    if (typeof tenant === 'string' && request.principal.role === 'admin') {
      const as = await auth.actAs(request.principal, tenant);
      if (!as) return refuse(request, reply, 'TAS_ERR_NOT_FOUND', `no tenant named ${JSON.stringify(tenant)}`);
      request.principal = as;
    }
  });

  void app.register(rateLimit, {
    global: true,
    // After the hook above: the key's tenant decides the limit.
    hook: 'preHandler',
    timeWindow: RATE_WINDOW_MS,
    keyGenerator: (request) => request.principal?.keyId ?? request.ip,
    max: (request) => rateLimitOf(request.principal) ?? Number.MAX_SAFE_INTEGER,
    allowList: (request) => rateLimitOf(request.principal) === null,
    ...(options.redis ? { redis: options.redis } : {}),
    nameSpace: options.rateLimitNamespace,
    // Redis away: serve rather than refuse everyone (the limit is a fairness rule, not a lock).
    skipOnError: true,
    addHeaders: { 'x-ratelimit-limit': true, 'x-ratelimit-remaining': true, 'x-ratelimit-reset': true, 'retry-after': true },
    // Thrown to the route's error handler: the job API's or the inference routes' format.
    errorResponseBuilder: (_request, context) => new ApiError('TAS_ERR_RATE_LIMITED', `the key's ${context.max} requests per minute are spent; retry in ${context.after}`),
  });
}
