// /v1/datasets over real HTTP: a listening fastify server, fetch streaming each body in
// chunks, PostgreSQL in a fresh migrated schema, files in a temp data directory, and the
// real worker-thread check with the trainer's parsers.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import type { FastifyInstance } from 'fastify';
import { createPrismaClient, type PrismaClient } from '../../../service/db/client.js';
import { migrate } from '../../../service/db/migrate.js';
import { createFreshSchema, databaseUnavailable, type FreshSchema } from '../../../service/db/testing/fresh-schema.js';
import { DatasetStore } from '../../../service/datasets/dataset-store.js';
import { f32, i64, idxU8, npyBytes, webChunked } from '../../../service/datasets/testing/dataset-fixtures.js';
import { loadDataset, type DataSource } from '../../../trainer/data/load.js';
import { createBaseApp } from '../app.js';
import { addSharedSchemas } from '../schemas.js';
import { DRAIN_BYTES, datasetRoutes } from './datasets.js';

const unavailable = await databaseUnavailable();

const MAX_UPLOAD = 256 * 1024;

interface Ctx {
  schema: FreshSchema;
  prisma: PrismaClient;
  dataDir: string;
  app: FastifyInstance;
  base: string;
}

/** A migrated schema, a data directory and a listening server for the suite. */
function suiteServer(): Ctx {
  const ctx = {} as Ctx;
  before(async () => {
    ctx.schema = await createFreshSchema();
    await migrate(ctx.schema.url);
    ctx.prisma = createPrismaClient(ctx.schema.url);
    ctx.dataDir = mkdtempSync(join(tmpdir(), 'tas-datasets-'));
    ctx.app = createBaseApp();
    addSharedSchemas(ctx.app);
    await ctx.app.register(datasetRoutes, { store: new DatasetStore({ prisma: ctx.prisma, dataDir: ctx.dataDir }), maxUploadBytes: MAX_UPLOAD });
    await ctx.app.listen({ port: 0, host: '127.0.0.1' });
    const address = ctx.app.server.address();
    assert.ok(address && typeof address === 'object');
    ctx.base = `http://127.0.0.1:${address.port}`;
  });
  after(async () => {
    await ctx.app?.close();
    await ctx.prisma?.$disconnect();
    await ctx.schema?.drop();
    if (ctx.dataDir) rmSync(ctx.dataDir, { recursive: true, force: true });
  });
  return ctx;
}

/** POSTs `bytes` streamed in chunks (chunked transfer encoding, no Content-Length). */
async function upload(ctx: Ctx, query: string, bytes: Uint8Array, contentType = 'application/octet-stream'): Promise<{ status: number; body: any; headers: Headers }> {
  const res = await fetch(`${ctx.base}/v1/datasets?${query}`, {
    method: 'POST',
    body: webChunked(bytes, 1000),
    headers: { 'content-type': contentType },
    duplex: 'half',
  } as RequestInit);
  return { status: res.status, body: await res.json(), headers: res.headers };
}

async function getJson(ctx: Ctx, path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${ctx.base}${path}`);
  return { status: res.status, body: await res.json() };
}

/** Every file under <dataDir>/datasets, relative, sorted (what an upload left behind). */
function filesUnder(ctx: Ctx): string[] {
  const root = join(ctx.dataDir, 'datasets');
  try {
    return (readdirSync(root, { recursive: true, withFileTypes: true }) as Array<{ isFile(): boolean; parentPath?: string; path?: string; name: string }>)
      .filter((e) => e.isFile())
      .map((e) => join(e.parentPath ?? e.path ?? '', e.name).slice(root.length + 1))
      .sort();
  } catch {
    return [];
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const utf8 = (s: string) => new TextEncoder().encode(s);

/** An iris-like CSV: 4 features, string labels, `rows` rows (plenty of chunks). */
function irisCsv(rows: number): string {
  const lines = ['sepal_length,sepal_width,petal_length,petal_width,species'];
  const names = ['setosa', 'versicolor', 'virginica'];
  for (let i = 0; i < rows; i++) lines.push(`${(4 + (i % 30) / 10).toFixed(1)},${(2 + (i % 20) / 10).toFixed(1)},${(1 + (i % 50) / 10).toFixed(1)},${((i % 25) / 10).toFixed(1)},${names[i % 3]}`);
  return lines.join('\n') + '\n';
}

describe('POST /v1/datasets (csv)', { skip: unavailable ?? false }, () => {
  const ctx = suiteServer();

  test('a valid CSV is stored byte for byte, recorded, and its data block loads', async () => {
    const csv = utf8(irisCsv(1500)); // ~40 KB: 40 chunks of 1000 bytes
    const { status, body, headers } = await upload(ctx, 'name=iris&format=csv&label_column=species', csv, 'text/csv');
    assert.equal(status, 201, JSON.stringify(body));
    assert.equal(headers.get('location'), `/v1/datasets/${body.id}`);
    assert.equal(body.name, 'iris');
    assert.equal(body.format, 'csv');
    assert.equal(body.samples, 1500);
    assert.deepEqual(body.sample_shape, [4]);
    assert.equal(body.bytes, csv.length);
    assert.deepEqual(body.targets, { kind: 'classes', classes: 3, class_names: ['setosa', 'versicolor', 'virginica'] });
    assert.equal(body.path, `datasets/${body.id}`);
    assert.deepEqual(body.data, { type: 'csv', path: `datasets/${body.id}/data.csv`, label_column: 'species' });
    assert.deepEqual(body.files, [{ part: 'path', path: `datasets/${body.id}/data.csv`, bytes: csv.length, sha256: sha256(csv) }]);

    const stored = readFileSync(join(ctx.dataDir, body.data.path));
    assert.equal(Buffer.compare(stored, Buffer.from(csv)), 0, 'the stored file is the uploaded bytes');
    const ds = await loadDataset(body.data as DataSource, ctx.dataDir);
    assert.equal(ds.count, 1500);
    assert.deepEqual(ds.sampleShape, [4]);
    assert.deepEqual([...ds.x.subarray(0, 4)], [4, 2, 1, 0]);

    const row = await ctx.prisma.dataset.findUniqueOrThrow({ where: { id: body.id } });
    assert.equal(row.path, `datasets/${body.id}`);
    assert.equal(row.bytes, BigInt(csv.length));
    assert.equal(row.samples, 1500);
    assert.deepEqual(row.sampleShape, [4]);

    const got = await getJson(ctx, `/v1/datasets/${body.id}`);
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, body);
    assert.deepEqual(filesUnder(ctx).filter((f) => f.startsWith('.incoming')), [], 'nothing left in .incoming');
  });

  test('options reach the parser: no header, label by index, a delimiter, regression', async () => {
    const csv = utf8('1;0.5;2\n2;1.5;4\n3;2.5;6\n');
    const { status, body } = await upload(ctx, 'name=semi&format=csv&header=false&label_column=0&delimiter=%3B&task=regression', csv);
    assert.equal(status, 201, JSON.stringify(body));
    assert.equal(body.samples, 3);
    assert.deepEqual(body.sample_shape, [2]);
    assert.deepEqual(body.targets, { kind: 'values', dim: 1 });
    assert.deepEqual(body.data, { type: 'csv', path: `datasets/${body.id}/data.csv`, header: false, label_column: 0, delimiter: ';', task: 'regression' });
    const ds = await loadDataset(body.data as DataSource, ctx.dataDir);
    assert.deepEqual([...ds.x], [0.5, 2, 1.5, 4, 2.5, 6]);
  });

  test('a malformed CSV is a 400 naming the row, and leaves no file and no row behind', async () => {
    const before = filesUnder(ctx);
    const rowsBefore = await ctx.prisma.dataset.count();
    const lines = irisCsv(20).split('\n');
    lines[6] = '5.1,3.5,1.4,setosa'; // line 7: one field short
    const { status, body, headers } = await upload(ctx, 'name=bad&format=csv', utf8(lines.join('\n')));
    assert.equal(status, 400);
    assert.equal(body.error.code, 'TAS_ERR_DATA_FORMAT');
    assert.match(body.error.message, /row 7 has 4 fields, expected 5/);
    assert.equal(headers.get('connection'), 'keep-alive', 'the body was read to its end: the connection is kept');
    assert.deepEqual(filesUnder(ctx), before);
    assert.equal(await ctx.prisma.dataset.count(), rowsBefore);
  });

  test('a non-number names the row and the column', async () => {
    const { status, body } = await upload(ctx, 'name=bad&format=csv', utf8('a,b,label\n1,2,0\n3,x,1\n'));
    assert.equal(status, 400);
    assert.match(body.error.message, /row 3, column "b": "x" is not a finite number/);
  });

  test('a label column the header lacks is a 400 naming label_column', async () => {
    const { status, body } = await upload(ctx, 'name=bad&format=csv&label_column=kind', utf8('a,b,label\n1,2,0\n'));
    assert.equal(status, 400);
    assert.equal(body.error.field, 'label_column');
    assert.match(body.error.message, /no column "kind" in the header \(a, b, label\)/);
  });

  test('a streamed body over the limit is a 413 as soon as it passes it, with no partial file', async () => {
    const before = filesUnder(ctx);
    const total = 64 * MAX_UPLOAD; // 16 MiB offered, 256 KiB allowed
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= total) return controller.close();
        const chunk = new Uint8Array(16 * 1024).fill(0x31);
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    const res = await fetch(`${ctx.base}/v1/datasets?name=big&format=csv`, { method: 'POST', body, headers: { 'content-type': 'text/csv' }, duplex: 'half' } as RequestInit);
    const json = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(res.status, 413);
    assert.equal(json.error.code, 'TAS_ERR_PAYLOAD_TOO_LARGE');
    assert.match(json.error.message, new RegExp(`limit of ${MAX_UPLOAD} bytes`));
    assert.ok(sent < total / 2, `the client was stopped early (sent ${sent} of ${total} bytes)`);
    assert.deepEqual(filesUnder(ctx), before, 'no partial file');
  });

  test('a client that keeps sending after the 413 is cut off after DRAIN_BYTES', { timeout: 30_000 }, async () => {
    const { port } = new URL(ctx.base);
    const sock = connect(Number(port), '127.0.0.1');
    await once(sock, 'connect');
    sock.on('error', () => undefined); // the reset is the point
    const closed = new Promise<void>((r) => sock.once('close', () => r()));
    let response = '';
    sock.on('data', (d: Buffer) => (response += d.toString('latin1')));
    sock.write('POST /v1/datasets?name=flood&format=csv HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n');
    const payload = Buffer.alloc(64 * 1024, 0x31);
    const frame = Buffer.concat([Buffer.from(`${payload.length.toString(16)}\r\n`), payload, Buffer.from('\r\n')]);
    let afterAnswer = 0;
    let written = 0;
    while (!sock.destroyed && written < 1024 * 1024 * 1024) {
      const more = sock.write(frame);
      written += frame.length;
      if (response.startsWith('HTTP/1.1 413')) afterAnswer += frame.length;
      if (!more) await Promise.race([new Promise((r) => sock.once('drain', r)), closed]);
    }
    await closed;
    assert.match(response, /^HTTP\/1\.1 413/);
    assert.ok(written < 1024 * 1024 * 1024, 'the server cut the connection');
    // What the server read and dropped, plus what the two socket buffers held.
    assert.ok(afterAnswer < DRAIN_BYTES + 32 * 1024 * 1024, `sent ${afterAnswer} bytes after the answer`);
  });

  test('a declared Content-Length over the limit is a 413 before the body is read', async () => {
    const res = await fetch(`${ctx.base}/v1/datasets?name=big&format=csv`, { method: 'POST', body: new Uint8Array(MAX_UPLOAD + 1), headers: { 'content-type': 'text/csv' } });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'TAS_ERR_PAYLOAD_TOO_LARGE');
  });

  test('exactly the limit is accepted (the limit is inclusive)', async () => {
    const head = 'a,label\n';
    const row = '1,0\n';
    const rows = Math.floor((MAX_UPLOAD - head.length) / row.length);
    let text = head + row.repeat(rows);
    text += ' '.repeat(MAX_UPLOAD - text.length); // trailing blank: a blank last line
    assert.equal(text.length, MAX_UPLOAD);
    const { status, body } = await upload(ctx, 'name=edge&format=csv', utf8(text));
    assert.equal(status, 201, JSON.stringify(body));
    assert.equal(body.samples, rows);
  });
});

describe('POST /v1/datasets (npy and idx: two files)', { skip: unavailable ?? false }, () => {
  const ctx = suiteServer();

  test('an NPY pair: x answers 202 with an upload_id, y completes the dataset', async () => {
    const x = npyBytes('<f4', [6, 2], f32([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]));
    const y = npyBytes('<i8', [6], i64([0, 1, 2, 0, 1, 2]));
    const first = await upload(ctx, 'name=pairs&format=npy&part=x', x);
    assert.equal(first.status, 202, JSON.stringify(first.body));
    assert.match(first.body.upload_id, /^[0-9a-f]{32}$/);
    assert.deepEqual(first.body.received, [{ part: 'x', bytes: x.length, sha256: sha256(x), shape: [6, 2] }]);
    assert.deepEqual(first.body.missing, ['y']);
    assert.equal(first.body.next, `POST /v1/datasets?upload_id=${first.body.upload_id}&part=y with the y file as the body`);
    assert.equal((await getJson(ctx, '/v1/datasets')).body.datasets.length, 0, 'a pending upload is not a dataset');

    const second = await upload(ctx, `upload_id=${first.body.upload_id}`, y);
    assert.equal(second.status, 201, JSON.stringify(second.body));
    const d = second.body;
    assert.equal(d.format, 'npy');
    assert.equal(d.name, 'pairs');
    assert.equal(d.samples, 6);
    assert.deepEqual(d.sample_shape, [2]);
    assert.equal(d.bytes, x.length + y.length);
    assert.deepEqual(d.data, { type: 'npy', x: `datasets/${d.id}/x.npy`, y: `datasets/${d.id}/y.npy` });
    assert.deepEqual(readFileSync(join(ctx.dataDir, d.data.y)), Buffer.from(y));
    const ds = await loadDataset(d.data as DataSource, ctx.dataDir);
    assert.deepEqual([...ds.x], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert.deepEqual(ds.targets.kind === 'classes' ? [...ds.targets.labels] : null, [0, 1, 2, 0, 1, 2]);

    const again = await upload(ctx, `upload_id=${first.body.upload_id}`, y);
    assert.equal(again.status, 404, 'a completed upload is gone');
    assert.deepEqual(filesUnder(ctx).filter((f) => f.startsWith('.incoming')), []);
  });

  test('labels first works too; mismatched labels are a 400 that keeps the pending upload for a retry', async () => {
    const y = npyBytes('<i8', [3], i64([1, 0, 1]));
    const first = await upload(ctx, 'name=retry&format=npy&part=y&task=classification', y);
    assert.equal(first.status, 202);
    assert.deepEqual(first.body.missing, ['x']);
    const wrong = npyBytes('<f4', [4, 1], f32([1, 2, 3, 4]));
    const bad = await upload(ctx, `upload_id=${first.body.upload_id}&part=x`, wrong);
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.code, 'TAS_ERR_DATA_FORMAT');
    assert.match(bad.body.error.message, /data\.y: has 3 rows but the inputs have 4 samples/);
    const good = await upload(ctx, `upload_id=${first.body.upload_id}&part=x`, npyBytes('<f4', [3, 1], f32([1, 2, 3])));
    assert.equal(good.status, 201, JSON.stringify(good.body));
    assert.deepEqual(good.body.data, { type: 'npy', x: `datasets/${good.body.id}/x.npy`, y: `datasets/${good.body.id}/y.npy`, task: 'classification' });
  });

  test('an IDX pair, gzipped images and plain labels, loads as MNIST does', async () => {
    const pixels = Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 7) % 256);
    const images = gzipSync(idxU8([4, 3, 3], pixels));
    const labels = idxU8([4], [3, 1, 4, 1]);
    const first = await upload(ctx, 'name=digits&format=idx&part=images', images);
    assert.equal(first.status, 202, JSON.stringify(first.body));
    assert.deepEqual(first.body.received[0].shape, [4, 3, 3]);
    const second = await upload(ctx, `upload_id=${first.body.upload_id}&part=labels&format=idx&name=digits`, labels);
    assert.equal(second.status, 201, JSON.stringify(second.body));
    const d = second.body;
    assert.deepEqual(d.sample_shape, [1, 3, 3]);
    assert.equal(d.samples, 4);
    assert.deepEqual(d.targets, { kind: 'classes', classes: 5 });
    assert.deepEqual(d.data, { type: 'idx', images: `datasets/${d.id}/images.idx.gz`, labels: `datasets/${d.id}/labels.idx` });
    assert.deepEqual(readFileSync(join(ctx.dataDir, d.data.images)), Buffer.from(images), 'stored as uploaded (gzipped)');
    const ds = await loadDataset(d.data as DataSource, ctx.dataDir);
    assert.ok(Math.abs(ds.x[1]! - 7 / 255) < 1e-7, 'pixels scaled by 255');
  });

  test('the parts and options of each format are checked, naming the parameter', async () => {
    const x = npyBytes('<f4', [2, 1], f32([1, 2]));
    const cases: Array<[string, string, number]> = [
      ['name=a&format=npy', 'part', 400],
      ['name=a&format=npy&part=images', 'part', 400],
      ['name=a&format=csv&part=x', 'part', 400],
      ['name=a&format=npy&part=x&scale=true', 'scale', 400],
      ['name=a&format=idx&part=images&label_column=x', 'label_column', 400],
      ['upload_id=0123456789abcdef0123456789abcdef', '', 404],
    ];
    for (const [query, field, status] of cases) {
      const res = await upload(ctx, query, x);
      assert.equal(res.status, status, `${query}: ${JSON.stringify(res.body)}`);
      if (field) assert.equal(res.body.error.field, field, query);
    }
    const first = await upload(ctx, 'name=a&format=npy&part=x', x);
    const wrongPart = await upload(ctx, `upload_id=${first.body.upload_id}&part=x`, x);
    assert.equal(wrongPart.status, 400);
    assert.match(wrongPart.body.error.message, /already has x; the missing part is y/);
    const wrongFormat = await upload(ctx, `upload_id=${first.body.upload_id}&format=idx`, x);
    assert.equal(wrongFormat.body.error.field, 'format');
  });

  test('a file that is not an array of its format is refused at its own upload', async () => {
    const res = await upload(ctx, 'name=a&format=npy&part=x', utf8('1,2,3\n'));
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, 'TAS_ERR_DATA_FORMAT');
    assert.match(res.body.error.message, /data\.x: not a \.npy file/);
    const idx = await upload(ctx, 'name=a&format=idx&part=labels', utf8('not idx'));
    assert.match(idx.body.error.message, /data\.labels: not an IDX file/);
    assert.deepEqual(filesUnder(ctx).filter((f) => f.startsWith('.incoming') && !f.endsWith('upload.json') && !/\.(npy|idx)(\.gz)?$/.test(f)), []);
  });
});

describe('query validation, listing, 404', { skip: unavailable ?? false }, () => {
  const ctx = suiteServer();

  test('an unknown format is a 400 naming format', async () => {
    const res = await upload(ctx, 'name=a&format=parquet', utf8('a,b\n1,0\n'));
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, 'TAS_ERR_BAD_REQUEST');
    assert.equal(res.body.error.field, 'format');
    assert.equal(res.body.error.message, 'querystring format: must be one of csv, npy, idx, got "parquet"');
  });

  test('a missing name, a misspelt option, a bad boolean are 400s naming the parameter', async () => {
    for (const [query, field] of [
      ['format=csv', 'name'],
      ['name=a', 'format'],
      ['name=a&format=csv&lable_column=b', 'lable_column'],
      ['name=a&format=csv&header=maybe', 'header'],
      ['name=a&format=csv&delimiter=ab', 'delimiter'],
      ['name=a&format=npy&part=z', 'part'],
    ]) {
      const res = await upload(ctx, query!, utf8('a,b\n1,0\n'));
      assert.equal(res.status, 400, query);
      assert.equal(res.body.error.field, field, `${query}: ${JSON.stringify(res.body)}`);
    }
  });

  test('listing pages newest first with a cursor', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await upload(ctx, `name=set-${i}&format=csv`, utf8(`a,label\n${i},0\n${i + 1},1\n`));
      assert.equal(res.status, 201);
      ids.push(res.body.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await getJson(ctx, `/v1/datasets?limit=2${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      assert.equal(page.status, 200);
      assert.ok(page.body.datasets.length <= 2);
      for (const d of page.body.datasets) {
        seen.push(d.id);
        assert.deepEqual(d.data, { type: 'csv', path: `datasets/${d.id}/data.csv` });
      }
      cursor = page.body.next_cursor;
      pages++;
    } while (cursor !== null);
    assert.equal(pages, 3);
    assert.deepEqual(seen, [...ids].reverse());

    assert.equal((await getJson(ctx, '/v1/datasets?cursor=bogus')).status, 400);
    const badLimit = await getJson(ctx, '/v1/datasets?limit=0');
    assert.equal(badLimit.status, 400);
    assert.equal(badLimit.body.error.field, 'limit');
  });

  test('an unknown dataset is a 404', async () => {
    for (const id of ['00000000-0000-4000-8000-000000000000', 'nope']) {
      const res = await getJson(ctx, `/v1/datasets/${id}`);
      assert.equal(res.status, 404);
      assert.equal(res.body.error.code, 'TAS_ERR_NOT_FOUND');
    }
  });
});
