/**
 * The group of ranks a `GrpcCollective` belongs to: forming it, routing each received
 * frame to the call it belongs to, failure and liveness, and closing. The algorithms
 * (grpc-collective.ts) build on it: they number each call (`begin`/`finish`), write frames
 * to links and wait for frames from them.
 *
 * Forming: every rank runs a collective server (its own, bound by `connect`, or one from
 * `listenCollectiveServer`: a pool worker's, on its own port) and opens one persistent
 * stream to every other rank's server (links.ts); the group is formed when every pair has
 * both streams. A server with no collective of the job registered yet answers UNAVAILABLE
 * and the dialer retries until `connectTimeoutMs`. Peers are `host:port` or `unix:/path`.
 *
 * Frames to calls: every rank calls the same collectives in the same order; the call's
 * `seq` numbers them and every frame carries seq, job id and generation. A frame of a call
 * this rank has not started yet waits in its link (`early`); a frame that does not fit the
 * call (another collective, length or root) is a mismatch and fails the group.
 *
 * Failure: a stream error or end without GOODBYE ("rank 2 unreachable: ..."), no frame
 * from a peer for `timeoutMs` ("rank 0 got no heartbeat from rank 2 (host:port) for 5012 ms"; idle streams carry
 * a HEARTBEAT every `heartbeatMs`), a frame of another job/generation, or a collective
 * mismatch fails the whole group: every pending and later call rejects with a
 * `CollectiveError` (`TrainerError` code TAS_ERR_COLLECTIVE) naming the rank, and an ABORT
 * goes to every other rank so that they fail at once too. A rank's event loop must not be
 * blocked for longer than `timeoutMs` (its heartbeats stop): keep `timeoutMs` above the
 * longest synchronous stretch of the training step.
 */
import { CollectiveError } from './collective-error.js';
import { encodeFrame, encodeFrameHeader, EXCHANGE_PATH, Op, peekFrame, type Frame } from './frame-codec.js';
import { Link, routerFor, type CollectiveServer, type LinkOwner, type RoutedGroup, type Router } from './links.js';
import { frameOf, recvAlloc } from './receive-buffers.js';
import { dial as dialH2, Status, statusName, type CallStatus, type GrpcCall } from './transport/grpc-h2.js';
import type { TlsFiles } from '../grpc/tls-files.js';
import { acrossHosts, CROSS_HOST_WINDOW } from './cross-host.js';
import { timingSafeEqual } from 'node:crypto';

/** Whether a HELLO's token is this attempt's (constant time for equal lengths). */
function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given), b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

export interface GrpcCollectiveOptions {
  jobId: string;
  /** Incarnation of the job; frames of another generation are rejected. */
  generation: number;
  rank: number;
  worldSize: number;
  /** host:port of every rank's collective server, index = rank. */
  peers: string[];
  /** Port to bind when no `server` is given (default: the port of peers[rank]). */
  listenPort?: number;
  /** Host to bind when no `server` is given (default 0.0.0.0). */
  listenHost?: string;
  /** An already-bound server (e.g. from `listenCollectiveServer`, or the worker's). */
  server?: CollectiveServer;
  /** A dead, hung or partitioned peer fails every call within this (default 5000 ms). */
  timeoutMs?: number;
  /**
   * The attempt's secret: every rank is given the same one, HELLOs carry it, and a HELLO
   * without it is refused, so nothing but this attempt's ranks joins (default '': none).
   */
  token?: string;
  /** Heartbeat interval on idle streams (default 500 ms; at most timeoutMs / 2). */
  heartbeatMs?: number;
  /** How long `connect` waits for the whole mesh (default max(30000, timeoutMs)). */
  connectTimeoutMs?: number;
  /** allReduce buffers below this many bytes use the rank-order all-to-all (default 64 KiB). */
  smallMessageBytes?: number;
  /**
   * Largest payload per frame; larger messages are split (default 4 MiB; a large
   * allReduce: 1 MiB).
   */
  frameBytes?: number;
  /**
   * How many bytes a peer on another host (a TCP address other than loopback) may have in
   * flight to this rank at once: the HTTP/2 receive window of the stream its frames come
   * on (default `CROSS_HOST_WINDOW`, 512 KiB; 0: unbounded, TCP alone paces). See
   * `CROSS_HOST_WINDOW` (cross-host.ts) for why; peers on this host are never bounded.
   */
  crossHostWindowBytes?: number;
  /** PEM file paths: mutual TLS. Plaintext when absent. */
  tls?: TlsFiles;
  /** Where rejected frames and failures are reported (default console.warn). */
  log?: (message: string) => void;
}


// ---------------------------------------------------------------------------------------
// The collective.

export interface CallInfo {
  name: 'allGather' | 'allReduce' | 'broadcast' | 'barrier';
  ops: Op[];
  /** Byte length every rank must agree on (allReduce, broadcast). */
  total?: number;
  root?: number;
}

export function family(op: Op): CallInfo['name'] | undefined {
  switch (op) {
    case Op.ALL_GATHER:
      return 'allGather';
    case Op.REDUCE:
    case Op.REDUCE_SCATTER:
    case Op.ALL_GATHER_RING:
      return 'allReduce';
    case Op.BROADCAST:
      return 'broadcast';
    case Op.BARRIER:
      return 'barrier';
    default:
      return undefined;
  }
}

const DEFAULT_FRAME_BYTES = 4 << 20;

/**
 * Frame payload size of a large allReduce when the options give none: 1 MiB, so that each
 * segment is several frames and the reduce-scatter, the sums and the all-gather overlap.
 * Across hosts that matters (bench:collective namespace mode, W=4, 16 MB, 1 Gbit/s links,
 * 512 KiB windows: 1 MiB frames 0.912 of the link rate, 4 MiB 0.864, twice each); on one
 * host the size barely does (16 MB in place, loopback, p50: W=2 256 KiB-2 MiB 10.3-11.6
 * ms, W=4 1-4 MiB 33.6-34.5 ms, within this VM's noise). Other calls (broadcast,
 * allGather) send 4 MiB frames: nothing to overlap there.
 */
function defaultReduceFrameBytes(): number {
  return 1 << 20;
}

export class CollectiveGroup implements RoutedGroup, LinkOwner {
  readonly rank: number;
  readonly worldSize: number;
  readonly jobId: string;
  readonly generation: number;
  /** The port this collective bound (undefined when the caller passed `server`). */
  readonly port: number | undefined;
  readonly timeoutMs: number;
  readonly heartbeatMs: number;
  readonly log: (message: string) => void;

  private readonly peers: string[];
  private readonly server: CollectiveServer;
  private readonly ownServer: boolean;
  private readonly router: Router;
  private readonly tls?: TlsFiles;
  private readonly connectTimeoutMs: number;
  protected readonly smallBytes: number;
  /** Largest payload per frame: broadcast, allGather, small allReduce. */
  protected readonly frameFloats: number;
  /** Largest payload per frame of a large allReduce. */
  protected readonly reduceFrameFloats: number;
  /** Receive window of a stream from a rank on another host; 0: unbounded. */
  private readonly crossHostWindow: number;
  protected readonly header: Buffer;
  /** This attempt's collective token: a HELLO must carry it (GrpcCollectiveOptions.token). */
  private readonly token: string;
  private readonly heartbeatFrame: Buffer;
  private readonly links: Array<Link | undefined>;
  private readonly connections: Array<() => void> = [];
  private readonly dialCalls = new Set<GrpcCall>();
  private readyCount = 0;
  private nextSeq = 0;
  private readonly active = new Map<number, CallInfo>();
  /** Payload bytes received straight into allReduce results (diagnostics; grpc-h2.ts Placer). */
  placedBytes = 0;
  /** Large allReduce calls in progress: where their all-gather frames may be received directly. */
  protected readonly sinks = new Map<number, (from: number, offset: number, length: number, total: number) => Uint8Array | undefined>();
  private failure: CollectiveError | null = null;
  private closing = false;
  private closed: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private lastTick = performance.now();
  private graceUntil = 0;
  private connected!: { resolve: () => void; reject: (e: Error) => void };
  private readonly connectedPromise: Promise<void>;

  protected constructor(opts: GrpcCollectiveOptions, server: CollectiveServer, ownServer: boolean, port: number | undefined) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.jobId = opts.jobId;
    this.generation = opts.generation;
    this.peers = opts.peers.slice();
    this.server = server;
    this.ownServer = ownServer;
    this.port = port;
    this.tls = opts.tls;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.heartbeatMs = opts.heartbeatMs ?? Math.min(500, this.timeoutMs / 4);
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, got ${this.timeoutMs}`);
    if (!(this.heartbeatMs > 0) || this.heartbeatMs > this.timeoutMs / 2) throw new RangeError(`heartbeatMs (${this.heartbeatMs}) must be positive and at most timeoutMs / 2 (${this.timeoutMs / 2})`);
    this.connectTimeoutMs = opts.connectTimeoutMs ?? Math.max(30_000, this.timeoutMs);
    this.smallBytes = opts.smallMessageBytes ?? 64 * 1024;
    this.frameFloats = Math.max(1, Math.floor((opts.frameBytes ?? DEFAULT_FRAME_BYTES) / 4));
    this.reduceFrameFloats = Math.max(1, Math.floor((opts.frameBytes ?? defaultReduceFrameBytes()) / 4));
    this.crossHostWindow = opts.crossHostWindowBytes ?? CROSS_HOST_WINDOW;
    this.log = opts.log ?? ((m) => console.warn(m));
    this.header = encodeFrameHeader(this.jobId, this.generation, this.rank);
    this.token = opts.token ?? '';
    this.heartbeatFrame = encodeFrame(this.header, { op: Op.HEARTBEAT });
    this.links = new Array<Link | undefined>(this.worldSize);
    this.router = routerFor(server);
    this.connectedPromise = new Promise<void>((resolve, reject) => (this.connected = { resolve, reject }));
    this.connectedPromise.catch(() => {});
  }

  // ---- forming the group -----------------------------------------------------------------

  protected async establish(): Promise<void> {
    this.router.register(this);
    if (this.worldSize === 1) return;
    this.startTimer();
    const deadline = setTimeout(() => {
      const missing = [];
      for (let p = 0; p < this.worldSize; p++) if (p !== this.rank && !this.links[p]?.ready) missing.push(p);
      const p = missing[0];
      this.fail(new CollectiveError(`rank ${p} unreachable: no collective stream with rank ${missing.join(', rank ')} (${this.peers[p]}) within ${this.connectTimeoutMs} ms`, p));
    }, this.connectTimeoutMs);
    deadline.unref();
    try {
      for (let p = 0; p < this.worldSize; p++) if (p !== this.rank) this.dial(p, performance.now() + this.connectTimeoutMs);
      await this.connectedPromise;
    } finally {
      clearTimeout(deadline);
    }
  }

  private dial(p: number, deadline: number): void {
    const hello = encodeFrame(this.header, { op: Op.HELLO, worldSize: this.worldSize, token: this.token });
    let backoff = 20;
    const attempt = () => {
      if (this.failure || this.closing) return;
      const window = acrossHosts(this.peers[p]) ? this.crossHostWindow : 0;
      const { call, close } = dialH2(this.peers[p], EXCHANGE_PATH, recvAlloc, this.tls, window > 0 ? { receiveWindow: window } : {});
      this.connections.push(close);
      this.dialCalls.add(call);
      let link: Link | undefined;
      let over = false;
      const abandon = () => {
        over = true;
        this.dialCalls.delete(call);
        close();
      };
      call.setPlacer((head, len) => this.place(p, head, len));
      call.on('data', (m: Buffer, tail?: Uint8Array) => {
        let f: Frame;
        try {
          f = frameOf(m, tail);
        } catch (e) {
          if (link) this.fail(new CollectiveError(`protocol error: rank ${p} sent an undecodable frame: ${(e as Error).message}`, p));
          else if (!over) {
            abandon();
            this.fail(new CollectiveError(`rank ${p} unreachable: undecodable HELLO from ${this.peers[p]}: ${(e as Error).message}`, p));
          }
          return;
        }
        if (link) {
          this.onFrame(link, f);
          return;
        }
        if (over) return;
        if (f.op !== Op.HELLO || f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p) {
          abandon();
          this.rejectedFrame(p, f, 'answered HELLO');
          call.cancel();
          return;
        }
        if (!sameToken(f.token, this.token)) {
          // Something at the peer's address that is not a rank of this attempt.
          abandon();
          call.cancel();
          this.fail(new CollectiveError(`rank ${p} unreachable: ${this.peers[p]} answered without this attempt's collective token`, p));
          return;
        }
        this.dialCalls.delete(call);
        link = this.attach(p, call, true);
      });
      const failed = (why: string, code?: number) => {
        if (link || over) return;
        abandon();
        if (this.failure || this.closing) return;
        const retry = code === Status.UNAVAILABLE || code === Status.UNIMPLEMENTED;
        if (retry && performance.now() + backoff < deadline) {
          const t = setTimeout(attempt, backoff);
          t.unref();
          backoff = Math.min(backoff * 2, 500);
          return;
        }
        this.fail(new CollectiveError(`rank ${p} unreachable: could not open the collective stream to ${this.peers[p]}: ${why}`, p));
      };
      call.on('error', (e: Error & Partial<CallStatus>) => failed(`${statusName(e.code ?? Status.UNKNOWN)}: ${e.details ?? e.message}`, e.code));
      call.on('status', (s: CallStatus) => failed(`stream ended with ${statusName(s.code)}: ${s.details}`, s.code));
      call.writeMessage([hello]);
    };
    attempt();
  }

  /** Router → a HELLO for this job and generation. Returns why it is refused, or null. */
  accept(call: GrpcCall, hello: Frame): string | null {
    const p = hello.srcRank;
    if (this.failure || this.closing) return `the collective of job ${this.jobId} generation ${this.generation} on rank ${this.rank} is ${this.closing ? 'closed' : 'failed'}`;
    if (!sameToken(hello.token, this.token)) return `a HELLO as rank ${p} without this attempt's collective token`;
    if (hello.worldSize !== this.worldSize) return `rank ${p} has world size ${hello.worldSize}, rank ${this.rank} has ${this.worldSize}`;
    if (!Number.isInteger(p) || p === this.rank || p < 0 || p >= this.worldSize) return `rank ${p} is not a peer of rank ${this.rank} (world size ${this.worldSize})`;
    if (this.links[p]?.tx) return `rank ${p} is already connected to rank ${this.rank}`;
    const link = this.attach(p, call, false);
    call.on('data', (m: Buffer) => {
      let f: Frame;
      try {
        f = frameOf(m);
      } catch (e) {
        this.fail(new CollectiveError(`protocol error: rank ${p} sent an undecodable frame: ${(e as Error).message}`, p));
        return;
      }
      this.onFrame(link, f);
    });
    link.sendControl(encodeFrame(this.header, { op: Op.HELLO, worldSize: this.worldSize, token: this.token }));
    return null;
  }

  private attach(p: number, call: GrpcCall, dialed: boolean): Link {
    const link = (this.links[p] ??= new Link(p, this));
    link.attach(call, dialed);
    if (link.ready && ++this.readyCount === this.worldSize - 1) this.connected.resolve();
    return link;
  }

  /** A newer generation of this job registered on the shared server. */
  supersede(generation: number): void {
    this.fail(new CollectiveError(`job ${this.jobId} generation ${this.generation} was superseded by generation ${generation} on rank ${this.rank}`));
  }

  // ---- receiving -------------------------------------------------------------------------

  /**
   * grpc-h2.ts `Placer` of the stream from rank p: an all-gather frame of a large
   * allReduce in progress is received straight into the result (one copy less), when its
   * fields say exactly which frame of that call it is; anything else is buffered whole and
   * checked as usual. The fields are checked again when the frame is complete.
   */
  private place(p: number, head: Buffer, len: number): { at: number; dest: Uint8Array } | undefined {
    let h: ReturnType<typeof peekFrame>;
    try {
      h = peekFrame(head);
    } catch {
      return undefined;
    }
    const { f, payloadAt, payloadLen } = h;
    if (payloadAt < 0 || payloadAt + payloadLen !== len) return undefined;
    if (f.op !== Op.ALL_GATHER_RING || f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p || f.chunk !== p) return undefined;
    const dest = this.sinks.get(f.seq)?.(p, f.offset, payloadLen, f.total);
    return dest ? { at: payloadAt, dest } : undefined;
  }

  private onFrame(link: Link, f: Frame): void {
    if (this.failure && !this.closing) return; // failed: nothing more is read
    const p = link.peer;
    if (f.jobId !== this.jobId || f.generation !== this.generation || f.srcRank !== p) {
      this.rejectedFrame(p, f, 'sent');
      link.kill('rejected frame');
      return;
    }
    link.lastRecv = performance.now();
    switch (f.op) {
      case Op.HEARTBEAT:
        return;
      case Op.ABORT:
        this.fail(new CollectiveError(`${f.error} (reported by rank ${p})`, f.failedRank, f.error));
        return;
      case Op.GOODBYE:
        // Everything the peer sent precedes its GOODBYE: what is buffered stays valid; a
        // call still waiting for more from it can never complete.
        link.peerLeft = true;
        if (link.pendingRecvs > 0 && !this.closing) this.fail(this.leftError(p));
        return;
      case Op.HELLO:
      case Op.OP_UNSPECIFIED:
        this.fail(new CollectiveError(`protocol error: rank ${p} sent ${Op[f.op] ?? f.op} on an established stream`, p));
        return;
    }
    if (this.failure) return;
    const seq = f.seq;
    if (seq >= this.nextSeq) {
      link.early.push(f);
      return;
    }
    const info = this.active.get(seq);
    if (!info) {
      this.fail(new CollectiveError(`collective mismatch: rank ${p} sent ${Op[f.op] ?? f.op} for call ${seq}, which rank ${this.rank} has completed`, p));
      return;
    }
    const why = this.mismatch(seq, info, f, p);
    if (why) return this.fail(new CollectiveError(why, p));
    link.deliver(f);
  }

  private mismatch(seq: number, info: CallInfo, f: Frame, p: number): string | null {
    const fam = family(f.op);
    if (fam !== info.name) return `collective mismatch at call ${seq}: rank ${p} called ${fam ?? Op[f.op] ?? f.op} while rank ${this.rank} called ${info.name}`;
    if (info.total !== undefined && f.total !== info.total) return `${info.name} length mismatch at call ${seq}: rank ${p} has ${f.total / 4} values, rank ${this.rank} has ${info.total / 4} values`;
    if (info.root !== undefined && f.root !== info.root) return `collective mismatch at call ${seq}: rank ${p} broadcasts from root ${f.root}, rank ${this.rank} from root ${info.root}`;
    if (!info.ops.includes(f.op)) return `collective mismatch at call ${seq}: rank ${p} sent ${Op[f.op]} while rank ${this.rank} expects ${info.ops.map((o) => Op[o]).join('/')} (different smallMessageBytes?)`;
    if (f.payload.byteLength % 4 !== 0 || f.offset % 4 !== 0 || f.offset + f.payload.byteLength > f.total) return `protocol error at call ${seq}: rank ${p} sent a payload of ${f.payload.byteLength} bytes at offset ${f.offset} of ${f.total}`;
    return null;
  }

  private rejectedFrame(p: number, f: Frame, verb: string): void {
    const msg = `rank ${p} ${verb} a frame of job ${JSON.stringify(f.jobId)} generation ${f.generation} from rank ${f.srcRank} (op ${Op[f.op] ?? f.op}); this group is job ${JSON.stringify(this.jobId)} generation ${this.generation}: frame rejected, stream reset`;
    this.log(`collective rank ${this.rank}: ${msg}`);
    this.fail(new CollectiveError(msg, p));
  }

  /** Link → its stream is over. */
  linkGone(link: Link, how: string): void {
    if (this.closing) return;
    if (link.peerLeft) {
      if (link.pendingRecvs > 0) this.fail(this.leftError(link.peer));
      return;
    }
    this.fail(new CollectiveError(`rank ${link.peer} unreachable: ${how}`, link.peer));
  }

  private leftError(p: number): CollectiveError {
    const calls = [...this.active.keys()];
    return new CollectiveError(`rank ${p} has left the group (closed its collective)${calls.length ? ` while call ${calls[0]} needs it` : ''}`, p);
  }

  /**
   * The error a send, or a receive of a frame not buffered, on `link` fails with now, if
   * any; a peer that left fails the group (the other ranks get an ABORT).
   */
  failureFor(link: Link): Error | null {
    if (this.failure) return this.failure;
    if (link.peerLeft || link.gone) {
      this.fail(link.peerLeft ? this.leftError(link.peer) : new CollectiveError(`rank ${link.peer} unreachable: stream gone`, link.peer));
      return this.failure;
    }
    return null;
  }

  // ---- failure and liveness --------------------------------------------------------------

  protected fail(err: CollectiveError): void {
    if (this.failure) return;
    this.failure = err;
    this.stopTimer();
    if (!this.closing) {
      const abort = encodeFrame(this.header, { op: Op.ABORT, error: err.origin, failedRank: err.failedRank });
      for (const l of this.links) if (l && !l.gone && !l.peerLeft) l.sendControl(abort);
    }
    for (const l of this.links) l?.rejectAll(err);
    this.connected.reject(err);
  }

  private startTimer(): void {
    const tick = Math.max(5, Math.min(this.heartbeatMs / 2, this.timeoutMs / 10));
    this.lastTick = performance.now();
    this.timer = setInterval(() => this.onTick(tick), tick);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private onTick(tick: number): void {
    const now = performance.now();
    // Our own event loop was blocked: frames may be waiting unread in the sockets, so let
    // them be read (one more tick) before judging the peers.
    if (now - this.lastTick > 3 * tick) this.graceUntil = now + tick;
    this.lastTick = now;
    for (const l of this.links) {
      if (!l || l.gone || l.peerLeft) continue;
      if (now - l.lastSend >= this.heartbeatMs - tick / 2 && !l.blocked) l.sendControl(this.heartbeatFrame);
      // Judged one tick early so that the call fails within timeoutMs of the last frame.
      if (now >= this.graceUntil && now - l.lastRecv > this.timeoutMs - tick) {
        // Says who lost whom: relayed to the other ranks, it tells the rank that went silent
        // (across a partition, still alive) which peer it lost.
        this.fail(new CollectiveError(`rank ${this.rank} got no heartbeat from rank ${l.peer} (${this.peers[l.peer]}) for ${Math.round(now - l.lastRecv)} ms (timeout ${this.timeoutMs} ms)`, l.peer));
        return;
      }
    }
  }

  // ---- calls -----------------------------------------------------------------------------

  protected begin(info: CallInfo): number {
    if (this.failure) throw this.failure;
    const seq = this.nextSeq++;
    this.active.set(seq, info);
    for (const l of this.links) {
      if (!l || l.early.length === 0) continue;
      const early = l.early;
      l.early = [];
      for (const f of early) {
        if (f.seq !== seq) {
          l.early.push(f);
          continue;
        }
        const why = this.mismatch(seq, info, f, l.peer);
        if (why) {
          const err = new CollectiveError(why, l.peer);
          this.fail(err);
          throw err;
        }
        l.deliver(f);
      }
    }
    return seq;
  }

  protected finish(seq: number): void {
    this.active.delete(seq);
    if (this.failure) for (const l of this.links) l?.forget(seq);
  }

  protected link(p: number): Link {
    return this.links[p]!;
  }

  protected others(): Link[] {
    const out: Link[] = [];
    for (const l of this.links) if (l) out.push(l);
    return out;
  }

  // ---- shutting down ---------------------------------------------------------------------

  /**
   * Clean close: GOODBYE and end on every stream, wait (bounded) for the peers to finish
   * their side, then shut the server down (when this collective bound it). Pending calls
   * reject. Idempotent.
   */
  close(): Promise<void> {
    if (!this.closed) this.closed = this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    this.stopTimer();
    this.router.unregister(this);
    const goodbye = encodeFrame(this.header, { op: Op.GOODBYE });
    for (const l of this.links) {
      if (!l || l.gone) continue;
      l.sendControl(goodbye);
      l.end();
    }
    if (!this.failure) this.failure = new CollectiveError(`the collective of rank ${this.rank} is closed`);
    for (const l of this.links) l?.rejectAll(this.failure);
    this.connected.reject(this.failure);
    const grace = Math.min(this.timeoutMs, 2000);
    await waitBounded(Promise.all(this.others().map((l) => l.done)), grace);
    for (const l of this.links) if (l && !l.gone) l.kill('closed');
    for (const call of this.dialCalls) call.cancel();
    for (const close of this.connections) close();
    if (this.ownServer) {
      const shut = new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()));
      if (!(await waitBounded(shut, grace))) this.server.forceShutdown();
    }
  }

  /**
   * Abrupt teardown, as a crash would look to the peers: no GOODBYE, streams cancelled,
   * the server (when this collective bound it) force-shut. For tests, chaos and cancels.
   */
  async destroy(): Promise<void> {
    this.closing = true;
    this.stopTimer();
    this.router.unregister(this);
    if (!this.failure) this.failure = new CollectiveError(`the collective of rank ${this.rank} was destroyed`);
    for (const l of this.links) l?.rejectAll(this.failure);
    this.connected.reject(this.failure);
    for (const l of this.links) if (l && !l.gone) l.kill('destroyed');
    for (const call of this.dialCalls) call.cancel();
    for (const close of this.connections) close();
    if (this.ownServer) this.server.forceShutdown();
    this.closed ??= Promise.resolve();
  }
}

function waitBounded(p: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    p.then(
      () => {
        clearTimeout(t);
        resolve(true);
      },
      () => {
        clearTimeout(t);
        resolve(true);
      },
    );
  });
}
