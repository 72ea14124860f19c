// The dataset store against the real PostgreSQL (a fresh migrated schema) and a temp
// data directory: what is left on disk after each kind of failure, racing completions of
// one pending upload, expiry, the sweep. HTTP is covered by src/api/rest/routes/datasets.test.ts.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { checkUpload, type CheckRequest } from './dataset-check.js';
import { isDatasetError } from './dataset-errors.js';
import { DatasetStore, type IngestResult } from './dataset-store.js';
import { createPrismaClient, type PrismaClient } from '../db/client.js';
import { isDbError } from '../db/errors.js';
import { migrate } from '../db/migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from '../db/testing/fresh-schema.js';
import { chunked, f32, i64, npyBytes } from './testing/dataset-fixtures.js';
import { TrainerError } from '../../trainer/errors.js';
import { adminPrincipal } from '../tenants/principal.js';

const ADMIN = adminPrincipal();

const unavailable = await databaseUnavailable();

const X = npyBytes('<f4', [3, 2], f32([1, 2, 3, 4, 5, 6]));
const Y = npyBytes('<i8', [3], i64([0, 1, 0]));
const utf8 = (s: string) => new TextEncoder().encode(s);

interface Ctx {
  schema: FreshSchema;
  prisma: PrismaClient;
  dataDir: string;
}

function suiteDatabase(): Ctx {
  const ctx = {} as Ctx;
  before(async () => {
    ctx.schema = await createFreshSchema();
    await migrate(ctx.schema.url);
    ctx.prisma = createPrismaClient(ctx.schema.url);
  });
  after(async () => {
    await ctx.prisma?.$disconnect();
    await ctx.schema?.drop();
  });
  return ctx;
}

/** A fresh data directory per test, so "nothing left behind" is exact. */
function freshDataDir(): string {
  return mkdtempSync(join(tmpdir(), 'tas-ds-store-'));
}

function incoming(dataDir: string): string[] {
  try {
    return readdirSync(join(dataDir, 'datasets', '.incoming')).sort();
  } catch {
    return [];
  }
}

function created(r: IngestResult) {
  assert.equal(r.status, 'created');
  return r.dataset;
}

function pending(r: IngestResult) {
  assert.equal(r.status, 'pending');
  return r.upload;
}

describe('DatasetStore', { skip: unavailable ?? false }, () => {
  const ctx = suiteDatabase();
  const dirs: string[] = [];
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
  const dataDir = () => {
    const d = freshDataDir();
    dirs.push(d);
    return d;
  };

  test('a body over maxBytes fails with TAS_ERR_PAYLOAD_TOO_LARGE and leaves nothing', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir });
    const body = new Uint8Array(100_000).fill(0x30);
    await assert.rejects(store.ingest({ who: ADMIN, name: 'big', format: 'csv', stream: chunked(body, 1024), maxBytes: 50_000 }), (err) => isDatasetError(err, 'TAS_ERR_PAYLOAD_TOO_LARGE'));
    assert.deepEqual(incoming(dir), []);
  });

  test('the limit passed while a write is in flight: no crash, nothing left (10 interleavings)', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir });
    for (let round = 0; round < 10; round++) {
      const body = Readable.from(
        (async function* () {
          // Small chunks (each write stays under the file stream's high-water mark, so the
          // source is not paused) with turns of the event loop between them, so the file is
          // open and a write is in flight when the limit passes.
          for (let i = 0; i < 64; i++) {
            yield Buffer.alloc(4096, 0x31);
            for (let k = 0; k <= round; k++) await new Promise((r) => setImmediate(r));
          }
        })(),
      );
      await assert.rejects(store.ingest({ who: ADMIN, name: 'big', format: 'csv', stream: body, maxBytes: 100_000 }), (err) => isDatasetError(err, 'TAS_ERR_PAYLOAD_TOO_LARGE'));
    }
    assert.deepEqual(incoming(dir), []);
  });

  test('a client that goes away mid-upload leaves nothing', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir });
    const stream = new PassThrough();
    const result = store.ingest({ who: ADMIN, name: 'cut', format: 'csv', stream, maxBytes: 1_000_000 });
    stream.write('a,label\n1,0\n');
    await once(stream, 'resume');
    stream.destroy(new Error('socket hang up'));
    await assert.rejects(result, /socket hang up/);
    assert.deepEqual(incoming(dir), []);
  });

  test('two second parts racing for one pending upload: one dataset, the other told of the conflict', async () => {
    const dir = dataDir();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let entered!: () => void;
    const inCheck = new Promise<void>((r) => (entered = r));
    // Checks run in this thread; a whole-dataset check waits at the gate.
    const check = async (req: CheckRequest) => {
      if (req.kind === 'dataset') {
        entered();
        await gate;
      }
      return checkUpload(req);
    };
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir, check });
    const first = pending(await store.ingest({ who: ADMIN, name: 'race', format: 'npy', part: 'x', stream: chunked(X), maxBytes: 1 << 20 }));

    // B has read the pending upload and waits for its body; A claims it and is checking.
    const bodyB = new PassThrough();
    const b = store.ingest({ who: ADMIN, uploadId: first.uploadId, stream: bodyB, maxBytes: 1 << 20 });
    await once(bodyB, 'resume');
    const a = store.ingest({ who: ADMIN, uploadId: first.uploadId, stream: chunked(Y), maxBytes: 1 << 20 });
    await inCheck;
    bodyB.end(Buffer.from(Y));
    await assert.rejects(b, (err) => isDatasetError(err, 'TAS_ERR_CONFLICT'));
    release();
    const d = created(await a);
    assert.equal(d.samples, 3);
    assert.equal(await ctx.prisma.dataset.count({ where: { name: 'race' } }), 1);
    assert.deepEqual(incoming(dir), [], "the loser's body is removed too");
  });

  test('a pending upload expires after its TTL (the clock moves; nothing waits)', async () => {
    const dir = dataDir();
    let now = Date.parse('2026-01-01T00:00:00Z');
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir, pendingTtlMs: 60_000, now: () => now });
    const p = pending(await store.ingest({ who: ADMIN, name: 'late', format: 'npy', part: 'y', stream: chunked(Y), maxBytes: 1 << 20 }));
    assert.equal(p.expiresAt.toISOString(), '2026-01-01T00:01:00.000Z');
    now += 60_001;
    await assert.rejects(store.ingest({ who: ADMIN, uploadId: p.uploadId, stream: chunked(X), maxBytes: 1 << 20 }), (err) => isDatasetError(err, 'TAS_ERR_NOT_FOUND'));
    assert.deepEqual(incoming(dir), [], 'the expired upload and the refused body are gone');
  });

  test('the sweep removes leftovers older than the TTL and keeps newer ones', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir, pendingTtlMs: 3_600_000 });
    const inc = join(dir, 'datasets', '.incoming');
    mkdirSync(join(inc, 'deadbeef.new'), { recursive: true });
    writeFileSync(join(inc, 'old.upload'), 'x');
    writeFileSync(join(inc, 'fresh.upload'), 'x');
    const old = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(join(inc, 'old.upload'), old, old);
    utimesSync(join(inc, 'deadbeef.new'), old, old);
    assert.equal(await store.sweepIncoming(), 2);
    assert.deepEqual(incoming(dir), ['fresh.upload']);
  });

  test('a dataset whose manifest was removed still lists, without a data block', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir });
    const d = created(await store.ingest({ who: ADMIN, name: 'gone', format: 'csv', stream: chunked(utf8('a,label\n1,0\n2,1\n')), maxBytes: 1 << 20 }));
    assert.deepEqual(d.data, { type: 'csv', path: `datasets/${d.id}/data.csv` });
    rmSync(join(dir, 'datasets', d.id, 'dataset.json'));
    const again = await store.get(ADMIN, d.id);
    assert.equal(again.data, null);
    assert.equal(again.samples, 2);
  });

  test('the trainer error of a malformed file comes back from the worker thread unchanged', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir });
    await assert.rejects(store.ingest({ who: ADMIN, name: 'bad', format: 'csv', stream: chunked(utf8('a,b,label\n1,2,0\n3,4\n')), maxBytes: 1 << 20 }), (err) => {
      assert.ok(err instanceof TrainerError, String(err));
      assert.equal(err.code, 'TAS_ERR_DATA_FORMAT');
      assert.equal(err.field, 'data.path');
      assert.equal(err.message, 'data.path: row 3 has 2 fields, expected 3');
      return true;
    });
    assert.deepEqual(readdirSync(join(dir, 'datasets')), ['.incoming']);
    assert.deepEqual(incoming(dir), []);
  });

  test('a file too big for the check thread\'s heap is a 413, and the server goes on', async () => {
    const dir = dataDir();
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dir, checkHeapMiB: 32 });
    const rows = ['a,b,c,label'];
    for (let i = 0; i < 400_000; i++) rows.push(`${i % 7}.5,${i % 3},${i % 11},${i % 2}`);
    await assert.rejects(store.ingest({ who: ADMIN, name: 'huge', format: 'csv', stream: chunked(utf8(rows.join('\n')), 65536), maxBytes: 1 << 30 }), (err) => {
      assert.ok(isDatasetError(err, 'TAS_ERR_PAYLOAD_TOO_LARGE'), String(err));
      assert.match(err.message, /too large to check within the memory limit of 32 MiB/);
      return true;
    });
    assert.deepEqual(readdirSync(join(dir, 'datasets')), ['.incoming']);
    assert.deepEqual(incoming(dir), []);
    const small = created(await store.ingest({ who: ADMIN, name: 'small', format: 'csv', stream: chunked(utf8('a,label\n1,0\n')), maxBytes: 1 << 20 }));
    assert.equal(small.samples, 1);
  });

  test('get of an unknown id is a DbError TAS_ERR_NOT_FOUND', async () => {
    const store = new DatasetStore({ prisma: ctx.prisma, dataDir: dataDir() });
    await assert.rejects(store.get(ADMIN, '00000000-0000-4000-8000-000000000000'), (err) => isDbError(err, 'TAS_ERR_NOT_FOUND'));
    await assert.rejects(store.list(ADMIN, { limit: 0 }), (err) => isDbError(err, 'TAS_ERR_INVALID_ARGUMENT'));
  });
});
