/**
 * /v1/datasets: upload (the file is the raw request body, streamed to disk, never
 * buffered), list, get. The store (src/service/datasets/dataset-store.ts) does the work; this module
 * maps HTTP onto it:
 *
 *   curl --data-binary @iris.csv -H 'content-type: text/csv' \
 *     'http://host/v1/datasets?name=iris&format=csv&label_column=species'
 *   → 201 {"id": ..., "samples": 150, "sample_shape": [4], "data": {"type": "csv", ...}}
 *
 * Two-file formats (npy: x + y; idx: images + labels) take two uploads: the first with
 * `part` answers 202 with an `upload_id`, the second with `upload_id` answers 201 with
 * the dataset (see the store's module doc).
 *
 * Every content type is accepted for an upload (the `format` parameter, not the label,
 * says how to read the bytes; `curl --data-binary` sends form-urlencoded by default), and
 * the parser passes the request stream through untouched. fastify applies no body limit
 * to a parser that takes the stream, so the limit is enforced here twice: a declared
 * Content-Length over it is refused before a byte is read, and the store stops at the
 * limit for chunked bodies.
 *
 * An error answered before the body's end (413, a bad parameter) is sent on a kept-alive
 * connection, and the rest of the body is read and dropped for a short while: closing at
 * once makes the kernel reset the connection under a client still sending, which then
 * sees EPIPE instead of the 413 (measured with fetch on a 100 MB body). Clients stop
 * sending when an early answer arrives (fetch, curl); one that does not is cut off after
 * DRAIN_BYTES or DRAIN_MS.
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import {
  DATASET_PARTS,
  MAX_DATASET_PAGE,
  UPLOAD_FORMATS,
  type DatasetPart,
  type DatasetRecord,
  type DatasetStore,
  type PendingUpload,
  type UploadFormat,
  type UploadOptions,
} from '../../../service/datasets/dataset-store.js';
import { TrainerError } from '../../../trainer/errors.js';
import { ApiError } from '../http-errors.js';

export interface DatasetRouteOptions {
  readonly store: DatasetStore;
  /** Largest upload (one file), bytes. */
  readonly maxUploadBytes: number;
}

const errorResponse = { $ref: 'ApiError#' } as const;
const anyObject = { type: 'object', additionalProperties: true } as const;
const orNull = <T extends object>(s: T) => ({ anyOf: [s, { type: 'null' }] }) as const;

const datasetSchema = {
  type: 'object',
  additionalProperties: true,
  required: ['id', 'name', 'format', 'path', 'bytes', 'samples', 'sample_shape', 'data', 'created_at'],
  properties: {
    id: { type: 'string', format: 'uuid' },
    name: { type: 'string' },
    format: { type: 'string', enum: [...UPLOAD_FORMATS] },
    path: { type: 'string', description: "the dataset's directory, relative to the data directory" },
    bytes: { type: 'integer', description: 'all its files together' },
    samples: { type: 'integer' },
    sample_shape: { type: 'array', items: { type: 'integer' }, description: 'one sample, e.g. [4] or [1, 28, 28]' },
    targets: orNull({ ...anyObject, description: '{kind: "classes", classes, class_names?} or {kind: "values", dim}' }),
    files: {
      type: 'array',
      items: { type: 'object', additionalProperties: true, properties: { part: { type: 'string' }, path: { type: 'string' }, bytes: { type: 'integer' }, sha256: { type: 'string' } } },
    },
    data: orNull({ ...anyObject, description: "paste as a job spec's `data` (paths relative to the data directory); null if the files were removed" }),
    created_at: { type: 'string', format: 'date-time' },
  },
} as const;

const pendingSchema = {
  type: 'object',
  additionalProperties: true,
  required: ['upload_id', 'name', 'format', 'received', 'missing', 'expires_at', 'next'],
  properties: {
    upload_id: { type: 'string' },
    name: { type: 'string' },
    format: { type: 'string', enum: ['npy', 'idx'] },
    options: anyObject,
    received: {
      type: 'array',
      items: { type: 'object', additionalProperties: true, properties: { part: { type: 'string' }, bytes: { type: 'integer' }, sha256: { type: 'string' }, shape: { type: 'array', items: { type: 'integer' } } } },
    },
    missing: { type: 'array', items: { type: 'string' } },
    expires_at: { type: 'string', format: 'date-time' },
    next: { type: 'string', description: 'the request that completes the dataset' },
  },
} as const;

interface UploadQuery {
  name?: string;
  format?: UploadFormat;
  part?: DatasetPart;
  upload_id?: string;
  header?: boolean;
  label_column?: string;
  delimiter?: string;
  task?: 'classification' | 'regression';
  scale?: boolean;
}

const uploadQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1, maxLength: 200 },
    format: { type: 'string', enum: [...UPLOAD_FORMATS] },
    part: { type: 'string', enum: [...DATASET_PARTS], description: 'npy: x or y; idx: images or labels (two-file formats only)' },
    upload_id: { type: 'string', pattern: '^[0-9a-f]{32}$', description: 'the 202 answer of the first file of a two-file dataset' },
    header: { type: 'boolean', description: 'csv: the first row holds column names (default true)' },
    label_column: { type: 'string', minLength: 1, maxLength: 200, description: 'csv: label column by header name, or by 0-based index when an integer (negative from the end); default the last' },
    delimiter: { type: 'string', minLength: 1, maxLength: 1, description: 'csv: default ","' },
    task: { type: 'string', enum: ['classification', 'regression'], description: 'csv, npy' },
    scale: { type: 'boolean', description: 'idx: divide unsigned-byte pixels by 255 (default true)' },
  },
  // A new dataset needs its name and format; the second file of a pair has them already.
  if: { not: { required: ['upload_id'] } },
  then: { required: ['name', 'format'] },
} as const;

const uploadBody = { schema: { format: 'binary', description: 'the file, as is (any content type is accepted)' } } as const;

const listQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    limit: { type: 'integer', minimum: 1, maximum: MAX_DATASET_PAGE, default: 50 },
    cursor: { type: 'string', maxLength: 500, description: 'next_cursor of the previous page' },
  },
} as const;

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;

export function datasetView(d: DatasetRecord) {
  return {
    id: d.id,
    name: d.name,
    format: d.format,
    path: d.path,
    bytes: d.bytes,
    samples: d.samples,
    sample_shape: d.sampleShape,
    targets: d.targets,
    files: d.files,
    data: d.data,
    created_at: d.createdAt.toISOString(),
  };
}

export function pendingView(p: PendingUpload) {
  const missing = p.missing[0];
  return {
    upload_id: p.uploadId,
    name: p.name,
    format: p.format,
    options: p.options,
    received: p.received,
    missing: p.missing,
    expires_at: p.expiresAt.toISOString(),
    next: `POST /v1/datasets?upload_id=${p.uploadId}${missing ? `&part=${missing}` : ''} with the ${missing ?? 'other'} file as the body`,
  };
}

/**
 * The one error of the store whose meaning depends on this route; the app maps every other
 * (ServiceError, TrainerError) by its code.
 */
function toRouteError(err: unknown): unknown {
  // A parsing option the file contradicts (a label_column the header lacks) is the
  // request's fault, named by its query parameter.
  if (err instanceof TrainerError && err.code === 'TAS_ERR_INVALID_SPEC' && err.field?.startsWith('data.')) {
    return new ApiError('TAS_ERR_BAD_REQUEST', err.message, err.field.slice('data.'.length));
  }
  return err;
}

function optionsOf(q: UploadQuery): UploadOptions {
  const label = q.label_column;
  return {
    ...(q.header !== undefined ? { header: q.header } : {}),
    ...(label !== undefined ? { label_column: /^-?\d+$/.test(label) ? Number(label) : label } : {}),
    ...(q.delimiter !== undefined ? { delimiter: q.delimiter } : {}),
    ...(q.task !== undefined ? { task: q.task } : {}),
    ...(q.scale !== undefined ? { scale: q.scale } : {}),
  };
}

/**
 * Before the schema validation: fastify's ajv removes unknown query parameters silently
 * (removeAdditional), and for an upload a misspelt option (`lable_column`) would then
 * train on the wrong column, so an unknown parameter is a 400 naming it; and a value
 * outside an enum is answered with the values allowed (ajv's message does not list them).
 */
function checkQuery(request: FastifyRequest): void {
  const schema = request.routeOptions.schema?.querystring as { properties?: Record<string, { enum?: readonly string[] }> } | undefined;
  if (!schema?.properties) return;
  const query = (request.query ?? {}) as Record<string, unknown>;
  for (const [key, value] of Object.entries(query)) {
    const prop = schema.properties[key];
    if (prop === undefined) {
      throw new ApiError('TAS_ERR_BAD_REQUEST', `querystring ${key}: is not a known parameter (known: ${Object.keys(schema.properties).join(', ')})`, key);
    }
    if (prop.enum && typeof value === 'string' && !prop.enum.includes(value)) {
      throw new ApiError('TAS_ERR_BAD_REQUEST', `querystring ${key}: must be one of ${prop.enum.join(', ')}, got ${JSON.stringify(value)}`, key);
    }
  }
}

/** How much of an answered body is read and dropped, and for how long, before the connection is cut. */
export const DRAIN_BYTES = 8 * 1024 * 1024;
export const DRAIN_MS = 5000;

/**
 * After an early answer: read and drop the rest of the body (Node resumes the request
 * for that itself), but destroy the connection once DRAIN_BYTES more arrived or DRAIN_MS
 * passed, so a client that never stops costs no more than that.
 */
function drainBriefly(req: IncomingMessage): void {
  if (req.complete || req.destroyed) return;
  let dropped = 0;
  const cleanup = () => {
    clearTimeout(timer);
    req.off('data', onData);
    req.off('end', cleanup);
    req.off('close', cleanup);
  };
  const cut = () => {
    cleanup();
    req.socket.destroy();
  };
  const onData = (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DRAIN_BYTES) cut();
  };
  const timer = setTimeout(cut, DRAIN_MS).unref();
  req.on('data', onData);
  req.once('end', cleanup);
  req.once('close', cleanup);
  req.resume();
}

export const datasetRoutes: FastifyPluginAsync<DatasetRouteOptions> = async (app, { store, maxUploadBytes }) => {
  // Scoped to this plugin: every body is a file, passed through as the raw stream.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
  app.addHook('preValidation', async (request) => checkQuery(request));
  app.addHook('onResponse', async (request) => drainBriefly(request.raw));

  app.post<{ Querystring: UploadQuery }>(
    '/v1/datasets',
    {
      bodyLimit: maxUploadBytes,
      schema: {
        tags: ['datasets'],
        summary: 'Upload a dataset file (the raw request body)',
        description:
          'The body is the file itself (any content type, e.g. text/csv or application/octet-stream), streamed to disk and checked with the trainer\'s own parsers, so a file accepted here is one a job can train on. ' +
          'csv: one upload, 201 with the dataset. npy (x + y) and idx (images + labels, gzipped or not): upload one file with `part`, answered 202 with an `upload_id`; upload the other with `upload_id`, answered 201 with the dataset. ' +
          `Each file may be up to ${maxUploadBytes} bytes. The dataset's \`data\` is ready to paste into a job spec.`,
        querystring: uploadQuery,
        // For the OpenAPI document only: no `type`, so the stream the parser passes through validates.
        body: { content: { 'application/octet-stream': uploadBody, 'text/csv': uploadBody } },
        response: { 201: datasetSchema, 202: pendingSchema, 400: errorResponse, 404: errorResponse, 409: errorResponse, 413: errorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const declared = Number(request.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxUploadBytes) {
        throw new ApiError('TAS_ERR_PAYLOAD_TOO_LARGE', `the upload is ${declared} bytes, over the limit of ${maxUploadBytes} bytes`);
      }
      const body = request.body;
      const stream = body instanceof Readable ? body : request.raw;
      const options = optionsOf(q);
      try {
        const result = await store.ingest(
          q.upload_id !== undefined
            ? {
                who: request.principal,
                uploadId: q.upload_id,
                ...(q.part !== undefined ? { part: q.part } : {}),
                ...(q.name !== undefined ? { name: q.name } : {}),
                ...(q.format !== undefined ? { format: q.format } : {}),
                options,
                stream,
                maxBytes: maxUploadBytes,
              }
            : { who: request.principal, name: q.name!, format: q.format!, ...(q.part !== undefined ? { part: q.part } : {}), options, stream, maxBytes: maxUploadBytes },
        );
        if (result.status === 'pending') return reply.code(202).send(pendingView(result.upload));
        return reply.code(201).header('location', `/v1/datasets/${result.dataset.id}`).send(datasetView(result.dataset));
      } catch (err) {
        throw toRouteError(err);
      }
    },
  );

  app.get<{ Querystring: { limit?: number; cursor?: string } }>(
    '/v1/datasets',
    {
      schema: {
        tags: ['datasets'],
        summary: 'List datasets, newest first',
        querystring: listQuery,
        response: {
          200: { type: 'object', required: ['datasets', 'next_cursor'], properties: { datasets: { type: 'array', items: datasetSchema }, next_cursor: { type: ['string', 'null'] } } },
          400: errorResponse,
        },
      },
    },
    async (request) => {
      const q = request.query;
      const page = await store.list(request.principal, { ...(q.limit !== undefined ? { limit: q.limit } : {}), ...(q.cursor !== undefined ? { cursor: q.cursor } : {}) });
      return { datasets: page.datasets.map(datasetView), next_cursor: page.nextCursor };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/datasets/:id',
    { schema: { tags: ['datasets'], summary: 'One dataset, with its ready-to-paste data block', params: idParams, response: { 200: datasetSchema, 404: errorResponse } } },
    async (request) => datasetView(await store.get(request.principal, request.params.id)),
  );
};
