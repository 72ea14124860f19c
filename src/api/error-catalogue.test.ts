/**
 * The error catalogue holds together: every code of every layer maps to a status at each
 * boundary it can reach (HTTP for all of them, gRPC for the inference codes and the
 * trainer's codes on the worker control plane), and docs/ERRORS.md lists every code with
 * exactly those statuses, and no code that does not exist.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { WORKER_GRPC_STATUS } from '../gpu-pool/worker-service.js';
import { INFERENCE_ERROR_CODES } from '../inference/errors.js';
import { SERVICE_ERROR_CODES } from '../service/errors.js';
import { SERVICE_START_ERROR_CODES } from '../service/startup/start-errors.js';
import type { TrainerErrorCode } from '../trainer/errors.js';
import { GRPC_AUTH_CODES, GRPC_STATUS } from './grpc/grpc-status.js';
import { API_ERROR_CODES, ApiError, HTTP_STATUS, toApiError } from './rest/http-errors.js';
import { ServiceError } from '../service/errors.js';
import { TrainerError } from '../trainer/errors.js';

/** The trainer's codes (a type union there): this record fails to compile when one is added or removed. */
const TRAINER_CODES: Readonly<Record<TrainerErrorCode, true>> = {
  TAS_ERR_INVALID_SPEC: true,
  TAS_ERR_SHAPE: true,
  TAS_ERR_BN_SINGLE_VALUE: true,
  TAS_ERR_DATA_FORMAT: true,
  TAS_ERR_BACKEND: true,
  TAS_ERR_COLLECTIVE: true,
  TAS_ERR_CHECKPOINT: true,
  TAS_ERR_NUMERIC: true,
  TAS_ERR_CANCELLED: true,
};

const keys = (o: object): string[] => Object.keys(o);
const grpcName = (s: number): string => (status as unknown as Record<number, string>)[s]!;

interface DocRow {
  readonly http: string;
  readonly grpc: string;
}

/** Every table row of docs/ERRORS.md: `| \`CODE\` | http | grpc | meaning |`, by code (a code may have several rows). */
function documented(): Map<string, DocRow[]> {
  const text = readFileSync(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8');
  const rows = new Map<string, DocRow[]>();
  for (const line of text.split('\n')) {
    const m = /^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \|/.exec(line);
    if (!m) continue;
    const list = rows.get(m[1]!) ?? [];
    list.push({ http: m[2]!.trim(), grpc: m[3]!.trim() });
    rows.set(m[1]!, list);
  }
  return rows;
}

describe('error catalogue', () => {
  const docs = documented();
  const httpCodes = [...keys(API_ERROR_CODES), ...keys(TRAINER_CODES), ...keys(SERVICE_ERROR_CODES), ...keys(INFERENCE_ERROR_CODES)];

  test('every code that can reach REST has one HTTP status, an error status', () => {
    for (const code of httpCodes) {
      const s = (HTTP_STATUS as Record<string, number>)[code];
      assert.ok(Number.isInteger(s) && s! >= 400 && s! <= 599, `${code}: HTTP status ${s}`);
    }
    assert.deepEqual(new Set(keys(HTTP_STATUS)), new Set(httpCodes), 'HTTP_STATUS maps exactly the codes of the layers');
  });

  test('every inference code and the gRPC binding\'s auth codes have a gRPC status, and every trainer code one on the worker control plane', () => {
    assert.deepEqual(keys(GRPC_STATUS).sort(), [...keys(INFERENCE_ERROR_CODES), ...GRPC_AUTH_CODES].sort());
    for (const code of GRPC_AUTH_CODES) assert.ok(code in API_ERROR_CODES, `${code} is one of the REST layer's codes too`);
    assert.deepEqual(keys(WORKER_GRPC_STATUS).sort(), keys(TRAINER_CODES).sort());
    for (const s of [...Object.values(GRPC_STATUS), ...Object.values(WORKER_GRPC_STATUS)]) assert.ok(s !== status.OK && grpcName(s), `status ${s}`);
  });

  test('docs/ERRORS.md lists every code with the statuses it maps to', () => {
    const grpcOf = (code: string): string => {
      if (code in GRPC_STATUS) return grpcName(GRPC_STATUS[code as keyof typeof GRPC_STATUS]);
      if (code in WORKER_GRPC_STATUS) return grpcName(WORKER_GRPC_STATUS[code as TrainerErrorCode]);
      return '—';
    };
    for (const code of httpCodes) {
      const rows = docs.get(code);
      assert.ok(rows, `${code} is not in docs/ERRORS.md`);
      for (const r of rows) {
        assert.equal(r.http, String((HTTP_STATUS as Record<string, number>)[code]), `${code}: HTTP status in docs/ERRORS.md`);
        assert.equal(r.grpc, grpcOf(code), `${code}: gRPC status in docs/ERRORS.md`);
      }
    }
    for (const code of keys(SERVICE_START_ERROR_CODES)) assert.ok(docs.has(code), `${code} is not in docs/ERRORS.md`);
    const known = new Set([...httpCodes, ...keys(SERVICE_START_ERROR_CODES)]);
    for (const code of docs.keys()) assert.ok(known.has(code), `docs/ERRORS.md lists ${code}, which no layer raises`);
  });

  test('errors of the layers below become API answers by code, with their field; anything else an opaque 500', () => {
    const spec = toApiError(new TrainerError('TAS_ERR_INVALID_SPEC', 'optimizer.lr: must be >= 0', 'optimizer.lr'));
    assert.deepEqual([spec.statusCode, spec.body()], [400, { error: { code: 'TAS_ERR_INVALID_SPEC', message: 'optimizer.lr: must be >= 0', field: 'optimizer.lr' } }]);
    const pool = toApiError(new ServiceError('TAS_ERR_POOL_TOO_SMALL', 'workers: too many', { field: 'workers' }));
    assert.deepEqual([pool.statusCode, pool.body().error.field], [400, 'workers']);
    const internal = toApiError(new Error('secret stack detail'));
    assert.deepEqual([internal.statusCode, internal.body()], [500, { error: { code: 'TAS_ERR_INTERNAL', message: 'internal error' } }]);
    assert.equal(new ApiError('TAS_ERR_UNSUPPORTED_MEDIA_TYPE', 'x').statusCode, 415);
  });
});
