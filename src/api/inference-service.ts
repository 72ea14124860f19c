/**
 * Inference serving assembled: the inference threads, the model repository mirroring the
 * database, metrics, the gRPC server (Open Inference Protocol, health, reflection) and
 * the REST routes to register on the API's fastify app. `src/cli/serve.ts` starts
 * it beside the REST API.
 */
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { TlsFiles } from '../grpc/tls-files.js';
import { InferenceEngine } from '../inference/engine.js';
import { GrpcRefusal, startInferenceGrpcServer, type InferenceGrpcServer } from './grpc/inference-server.js';
import type * as grpcJs from '@grpc/grpc-js';
import { Unauthenticated, type Authenticator } from './auth.js';
import type { RateCounter } from './rate-limit.js';
import type { Principal } from '../service/tenants/principal.js';
import { InferenceMetrics } from '../inference/metrics.js';
import { ModelRepository, type RepositoryChanges, type RepositorySource } from '../inference/repository.js';
import { inferenceRoutes } from './rest/routes/inference.js';
import { serverIdentity } from './server-info.js';

export interface InferenceServiceOptions {
  readonly source: RepositorySource;
  readonly changes?: RepositoryChanges;
  /** Metrics go here (the API's /metrics registry). */
  readonly registry?: Registry;
  /** @defaultValue 1 */
  readonly threads?: number;
  /** @defaultValue 1024 */
  readonly maxRequestRows?: number;
  /** @defaultValue 32 MiB */
  readonly maxMessageBytes?: number;
  /** Where gRPC serves; null: REST only. */
  readonly grpc: { readonly host: string; readonly port: number; readonly tls?: TlsFiles } | null;
  readonly refreshMs?: number;
  /** Who gRPC calls come from, and their rate (REST checks both in the app's hooks). @defaultValue every call is the admin */
  readonly access?: { readonly auth: Authenticator; readonly rate: RateCounter };
  readonly log?: (message: string) => void;
}

/** A gRPC call's principal from its `authorization` metadata, and one request off its rate. */
function grpcAuthorizer(access: { auth: Authenticator; rate: RateCounter }): (metadata: grpcJs.Metadata) => Promise<Principal> {
  return async (metadata) => {
    const value = metadata.get('authorization')[0];
    let who: Principal;
    try {
      who = await access.auth.principal(typeof value === 'string' ? value : undefined);
    } catch (e) {
      if (e instanceof Unauthenticated) throw new GrpcRefusal('TAS_ERR_UNAUTHENTICATED', e.message);
      throw e;
    }
    const d = await access.rate.take(who);
    if (!d.allowed) throw new GrpcRefusal('TAS_ERR_RATE_LIMITED', `the key's requests per minute are spent; retry in ${Math.ceil(d.retryAfterMs / 1000)} s`);
    return who;
  };
}

export interface InferenceService {
  readonly repository: ModelRepository;
  readonly engine: InferenceEngine;
  readonly grpc: InferenceGrpcServer | null;
  /** Add the /v2 REST routes to an app. */
  registerRoutes(app: FastifyInstance): Promise<void>;
  close(): Promise<void>;
}

export async function startInferenceService(options: InferenceServiceOptions): Promise<InferenceService> {
  const engine = await InferenceEngine.start({ threads: options.threads ?? 1, ...(options.log ? { log: options.log } : {}) });
  let repository: ModelRepository | null = null;
  let grpc: InferenceGrpcServer | null = null;
  try {
    let metrics: InferenceMetrics | undefined;
    const pending = () => repository?.pending() ?? [];
    if (options.registry) metrics = new InferenceMetrics(options.registry, pending);
    repository = new ModelRepository({
      source: options.source,
      engine,
      ...(metrics ? { metrics } : {}),
      ...(options.changes ? { changes: options.changes } : {}),
      ...(options.refreshMs !== undefined ? { refreshMs: options.refreshMs } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    const common = {
      repository,
      identity: serverIdentity(),
      maxRequestRows: options.maxRequestRows ?? 1024,
      ...(metrics ? { metrics } : {}),
      ...(options.log ? { log: options.log } : {}),
    };
    if (options.grpc) {
      grpc = await startInferenceGrpcServer({ ...common, ...(options.access ? { authorize: grpcAuthorizer(options.access) } : {}), host: options.grpc.host, port: options.grpc.port, ...(options.grpc.tls ? { tls: options.grpc.tls } : {}), ...(options.maxMessageBytes ? { maxMessageBytes: options.maxMessageBytes } : {}) });
      const port = grpc.address.slice(grpc.address.lastIndexOf(':') + 1);
      options.log?.(`gRPC inference (Open Inference Protocol, health, reflection) listening on ${options.grpc.host}:${port}${grpc.address.startsWith(`${options.grpc.host}:`) ? '' : ` (from this machine: ${grpc.address})`}`);
    }
    await repository.start();
    grpc?.setServing(true);
    const repo = repository;
    const server = grpc;
    return {
      repository: repo,
      engine,
      grpc: server,
      registerRoutes: async (app) => void (await app.register(inferenceRoutes, { ...common, ...(options.maxMessageBytes ? { maxBodyBytes: options.maxMessageBytes } : {}) })),
      close: async () => {
        await server?.close();
        await repo.close();
        await engine.close();
      },
    };
  } catch (e) {
    await grpc?.close();
    await repository?.close();
    await engine.close();
    throw e;
  }
}
