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
import { buildApp } from '../api/rest/app.js';
import { datasetRoutes } from '../api/rest/routes/datasets.js';
import { LocalPool } from '../gpu-pool/local-pool.js';
import { JobQueue, redisConnection } from '../service/scheduling/job-queue.js';
import { WorkerRegistry } from '../service/scheduling/worker-registry.js';
import { Scheduler } from '../service/scheduling/scheduler.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import type { ServiceConfig } from '../service/startup/config.js';
import { createPrismaClient, type PrismaClient } from '../service/db/client.js';
import { migrate } from '../service/db/migrate.js';
import { DatasetStore } from '../service/datasets/dataset-store.js';
import { startEmbeddedPostgres } from '../service/startup/embedded-postgres.js';
import { JobService } from '../service/jobs/job-service.js';
import { startInferenceService, type InferenceService } from '../api/inference-service.js';
import { modelChangesChannel, redisModelChanges } from '../service/models/model-changes.js';
import { ModelStore } from '../service/models/model-store.js';
import { ensureRedis } from '../service/startup/redis-server.js';
import { keyRevocationsChannel, redisKeyRevocations, TenantStore } from '../service/tenants/tenant-store.js';
import { Authenticator } from '../api/auth.js';
import { RateCounter } from '../api/rate-limit.js';
import { ensureWorkerToken, writeAdminKey } from './secrets.js';

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
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((e: Error) => log(`stop: ${e.message}`));
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
      stops.push(() => pg.stop());
      databaseUrl = pg.url;
      maxConnections = pg.maxConnections;
      log(`database: embedded PostgreSQL (PGlite) in ${config.dataDir}/pglite (set DATABASE_URL for a server)`);
    } else {
      log(`database: ${redactUrl(databaseUrl)}`);
    }
    const migrated = await migrate(databaseUrl);
    if (migrated.applied.length > 0) log(`migrations applied: ${migrated.applied.join(', ')}`);
    const prisma = createPrismaClient(databaseUrl, maxConnections !== undefined ? { maxConnections } : {});
    stops.push(() => prisma.$disconnect());

    const redis = await ensureRedis(config.redisUrl, { startIfMissing: true, dataDir: config.dataDir });
    stops.push(() => redis.stop());
    log(redis.started ? `redis: none answered at ${config.redisUrl}; started a private redis-server at ${redis.url}` : `redis: ${redactUrl(redis.url)}`);

    const commands = redisConnection(redis.url);
    stops.push(async () => commands.quit());
    const queueConnection = redisConnection(redis.url);
    stops.push(async () => queueConnection.quit());
    const queue = new JobQueue(queueConnection, config.queueName);
    stops.push(() => queue.close());
    // Model-repository change notices: schedulers publish versions, APIs (un)load models.
    const changesSubscriber = redisConnection(redis.url);
    stops.push(async () => changesSubscriber.quit());
    const modelChanges = redisModelChanges(commands, changesSubscriber, modelChangesChannel(config.queueName));

    const registry = new WorkerRegistry(prisma, { probeIntervalMs: config.probeIntervalMs, ...(options.tls ? { tls: options.tls } : {}), log });
    let localPool: LocalPool | null = null;
    if (parts.scheduler) {
      if (parts.localWorkers) {
        localPool = await LocalPool.start(config.workers ?? undefined, registry, { log, ...(options.tls ? { tls: options.tls } : {}) });
        const pool = localPool;
        stops.push(() => pool.stop());
      }
      for (const address of config.workersAt) {
        await registry.add(address).then(
          (info) => log(`worker ${address} joined (${info.device_kind} ${info.device_name}, ${info.backend})`),
          (e: Error) => log(`worker ${address} is not answering yet (${e.message}); it joins when it does`),
        );
      }
      registry.start();
      stops.push(() => registry.stop());
      const subscriber = redisConnection(redis.url);
      const schedulerConnection = redisConnection(redis.url);
      const scheduler = new Scheduler({
        prisma,
        registry,
        connection: schedulerConnection,
        subscriber,
        queueName: config.queueName,
        dataDir: config.dataDir,
        collectiveTimeoutMs: config.collectiveTimeoutMs,
        lockDurationMs: config.lockDurationMs,
        ...(options.tls ? { tls: options.tls } : {}),
        log,
        onModelPublished: () => modelChanges.notify(),
      });
      await scheduler.start();
      stops.push(async () => {
        await scheduler.close();
        await subscriber.quit();
        await schedulerConnection.quit();
      });
    }

    let app: FastifyInstance | null = null;
    let httpUrl: string | null = null;
    let grpcAddress: string | null = null;
    if (parts.api) {
      // Keys: checked against the database, revocations heard from every API process.
      const revocationsSubscriber = redisConnection(redis.url);
      stops.push(async () => revocationsSubscriber.quit());
      const tenants = new TenantStore(prisma, { revocations: redisKeyRevocations(commands, revocationsSubscriber, keyRevocationsChannel(config.queueName)) });
      await tenants.start();
      if (config.auth === 'on' && config.adminToken === null) {
        const made = await tenants.ensureAdminKey();
        if (made) {
          const file = await writeAdminKey(config.dataDir, made.api_key);
          log(`auth: made the admin key (shown once; also written to ${file}, mode 0600): ${made.api_key}`);
        }
      }
      const auth = new Authenticator({ mode: config.auth, tenants, adminToken: config.adminToken, metricsToken: config.metricsToken });
      const rateNamespace = `tas:${config.queueName}:rate:`;
      log(
        config.auth === 'on'
          ? `auth: on (API keys required${config.adminToken ? '; admin key from TAS_ADMIN_TOKEN' : ''}; CORS ${config.corsOrigins.length ? `for ${config.corsOrigins.join(', ')}` : 'off'})`
          : `auth: off (every request is the admin; set TAS_AUTH=on, or listen beyond loopback, to require keys)`,
      );
      const registry = new Registry();
      const inference: InferenceService = await startInferenceService({
        source: new ModelStore(prisma),
        changes: modelChanges,
        registry,
        threads: config.inferThreads,
        maxRequestRows: config.inferMaxRows,
        maxMessageBytes: config.inferMaxMessageBytes,
        grpc: { host: config.host, port: config.grpcPort, ...(options.tls ? { tls: options.tls } : {}) },
        access: { auth, rate: new RateCounter(commands, rateNamespace) },
        log,
      });
      stops.push(() => inference.close());
      grpcAddress = inference.grpc?.address ?? null;
      const datasets = new DatasetStore({ prisma, dataDir: config.dataDir });
      app = await buildApp({
        prisma,
        jobs: new JobService({ prisma, queue, redis: commands, dataDir: config.dataDir, probeIntervalMs: config.probeIntervalMs }),
        models: new ModelStore(prisma),
        queue,
        probeIntervalMs: config.probeIntervalMs,
        checks: [
          { name: 'database', check: async () => void (await prisma.$queryRaw`SELECT 1`) },
          { name: 'redis', check: async () => void (await commands.ping()) },
        ],
        registerDatasets: async (a) => void (await a.register(datasetRoutes, { store: datasets, maxUploadBytes: config.maxUploadBytes })),
        registerInference: (a) => inference.registerRoutes(a),
        registry,
        tenants,
      }, { access: { auth, corsOrigins: config.corsOrigins, redis: commands, rateLimitNamespace: rateNamespace } });
      const server = app;
      stops.push(() => server.close());
      const address = await app.listen({ port: config.httpPort, host: config.host });
      // The address bound, as the server reports it, and one this machine can dial.
      httpUrl = address.replace('0.0.0.0', '127.0.0.1').replace('[::]', '[::1]');
      log(`REST API listening on ${address}${httpUrl !== address ? ` (from this machine: ${httpUrl})` : ''}; OpenAPI at ${httpUrl}/docs`);
    }

    return { httpUrl, grpcAddress, databaseUrl, redisUrl: redis.url, embeddedDatabase: config.databaseUrl === null, prisma, app, localPool, stop };
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
