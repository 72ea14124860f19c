/**
 * /v1/jobs: submit, list, status (with ETag, so a dashboard's polls cost a 304), metrics,
 * logs, cancel. The submission body is a training spec (schemas/train.schema.json) plus
 * the service fields of schemas/job-request.schema.json; it is validated by the
 * trainer's own validator, so a 400 names the field exactly as `tas validate` would.
 */
import { createHash } from 'node:crypto';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { DEFAULT_MAX_POINTS, type JobService, type Tagged } from '../../../service/jobs/job-service.js';
import { JOB_STATUSES, type JobStatus } from '../../../service/db/job-states.js';
import { MAX_PAGE_SIZE } from '../../../service/db/jobs.js';
import { ApiError } from '../http-errors.js';
import { ChangeWatch, type ChangeSource } from '../long-poll.js';
import { visibleTenant, type Principal } from '../../../service/tenants/principal.js';

export interface JobRouteOptions {
  readonly jobs: JobService;
  /** How often a long-polled job or job list is read while requests wait on it (without a live `changes`). @defaultValue 25 */
  readonly longPollCheckMs?: number;
  /** Committed changes as the database announces them: long polls answer when one commits. */
  readonly changes?: ChangeSource;
  /** With a live `changes`, the longest a read stays current and the interval of reads of waited-on resources. @defaultValue 1000 */
  readonly longPollQuietMs?: number;
}

/**
 * Whether an announced change (`job:<id>`, `pool`, `tenants`) may change a long-polled
 * resource: a job's view moves with its own row, a page of the list with any job's; the
 * pool (a waiting job's view counts free workers) and the tenants move every view.
 */
export function jobKeyAffected(key: string, topic: string): boolean {
  if (!topic.startsWith('job:')) return true;
  return key.startsWith('list:') || key.endsWith(`:${topic.slice(4)}`);
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;
const errorResponse = { $ref: 'ApiError#' } as const;

/** Whose jobs a principal sees, as a key part: its tenant's, or every tenant's ('*'). */
function seenBy(who: Principal): string {
  return visibleTenant(who) ?? '*';
}

/** Weak ETag of a JSON body: equal bodies, equal tags. */
export function etagOf(body: unknown): string {
  return `W/"${createHash('sha1').update(JSON.stringify(body)).digest('base64url')}"`;
}

function clientHas(request: FastifyRequest, tag: string): boolean {
  const seen = request.headers['if-none-match'];
  return seen !== undefined && seen.split(',').some((t) => t.trim() === tag || t.trim() === '*');
}

/**
 * A long poll: with `wait` seconds and an If-None-Match, the answer is held until the
 * resource's ETag differs (or the wait ends, then 304), so a dashboard or a script learns
 * of a change when it happens instead of polling in a loop. Waiting requests share one
 * read of their resource (`key`) per check of `watch`. Without `wait`, a plain
 * conditional GET. Resolves with the latest read.
 */
async function latestWhenChanged<T>(request: FastifyRequest, reply: FastifyReply, watch: ChangeWatch, key: string, read: () => Promise<T>, tagOf: (t: T) => string, waitSeconds: number | undefined): Promise<T> {
  const polling = Boolean(waitSeconds) && request.headers['if-none-match'] !== undefined;
  // A long poll starts from a read shared with the other polls of this check.
  const t = polling ? await watch.latest(key, read) : await read();
  if (!waitSeconds || !polling || !clientHas(request, tagOf(t))) return t;
  const gone = new AbortController();
  reply.raw.once('close', () => gone.abort());
  return watch.wait(key, read, tagOf, (tag) => clientHas(request, tag), t, waitSeconds * 1000, gone.signal);
}

export async function sendWhenChanged(request: FastifyRequest, reply: FastifyReply, watch: ChangeWatch, key: string, read: () => Promise<unknown>, waitSeconds: number | undefined): Promise<FastifyReply> {
  const tags = new WeakMap<object, string>();
  // Hashed once per read, however many waiters compare it.
  const tagOf = (body: unknown) => {
    if (typeof body !== 'object' || body === null) return etagOf(body);
    let tag = tags.get(body);
    if (tag === undefined) tags.set(body, (tag = etagOf(body)));
    return tag;
  };
  const body = await latestWhenChanged(request, reply, watch, key, read, tagOf, waitSeconds);
  const tag = tagOf(body);
  void reply.header('etag', tag).header('cache-control', 'no-cache');
  if (clientHas(request, tag)) return reply.code(304).send();
  return reply.send(body);
}

/** As sendWhenChanged, for resources that come with their ETag and serialised JSON (no hashing per request). */
export async function sendTaggedWhenChanged(request: FastifyRequest, reply: FastifyReply, watch: ChangeWatch | null, key: string, read: () => Promise<Tagged>, waitSeconds: number | undefined): Promise<FastifyReply> {
  const t = watch ? await latestWhenChanged(request, reply, watch, key, read, (v) => v.etag, waitSeconds) : await read();
  void reply.header('etag', t.etag).header('cache-control', 'no-cache');
  if (clientHas(request, t.etag)) return reply.code(304).send();
  return reply.type('application/json; charset=utf-8').serializer((x) => x as string).send(t.json);
}

/** The `wait` query parameter of long-polled resources. */
export const waitQuery = { wait: { type: 'number', minimum: 0, maximum: 60, description: 'long poll: with If-None-Match, hold the answer up to this many seconds until the resource changes' } } as const;

export const jobRoutes: FastifyPluginAsync<JobRouteOptions> = async (app, { jobs, longPollCheckMs, changes, longPollQuietMs }) => {
  const watch = new ChangeWatch({
    ...(longPollCheckMs !== undefined ? { checkMs: longPollCheckMs } : {}),
    ...(changes ? { source: changes, affects: jobKeyAffected } : {}),
    ...(longPollQuietMs !== undefined ? { quietMs: longPollQuietMs } : {}),
  });
  // Closing (shutdown) answers held long polls at once, so close() is not held up by them.
  app.addHook('preClose', async () => watch.close());

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

  app.get<{ Querystring: { status?: string; limit?: number; cursor?: string; wait?: number } }>(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'List jobs, newest first (ETag; ?wait=S long-polls the page)',
        querystring: {
          type: 'object',
          properties: {
            status: { type: 'string', description: `comma-separated: ${JOB_STATUSES.join(', ')}` },
            limit: { type: 'integer', minimum: 1, maximum: MAX_PAGE_SIZE, default: 50 },
            cursor: { type: 'string', maxLength: 500 },
            ...waitQuery,
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
      const options = { ...(status ? { status } : {}), ...(q.limit !== undefined ? { limit: q.limit } : {}), ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) };
      // Polls share reads only with polls that see the same jobs (one tenant's, or all).
      return sendTaggedWhenChanged(request, reply, watch, `list:${seenBy(request.principal)}:${JSON.stringify(options)}`, () => jobs.listTagged(request.principal, options), q.wait);
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
    async (request, reply) => sendTaggedWhenChanged(request, reply, watch, `job:${seenBy(request.principal)}:${request.params.id}`, () => jobs.getTagged(request.principal, request.params.id), request.query.wait),
  );

  app.get<{ Params: { id: string }; Querystring: { max_points?: number } }>(
    '/v1/jobs/:id/metrics',
    {
      schema: {
        tags: ['jobs'],
        summary: "Per-step loss, accuracy, learning rate, throughput, time split, and each BN layer's running statistics over time (ETag)",
        description: 'Series longer than `max_points` are downsampled by windows that keep every series\' minimum and maximum (and the first and last step), so spikes survive.',
        params: idParams,
        querystring: { type: 'object', properties: { max_points: { type: 'integer', minimum: 2, maximum: 100000, default: DEFAULT_MAX_POINTS } }, additionalProperties: false },
      },
    },
    async (request, reply) => sendTaggedWhenChanged(request, reply, null, '', () => jobs.metricsTagged(request.principal, request.params.id, { ...(request.query.max_points ? { maxPoints: request.query.max_points } : {}) }), undefined),
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
