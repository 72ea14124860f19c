/**
 * The REST binding of the Open Inference Protocol under /v2 (health, server and model
 * metadata, readiness, infer), plus Triton's model-repository extension (index, load,
 * unload; a load may carry Triton's `config` parameter to change dynamic batching).
 * Errors are the protocol's `{"error": "..."}` with the status of the error catalogue.
 */
import type { FastifyError, FastifyPluginAsync, FastifyReply } from 'fastify';
import { InferenceError } from '../../../inference/errors.js';
import { infer, type InferOptions } from '../../../inference/infer.js';
import type { ModelRepository } from '../../../inference/repository.js';
import { PLATFORM, type ServerIdentity } from '../../server-info.js';
import { HTTP_STATUS } from '../http-errors.js';
import { fromJson } from '../../../inference/tensors.js';

export interface InferenceRestOptions extends InferOptions {
  readonly repository: ModelRepository;
  readonly identity: ServerIdentity;
  /** Largest infer body (JSON). @defaultValue 32 MiB */
  readonly maxBodyBytes?: number;
  readonly log?: (message: string) => void;
}

interface InferBody {
  id?: string;
  parameters?: Record<string, unknown>;
  inputs: Array<{ name: string; shape: number[]; datatype: string; parameters?: Record<string, unknown>; data: unknown }>;
  outputs?: Array<{ name: string; parameters?: Record<string, unknown> }>;
}

const inferBodySchema = {
  type: 'object',
  required: ['inputs'],
  properties: {
    id: { type: 'string' },
    parameters: { type: 'object' },
    inputs: {
      type: 'array',
      items: {
        type: 'object',
        required: ['name', 'shape', 'datatype', 'data'],
        properties: {
          name: { type: 'string' },
          shape: { type: 'array', items: { type: 'integer', minimum: 0 } },
          datatype: { type: 'string' },
          parameters: { type: 'object' },
          data: {},
        },
      },
    },
    outputs: { type: 'array', items: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, parameters: { type: 'object' } } } },
  },
} as const;

const loadBodySchema = {
  type: ['object', 'null'],
  properties: { parameters: { type: 'object', properties: { config: { type: 'string' } } } },
} as const;

type NameParams = { model: string; version?: string };

/** Triton's load `config` parameter: the dynamic-batching fields tas honours. */
export function batchingFromConfig(config: string): { maxBatchSize?: number; maxQueueDelayMs?: number } {
  let c: unknown;
  try {
    c = JSON.parse(config);
  } catch {
    throw new InferenceError('INVALID_INPUT', 'parameters.config: not valid JSON');
  }
  const fields = (typeof c === 'object' && c !== null ? c : {}) as { max_batch_size?: unknown; dynamic_batching?: { max_queue_delay_microseconds?: unknown } };
  const out: { maxBatchSize?: number; maxQueueDelayMs?: number } = {};
  if (fields.max_batch_size !== undefined) {
    if (!Number.isInteger(fields.max_batch_size) || (fields.max_batch_size as number) < 1 || (fields.max_batch_size as number) > 65536) {
      throw new InferenceError('INVALID_INPUT', 'parameters.config.max_batch_size: must be an integer from 1 to 65536');
    }
    out.maxBatchSize = fields.max_batch_size as number;
  }
  const delay = fields.dynamic_batching?.max_queue_delay_microseconds;
  if (delay !== undefined) {
    if (!Number.isInteger(delay) || (delay as number) < 0 || (delay as number) > 10_000_000) {
      throw new InferenceError('INVALID_INPUT', 'parameters.config.dynamic_batching.max_queue_delay_microseconds: must be an integer from 0 to 10000000');
    }
    out.maxQueueDelayMs = (delay as number) / 1000;
  }
  return out;
}

export const inferenceRoutes: FastifyPluginAsync<InferenceRestOptions> = async (app, options) => {
  const repo = options.repository;

  // This plugin's errors are the protocol's: {"error": "..."}.
  app.setErrorHandler((err: FastifyError | InferenceError, request, reply) => {
    if (err instanceof InferenceError) {
      if (err.code === 'INTERNAL') request.log.error({ err }, 'inference failed');
      return reply.status(HTTP_STATUS[err.code]).send({ error: err.message });
    }
    const fe = err as FastifyError;
    if (fe.validation) return reply.status(400).send({ error: `${fe.validationContext ?? 'body'}${fe.validation[0]?.instancePath ?? ''} ${fe.validation[0]?.message ?? 'is invalid'}`.trim() });
    if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.status(413).send({ error: `request body larger than ${options.maxBodyBytes ?? 32 * 1024 * 1024} bytes` });
    if (fe.statusCode && fe.statusCode < 500) return reply.status(fe.statusCode).send({ error: fe.message });
    options.log?.(`inference REST error: ${fe.stack ?? fe.message}`);
    return reply.status(500).send({ error: 'internal error' });
  });

  const tags = ['inference'];
  const ready = (reply: FastifyReply, ok: boolean) => reply.status(ok ? 200 : 400).send({ ready: ok });

  // Health and server metadata are open; everything about a model needs a key (with auth on).
  const open = { access: 'open' } as const;
  app.get('/v2/health/live', { config: open, schema: { tags, summary: 'Liveness (the process answers)' } }, async () => ({ live: true }));
  app.get('/v2/health/ready', { config: open, schema: { tags, summary: 'Readiness: the model repository is read and loaded (400 when not)' } }, async (_q, reply) => ready(reply, repo.isReady()));
  app.get('/v2', { config: open, schema: { tags, summary: 'Server metadata' } }, async () => ({ name: options.identity.name, version: options.identity.version, extensions: options.identity.extensions }));

  const metadata = async (tenant: string, p: NameParams) => {
    const m = await repo.metadata(tenant, p.model, p.version ?? '');
    return { name: m.name, versions: m.versions, platform: PLATFORM, inputs: [m.served.input], outputs: [m.served.output] };
  };
  app.get<{ Params: NameParams }>('/v2/models/:model', { schema: { tags, summary: 'Model metadata (default version)' } }, async (q) => metadata(q.principal.tenantId, q.params));
  app.get<{ Params: NameParams }>('/v2/models/:model/versions/:version', { schema: { tags, summary: 'Model metadata' } }, async (q) => metadata(q.principal.tenantId, q.params));
  app.get<{ Params: NameParams }>('/v2/models/:model/ready', { schema: { tags, summary: 'Model readiness (400 when not ready)' } }, async (q, reply) => ready(reply, repo.modelReady(q.principal.tenantId, q.params.model, '')));
  app.get<{ Params: NameParams }>('/v2/models/:model/versions/:version/ready', { schema: { tags, summary: 'Model version readiness (400 when not ready)' } }, async (q, reply) =>
    ready(reply, repo.modelReady(q.principal.tenantId, q.params.model, q.params.version ?? '')),
  );

  const runInfer = async (tenant: string, p: NameParams, body: InferBody) => {
    const res = await infer(
      repo,
      {
        tenant,
        model: p.model,
        version: p.version ?? '',
        id: body.id ?? '',
        inputs: body.inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, decode: (model, checked) => fromJson(model, checked, t.data) })),
        outputs: (body.outputs ?? []).map((x) => x.name),
      },
      'rest',
      options,
    );
    return {
      model_name: res.model,
      model_version: res.version,
      ...(res.id ? { id: res.id } : {}),
      outputs: res.outputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape, data: Array.from(t.data) })),
    };
  };
  const bodyLimit = options.maxBodyBytes ?? 32 * 1024 * 1024;
  app.post<{ Params: NameParams; Body: InferBody }>('/v2/models/:model/infer', { bodyLimit, schema: { tags, summary: 'Inference (default version)', body: inferBodySchema } }, async (q) => runInfer(q.principal.tenantId, q.params, q.body));
  app.post<{ Params: NameParams; Body: InferBody }>('/v2/models/:model/versions/:version/infer', { bodyLimit, schema: { tags, summary: 'Inference', body: inferBodySchema } }, async (q) => runInfer(q.principal.tenantId, q.params, q.body));

  // The repository extension: a tenant's own models; the admin's index lists every tenant's.
  app.post('/v2/repository/index', { schema: { tags, summary: 'Every model version and its state (Triton model-repository extension)' } }, async (q) =>
    repo.list(q.principal.role === 'admin' ? null : q.principal.tenantId).map((e) => ({ name: e.name, version: e.version, state: e.state.toUpperCase(), reason: e.reason ?? '' })),
  );
  app.post<{ Params: NameParams; Body: { parameters?: { config?: string } } | null }>(
    '/v2/repository/models/:model/load',
    { schema: { tags, summary: 'Load a model (kept loaded across restarts); parameters.config may set max_batch_size and dynamic_batching.max_queue_delay_microseconds', body: loadBodySchema } },
    async (q) => {
      const config = q.body?.parameters?.config;
      if (config !== undefined) await repo.configure(q.principal.tenantId, q.params.model, batchingFromConfig(config));
      await repo.load(q.principal.tenantId, q.params.model);
      return {};
    },
  );
  app.post<{ Params: NameParams }>('/v2/repository/models/:model/unload', { schema: { tags, summary: 'Unload a model (kept unloaded across restarts)' } }, async (q) => {
    await repo.unload(q.principal.tenantId, q.params.model);
    return {};
  });
};
