/**
 * Dataset upload throughput and server memory: `npx tsx bench/dataset-upload.ts [MB]`.
 *
 * Starts the dataset routes in a child process (fresh PostgreSQL schema, temp data
 * directory), streams a generated CSV of about MB megabytes (default 100) to it with
 * fetch (chunked, never held whole by the client), and samples the server's resident
 * memory from /proc while it runs. Three runs: (1) a limit equal to the body's size, so
 * the body is streamed to disk and refused at its end without a check: the upload path
 * alone; (2) the whole upload with the check (the trainer's CSV parser in a worker
 * thread, what a training rank needs to hold the same set); (3) a 1 MiB limit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);

async function serve(url: string, dataDir: string, maxUploadBytes: number): Promise<void> {
  const { createPrismaClient } = await import('../src/service/db/client.js');
  const { DatasetStore } = await import('../src/service/datasets/dataset-store.js');
  const { createBaseApp } = await import('../src/api/rest/app.js');
  const { addSharedSchemas } = await import('../src/api/rest/schemas.js');
  const { datasetRoutes } = await import('../src/api/rest/routes/datasets.js');
  const prisma = createPrismaClient(url);
  const app = createBaseApp();
  addSharedSchemas(app);
  await app.register(datasetRoutes, { store: new DatasetStore({ prisma, dataDir }), maxUploadBytes });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  if (!address || typeof address !== 'object') throw new Error('no address');
  console.log(`PORT ${address.port}`);
}

function rssOf(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

/**
 * A CSV of ~`bytes` bytes (10 float features, an integer label): one ~1 MB block of rows
 * made once and sent again and again, so the client costs next to nothing and the
 * numbers are the server's.
 */
function csvBody(bytes: number, onDone: () => void): { stream: ReadableStream<Uint8Array>; sent: () => number } {
  const rows: string[] = [];
  for (let row = 0; row < 16_000; row++) {
    const f = Array.from({ length: 10 }, (_, j) => (((row * 31 + j * 17) % 1000) / 1000).toFixed(3));
    rows.push(`${f.join(',')},${row % 10}`);
  }
  const block = new TextEncoder().encode(rows.join('\n') + '\n');
  const header = new TextEncoder().encode('f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,label\n');
  let sent = 0;
  return {
    sent: () => sent,
    stream: new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= bytes) {
          controller.close();
          onDone();
          return;
        }
        const chunk = sent === 0 ? header : block;
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    }),
  };
}

interface Sample {
  t: number;
  rss: number;
}

async function run(megabytes: number): Promise<void> {
  const { createFreshSchema } = await import('../src/service/db/testing/fresh-schema.js');
  const { migrate } = await import('../src/service/db/migrate.js');
  const schema = await createFreshSchema();
  const dataDir = mkdtempSync(join(tmpdir(), 'tas-bench-upload-'));
  const children: ChildProcess[] = [];
  const start = async (limit: number) => {
    const child = spawn(process.execPath, ['--import', 'tsx', SELF, '--serve', schema.url, dataDir, String(limit)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const lines = createInterface({ input: child.stdout! });
    for await (const line of lines) {
      const m = /^PORT (\d+)$/.exec(line);
      if (m) return { child, base: `http://127.0.0.1:${m[1]}` };
    }
    throw new Error('the server exited before listening');
  };
  const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
  const target = megabytes * 1e6;
  /** Streams a CSV body of ~target bytes to a fresh server with `limit`; samples its RSS. */
  const measure = async (limit: number) => {
    const { child, base } = await start(limit);
    const pid = child.pid!;
    // Warm up (tsx compiles the check worker's modules once), then take the baseline.
    await fetch(`${base}/v1/datasets?name=warm&format=csv`, { method: 'POST', body: 'a,label\n1,0\n', headers: { 'content-type': 'text/csv' } });
    const baseline = rssOf(pid, 'VmRSS');
    const samples: Sample[] = [];
    let sendDone = NaN;
    const timer = setInterval(() => samples.push({ t: performance.now(), rss: rssOf(pid, 'VmRSS') }), 20);
    const body = csvBody(target, () => (sendDone = performance.now()));
    const t0 = performance.now();
    const res = await fetch(`${base}/v1/datasets?name=bench&format=csv`, { method: 'POST', body: body.stream, headers: { 'content-type': 'text/csv' }, duplex: 'half' } as RequestInit);
    const json = (await res.json()) as { samples?: number };
    const t1 = performance.now();
    clearInterval(timer);
    child.kill();
    const peak = (from: number, to: number) => Math.max(baseline, ...samples.filter((x) => x.t >= from && x.t <= to).map((x) => x.rss)) - baseline;
    return { status: res.status, json, t0, t1, sendDone, sent: body.sent(), baseline, peak };
  };
  try {
    await migrate(schema.url);

    // 1. Receive only: the limit is the body's size, so the whole body is streamed to
    //    disk and then refused (413) without a check: the upload path alone.
    const r = await measure(target);
    if (r.status !== 413) throw new Error(`expected 413, got ${r.status}`);
    const s1 = (r.t1 - r.t0) / 1000;
    console.log(`receive only (${(target / 1e6).toFixed(0)} MB streamed to disk, then 413 at the limit): ${s1.toFixed(2)} s, ${(target / 1e6 / s1).toFixed(0)} MB/s; server RSS peak +${MiB(r.peak(r.t0, r.t1))} MiB over ${MiB(r.baseline)} MiB`);

    // 2. The whole upload: receive, the trainer's CSV parser in a worker thread, 201.
    const u = await measure(2 * target);
    if (u.status !== 201) throw new Error(`upload answered ${u.status}: ${JSON.stringify(u.json)}`);
    const mb = u.sent / 1e6;
    console.log(`upload of ${mb.toFixed(1)} MB (${u.json.samples} rows): ${((u.t1 - u.t0) / 1000).toFixed(2)} s end to end, ${(mb / ((u.t1 - u.t0) / 1000)).toFixed(0)} MB/s`);
    console.log(`  until the last byte was sent: ${((u.sendDone - u.t0) / 1000).toFixed(2)} s, server RSS peak +${MiB(u.peak(u.t0, u.sendDone))} MiB`);
    console.log(`  check (worker thread) to the 201: ${((u.t1 - u.sendDone) / 1000).toFixed(2)} s, server RSS peak +${MiB(u.peak(u.sendDone, u.t1))} MiB over ${MiB(u.baseline)} MiB`);

    // 3. The same body against a 1 MiB limit: refused at the limit, the client stops.
    const small = await start(1 << 20);
    const before = rssOf(small.child.pid!, 'VmRSS');
    const big = csvBody(target, () => undefined);
    const t2 = performance.now();
    const refused = await fetch(`${small.base}/v1/datasets?name=big&format=csv`, { method: 'POST', body: big.stream, headers: { 'content-type': 'text/csv' }, duplex: 'half' } as RequestInit);
    await refused.arrayBuffer();
    console.log(`1 MiB limit: ${refused.status} after ${(performance.now() - t2).toFixed(0)} ms, client sent ${(big.sent() / 1e6).toFixed(1)} of ${megabytes} MB; server RSS ${MiB(before)} -> ${MiB(rssOf(small.child.pid!, 'VmRSS'))} MiB`);
  } finally {
    for (const c of children) c.kill();
    rmSync(dataDir, { recursive: true, force: true });
    await schema.drop();
  }
}

if (process.argv[2] === '--serve') await serve(process.argv[3]!, process.argv[4]!, Number(process.argv[5]));
else await run(Number(process.argv[2] ?? 100));
