/**
 * /v1/jobs: submit, list, status (with ETag, so a dashboard's polls cost a 304), metrics,
 * logs, cancel. The submission body is a training spec (schemas/train.schema.json) plus
 * the service fields of schemas/job-request.schema.json; it is validated by the
 * trainer's own validator, so a 400 names the field exactly as `tas validate` would.
 */
import { createHash } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { JobService, TaggedView } from '../../../service/jobs/job-service.js';
import { JOB_STATUSES, type JobStatus } from '../../../service/db/job-states.js';
import { MAX_PAGE_SIZE } from '../../../service/db/jobs.js';
import { ApiError } from '../http-errors.js';

export interface JobRouteOptions {
  readonly jobs: JobService;
  /** Aborted when the server closes: long polls answer at once instead of holding the close up. */
  readonly closing?: AbortSignal;
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;
const errorResponse = { $ref: 'ApiError#' } as const;

/** Weak ETag of a JSON body: equal bodies, equal tags. */
export function etagOf(body: unknown): string {
  return `W/"${createHash('sha1').update(JSON.stringify(body)).digest('base64url')}"`;
}

function clientHas(request: FastifyRequest, tag: string): boolean {
  const seen = request.headers['if-none-match'];
  return seen !== undefined && seen.split(',').some((t) => t.trim() === tag || t.trim() === '*');
}

/** Sends `body` with its ETag, or 304 when the client already has it. */
export function sendWithEtag(request: FastifyRequest, reply: FastifyReply, body: unknown): FastifyReply {
  const tag = etagOf(body);
  void reply.header('etag', tag).header('cache-control', 'no-cache');
  if (clientHas(request, tag)) return reply.code(304).send();
  return reply.send(body);
}

/** How often a long poll re-reads its resource. */
export const LONG_POLL_CHECK_MS = 200;

/**
 * A long poll: with `wait` seconds and an If-None-Match, the answer is held until the
 * resource's ETag differs (or the wait ends, then 304), so a dashboard or a script learns
 * of a change when it happens instead of polling in a loop. Without `wait`, a plain
 * conditional GET. Resolves with the latest read.
 */
async function latestWhenChanged<T>(request: FastifyRequest, read: () => Promise<T>, tagOf: (t: T) => string, waitSeconds: number | undefined, closing?: AbortSignal): Promise<T> {
  let t = await read();
  if (waitSeconds && request.headers['if-none-match'] !== undefined) {
    const deadline = Date.now() + waitSeconds * 1000;
    let closed = false;
    request.raw.once('close', () => (closed = true));
    while (clientHas(request, tagOf(t)) && Date.now() < deadline && !closed && !closing?.aborted) {
      await new Promise((r) => setTimeout(r, Math.min(LONG_POLL_CHECK_MS, Math.max(0, deadline - Date.now()))));
      t = await read();
    }
  }
  return t;
}

export async function sendWhenChanged(request: FastifyRequest, reply: FastifyReply, read: () => Promise<unknown>, waitSeconds: number | undefined, closing?: AbortSignal): Promise<FastifyReply> {
  return sendWithEtag(request, reply, await latestWhenChanged(request, read, etagOf, waitSeconds, closing));
}

/** As sendWhenChanged, for resources that come with their ETag (no hashing per request). */
export async function sendTaggedWhenChanged(request: FastifyRequest, reply: FastifyReply, read: () => Promise<TaggedView>, waitSeconds: number | undefined, closing?: AbortSignal): Promise<FastifyReply> {
  const t = await latestWhenChanged(request, read, (v) => v.etag, waitSeconds, closing);
  void reply.header('etag', t.etag).header('cache-control', 'no-cache');
  if (clientHas(request, t.etag)) return reply.code(304).send();
  return reply.type('application/json; charset=utf-8').serializer((x) => x as string).send(t.json);
}

/** The `wait` query parameter of long-polled resources. */
export const waitQuery = { wait: { type: 'number', minimum: 0, maximum: 60, description: 'long poll: with If-None-Match, hold the answer up to this many seconds until the resource changes' } } as const;

export const jobRoutes: FastifyPluginAsync<JobRouteOptions> = async (app, { jobs, closing }) => {
  app.post(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Submit a training job',
        description: 'Body: a training spec (schemas/train.schema.json) plus `priority` and `max_restarts`. With an `Idempotency-Key` header, a retried submission returns the job the first one created (200 instead of 201).',
        headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 200 } } },
        body: { type: 'object', additionalProperties: true },
        response: { 200: { $ref: 'Job#' }, 201: { $ref: 'Job#' }, 400: errorResponse, 403: errorResponse, 409: errorResponse, 429: errorResponse },
      },
    },
    async (request, reply) => {
      const key = request.headers['idempotency-key'];
      const { job, created } = await jobs.submit(request.principal, request.body, typeof key === 'string' ? key : undefined);
      return reply.code(created ? 201 : 200).header('location', `/v1/jobs/${job.id}`).send(job);
    },
  );

  app.get<{ Querystring: { status?: string; limit?: number; cursor?: string } }>(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'List jobs, newest first',
        querystring: {
          type: 'object',
          properties: {
            status: { type: 'string', description: `comma-separated: ${JOB_STATUSES.join(', ')}` },
            limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE_SIZE, default: 50 },
            cursor: { type: 'string', maxLength: 500 },
          },
          additionalProperties: false,
        },
        response: { 200: { type: 'object', properties: { jobs: { type: 'array', items: { $ref: 'Job#' } }, next_cursor: { type: ['string', 'null'] } } }, 400: errorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query;
      let status: JobStatus[] | undefined;
      if (q.status !== undefined) {
        status = q.status.split(',').map((s) => s.trim()) as JobStatus[];
        const bad = status.find((s) => !(JOB_STATUSES as readonly string[]).includes(s));
        if (bad !== undefined) throw new ApiError('TAS_ERR_BAD_REQUEST', `status: unknown status ${JSON.stringify(bad)} (one of ${JOB_STATUSES.join(', ')})`, 'status');
      }
      const page = await jobs.list(request.principal, { ...(status ? { status } : {}), ...(q.limit !== undefined ? { limit: q.limit } : {}), ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) });
      return sendWithEtag(request, reply, page);
    },
  );

  app.get<{ Params: { id: string }; Querystring: { wait?: number } }>(
    '/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Job status (send If-None-Match with the last ETag: 304 while nothing changed; add ?wait=S to long-poll)',
        params: idParams,
        querystring: { type: 'object', properties: waitQuery, additionalProperties: false },
        response: { 200: { $ref: 'Job#' }, 404: errorResponse },
      },
    },
    async (request, reply) => sendTaggedWhenChanged(request, reply, () => jobs.getTagged(request.principal, request.params.id), request.query.wait, closing),
  );

  app.get<{ Params: { id: string }; Querystring: { max_points?: number } }>(
    '/v1/jobs/:id/metrics',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Per-step loss, accuracy, throughput, time split, and each BN layer\'s running statistics over time',
        params: idParams,
        querystring: { type: 'object', properties: { max_points: { type: 'integer', minimum: 2, maximum: 100000, default: 1000 } }, additionalProperties: false },
      },
    },
    async (request, reply) => sendWithEtag(request, reply, await jobs.metrics(request.principal, request.params.id, { ...(request.query.max_points ? { maxPoints: request.query.max_points } : {}) })),
  );

  app.get<{ Params: { id: string }; Querystring: { after?: string; limit?: number } }>(
    '/v1/jobs/:id/logs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Log lines, oldest first; pass next_after as `after` to follow',
        params: idParams,
        querystring: { type: 'object', properties: { after: { type: 'string', maxLength: 20 }, limit: { type: 'integer', minimum: 1, maximum: 5000, default: 500 } }, additionalProperties: false },
      },
    },
    async (request) => jobs.logs(request.principal, request.params.id, request.query.after, request.query.limit ?? 500),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/jobs/:id/cancel',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Cancel a job: every rank stops within seconds and its workers are freed',
        params: idParams,
        response: { 200: { $ref: 'Job#' }, 404: errorResponse, 409: errorResponse },
      },
    },
    async (request) => jobs.cancel(request.principal, request.params.id),
  );
};
