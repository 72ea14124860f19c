/**
 * The service assembled: database (PostgreSQL from DATABASE_URL, else an embedded PGlite
 * under the data directory), Redis (REDIS_URL, else a private redis-server when one is
 * installed), migrations, the REST API, the scheduler and the local workers. Each part
 * can run alone (`tas api`, `tas scheduler`, `tas worker`) for deployments over several
 * machines; `tas serve` runs them all in one command.
 */
import { mkdir } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { Registry } from 'prom-client';
import { buildApp, createBaseApp } from '../api/rest/app.js';
import { healthRoutes } from '../api/rest/routes/health.js';
import { datasetRoutes } from '../api/rest/routes/datasets.js';
import { LocalPool } from '../gpu-pool/local-pool.js';
import { identityPrefix, JobQueue, queueNames, redisCommandConnection, redisConnection, type QueueNames } from '../service/scheduling/job-queue.js';
import { RedisHealth, within } from '../service/scheduling/redis-health.js';
import { WorkerRegistry } from '../service/scheduling/worker-registry.js';
import { Scheduler } from '../service/scheduling/scheduler.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import type { ServiceConfig } from '../service/startup/config.js';
import { createPrismaClient, type PrismaClient } from '../service/db/client.js';
import { migrate } from '../service/db/migrate.js';
import { ChangeFeed } from '../service/db/change-feed.js';
import { DatasetStore } from '../service/datasets/dataset-store.js';
import { startEmbeddedPostgres } from '../service/startup/embedded-postgres.js';
import { JobService } from '../service/jobs/job-service.js';
import { startInferenceService, type InferenceService } from '../api/inference-service.js';
import { redisModelChanges } from '../service/models/model-changes.js';
import { databaseIdentity } from '../service/db/identity.js';
import { ModelStore } from '../service/models/model-store.js';
import { ensureRedis } from '../service/startup/redis-server.js';
import { redisKeyRevocations, TenantStore } from '../service/tenants/tenant-store.js';
import { Authenticator } from '../api/auth.js';
import { RateCounter } from '../api/rate-limit.js';
import { ensureWorkerToken, writeAdminKey } from './secrets.js';
import { JobFiles } from '../service/jobs/job-files.js';
import { workerToken } from '../gpu-pool/worker-token.js';

/** The longest one part may take to stop (the whole stop is bounded by the caller). */
const STOP_STEP_MS = 8000;
/** The longest a part that only talks to Redis may take (Redis may be gone). */
const REDIS_STOP_MS = 1000;

export interface ServiceParts {
  /** Serve the REST API, and inference (REST /v2 on the same port, gRPC on TAS_GRPC_PORT). */
  readonly api: boolean;
  /** Run the scheduler (takes jobs from the queue and runs them on the pool). */
  readonly scheduler: boolean;
  /** Start local workers (the scheduler's pool); remote ones come from config.workersAt. */
  readonly localWorkers: boolean;
}

export interface RunningService {
  /** The REST API's base URL, when it serves. */
  readonly httpUrl: string | null;
  /** host:port of gRPC inference, when the API serves. */
  readonly grpcAddress: string | null;
  readonly databaseUrl: string;
  readonly redisUrl: string;
  /** The Redis queue and channel names this service uses. */
  readonly names: QueueNames;
  readonly embeddedDatabase: boolean;
  readonly prisma: PrismaClient;
  readonly app: FastifyInstance | null;
  readonly localPool: LocalPool | null;
  stop(): Promise<void>;
}

export interface StartOptions {
  readonly log?: (message: string) => void;
  readonly tls?: TlsFiles;
}

export async function startService(config: ServiceConfig, parts: ServiceParts, options: StartOptions = {}): Promise<RunningService> {
  const log = options.log ?? (() => undefined);
  // Stopped in reverse order of start, each part bounded (a part that hangs, waiting
  // for a Redis that is gone, say, is left behind): what must happen first, the jobs
  // handed back to the database, happens whatever comes after.
  const stops: Array<{ what: string; fn: () => Promise<unknown>; ms: number }> = [];
  const onStop = (what: string, fn: () => Promise<unknown>, ms = STOP_STEP_MS) => void stops.push({ what, fn, ms });
  let localPool: LocalPool | null = null;
  const stop = async () => {
    localPool?.stopRespawning();
    for (const { what, fn, ms } of stops.reverse()) {
      const t0 = Date.now();
      await within(fn(), ms, () => new Error(`did not stop within ${ms} ms; left behind`)).catch((e: Error) => log(`stop ${what}: ${e.message}`));
      if (Date.now() - t0 > 1000) log(`stop ${what}: took ${Date.now() - t0} ms`);
    }
  };
  try {
    await mkdir(config.dataDir, { recursive: true });
    if (config.auth === 'on') {
      // Workers take work only from holders of the workers' token (local ones get it at spawn).
      const source = await ensureWorkerToken(config.dataDir);
      log(`workers: TAS_WORKER_TOKEN ${source === 'environment' ? 'from the environment' : `in ${config.dataDir}/worker.key${source === 'new' ? ' (new)' : ''}`}; remote workers need the same`);
    }

    let databaseUrl = config.databaseUrl;
    let maxConnections: number | undefined;
    if (databaseUrl === null) {
      const pg = await startEmbeddedPostgres({ dataDir: config.dataDir });
      onStop('embedded PostgreSQL', () => pg.stop());
      databaseUrl = pg.url;
      maxConnections = pg.maxConnections;
      log(`database: embedded PostgreSQL (PGlite) in ${config.dataDir}/pglite (set DATABASE_URL for a server)`);
    } else {
      log(`database: ${redactUrl(databaseUrl)}`);
    }
    const migrated = await migrate(databaseUrl);
    if (migrated.applied.length > 0) log(`migrations applied: ${migrated.applied.join(', ')}`);
    const prisma = createPrismaClient(databaseUrl, maxConnections !== undefined ? { maxConnections } : {});
    onStop('database client', () => prisma.$disconnect());
    // Redis names from the database's identity: services share work only when they share a database.
    const names = queueNames(config.queuePrefix ?? identityPrefix(await databaseIdentity(prisma)));
    log(`queue: ${names.queue}${config.queuePrefix === null ? " (named after this database's identity)" : ' (TAS_QUEUE_PREFIX)'}`);

    const redis = await ensureRedis(config.redisUrl, { startIfMissing: true, dataDir: config.dataDir, log });
    onStop('redis', () => redis.stop());
    log(redis.started ? `redis: none answered at ${config.redisUrl}; started a private redis-server at ${redis.url}` : `redis: ${redactUrl(redis.url)}`);

    // Commands that must not wait for Redis (submissions, cancels, notices, readiness),
    // and one log line per change of Redis's state.
    const commands = redisCommandConnection(redis.url);
    onStop('redis connection', async () => commands.disconnect());
    const redisHealth = new RedisHealth(commands, log);
    onStop('redis health', async () => redisHealth.close());
    const queueConnection = redisCommandConnection(redis.url);
    onStop('queue connection', async () => queueConnection.disconnect());
    const queue = new JobQueue(queueConnection, names.queue);
    onStop('queue', () => queue.close(), REDIS_STOP_MS);
    // Model-repository change notices: schedulers publish versions, APIs (un)load models.
    const changesSubscriber = redisConnection(redis.url);
    onStop('model notices', async () => changesSubscriber.disconnect());
    const modelChanges = redisModelChanges(commands, changesSubscriber, names.modelsChannel);

    const readinessChecks = [
      { name: 'database', check: async () => void (await prisma.$queryRaw`SELECT 1`) },
      { name: 'redis', check: async () => void (await commands.ping()) },
    ];
    const registry = new WorkerRegistry(prisma, { probeIntervalMs: config.probeIntervalMs, pruneAfterMs: config.workerPruneAfterMs, leaveAfterMs: config.workerLeaveAfterMs, ...(options.tls ? { tls: options.tls } : {}), log });
    if (parts.scheduler) {
      if (parts.localWorkers) {
        localPool = await LocalPool.start(config.workers ?? undefined, registry, { log, ...(options.tls ? { tls: options.tls } : {}) });
        const pool = localPool;
        onStop('local workers', () => pool.stop());
      }
      for (const address of config.workersAt) {
        await registry.add(address).then(
          (info) => log(`worker ${address} joined (${info.device_kind} ${info.device_name}, ${info.backend})`),
          (e: Error) => log(`worker ${address} is not answering yet (${e.message}); it joins when it does`),
        );
      }
      registry.start();
      onStop('worker registry', () => registry.stop());
      const subscriber = redisConnection(redis.url);
      const schedulerConnection = redisConnection(redis.url);
      const scheduler = new Scheduler({
        prisma,
        registry,
        connection: schedulerConnection,
        subscriber,
        names,
        dataDir: config.dataDir,
        collectiveTimeoutMs: config.collectiveTimeoutMs,
        lockDurationMs: config.lockDurationMs,
        ...(options.tls ? { tls: options.tls } : {}),
        log,
        onModelPublished: () => modelChanges.notify(),
        redisHealth,
      });
      await scheduler.start();
      onStop('scheduler', async () => {
        await scheduler.close();
        subscriber.disconnect();
        schedulerConnection.disconnect();
      });
    }

    let app: FastifyInstance | null = null;
    let httpUrl: string | null = null;
    let grpcAddress: string | null = null;
    if (parts.api) {
      // Keys: checked against the database, revocations heard from every API process.
      const revocationsSubscriber = redisConnection(redis.url);
      onStop('key revocations', async () => revocationsSubscriber.disconnect());
      const tenants = new TenantStore(prisma, { revocations: redisKeyRevocations(commands, revocationsSubscriber, names.keysChannel) });
      await tenants.start();
      if (config.auth === 'on' && config.adminToken === null) {
        const made = await tenants.ensureAdminKey();
        if (made) {
          const file = await writeAdminKey(config.dataDir, made.api_key);
          log(`auth: made the admin key (shown once; also written to ${file}, mode 0600): ${made.api_key}`);
        }
      }
      const auth = new Authenticator({ mode: config.auth, tenants, adminToken: config.adminToken, metricsToken: config.metricsToken, workerToken: workerToken() });
      const rateNamespace = names.rateNamespace;
      log(
        config.auth === 'on'
          ? `auth: on (API keys required${config.adminToken ? '; admin key from TAS_ADMIN_TOKEN' : ''}; CORS ${config.corsOrigins.length ? `for ${config.corsOrigins.join(', ')}` : 'off'})`
          : `auth: off (every request is the admin; set TAS_AUTH=on, or listen beyond loopback, to require keys)`,
      );
      const metricsRegistry = new Registry();
      const inference: InferenceService = await startInferenceService({
        source: new ModelStore(prisma),
        changes: modelChanges,
        registry: metricsRegistry,
        threads: config.inferThreads,
        maxRequestRows: config.inferMaxRows,
        maxMessageBytes: config.inferMaxMessageBytes,
        grpc: { host: config.host, port: config.grpcPort, ...(options.tls ? { tls: options.tls } : {}) },
        access: { auth, rate: new RateCounter(commands, rateNamespace) },
        log,
      });
      onStop('inference', () => inference.close());
      grpcAddress = inference.grpc?.address ?? null;
      const datasets = new DatasetStore({ prisma, dataDir: config.dataDir });
      // Long polls of jobs answer when a change commits, whichever process wrote it.
      const changes = new ChangeFeed(databaseUrl, { log });
      // Not listening yet (it logged why and retries): long polls read periodically meanwhile.
      await changes.start();
      onStop('change feed', () => changes.close());
      app = await buildApp({
        prisma,
        jobs: new JobService({ prisma, queue, redis: commands, cancelChannel: names.cancelChannel, dataDir: config.dataDir, probeIntervalMs: config.probeIntervalMs, redisHealth, log, changes }),
        models: new ModelStore(prisma),
        queue,
        probeIntervalMs: config.probeIntervalMs,
        checks: readinessChecks,
        registerDatasets: async (a) => void (await a.register(datasetRoutes, { store: datasets, maxUploadBytes: config.maxUploadBytes })),
        registerInference: (a) => inference.registerRoutes(a),
        registry: metricsRegistry,
        tenants,
        workers: { registry, files: new JobFiles({ prisma, dataDir: config.dataDir }), heartbeatMs: config.workerHeartbeatMs, leaveAfterMs: config.workerLeaveAfterMs },
        changes,
      }, { access: { auth, corsOrigins: config.corsOrigins, redis: commands, rateLimitNamespace: rateNamespace } });
      const server = app;
      onStop('REST API', () => server.close());
      const address = await app.listen({ port: config.httpPort, host: config.host });
      // The address bound, as the server reports it, and one this machine can dial.
      httpUrl = address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '[::1]');
      log(`REST API listening on ${address}${httpUrl !== address ? ` (from this machine: ${httpUrl})` : ''}; OpenAPI at ${httpUrl}/docs`);
    } else if (config.healthPort !== null) {
      // A scheduler without the API: liveness and readiness alone, for an orchestrator's probes.
      const health = createBaseApp();
      await health.register(healthRoutes, { checks: readinessChecks });
      onStop('health endpoint', () => health.close());
      const address = await health.listen({ port: config.healthPort, host: config.host });
      httpUrl = address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '[::1]');
      log(`health (/healthz, /readyz) on ${address}`);
    }

    return { httpUrl, grpcAddress, databaseUrl, redisUrl: redis.url, names, embeddedDatabase: config.databaseUrl === null, prisma, app, localPool, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}
