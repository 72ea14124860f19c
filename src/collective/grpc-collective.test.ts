import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { Collective } from '../trainer/collective/collective.js';
import { InProcessGroup } from '../trainer/collective/in-process.js';
import { TrainerError } from '../trainer/errors.js';
import { Rng } from '../trainer/math/rng.js';
import { CollectiveError, GrpcCollective, listenCollectiveServer, type GrpcCollectiveOptions } from './grpc-collective.js';
import { COLLECTIVE_SERVICE, decodeFrame, encodeFrame, encodeFrameHeader, encodeFrameParts, EXCHANGE_PATH, Op, type Frame } from './frame-codec.js';
import { recvAlloc } from './receive-buffers.js';
import { hasOpenssl, makeTestCerts } from '../grpc/testing/tls.js';
import { MessageReader, PLACE_MIN, PLACE_PEEK } from './transport/grpc-h2.js';
import { acrossHosts } from './cross-host.js';

const PROTO = join(import.meta.dirname, '../../proto/collective.proto');

let jobCounter = 0;
const openServers: Array<{ forceShutdown(): void }> = [];
after(() => openServers.forEach((s) => s.forceShutdown()));

/** W ranks in this process, each with its own server on 127.0.0.1:0 (and a Unix socket they dial, with `unix`). */
async function makeGroup(world: number, opts: Partial<GrpcCollectiveOptions> = {}, perRank: (rank: number) => Partial<GrpcCollectiveOptions> = () => ({}), unix = false) {
  const jobId = `test-${process.pid}-${++jobCounter}`;
  const dir = unix ? mkdtempSync(join(tmpdir(), 'tas-uds-')) : '';
  const servers = await Promise.all(Array.from({ length: world }, (_, r) => listenCollectiveServer({ host: '127.0.0.1', port: 0, ...(unix ? { unixPath: join(dir, `r${r}.sock`) } : {}) })));
  servers.forEach((s) => openServers.push(s.server));
  const peers = servers.map((s) => (unix ? `unix:${s.unixPath}` : `127.0.0.1:${s.port}`));
  const cs = await Promise.all(servers.map((s, rank) => GrpcCollective.connect({ jobId, generation: 1, rank, worldSize: world, peers, server: s.server, log: () => {}, ...opts, ...perRank(rank) })));
  return {
    jobId,
    cs,
    servers,
    peers,
    async close() {
      await Promise.all(cs.map((c) => c.close()));
      servers.forEach((s) => s.server.forceShutdown());
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Dials `peer` with grpc-js, sends `hello` and resolves with the error status the server ends the call with (rejects if it answers a frame). */
function refusedHello(peer: string, hello: Buffer): Promise<grpc.ServiceError> {
  return new Promise<grpc.ServiceError>((resolve, reject) => {
    const client = new grpc.Client(peer, grpc.credentials.createInsecure());
    const call = client.makeBidiStreamRequest<Buffer, Frame>(EXCHANGE_PATH, (b) => b, decodeFrame);
    call.on('data', (f: Frame) => reject(new Error(`accepted: ${Op[f.op]}`)));
    call.on('error', (e: grpc.ServiceError) => {
      client.close();
      resolve(e);
    });
    call.write(hello);
  });
}

function inProcess<T>(world: number, fn: (c: Collective, rank: number) => Promise<T>): Promise<T[]> {
  const g = new InProcessGroup(world);
  return Promise.all(Array.from({ length: world }, (_, r) => fn(g.member(r), r)));
}

function bytes(a: Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  if (Buffer.compare(bytes(a), bytes(b)) !== 0) {
    const i = a.findIndex((v, k) => !Object.is(v, b[k]));
    assert.fail(`${what}: differ at ${i}: ${a[i]} vs ${b[i]}`);
  }
}

/** A seeded stream of uniforms in [0, 1) (the trainer's mulberry32). */
function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

function randomArray(n: number, seed: number): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => (r() * 2 - 1) * 10 ** Math.floor(r() * 6 - 3));
}

function isCollectiveError(re: RegExp, rank?: number) {
  return (e: unknown) => {
    assert.ok(e instanceof TrainerError, `not a TrainerError: ${String(e)}`);
    assert.equal(e.code, 'TAS_ERR_COLLECTIVE');
    assert.match(e.message, re);
    if (rank !== undefined) assert.equal((e as CollectiveError).failedRank, rank, e.message);
    return true;
  };
}

describe('collective.proto wire format', () => {
  const def = loadSync(PROTO, { keepCase: true, longs: Number, enums: Number, defaults: true, oneofs: true });
  const exchange = (def['tas.collective.v1.Collective'] as Record<string, { path: string; requestSerialize: (v: object) => Buffer; requestDeserialize: (b: Buffer) => Record<string, unknown> }>).Exchange;

  it('our hand-written codec and proto-loader agree in both directions', () => {
    assert.equal(exchange.path, EXCHANGE_PATH);
    const payload = Float32Array.from([1.5, -2, 3.25, Math.PI]);
    const ours = encodeFrame(encodeFrameHeader('job-é', 2 ** 40 + 3, 3), { seq: 300, op: Op.ALL_GATHER_RING, chunk: 2, offset: 1 << 22, total: (1 << 22) + 16, root: 1, failedRank: 0, worldSize: 4, error: 'x', token: 'tök' }, bytes(payload));
    const viaLoader = exchange.requestDeserialize(ours);
    assert.equal(viaLoader.job_id, 'job-é');
    assert.equal(viaLoader.generation, 2 ** 40 + 3);
    assert.equal(viaLoader.src_rank, 3);
    assert.equal(viaLoader.seq, 300);
    assert.equal(viaLoader.op, Op.ALL_GATHER_RING);
    assert.equal(viaLoader.chunk, 2);
    assert.equal(viaLoader.offset, 1 << 22);
    assert.equal(viaLoader.total, (1 << 22) + 16);
    assert.equal(viaLoader.root, 1);
    assert.equal(viaLoader.failed_rank, 0);
    assert.equal(viaLoader.world_size, 4);
    assert.equal(viaLoader.error, 'x');
    assert.equal(viaLoader.token, 'tök');
    assert.deepEqual(new Float32Array(new Uint8Array(viaLoader.payload as Buffer).buffer), payload);

    const theirs = exchange.requestSerialize({ job_id: 'j', generation: 7, src_rank: 1, seq: 9, op: Op.BROADCAST, root: 1, total: 8, payload: bytes(Float32Array.from([4, 5])), extra_unknown: 1 });
    const f = decodeFrame(theirs);
    assert.deepEqual({ ...f, payload: Array.from(new Float32Array(new Uint8Array(f.payload).buffer)) }, { jobId: 'j', generation: 7, srcRank: 1, seq: 9, op: Op.BROADCAST, chunk: 0, offset: 0, total: 8, root: 1, error: '', worldSize: 0, token: '', payload: [4, 5] });
    const hello = decodeFrame(exchange.requestSerialize({ job_id: 'j', op: Op.HELLO, world_size: 2, token: 'attempt-secret' }));
    assert.deepEqual([hello.op, hello.worldSize, hello.token], [Op.HELLO, 2, 'attempt-secret']);
  });

  it('pads so that the payload is 4-byte aligned in the receiver\'s message buffer; the parts encode as the copied frame', () => {
    for (const job of ['a', 'ab', 'abc', 'abcd']) {
      for (const seq of [0, 1, 200, 70000]) {
        const payload = bytes(Float32Array.from([1, 2, 3]));
        const enc = encodeFrame(encodeFrameHeader(job, 1, 2), { seq, op: Op.REDUCE, total: 12 }, payload);
        const parts = encodeFrameParts(encodeFrameHeader(job, 1, 2), { seq, op: Op.REDUCE, total: 12 }, payload);
        assert.equal(parts.length, 2);
        assert.equal(parts[1], payload, 'the payload part is the caller\'s bytes, not a copy');
        assert.deepEqual(Buffer.concat(parts), enc);
        // As received: a gRPC length prefix, then the message, split at every byte.
        const wire = Buffer.concat([Buffer.from([0, 0, 0, 0, enc.length]), enc]);
        const got: Buffer[] = [];
        const reader = new MessageReader(recvAlloc, (m) => got.push(m));
        for (let i = 0; i < wire.length; i++) reader.push(wire.subarray(i, i + 1));
        assert.equal(got.length, 1);
        const f = decodeFrame(got[0]);
        assert.equal(f.payload.byteOffset % 4, 0, `job ${job} seq ${seq}`);
        assert.deepEqual(Array.from(new Float32Array(f.payload.buffer, f.payload.byteOffset, 3)), [1, 2, 3]);
      }
    }
  });
});

describe('acrossHosts: which peers get a bounded receive window', () => {
  it('TCP to another host, not Unix sockets or loopback in any spelling', () => {
    for (const a of ['10.77.0.2:7000', '[fd00::5]:7000', 'worker-3.tas:7000', '192.168.1.4:1']) assert.equal(acrossHosts(a), true, a);
    for (const a of ['unix:/tmp/x.sock', '127.0.0.1:7000', '127.1.2.3:7000', 'localhost:7000', 'LOCALHOST:7000', '[::1]:7000', '[::ffff:127.0.0.1]:7000']) assert.equal(acrossHosts(a), false, a);
  });
});

describe('MessageReader (grpc-h2.ts)', () => {
  it('splits messages at any chunking; a placed message\'s tail goes to its destination, the rest to the allocator', () => {
    const rng = new Rng(5);
    const big = Buffer.alloc(PLACE_MIN + 1000);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const msgs = [Buffer.from('small'), big, Buffer.alloc(0), big.subarray(0, PLACE_MIN + 10), Buffer.from('end')];
    const wire = Buffer.concat(msgs.flatMap((m) => [Buffer.from([0, m.length >>> 24, (m.length >>> 16) & 255, (m.length >>> 8) & 255, m.length & 255]), m]));
    for (let trial = 0; trial < 20; trial++) {
      const got: Array<{ m: Buffer; tail?: Uint8Array }> = [];
      const dests: Uint8Array[] = [];
      const reader = new MessageReader(recvAlloc, (m, tail) => got.push({ m: Buffer.from(m), tail }));
      // Place the first big message's tail from byte 100; leave the second to the allocator.
      let offered = 0;
      reader.placer = (head, len) => {
        assert.equal(head.length, PLACE_PEEK);
        assert.deepEqual(head, big.subarray(0, PLACE_PEEK));
        if (offered++ > 0) return undefined;
        const dest = new Uint8Array(len - 100);
        dests.push(dest);
        return { at: 100, dest };
      };
      for (let i = 0; i < wire.length; ) {
        const k = 1 + Math.floor(rng.next() * (trial < 10 ? 7 : 70_000));
        reader.push(wire.subarray(i, i + k));
        i += k;
      }
      assert.equal(reader.partial, false);
      assert.equal(got.length, msgs.length);
      assert.equal(offered, 2);
      assert.deepEqual(got[0].m, msgs[0]);
      assert.deepEqual(got[1].m, big.subarray(0, 100));
      assert.equal(got[1].tail, dests[0]);
      assert.deepEqual(Buffer.from(dests[0]), big.subarray(100));
      assert.deepEqual(got[2].m, msgs[2]);
      assert.equal(got[3].tail, undefined);
      assert.deepEqual(got[3].m, msgs[3]);
      assert.deepEqual(got[4].m, msgs[4]);
    }
  });
});

for (const world of [2, 3, 4]) {
  describe(`GrpcCollective, ${world} ranks in one process`, () => {
    it('allGather, allReduce (small and ring), broadcast and barrier equal the in-process group, bit for bit on every rank', async () => {
      // Small frames for W=3 so that messages and ring segments span several frames.
      const g = await makeGroup(world, world === 3 ? { frameBytes: 100_000 } : {});
      try {
        // allGather, buffers of different lengths (rank 0's is empty).
        const gin = (r: number) => randomArray(r * 3, 10 + r);
        const got = await Promise.all(g.cs.map((c) => c.allGather(gin(c.rank))));
        const want = await inProcess(world, (c, r) => c.allGather(gin(r)));
        for (let r = 0; r < world; r++) for (let q = 0; q < world; q++) assertSameBits(got[r][q], want[0][q], `allGather rank ${r} part ${q}`);

        // A large allGather (several frames).
        const big = (r: number) => randomArray(70_000 + r, 20 + r);
        const gotBig = await Promise.all(g.cs.map((c) => c.allGather(big(c.rank))));
        for (let r = 0; r < world; r++) for (let q = 0; q < world; q++) assertSameBits(gotBig[r][q], big(q), `large allGather rank ${r} part ${q}`);

        // Small allReduce: rank order, the same bits as in-process.
        const sin = (r: number) => randomArray(1000, 30 + r);
        const small = await Promise.all(g.cs.map((c) => c.allReduce(sin(c.rank))));
        const [wantSmall] = await inProcess(world, (c, r) => c.allReduce(sin(r)));
        for (let r = 0; r < world; r++) assertSameBits(small[r], wantSmall, `small allReduce rank ${r}`);

        // Large allReduce (W=2: one-frame exchange summed in place; W>2: direct
        // reduce-scatter + all-gather): rank order too, the same bits as in-process, on
        // every rank; including signed zeros (0 + -0 + -0 is +0 in rank order).
        const n = 300_000;
        const rinputs = Array.from({ length: world }, (_, r) => randomArray(n, 40 + r));
        for (const x of rinputs) x.fill(-0, 0, 10);
        const rin = (r: number) => rinputs[r];
        const ring = await Promise.all(g.cs.map((c) => c.allReduce(rin(c.rank))));
        const [wantRing] = await inProcess(world, (c, r) => c.allReduce(rin(r)));
        for (let r = 0; r < world; r++) assertSameBits(ring[r], wantRing, `large allReduce rank ${r} vs in-process`);
        const ints = (r: number) => Float32Array.from({ length: n }, (_, i) => ((i * (r + 3)) % 1001) - 500 + r / 4);
        const exact = await Promise.all(g.cs.map((c) => c.allReduce(ints(c.rank))));
        const [wantExact] = await inProcess(world, (c, r) => c.allReduce(ints(r)));
        for (let r = 0; r < world; r++) assertSameBits(exact[r], wantExact, `exact ring allReduce rank ${r}`);

        // Inputs are not modified.
        const x = randomArray(n, 99);
        const xc = x.slice();
        await Promise.all(g.cs.map((c) => c.allReduce(c.rank === 0 ? x : xc.slice())));
        assertSameBits(x, xc, 'allReduce input untouched');

        // Broadcast from every root.
        for (let root = 0; root < world; root++) {
          const bin = (r: number) => (r === root ? randomArray(5000, 50 + root) : new Float32Array(5000));
          const out = await Promise.all(g.cs.map((c) => c.broadcast(bin(c.rank), root)));
          for (let r = 0; r < world; r++) assertSameBits(out[r], bin(root), `broadcast root ${root} rank ${r}`);
        }

        await Promise.all(g.cs.map((c) => c.barrier()));
      } finally {
        await g.close();
      }
    });
  });
}

describe('GrpcCollective', () => {
  it('100 consecutive mixed calls, ranks running ahead of each other, equal the in-process group', async () => {
    const world = 3;
    const g = await makeGroup(world, { frameBytes: 64 * 1024, smallMessageBytes: 16 * 1024 });
    try {
      const pick = rng(7);
      type Step = { op: 'allGather' | 'allReduce' | 'broadcast' | 'barrier'; n: number; root: number; seed: number };
      const steps: Step[] = Array.from({ length: 100 }, (_, i) => {
        const op = (['allGather', 'allReduce', 'allReduce', 'broadcast', 'barrier'] as const)[Math.floor(pick() * 5)];
        const n = [0, 1, 7, 300, 5000, 40_000][Math.floor(pick() * 6)];
        return { op, n, root: Math.floor(pick() * world), seed: 1000 + i * 10 };
      });
      const run = async (c: Collective, s: Step): Promise<Float32Array[]> => {
        const data = randomArray(s.op === 'allGather' ? s.n + c.rank : s.n, s.seed + c.rank);
        switch (s.op) {
          case 'allGather':
            return c.allGather(data);
          case 'allReduce':
            return [await c.allReduce(data)];
          case 'broadcast':
            return [await c.broadcast(c.rank === s.root ? data : new Float32Array(s.n), s.root)];
          case 'barrier':
            await c.barrier();
            return [];
        }
      };
      const sequence = async (c: Collective) => {
        const out: Float32Array[][] = [];
        for (const s of steps) out.push(await run(c, s));
        return out;
      };
      const got = await Promise.all(g.cs.map(sequence));
      const want = await inProcess(world, (c) => sequence(c));
      steps.forEach((s, i) => {
        for (let r = 0; r < world; r++) {
          assert.equal(got[r][i].length, want[r][i].length, `step ${i} ${s.op}`);
          got[r][i].forEach((a, k) => {
            // Every path, small or large allReduce included, sums in rank order: the same
            // bits as in-process, on every rank.
            assertSameBits(a, got[0][i][k], `step ${i} ${s.op} rank ${r} part ${k} vs rank 0`);
            assertSameBits(a, want[r][i][k], `step ${i} ${s.op}(n=${s.n}) rank ${r} part ${k}`);
          });
        }
      });
    } finally {
      await g.close();
    }
  });

  it('large allReduce: uneven sizes and frame splits, rank-order bits; a result is never touched by later calls', async () => {
    for (const [world, opts] of [
      [2, {}],
      [2, { frameBytes: 40_000 }],
      [3, { frameBytes: 40_000 }],
      [4, { frameBytes: 12_345 * 4 }],
    ] as const) {
      const g = await makeGroup(world, { smallMessageBytes: 1024, ...opts });
      try {
        for (const n of [256, 257, 100_003]) {
          const inputs = Array.from({ length: world }, (_, r) => randomArray(n, n + 7 * r));
          const copies = inputs.map((x) => x.slice());
          const placedBefore = g.cs.map((c) => c.placedBytes);
          const got = await Promise.all(g.cs.map((c) => c.allReduce(inputs[c.rank])));
          // Above the placement threshold (64 KiB frames), every all-gather frame lands straight in the result.
          const frameBytes = 4 * Math.min(opts.frameBytes !== undefined ? opts.frameBytes / 4 : Infinity, Math.floor(n / world));
          if (frameBytes >= 64 * 1024 + 64) for (const c of g.cs) assert.ok(c.placedBytes > placedBefore[c.rank], `W=${world} n=${n} rank ${c.rank}: no frame placed`);
          const [want] = await inProcess(world, (c, r) => c.allReduce(inputs[r]));
          const kept = got.map((x) => x.slice());
          // The next call (the same length, other values) must not write into the first results.
          await Promise.all(g.cs.map((c) => c.allReduce(randomArray(n, 1 + c.rank))));
          for (let r = 0; r < world; r++) {
            assertSameBits(got[r], want, `W=${world} ${JSON.stringify(opts)} n=${n} rank ${r}`);
            assertSameBits(got[r], kept[r], `W=${world} n=${n} rank ${r} result after the next call`);
            assertSameBits(inputs[r], copies[r], `W=${world} n=${n} rank ${r} input untouched`);
          }
        }
      } finally {
        await g.close();
      }
    }
  });

  it('allReduceInPlace writes allReduce\'s bits into the caller\'s buffer on every rank (W=2..5, small and large, uneven frames; TCP and Unix sockets)', async () => {
    for (const [world, opts, unix] of [
      [2, {}, false],
      [2, { frameBytes: 40_000 }, true],
      [3, { frameBytes: 40_000 }, false],
      [5, { frameBytes: 12_345 * 4 }, false],
    ] as const) {
      const g = await makeGroup(world, { smallMessageBytes: 1024, ...opts }, () => ({}), unix);
      try {
        for (const n of [3, 256, 100_003]) {
          const inputs = Array.from({ length: world }, (_, r) => randomArray(n, 3 * n + r));
          const bufs = inputs.map((x) => x.slice());
          await Promise.all(g.cs.map((c) => c.allReduceInPlace(bufs[c.rank])));
          const [want] = await inProcess(world, (c, r) => c.allReduce(inputs[r]));
          for (let r = 0; r < world; r++) assertSameBits(bufs[r], want, `W=${world} ${JSON.stringify(opts)} unix=${unix} n=${n} rank ${r}`);
          // Ordinary calls after it still agree.
          const again = await Promise.all(g.cs.map((c) => c.allReduce(inputs[c.rank])));
          for (let r = 0; r < world; r++) assertSameBits(again[r], want, `W=${world} n=${n} rank ${r} allReduce after`);
        }
      } finally {
        await g.close();
      }
    }
  });

  it('a mismatch between the ranks calls fails every rank, naming it', async () => {
    const g = await makeGroup(2);
    try {
      const res = await Promise.allSettled([g.cs[0].allReduce(new Float32Array(4)), g.cs[1].allGather(new Float32Array(4))]);
      for (const r of res) {
        assert.equal(r.status, 'rejected');
        isCollectiveError(/collective mismatch at call 0/)((r as PromiseRejectedResult).reason);
      }
    } finally {
      await g.close();
    }
    const h = await makeGroup(2);
    try {
      const res = await Promise.allSettled([h.cs[0].allReduce(new Float32Array(4)), h.cs[1].allReduce(new Float32Array(5))]);
      for (const r of res) isCollectiveError(/allReduce length mismatch at call 0: rank \d has \d values, rank \d has \d values/)((r as PromiseRejectedResult).reason);
    } finally {
      await h.close();
    }
  });

  it('rejects a stream from another job or an old generation and logs it; the group is unaffected', async () => {
    const logs: string[] = [];
    const g = await makeGroup(2, { generation: 5, log: (m) => logs.push(m) });
    try {
      const hello = (jobId: string, generation: number) => refusedHello(g.peers[0]!, encodeFrame(encodeFrameHeader(jobId, generation, 1), { op: Op.HELLO, worldSize: 2 }));
      const other = await hello('another-job', 5);
      assert.equal(other.code, grpc.status.UNAVAILABLE);
      assert.match(other.details, /no collective of job another-job generation 5 here/);
      const stale = await hello(g.jobId, 4);
      assert.equal(stale.code, grpc.status.FAILED_PRECONDITION);
      assert.match(stale.details, /stale generation/);
      const dup = await hello(g.jobId, 5);
      assert.equal(dup.code, grpc.status.FAILED_PRECONDITION);
      assert.match(dup.details, /rank 1 is already connected/);
      assert.ok(logs.some((l) => /rejected a stream .*another-job/.test(l)), logs.join('\n'));
      assert.ok(logs.some((l) => /stale generation/.test(l)), logs.join('\n'));
      const sums = await Promise.all(g.cs.map((c) => c.allReduce(Float32Array.from([c.rank, 1]))));
      for (const s of sums) assert.deepEqual(Array.from(s), [1, 2]);
    } finally {
      await g.close();
    }
  });

  it('with a collective token, ranks that carry it form the group; a HELLO without it is refused and logged', async () => {
    const logs: string[] = [];
    const g = await makeGroup(2, { generation: 3, token: 'attempt-secret', log: (m) => logs.push(m) });
    try {
      const hello = (token: string | undefined) => refusedHello(g.peers[0]!, encodeFrame(encodeFrameHeader(g.jobId, 3, 1), { op: Op.HELLO, worldSize: 2, ...(token !== undefined ? { token } : {}) }));
      for (const token of [undefined, 'guessed-secret']) {
        const refused = await hello(token);
        assert.equal(refused.code, grpc.status.FAILED_PRECONDITION);
        assert.match(refused.details, /without this attempt's collective token/);
      }
      assert.ok(logs.some((l) => /collective token/.test(l)), logs.join('\n'));
      const sums = await Promise.all(g.cs.map((c) => c.allReduce(Float32Array.from([c.rank, 1]))));
      for (const s of sums) assert.deepEqual(Array.from(s), [1, 2]);
    } finally {
      await g.close();
    }
    // Ranks given different tokens never form a group.
    await assert.rejects(makeGroup(2, { connectTimeoutMs: 1500, timeoutMs: 1000 }, (rank) => ({ token: `secret-${rank}` })), isCollectiveError(/collective token|unreachable/));
  });

  for (const [what, jobId, generation] of [
    ['an old generation', undefined, 0],
    ['another job', 'intruder', undefined],
  ] as const) {
    it(`a data frame of ${what} on an established stream is rejected, never mixed in: the call fails and the stream is reset`, async () => {
      // Rank 1 is played by hand: a server that rank 0 dials, a client that dials rank 0.
      const job = `fake-${++jobCounter}`;
      const logs: string[] = [];
      let toRank0: grpc.ServerDuplexStream<Frame, Buffer> | undefined;
      let toRank0Ready!: () => void;
      const ready = new Promise<void>((r) => (toRank0Ready = r));
      let resetSeen!: (e: unknown) => void;
      const reset = new Promise((r) => (resetSeen = r));
      const fake = new grpc.Server();
      openServers.push(fake);
      const header1 = encodeFrameHeader(job, 1, 1);
      fake.addService(COLLECTIVE_SERVICE, {
        Exchange: (call: grpc.ServerDuplexStream<Frame, Buffer>) => {
          call.once('data', () => {
            toRank0 = call;
            call.write(encodeFrame(header1, { op: Op.HELLO, worldSize: 2 }));
            toRank0Ready();
          });
          call.on('error', resetSeen);
          call.on('cancelled', () => resetSeen('cancelled'));
        },
      });
      const fakePort = await new Promise<number>((res, rej) => fake.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
      const s0 = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
      openServers.push(s0.server);
      const peers = [`127.0.0.1:${s0.port}`, `127.0.0.1:${fakePort}`];
      const connecting = GrpcCollective.connect({ jobId: job, generation: 1, rank: 0, worldSize: 2, peers, server: s0.server, log: (m) => logs.push(m), timeoutMs: 3000 });
      const client = new grpc.Client(peers[0], grpc.credentials.createInsecure());
      const dialed = client.makeBidiStreamRequest<Buffer, Frame>(EXCHANGE_PATH, (b) => b, decodeFrame);
      dialed.on('error', () => {});
      dialed.write(encodeFrame(header1, { op: Op.HELLO, worldSize: 2 }));
      const c0 = await connecting;
      await ready;
      try {
        const pending = c0.allReduce(Float32Array.from([1, 2, 3]));
        const bad = encodeFrameHeader(jobId ?? job, generation ?? 1, 1);
        toRank0!.write(encodeFrame(bad, { seq: 0, op: Op.REDUCE, total: 12 }, bytes(Float32Array.from([100, 100, 100]))));
        await assert.rejects(pending, isCollectiveError(new RegExp(`rank 1 sent a frame of job "${jobId ?? job}" generation ${generation ?? 1} .*frame rejected, stream reset`), 1));
        assert.ok(logs.some((l) => /frame rejected, stream reset/.test(l)), logs.join('\n'));
        await reset; // the fake's stream saw the reset
        await assert.rejects(c0.barrier(), isCollectiveError(/frame rejected/));
      } finally {
        dialed.cancel();
        client.close();
        await c0.close();
        s0.server.forceShutdown();
        fake.forceShutdown();
      }
    });
  }

  it('a rank that dies mid-way (no goodbye) fails the others pending allReduce within timeoutMs, naming it; later calls fail at once', async () => {
    const timeoutMs = 1500;
    const g = await makeGroup(3, { timeoutMs, heartbeatMs: 300 });
    try {
      await Promise.all(g.cs.map((c) => c.allReduce(new Float32Array(100).fill(1))));
      const t0 = performance.now();
      const pending = [g.cs[0].allReduce(new Float32Array(100_000)), g.cs[1].allReduce(new Float32Array(100_000))];
      await g.cs[2].destroy();
      const results = await Promise.allSettled(pending);
      const elapsed = performance.now() - t0;
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        isCollectiveError(/rank 2 unreachable/, 2)((r as PromiseRejectedResult).reason);
      }
      assert.ok(elapsed < timeoutMs, `took ${elapsed} ms`);
      const t1 = performance.now();
      await assert.rejects(g.cs[0].barrier(), isCollectiveError(/rank 2/));
      await assert.rejects(g.cs[1].allGather(new Float32Array(1)), isCollectiveError(/rank 2/));
      assert.ok(performance.now() - t1 < 100);
    } finally {
      await g.close();
    }
  });

  it('a hung rank (streams open, no frames) fails the others within timeoutMs: "no heartbeat from rank 2"; the ABORT reaches rank 2 too', async () => {
    const timeoutMs = 1500;
    // Rank 2 never sends heartbeats (interval far beyond the test): silent but connected.
    const g = await makeGroup(3, { timeoutMs, heartbeatMs: 300 }, (rank) => (rank === 2 ? { timeoutMs: 1e9, heartbeatMs: 4e8 } : {}));
    try {
      await Promise.all(g.cs.map((c) => c.barrier()));
      const t0 = performance.now();
      const results = await Promise.allSettled([g.cs[0].allReduce(new Float32Array(8)), g.cs[1].allReduce(new Float32Array(8))]);
      const elapsed = performance.now() - t0;
      for (const r of results) isCollectiveError(/rank [01] got no heartbeat from rank 2 \(127\.0\.0\.1:\d+\) for \d+ ms/, 2)((r as PromiseRejectedResult).reason);
      assert.ok(elapsed <= timeoutMs + 50, `took ${elapsed} ms`);
      // Ranks 0 and 1 sent their parts of that call before giving up, so rank 2 may still
      // complete it from what it holds; the next call needs frames that never come, and
      // fails with the ABORT the others sent.
      await g.cs[2].allReduce(new Float32Array(8)).catch(() => undefined);
      await assert.rejects(g.cs[2].allReduce(new Float32Array(8)), isCollectiveError(/no heartbeat from rank 2 .*\(reported by rank [01]\)/, 2));
    } finally {
      await g.close();
    }
  });

  it('connect fails naming the rank that never comes', async () => {
    const s = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
    const nobody = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
    nobody.server.forceShutdown();
    try {
      const t0 = performance.now();
      await assert.rejects(
        GrpcCollective.connect({ jobId: 'lonely', generation: 1, rank: 0, worldSize: 2, peers: [`127.0.0.1:${s.port}`, `127.0.0.1:${nobody.port}`], server: s.server, connectTimeoutMs: 500, timeoutMs: 400, heartbeatMs: 100, log: () => {} }),
        isCollectiveError(/rank 1 unreachable/, 1),
      );
      assert.ok(performance.now() - t0 < 1500);
    } finally {
      s.server.forceShutdown();
    }
  });

  it('binds its own server from listenPort, closes cleanly (calls reject, the port is released), close is idempotent', async () => {
    const ports = await Promise.all([0, 1].map(async () => {
      const s = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
      await new Promise<void>((r) => s.server.tryShutdown(() => r()));
      return s.port;
    }));
    const peers = ports.map((p) => `127.0.0.1:${p}`);
    const cs = await Promise.all([0, 1].map((rank) => GrpcCollective.connect({ jobId: 'own', generation: 1, rank, worldSize: 2, peers, listenHost: '127.0.0.1', log: () => {} })));
    assert.deepEqual(cs.map((c) => c.port), ports);
    const sums = await Promise.all(cs.map((c) => c.allReduce(Float32Array.from([1]))));
    assert.deepEqual(sums.map((s) => s[0]), [2, 2]);
    await Promise.all(cs.map((c) => c.close()));
    await cs[0].close();
    await assert.rejects(cs[0].allReduce(new Float32Array(1)), isCollectiveError(/closed/));
    // The ports are free again.
    const again = await listenCollectiveServer({ host: '127.0.0.1', port: ports[0] });
    again.server.forceShutdown();
  });

  it('a rank closing cleanly right after the last call does not fail the peers still finishing it', async () => {
    for (let i = 0; i < 5; i++) {
      const g = await makeGroup(3);
      try {
        const x = new Float32Array(200_000).fill(1);
        const [a, b, c] = g.cs;
        // Rank 0 closes the moment its call resolves; the others may still be receiving.
        const p0 = a.allReduce(x).then(async (v) => {
          await a.close();
          return v;
        });
        const res = await Promise.all([p0, b.allReduce(x), c.allReduce(x)]);
        for (const v of res) assert.equal(v[199_999], 3);
      } finally {
        await g.close();
      }
    }
  });

  it('mutual TLS from PEM files', async (t) => {
    if (!hasOpenssl()) {
      t.skip('no openssl');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'tas-tls-'));
    try {
      const tls = makeTestCerts(dir);
      const servers = await Promise.all([0, 1].map(() => listenCollectiveServer({ host: '127.0.0.1', port: 0, tls })));
      servers.forEach((s) => openServers.push(s.server));
      const peers = servers.map((s) => `localhost:${s.port}`);
      const cs = await Promise.all(servers.map((s, rank) => GrpcCollective.connect({ jobId: 'tls', generation: 1, rank, worldSize: 2, peers, server: s.server, tls, log: () => {} })));
      const sums = await Promise.all(cs.map((c) => c.allReduce(Float32Array.from([c.rank + 1, 2]))));
      for (const s of sums) assert.deepEqual(Array.from(s), [3, 4]);
      // A plaintext peer is not let in.
      const plain = await listenCollectiveServer({ host: '127.0.0.1', port: 0 });
      openServers.push(plain.server);
      await assert.rejects(
        GrpcCollective.connect({ jobId: 'tls', generation: 1, rank: 1, worldSize: 2, peers, server: plain.server, connectTimeoutMs: 600, timeoutMs: 500, heartbeatMs: 100, log: () => {} }),
        isCollectiveError(/rank 0 unreachable/),
      );
      await Promise.all(cs.map((c) => c.close()));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
