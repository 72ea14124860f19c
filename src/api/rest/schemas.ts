/**
 * Shared response schemas (referenced as `Job#`, `ApiError#`, ...): they document the
 * API in the OpenAPI served at /docs. Objects keep `additionalProperties: true` because
 * fastify's serializer drops any property a response schema does not list; the fields
 * listed are the contract, and extra fields may be added without breaking clients.
 */
import type { FastifyInstance } from 'fastify';

const obj = (properties: Record<string, unknown>, required: string[] = []) => ({ type: 'object', additionalProperties: true, properties, required });
const nullable = (type: string) => ({ type: [type, 'null'] });

export const SHARED_SCHEMAS = [
  {
    $id: 'ApiError',
    ...obj({ error: obj({ code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } }, ['code', 'message']) }, ['error']),
  },
  {
    $id: 'Job',
    ...obj(
      {
        id: { type: 'string', format: 'uuid' },
        tenant: { type: 'string' },
        name: { type: 'string' },
        status: { type: 'string', enum: ['queued', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'] },
        priority: { type: 'integer' },
        workers: { type: 'integer', description: 'gang size (ranks)' },
        max_restarts: { type: 'integer' },
        attempts: { type: 'integer' },
        progress: obj({ step: { type: 'integer' }, total_steps: nullable('integer'), epoch: { type: 'integer' }, fraction: nullable('number') }),
        latest: obj({ loss: nullable('number'), accuracy: nullable('number') }),
        backend: nullable('string'),
        devices: { type: 'array', items: obj({ worker: { type: 'string' }, device_kind: { type: 'string' }, device_name: nullable('string'), backend: nullable('string'), state: { type: 'string' } }) },
        attempt_history: { type: 'array', items: obj({}) },
        waiting_for: { anyOf: [obj({ requested_workers: { type: 'integer' }, free_workers: { type: 'integer' }, online_workers: { type: 'integer' }, reason: { type: 'string' } }), { type: 'null' }] },
        error: nullable('string'),
        model: { anyOf: [obj({ name: { type: 'string' }, version: { type: 'integer' } }), { type: 'null' }] },
        transitions: { type: 'array', items: obj({}) },
        created_at: { type: 'string', format: 'date-time' },
        updated_at: { type: 'string', format: 'date-time' },
        started_at: nullable('string'),
        finished_at: nullable('string'),
      },
      ['id', 'status'],
    ),
  },
  {
    $id: 'ModelVersion',
    ...obj({ model: { type: 'string' }, version: { type: 'integer' }, job_id: nullable('string'), created_at: { type: 'string' }, artifact_bytes: nullable('integer'), metadata: obj({}) }),
  },
  {
    $id: 'PoolWorker',
    ...obj({
      id: { type: 'string' },
      address: { type: 'string' },
      state: { type: 'string', enum: ['idle', 'busy', 'draining', 'offline'] },
      device_kind: { type: 'string' },
      device_name: nullable('string'),
      backend: nullable('string'),
      current_job_id: nullable('string'),
      last_seen_at: { type: 'string' },
    }),
  },
] as const;

export function addSharedSchemas(app: FastifyInstance): void {
  for (const s of SHARED_SCHEMAS) app.addSchema(s);
}
