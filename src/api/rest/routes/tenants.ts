/**
 * /v1/tenants (admin): make tenants with their limits and first key, issue and revoke
 * keys, list them. /v1/auth/whoami (any key): who the presented key is. A key is shown
 * once, in the answer that makes it; only its salted hash is kept.
 */
import type { FastifyPluginAsync } from 'fastify';
import type { TenantStore } from '../../../service/tenants/tenant-store.js';

export interface TenantRouteOptions {
  readonly tenants: TenantStore;
}

const errorResponse = { $ref: 'ApiError#' } as const;
const limit = (description: string, defaultValue: number | null) => ({
  type: ['integer', 'null'],
  minimum: 1,
  maximum: 1_000_000,
  default: defaultValue,
  description: `${description}; null: no limit (default ${defaultValue === null ? 'null' : defaultValue})`,
});
const tenantBody = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 63, description: 'lower-case letters, digits, - and _' },
    max_workers: limit('most workers its jobs may hold at once (a job asking for more is refused, 403; one within it waits while others hold the rest)', null),
    max_queued_jobs: limit('most jobs it may have waiting (queued or retrying); over it: 429', 100),
    requests_per_minute: limit('requests per minute per key, across every API process; over it: 429 with Retry-After', 600),
  },
} as const;
const nameParams = { type: 'object', required: ['name'], properties: { name: { type: 'string', maxLength: 63 } } } as const;

interface TenantBody {
  name: string;
  max_workers: number | null;
  max_queued_jobs: number | null;
  requests_per_minute: number | null;
}

export const tenantRoutes: FastifyPluginAsync<TenantRouteOptions> = async (app, { tenants }) => {
  const admin = { access: 'admin' } as const;
  app.post<{ Body: TenantBody }>(
    '/v1/tenants',
    { config: admin, schema: { tags: ['tenants'], summary: 'Make a tenant and its first API key (shown once)', body: tenantBody, response: { 400: errorResponse, 409: errorResponse } } },
    async (request, reply) => {
      const b = request.body;
      const made = await tenants.createTenant({ name: b.name, maxWorkers: b.max_workers, maxQueuedJobs: b.max_queued_jobs, requestsPerMinute: b.requests_per_minute });
      return reply.code(201).header('location', `/v1/tenants/${made.tenant.name}`).send(made);
    },
  );

  app.get('/v1/tenants', { config: admin, schema: { tags: ['tenants'], summary: 'Tenants, their limits and key ids' } }, async () => ({ tenants: await tenants.list() }));

  app.post<{ Params: { name: string } }>(
    '/v1/tenants/:name/keys',
    { config: admin, schema: { tags: ['tenants'], summary: 'Issue another key (shown once)', params: nameParams, response: { 404: errorResponse } } },
    async (request, reply) => reply.code(201).send(await tenants.createKey(request.params.name)),
  );

  app.delete<{ Params: { name: string; key_id: string } }>(
    '/v1/tenants/:name/keys/:key_id',
    {
      config: admin,
      schema: {
        tags: ['tenants'],
        summary: 'Revoke a key: refused at once by every API process',
        params: { type: 'object', required: ['name', 'key_id'], properties: { name: { type: 'string', maxLength: 63 }, key_id: { type: 'string', maxLength: 32 } } },
        response: { 404: errorResponse },
      },
    },
    async (request, reply) => {
      await tenants.revokeKey(request.params.name, request.params.key_id);
      return reply.code(204).send();
    },
  );
};

/** /v1/auth/whoami: who the presented key is (the admin with auth off). */
export const whoamiRoute: FastifyPluginAsync = async (app) => {
  app.get('/v1/auth/whoami', { schema: { tags: ['tenants'], summary: 'Who the presented key is: the admin or a tenant, with its limits' } }, async (request) => {
    const p = request.principal;
    return {
      role: p.role,
      tenant: p.tenantName,
      key_id: p.keyId,
      limits: { max_workers: p.limits.maxWorkers, max_queued_jobs: p.limits.maxQueuedJobs, requests_per_minute: p.limits.requestsPerMinute },
    };
  });
};
