/**
 * What workers on other hosts call (access `worker`: TAS_WORKER_TOKEN, or the admin):
 *
 * - `POST /v1/workers` joins the pool, or says again that the worker is there (its
 *   heartbeat); `DELETE /v1/workers/:address` leaves it (the worker is stopping).
 * - `/v1/worker-files/jobs/:id/...`: the files of a job it runs, since it does not share
 *   the service's filesystem (src/service/jobs/job-files.ts): the job's input files with
 *   their SHA-256 (`inputs`, then each `input?path=`), its latest checkpoint, and `PUT
 *   files/:name?generation=N` for the checkpoint and the artifact it sends back, with
 *   the body's SHA-256 in `x-tas-sha256`.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { JobFiles } from '../../../service/jobs/job-files.js';
import { ServiceError } from '../../../service/errors.js';
import type { WorkerRegistry } from '../../../service/scheduling/worker-registry.js';
import { drainBriefly } from './datasets.js';

export interface WorkerRouteOptions {
  readonly registry: WorkerRegistry;
  readonly files: JobFiles;
  /** What a joined worker is told: heartbeat this often; silent this long, it leaves. */
  readonly heartbeatMs: number;
  readonly leaveAfterMs: number;
}

const errorResponse = { $ref: 'ApiError#' } as const;
const worker = { access: 'worker' } as const;
/** host:port, the host a name, an IPv4 address or a bracketed IPv6 address. */
const ADDRESS = /^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/;
const jobParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;

function sendFile(reply: FastifyReply, f: { stream: Readable; bytes: number; sha256: string }): FastifyReply {
  return reply.header('content-type', 'application/octet-stream').header('content-length', f.bytes).header('x-tas-sha256', f.sha256).send(f.stream);
}

export const workerRoutes: FastifyPluginAsync<WorkerRouteOptions> = async (app, { registry, files, heartbeatMs, leaveAfterMs }) => {
  app.post<{ Body: { address: string } }>(
    '/v1/workers',
    {
      config: worker,
      schema: {
        tags: ['pool'],
        summary: 'A worker joins the pool, or heartbeats (workers: TAS_WORKER_TOKEN)',
        description:
          'The service reaches the worker at `address` (its Worker service) before it answers: a worker it cannot reach is refused (422), naming the address. ' +
          'The answer says how often to heartbeat (POST again) and after how long without a heartbeat the worker leaves the pool.',
        body: {
          type: 'object',
          required: ['address'],
          additionalProperties: false,
          properties: { address: { type: 'string', maxLength: 300, description: 'host:port where the service and the other ranks reach this worker (`tas worker --advertise`)' } },
        },
        response: {
          200: {
            type: 'object',
            properties: { address: { type: 'string' }, joined: { type: 'boolean', description: 'true when this call added it, false for a heartbeat' }, heartbeat_ms: { type: 'integer' }, leave_after_ms: { type: 'integer' } },
          },
          400: errorResponse,
          422: errorResponse,
        },
      },
    },
    async (request) => {
      const { address } = request.body;
      if (!ADDRESS.test(address)) throw new ServiceError('TAS_ERR_BAD_REQUEST', `address: expected host:port, got ${JSON.stringify(address)}`, { field: 'address' });
      const { joined } = await registry.join(address).catch((e: Error) => {
        throw new ServiceError('TAS_ERR_WORKER_UNREACHABLE', `the service cannot reach the worker at ${address} (${e.message}); check that --advertise names an address this service can dial and that the port is open`, { field: 'address' });
      });
      return { address, joined, heartbeat_ms: heartbeatMs, leave_after_ms: leaveAfterMs };
    },
  );

  app.delete<{ Params: { address: string } }>(
    '/v1/workers/:address',
    {
      config: worker,
      schema: { tags: ['pool'], summary: 'A joined worker leaves the pool (it is stopping)', params: { type: 'object', required: ['address'], properties: { address: { type: 'string', maxLength: 300 } } }, response: { 404: errorResponse } },
    },
    async (request, reply) => {
      if (!(await registry.leave(request.params.address))) throw new ServiceError('TAS_ERR_NOT_FOUND', `no joined worker ${request.params.address}`);
      return reply.code(204).send();
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/worker-files/jobs/:id/inputs',
    { config: worker, schema: { tags: ['pool'], summary: "The job's input files: path, bytes, SHA-256", params: jobParams, response: { 404: errorResponse } } },
    async (request) => ({ files: await files.inputs(request.params.id) }),
  );

  app.get<{ Params: { id: string }; Querystring: { path: string } }>(
    '/v1/worker-files/jobs/:id/input',
    {
      config: worker,
      schema: {
        tags: ['pool'],
        summary: "One of the job's input files (x-tas-sha256: its hash)",
        params: jobParams,
        querystring: { type: 'object', required: ['path'], additionalProperties: false, properties: { path: { type: 'string', maxLength: 4096 } } },
        response: { 404: errorResponse },
      },
    },
    async (request, reply) => sendFile(reply, await files.openInput(request.params.id, request.query.path)),
  );

  app.get<{ Params: { id: string; name: string } }>(
    '/v1/worker-files/jobs/:id/files/:name',
    {
      config: worker,
      schema: {
        tags: ['pool'],
        summary: "A file of the job's directory: its checkpoint or artifact (404: none yet)",
        params: { type: 'object', required: ['id', 'name'], properties: { id: { type: 'string', format: 'uuid' }, name: { type: 'string', maxLength: 100 } } },
        response: { 404: errorResponse },
      },
    },
    async (request, reply) => {
      const f = await files.openJobFile(request.params.id, request.params.name);
      if (!f) throw new ServiceError('TAS_ERR_NOT_FOUND', `job ${request.params.id} has no ${request.params.name} yet`);
      return sendFile(reply, f);
    },
  );

  // The body of a PUT is the file itself, passed through as a stream.
  await app.register(async (put) => {
    put.removeAllContentTypeParsers();
    put.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    put.addHook('onResponse', async (request) => drainBriefly(request.raw));
    put.put<{ Params: { id: string; name: string }; Querystring: { generation: number } }>(
      '/v1/worker-files/jobs/:id/files/:name',
      {
        config: worker,
        bodyLimit: Number.MAX_SAFE_INTEGER,
        schema: {
          tags: ['pool'],
          summary: "Replace a file of the job's directory (its checkpoint, its artifact) from attempt `generation`",
          params: { type: 'object', required: ['id', 'name'], properties: { id: { type: 'string', format: 'uuid' }, name: { type: 'string', maxLength: 100 } } },
          querystring: { type: 'object', required: ['generation'], additionalProperties: false, properties: { generation: { type: 'integer', minimum: 1 } } },
          headers: { type: 'object', required: ['x-tas-sha256'], properties: { 'x-tas-sha256': { type: 'string' } } },
          response: { 200: { type: 'object', properties: { bytes: { type: 'integer' } } }, 400: errorResponse, 404: errorResponse, 409: errorResponse },
        },
      },
      async (request) => {
        const body = request.body;
        const stream = body instanceof Readable ? body : request.raw;
        const sha256 = String(request.headers['x-tas-sha256']).toLowerCase();
        return files.writeJobFile(request.params.id, request.query.generation, request.params.name, stream, sha256);
      },
    );
  });
};
