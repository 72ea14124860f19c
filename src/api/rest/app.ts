/**
 * The REST API (fastify): builds the app from its dependencies, so tests and the service
 * entry point assemble the same thing. Route modules live in ./routes/, one per resource.
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import type { JobQueue } from '../../service/scheduling/job-queue.js';
import type { PrismaClient } from '../../service/db/client.js';
import type { JobService } from '../../service/jobs/job-service.js';
import type { ModelStore } from '../../service/models/model-store.js';
import type { TenantStore } from '../../service/tenants/tenant-store.js';
import { openAccess, registerAccess, type AccessOptions } from './access.js';
import { ApiError, toApiError } from './http-errors.js';
import { registerPrometheus } from './prometheus.js';
import { healthRoutes, type ReadinessCheck } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import type { ChangeSource } from './long-poll.js';
import { modelRoutes } from './routes/models.js';
import { poolRoutes } from './routes/pool.js';
import { uiRoutes } from './routes/ui.js';
import { tenantRoutes, whoamiRoute } from './routes/tenants.js';
import { workerRoutes, type WorkerRouteOptions } from './routes/workers.js';
import { addSharedSchemas } from './schemas.js';

export interface BuildAppOptions {
  /** fastify's logger option. @defaultValue false */
  readonly logger?: FastifyServerOptions['logger'];
  /** Largest JSON body, bytes. @defaultValue 1 MiB */
  readonly bodyLimit?: number;
  /** Keys, cross-site rules, rate limits (./access.ts). @defaultValue auth off */
  readonly access?: AccessOptions;
}

/** An app with the error model of ./http-errors.ts and the access checks of ./access.ts, nothing routed yet. */
export function createBaseApp(options: BuildAppOptions = {}): FastifyInstance {
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit: options.bodyLimit ?? 1024 * 1024,
    // Schemas may use formats and keywords ajv's strict mode rejects in OpenAPI docs.
    ajv: { customOptions: { strict: false, allErrors: false } },
  });

  app.setErrorHandler((err: unknown, request, reply) => {
    const api = fromFastifyError(err) ?? toApiError(err);
    if (api.statusCode >= 500) request.log.error({ err }, 'request failed');
    void reply.status(api.statusCode).send(api.body());
  });
  app.setNotFoundHandler((request, reply) => {
    const api = new ApiError('TAS_ERR_NOT_FOUND', `no route ${request.method} ${request.url.split('?')[0]}`);
    void reply.status(404).send(api.body());
  });
  registerAccess(app, options.access ?? openAccess());
  return app;
}

interface FastifyLikeError {
  statusCode?: number;
  code?: string;
  message: string;
  validation?: Array<{ instancePath?: string; params?: Record<string, unknown>; message?: string }>;
  validationContext?: string;
}

/** fastify's own errors (schema validation, body parsing, limits) in the API's form. */
function fromFastifyError(err: unknown): ApiError | null {
  if (err instanceof ApiError || typeof err !== 'object' || err === null) return null;
  const e = err as FastifyLikeError;
  if (e.validation && e.validation.length > 0) {
    const v = e.validation[0]!;
    const missing = typeof v.params?.missingProperty === 'string' ? `/${v.params.missingProperty}` : '';
    const extra = typeof v.params?.additionalProperty === 'string' ? `/${v.params.additionalProperty}` : '';
    const pointer = `${v.instancePath ?? ''}${missing}${extra}`;
    const where = e.validationContext ?? 'body';
    const field = pointer.replace(/^\//, '').replace(/\//g, '.') || where;
    const reason = extra ? 'is not a known property' : missing ? 'is required' : v.message ?? 'is invalid';
    return new ApiError('TAS_ERR_BAD_REQUEST', `${where === 'body' ? '' : `${where} `}${field}: ${reason}`, field);
  }
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError('TAS_ERR_PAYLOAD_TOO_LARGE', e.message);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError('TAS_ERR_UNSUPPORTED_MEDIA_TYPE', e.message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError('TAS_ERR_BAD_REQUEST', e.message);
  }
  // Body parse failures (malformed JSON) arrive as 400s with fastify's message.
  if (e.statusCode === 400) return new ApiError('TAS_ERR_BAD_REQUEST', e.message);
  return null;
}

export interface ApiDeps {
  readonly prisma: PrismaClient;
  readonly jobs: JobService;
  readonly models: ModelStore;
  readonly queue: JobQueue;
  /** Readiness checks (/readyz): PostgreSQL, Redis. */
  readonly checks: readonly ReadinessCheck[];
  /** The registry's probe interval: workers silent for 3 of them show offline. */
  readonly probeIntervalMs: number;
  /** Registers the dataset routes (optional: they need the data directory). */
  readonly registerDatasets?: (app: FastifyInstance) => Promise<void>;
  /** Registers the inference routes (/v2, the Open Inference Protocol). */
  readonly registerInference?: (app: FastifyInstance) => Promise<void>;
  /** The Prometheus registry /metrics serves (shared with inference). @defaultValue a new one */
  readonly registry?: Registry;
  /** The built dashboard served at /ui/. @defaultValue ui/dist */
  readonly uiDir?: string;
  /** Tenants and keys (/v1/tenants); without it those routes are absent. */
  readonly tenants?: TenantStore;
  /** Workers joining by URL and their jobs' files (/v1/workers, /v1/worker-files); without it those routes are absent. */
  readonly workers?: WorkerRouteOptions;
  /** Committed changes as the database announces them (service/db/change-feed.ts): job long polls answer when one commits. @defaultValue long polls read every 25 ms */
  readonly changes?: ChangeSource;
}

/** The whole REST API: OpenAPI at /docs, then every resource's routes. */
export async function buildApp(deps: ApiDeps, options: BuildAppOptions = {}): Promise<FastifyInstance> {
  const app = createBaseApp(options);
  addSharedSchemas(app);
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'tas: training as a service',
        version: '1',
        description: 'Submit data-parallel training jobs with SyncBN, follow them, and fetch the trained models.',
      },
      tags: [
        { name: 'jobs', description: 'Training jobs' },
        { name: 'datasets', description: 'Uploaded training data' },
        { name: 'models', description: 'Trained models and artifacts' },
        { name: 'pool', description: 'The worker pool' },
        { name: 'tenants', description: 'Tenants, their limits and API keys (admin); who a key is' },
        { name: 'health', description: 'Liveness, readiness, Prometheus metrics' },
        { name: 'inference', description: 'The Open Inference Protocol (KServe v2 / Triton) over REST; the same over gRPC on TAS_GRPC_PORT' },
      ],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  registerPrometheus(app, { prisma: deps.prisma, queue: deps.queue, probeIntervalMs: deps.probeIntervalMs, ...(deps.registry ? { registry: deps.registry } : {}) });
  await app.register(healthRoutes, { checks: deps.checks });
  await app.register(jobRoutes, { jobs: deps.jobs, ...(deps.changes ? { changes: deps.changes } : {}) });
  await app.register(modelRoutes, { models: deps.models });
  await app.register(poolRoutes, { prisma: deps.prisma, probeIntervalMs: deps.probeIntervalMs });
  await app.register(uiRoutes, deps.uiDir !== undefined ? { dir: deps.uiDir } : {});
  await app.register(whoamiRoute);
  if (deps.tenants) await app.register(tenantRoutes, { tenants: deps.tenants });
  if (deps.workers) await app.register(workerRoutes, deps.workers);
  if (deps.registerDatasets) await deps.registerDatasets(app);
  if (deps.registerInference) await deps.registerInference(app);
  return app;
}
