/**
 * The trainer's `Collective` over gRPC, one process per rank: the algorithms. Each reads
 * top to bottom here; the group they run on (forming the mesh, frames to calls, failure,
 * closing) is group.ts, the streams links.ts, the wire format frame-codec.ts, and where
 * received frames land receive-buffers.ts.
 *
 * - allGather (SyncBN's forward statistics): every rank's buffer to every other rank;
 *   results in rank order.
 * - allReduce, buffers under `smallMessageBytes` (64 KiB: SyncBN's backward sums, small
 *   gradients): every rank's buffer to every other rank; each rank sums all W buffers in
 *   rank order, starting from zeros, exactly as the in-process group does, so the bits
 *   equal the in-process result on every rank.
 * - allReduce, larger buffers (the gradient bucket), any W >= 2: reduce-scatter then
 *   all-gather over W segments, each a direct exchange: every rank sends its values of
 *   segment c to rank c (REDUCE_SCATTER), which sums the W parts in rank order from zeros
 *   (the same bits as the in-process group; the arithmetic is collective-math.ts) frame by
 *   frame as they arrive and sends each final frame to every other rank
 *   (ALL_GATHER_RING), where it is only copied into the result. 2(W-1)/W of the buffer
 *   each way per rank, as a ring, in 2 dependent steps instead of 2(W-1), pipelined in
 *   frames of `frameBytes` (1 MiB: `defaultReduceFrameBytes`). Across hosts every
 *   stream's bytes in flight are bounded (`CROSS_HOST_WINDOW`, cross-host.ts), so the W-1
 *   streams out of a link share it evenly.
 * - allReduceInPlace: the same frames and bits, the result written into the caller's
 *   buffer (torch's all_reduce): each final segment overwrites the values sent from there
 *   once their write reached the socket.
 * - broadcast: the root writes its buffer to every rank; barrier: an empty frame each way.
 *
 * Data path: payloads are raw little-endian float32, never copied on send (the frame's
 * fields, then a view of `data` or of the result; every call waits for its writes to
 * reach the socket before it returns, so the caller may then change them); read from the
 * socket into pooled buffers (receive-buffers.ts; `Frame.release` after the sum) and read
 * as Float32Array views, except all-gather frames of a large allReduce, which are read
 * straight into the result (group.ts `place`, through `sinks`); compression is off.
 *
 * What a large allReduce costs (2-core VM, 16 MB, in place, p50; bench/collective.ts and
 * docs/ARCHITECTURE.md, each beside gloo in the same run): W=2 over loopback TCP
 * 12.0-16.0 ms (gloo 16.1-22.3 ms), W=4 over Unix sockets 28.9-32.0 ms (gloo 37.8-53.4);
 * per rank and call 5-7.5 ms user CPU (mostly the sums: collective-math.ts, native/sum.c
 * where built) and 5.5-9 ms kernel (the socket copies). A fresh result (`allReduce`)
 * costs a V8 collection every few calls and, over TCP, fresh-page kernel time.
 */
import { endianness } from 'node:os';
import type { Collective } from '../trainer/collective/collective.js';
import { sumInRankOrder } from './collective-math.js';
import { CollectiveError } from './collective-error.js';
import { encodeFrameParts, Op, type Frame } from './frame-codec.js';
import { CollectiveGroup, type GrpcCollectiveOptions } from './group.js';
import { listenCollectiveServer, type CollectiveListenOptions, type CollectiveServer, type Link } from './links.js';
import { bytesOf, floatsOf, uninitFloats } from './receive-buffers.js';

// What the callers of the collective need, from one module.
export { CollectiveError } from './collective-error.js';
export type { GrpcCollectiveOptions } from './group.js';
export { listenCollectiveServer, type CollectiveListenOptions, type CollectiveServer } from './links.js';
export type { TlsFiles } from '../grpc/tls-files.js';

export class GrpcCollective extends CollectiveGroup implements Collective {
  /** Binds a server for collectives (see `listenCollectiveServer`). */
  static listen(opts: CollectiveListenOptions = {}): Promise<{ server: CollectiveServer; port: number; unixPath?: string }> {
    return listenCollectiveServer(opts);
  }

  /** Joins the group: binds (or uses) this rank's server, dials the lower ranks, waits for the full mesh. */
  static async connect(opts: GrpcCollectiveOptions): Promise<GrpcCollective> {
    if (endianness() !== 'LE') throw new CollectiveError('the gRPC collective sends little-endian float32 and needs a little-endian host');
    const { rank, worldSize, peers } = opts;
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= worldSize) throw new RangeError(`rank ${rank} outside [0, ${worldSize})`);
    if (peers.length !== worldSize) throw new RangeError(`peers has ${peers.length} addresses for a world of ${worldSize}`);
    if (!Number.isSafeInteger(opts.generation) || opts.generation < 0) throw new RangeError(`generation must be a non-negative integer, got ${opts.generation}`);
    let server = opts.server;
    let port: number | undefined;
    if (!server) {
      ({ server, port } = await listenCollectiveServer({ host: opts.listenHost, port: opts.listenPort ?? portOf(peers[rank]), tls: opts.tls }));
    }
    const c = new GrpcCollective(opts, server, !opts.server, port);
    try {
      await c.establish();
    } catch (e) {
      await c.destroy();
      throw e;
    }
    return c;
  }

  /**
   * Sends `data` as one logical message (split into frames) to every link in `to`; resolves
   * when every frame's bytes reached the sockets (`data` may change after that, not before).
   */
  private async sendMessage(to: Link[], seq: number, op: Op, root: number, data: Float32Array): Promise<void> {
    const total = data.byteLength, ff = this.frameFloats, n = data.length;
    const writes: Promise<void>[] = [];
    let a = 0;
    do {
      const b = Math.min(n, a + ff);
      const parts = encodeFrameParts(this.header, { seq, op, offset: a * 4, total, root }, bytesOf(data, a, b));
      for (const l of to) writes.push(l.send(parts));
      a = b;
    } while (a < n);
    await Promise.all(writes);
  }

  /** Receives one logical message from `from` (a fresh array, or a view into the received frame when `view`). */
  private async recvMessage(from: Link, seq: number, op: Op, view: boolean): Promise<Float32Array> {
    const first = await from.recv(seq, op, 0, 0);
    const total = first.total;
    if (first.payload.byteLength === total) {
      if (view) return floatsOf(first.payload); // never released: the view stays valid
      const copy = new Float32Array(floatsOf(first.payload));
      first.release?.();
      return copy;
    }
    const out = new Float32Array(total / 4);
    const bytes = new Uint8Array(out.buffer);
    bytes.set(first.payload, 0);
    first.release?.();
    let off = first.payload.byteLength;
    while (off < total) {
      const f = await from.recv(seq, op, 0, off);
      if (f.payload.byteLength === 0) throw new CollectiveError(`protocol error at call ${seq}: rank ${from.peer} sent an empty frame at offset ${off} of ${total}`, from.peer);
      bytes.set(f.payload, off);
      f.release?.();
      off += f.payload.byteLength;
    }
    return out;
  }

  async allGather(data: Float32Array): Promise<Float32Array[]> {
    if (this.worldSize === 1) return [data.slice()];
    const seq = this.begin({ name: 'allGather', ops: [Op.ALL_GATHER] });
    try {
      const others = this.others();
      const parts = await Promise.all([this.sendMessage(others, seq, Op.ALL_GATHER, 0, data), ...others.map((l) => this.recvMessage(l, seq, Op.ALL_GATHER, false))]);
      const out = new Array<Float32Array>(this.worldSize);
      out[this.rank] = data.slice();
      others.forEach((l, i) => (out[l.peer] = parts[i + 1] as Float32Array));
      return out;
    } finally {
      this.finish(seq);
    }
  }

  async allReduce(data: Float32Array): Promise<Float32Array> {
    if (this.worldSize === 1) return data.slice();
    const total = data.byteLength;
    if (total < this.smallBytes) {
      const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE], total });
      try {
        const others = this.others();
        const parts = await Promise.all([this.sendMessage(others, seq, Op.REDUCE, 0, data), ...others.map((l) => this.recvMessage(l, seq, Op.REDUCE, true))]);
        const byRank = new Array<Float32Array>(this.worldSize);
        byRank[this.rank] = data;
        others.forEach((l, i) => (byRank[l.peer] = parts[i + 1] as Float32Array));
        // Rank order from zeros, exactly as the in-process group: the same bits everywhere.
        const out = new Float32Array(data.length);
        sumInRankOrder(out, byRank);
        return out;
      } finally {
        this.finish(seq);
      }
    }
    const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE_SCATTER, Op.ALL_GATHER_RING], total });
    try {
      return await this.scatterReduce(seq, data, uninitFloats(data.length));
    } finally {
      this.finish(seq);
    }
  }

  /**
   * allReduce into `data` (the same frames and bits as `allReduce`): a large call writes
   * each final segment over the values it sent, after their write reached the socket, and
   * allocates no result (a fresh 16 MB result per call costs V8 a collection every few
   * calls: W=2, 16 MB, 5.2-5.6 ms user CPU per call in place against 7.9-8.3 ms).
   */
  async allReduceInPlace(data: Float32Array): Promise<void> {
    if (this.worldSize === 1) return;
    if (data.byteLength < this.smallBytes) {
      data.set(await this.allReduce(data));
      return;
    }
    const seq = this.begin({ name: 'allReduce', ops: [Op.REDUCE_SCATTER, Op.ALL_GATHER_RING], total: data.byteLength });
    try {
      await this.scatterReduce(seq, data, data);
    } finally {
      this.finish(seq);
    }
  }

  /**
   * Two or more ranks: reduce-scatter then all-gather over W segments, each step one
   * direct exchange (not a ring): segment c is owned by rank c; every rank sends its values
   * of segment c to rank c (REDUCE_SCATTER, chunk c), which sums the W contributions in rank
   * order from zeros, like the small path and the in-process group (the same bits), frame
   * by frame as they arrive, and sends each final frame to every other rank
   * (ALL_GATHER_RING, chunk c), where it is only copied. Each rank sends and receives
   * 2(W-1)/W of the buffer, as in a ring, in 2 dependent steps instead of 2(W-1).
   */
  private async scatterReduce(seq: number, data: Float32Array, out: Float32Array): Promise<Float32Array> {
    const n = data.length, ff = this.reduceFrameFloats, W = this.worldSize;
    const lo = (c: number) => Math.floor((c * n) / W);
    /** In place: frames (by start index) of other segments whose values we sent have reached the socket. */
    const sentDone = new Set<number>();
    const placed = new Set<number>();
    // All-gather frames received straight into `out`: only a frame of another segment, at a
    // frame boundary, of the exact length, once; in place, only over values already sent.
    this.sinks.set(seq, (c, offset, length, totalBytes) => {
      if (totalBytes !== n * 4 || offset % 4 !== 0 || c === this.rank) return undefined;
      const a = offset / 4, hi = lo(c + 1);
      if (a < lo(c) || a >= hi || (a - lo(c)) % ff !== 0) return undefined;
      const b = Math.min(hi, a + ff);
      if (length !== (b - a) * 4 || placed.has(a) || (out === data && !sentDone.has(a))) return undefined;
      placed.add(a);
      this.placedBytes += length;
      return bytesOf(out, a, b);
    });
    try {
      return await this.scatterReduceFrames(seq, data, out, sentDone);
    } finally {
      this.sinks.delete(seq);
    }
  }

  private async scatterReduceFrames(seq: number, data: Float32Array, out: Float32Array, sentDone: Set<number>): Promise<Float32Array> {
    const W = this.worldSize, r = this.rank, n = data.length, total = n * 4, ff = this.reduceFrameFloats;
    const inPlace = out === data;
    /** In place: the write of our values of each frame of another segment, by start index. */
    const sentAt = new Map<number, Promise<void>>();
    const lo = (c: number) => Math.floor((c * n) / W);
    const others = this.others();
    const sends: Promise<void>[] = [];
    // Frames are written uncopied (views of `data` and `out`): every write must reach the
    // socket before this call returns and the caller may change them.
    const send = (to: Link[], src: Float32Array, op: Op, c: number, a: number, b: number) => {
      const parts = encodeFrameParts(this.header, { seq, op, chunk: c, offset: a * 4, total }, bytesOf(src, a, b));
      for (const l of to) {
        const p = l.send(parts);
        p.catch(() => {});
        sends.push(p);
        if (inPlace && op === Op.REDUCE_SCATTER) {
          sentAt.set(a, p);
          p.then(() => sentDone.add(a), () => {});
        }
      }
    };
    // Our values of every other segment to its owner, frame by frame, owners interleaved
    // (starting with the next rank's segment) so that each gets its first frame early.
    let more = true;
    for (let k = 0; more; k++) {
      more = false;
      for (let i = 1; i < W; i++) {
        const c = (r + i) % W, a = lo(c) + k * ff, hi = lo(c + 1);
        if (a >= hi) continue;
        send([this.link(c)], data, Op.REDUCE_SCATTER, c, a, Math.min(hi, a + ff));
        more = true;
      }
    }
    const check = (f: Frame, p: number, want: number) => {
      if (f.payload.byteLength !== want) throw this.badFrame(seq, p, f, want);
      return floatsOf(f.payload);
    };
    // Our segment: sum each frame in rank order once every rank's part has come, then
    // send the final values to everyone.
    const own = (async () => {
      const byRank = new Array<Float32Array>(W);
      for (let a = lo(r), hi = lo(r + 1); a < hi; a += ff) {
        const b = Math.min(hi, a + ff);
        const frames = await Promise.all(others.map((l) => l.recv(seq, Op.REDUCE_SCATTER, r, a * 4)));
        others.forEach((l, i) => (byRank[l.peer] = check(frames[i], l.peer, (b - a) * 4)));
        // sumInRankOrder may write over one of the first four parts, not a later one.
        byRank[r] = inPlace && r >= 4 ? data.slice(a, b) : data.subarray(a, b);
        sumInRankOrder(out.subarray(a, b), byRank);
        for (const f of frames) f.release?.();
        send(others, out, Op.ALL_GATHER_RING, r, a, b);
      }
    })();
    // The other segments' final values, from their owners.
    const gather = others.map(async (l) => {
      const c = l.peer;
      for (let a = lo(c), hi = lo(c + 1); a < hi; a += ff) {
        const b = Math.min(hi, a + ff);
        const f = await l.recv(seq, Op.ALL_GATHER_RING, c, a * 4);
        if (f.payload.byteLength !== (b - a) * 4) throw this.badFrame(seq, c, f, (b - a) * 4);
        // Received straight into `out` (grpc-h2.ts Placer), or copied from its buffer. In
        // place, these values were sent from here: only once they are in the socket.
        if (f.payload.buffer !== out.buffer || f.payload.byteOffset !== out.byteOffset + a * 4) {
          const sent = sentAt.get(a);
          if (sent) await sent;
          bytesOf(out, a, b).set(f.payload);
        }
        f.release?.();
      }
    });
    await Promise.all([own, ...gather]);
    await Promise.all(sends);
    return out;
  }

  private badFrame(seq: number, p: number, f: Frame, want: number): CollectiveError {
    const err = new CollectiveError(`protocol error at call ${seq}: rank ${p} sent ${f.payload.byteLength} bytes for segment ${f.chunk} at offset ${f.offset}, expected ${want}`, p);
    this.fail(err);
    return err;
  }

  async broadcast(data: Float32Array, root: number): Promise<Float32Array> {
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) throw new RangeError(`broadcast root ${root} outside [0, ${this.worldSize})`);
    if (this.worldSize === 1) return data.slice();
    const seq = this.begin({ name: 'broadcast', ops: [Op.BROADCAST], total: data.byteLength, root });
    try {
      if (this.rank === root) {
        await this.sendMessage(this.others(), seq, Op.BROADCAST, root, data);
        return data.slice();
      }
      return await this.recvMessage(this.link(root), seq, Op.BROADCAST, false);
    } finally {
      this.finish(seq);
    }
  }

  async barrier(): Promise<void> {
    if (this.worldSize === 1) return;
    const seq = this.begin({ name: 'barrier', ops: [Op.BARRIER] });
    try {
      const others = this.others();
      const parts = encodeFrameParts(this.header, { seq, op: Op.BARRIER });
      const waits: Promise<unknown>[] = others.map((l) => l.recv(seq, Op.BARRIER, 0, 0));
      for (const l of others) waits.push(l.send(parts));
      await Promise.all(waits);
    } finally {
      this.finish(seq);
    }
  }

}

function portOf(address: string): number {
  const m = /:(\d+)$/.exec(address);
  if (!m) throw new RangeError(`peer address ${JSON.stringify(address)} has no :port`);
  return Number(m[1]);
}
