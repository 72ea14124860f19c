/**
 * Links: the streams between this rank and its peers, and the server they arrive on.
 *
 * For each pair of ranks there are two persistent bidirectional `Exchange` streams (gRPC
 * on our own HTTP/2, transport/grpc-h2.ts), each side dialing the other; the first frame
 * each way is HELLO (job id, generation, rank, world size). Rank a's frames to rank b
 * travel on the stream b opened to a, server → client, so each connection carries bulk
 * data one way only, and bulk is always received on a socket its receiver dialed: only
 * those can read straight into our buffers (net's `onread`).
 *
 * - `listenCollectiveServer`: the server a rank's peers dial (TCP, and a Unix socket for
 *   peers on the same host); one `Router` per server hands each incoming stream, by its
 *   HELLO, to the group of that job and generation, or refuses it.
 * - `Link`: one peer's pair of streams: ordered, uncopied writes that settle once their
 *   bytes reached the socket; control frames; an inbox of received frames keyed by call,
 *   op, segment and offset, which the algorithms wait on; and how a stream's end is judged
 *   (clean after GOODBYE, a failure otherwise).
 */
import { CollectiveError } from './collective-error.js';
import { decodeFrame, EXCHANGE_PATH, Op, type Frame } from './frame-codec.js';
import { recvAlloc } from './receive-buffers.js';
import { GrpcH2Server, Status, statusName, type CallStatus, type GrpcCall } from './transport/grpc-h2.js';
import type { TlsFiles } from '../grpc/tls-files.js';

/** The gRPC server of the Collective service (grpc-h2.ts: our own HTTP/2, not grpc-js). */
export type CollectiveServer = GrpcH2Server;

export interface CollectiveListenOptions {
  /** TCP host (default 0.0.0.0). */
  host?: string;
  /** TCP port (0 or absent: any free port). */
  port?: number;
  /**
   * Also listen on this Unix socket path: peers on the same host dial `unix:<path>`, the
   * same gRPC stream over a cheaper transport than loopback TCP.
   */
  unixPath?: string;
  tls?: TlsFiles;
}

/**
 * A gRPC server for collectives, bound to host:port (port 0: any free port; the bound port
 * is returned so that the ranks' addresses can be collected before `connect`) and, with
 * `unixPath`, to a Unix socket too.
 */
export async function listenCollectiveServer(opts: CollectiveListenOptions = {}): Promise<{ server: CollectiveServer; port: number; unixPath?: string }> {
  const server = await GrpcH2Server.listen(EXCHANGE_PATH, recvAlloc, { host: opts.host, port: opts.port ?? 0, unixPath: opts.unixPath, tls: opts.tls });
  routerFor(server);
  return { server, port: server.port, ...(server.unixPath ? { unixPath: server.unixPath } : {}) };
}

function portOf(address: string): number {
  const m = /:(\d+)$/.exec(address);
  if (!m) throw new RangeError(`peer address ${JSON.stringify(address)} has no :port`);
  return Number(m[1]);
}

/** What the router needs of a rank's group: its identity, and HELLOs handed to it. */
export interface RoutedGroup {
  readonly jobId: string;
  readonly generation: number;
  readonly log: (message: string) => void;
  /** A HELLO for this job and generation: why it is refused, or null once attached. */
  accept(call: GrpcCall, hello: Frame): string | null;
  /** A newer generation of the job registered on the same server. */
  supersede(generation: number): void;
}

/** What a link reports to, and asks before each send or wait: its group. */
export interface LinkOwner {
  /** The error a send or receive on `link` fails with now, if any. */
  failureFor(link: Link): Error | null;
  /** One of the link's streams is over. */
  linkGone(link: Link, how: string): void;
}

// ---------------------------------------------------------------------------------------
// Router: one per server; routes each incoming stream to the collective of its job.

const routers = new WeakMap<CollectiveServer, Router>();

export function routerFor(server: CollectiveServer): Router {
  let r = routers.get(server);
  if (!r) {
    r = new Router(server);
    routers.set(server, r);
  }
  return r;
}

const HELLO_TIMEOUT_MS = 10_000;

export class Router {
  private readonly groups = new Map<string, RoutedGroup>();
  private readonly logged = new Set<string>();
  private log: (m: string) => void = (m) => console.warn(m);

  constructor(server: CollectiveServer) {
    server.on('call', (call: GrpcCall) => this.incoming(call));
  }

  register(c: RoutedGroup): void {
    const old = this.groups.get(c.jobId);
    if (old && old !== c) {
      if (old.generation >= c.generation) throw new CollectiveError(`a collective of job ${c.jobId} generation ${old.generation} is already registered on this server (this one: generation ${c.generation})`);
      old.supersede(c.generation);
    }
    this.groups.set(c.jobId, c);
    this.log = c.log;
  }

  unregister(c: RoutedGroup): void {
    if (this.groups.get(c.jobId) === c) this.groups.delete(c.jobId);
  }

  private incoming(call: GrpcCall): void {
    let settled = false;
    const reject = (code: number, details: string, logIt: boolean) => {
      settled = true;
      clearTimeout(timer);
      call.off('data', onHello);
      if (logIt) {
        const key = `${code}|${details}`;
        if (!this.logged.has(key)) {
          this.logged.add(key);
          this.log(`collective: rejected a stream from ${call.getPeer()}: ${details}`);
        }
      }
      call.finishWith(code, details);
    };
    const timer = setTimeout(() => reject(Status.DEADLINE_EXCEEDED, `no HELLO within ${HELLO_TIMEOUT_MS} ms`, true), HELLO_TIMEOUT_MS);
    timer.unref();
    const onHello = (m: Buffer) => {
      if (settled) return;
      let f: Frame;
      try {
        f = decodeFrame(m);
      } catch (e) {
        return reject(Status.FAILED_PRECONDITION, `undecodable first frame: ${(e as Error).message}`, true);
      }
      if (f.op !== Op.HELLO) return reject(Status.FAILED_PRECONDITION, `first frame is ${Op[f.op] ?? f.op}, not HELLO`, true);
      const g = this.groups.get(f.jobId);
      if (!g) {
        // Not registered (yet): the dialer retries. Logged when another job is here.
        return reject(Status.UNAVAILABLE, `no collective of job ${f.jobId} generation ${f.generation} here`, this.groups.size > 0);
      }
      if (f.generation < g.generation) return reject(Status.FAILED_PRECONDITION, `stale generation: job ${f.jobId} generation ${f.generation} from rank ${f.srcRank}, this server runs generation ${g.generation}`, true);
      if (f.generation > g.generation) return reject(Status.UNAVAILABLE, `job ${f.jobId} generation ${f.generation} not started here (still generation ${g.generation})`, false);
      const why = g.accept(call, f);
      if (why) return reject(Status.FAILED_PRECONDITION, why, true);
      settled = true;
      clearTimeout(timer);
      call.off('data', onHello);
    };
    call.on('data', onHello);
    call.on('error', () => {});
  }
}
// ---------------------------------------------------------------------------------------
// Links: one stream to one peer.

interface Waiter {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
}

/** A pending write: settled when its bytes reached the socket, or when the group fails. */
interface PendingWrite {
  resolve: () => void;
  reject: (e: Error) => void;
}

export class Link {
  lastRecv = performance.now();
  lastSend = performance.now();
  /**
   * The stream this rank dialed to the peer's server: the peer's frames arrive on it
   * (server → client). We write only HELLO.
   */
  rx: GrpcCall | undefined;
  /** The stream the peer dialed to this rank's server: this rank's frames to the peer go on it. */
  tx: GrpcCall | undefined;
  /** Frames of calls that have started, waiting to be consumed. Key: seq:op:chunk:offset. */
  private readonly inbox = new Map<string, Frame>();
  private readonly waiters = new Map<string, Waiter>();
  /** Frames of calls this rank has not started yet. */
  early: Frame[] = [];
  /** Data frames written whose bytes have not reached the socket yet. */
  private readonly writes = new Set<PendingWrite>();
  /** The peer sent GOODBYE. */
  peerLeft = false;
  /** A stream of this link is over (ended, errored, cancelled). */
  gone = false;
  private txEnded = false;
  private rxEnded = false;
  private readonly finished: Promise<void>[] = [];

  constructor(
    readonly peer: number,
    private readonly owner: LinkOwner,
  ) {}

  get ready(): boolean {
    return this.rx !== undefined && this.tx !== undefined;
  }

  /** Both streams are over (for a bounded wait on close). */
  get done(): Promise<unknown> {
    return Promise.all(this.finished);
  }

  attach(call: GrpcCall, dialed: boolean): void {
    const name = dialed ? 'receive stream' : 'send stream';
    if (dialed) this.rx = call;
    else this.tx = call;
    let markDone!: () => void;
    this.finished.push(new Promise<void>((r) => (markDone = r)));
    let over = false;
    // Whether the peer's end of this stream is over is judged per direction: the receive
    // stream (the peer's data) is done cleanly only after the peer's GOODBYE; the send
    // stream is done cleanly when the peer half-closes it (its close(); its data may still
    // be in flight on the receive stream, so that alone does not make it gone).
    let clean = false;
    const gone = (how: string) => {
      if (over) return;
      over = true;
      markDone();
      if (clean || this.peerLeft) return;
      this.onGone(`${name} ${how}`);
    };
    call.on('error', (e: Error & Partial<CallStatus>) => gone(e.details !== undefined ? `failed: ${statusName(e.code!)}: ${e.details}` : `failed: ${e.message}`));
    call.on('end', () => {
      // The peer ended its side: finish ours so that the stream completes.
      if (dialed) {
        this.endRx();
        gone('ended without GOODBYE');
      } else {
        clean = true;
        this.endTx();
      }
    });
    call.on('close', () => gone('closed'));
    if (dialed) call.on('status', (s: CallStatus) => gone(`ended with status ${statusName(s.code)}: ${s.details}`));
    else call.on('cancelled', () => gone('cancelled'));
    if (!dialed) call.on('finish', () => clean && markDone());
  }

  private onGone(how: string): void {
    const first = !this.gone;
    this.gone = true;
    if (first) this.owner.linkGone(this, how);
  }

  /**
   * Writes one frame (its parts, uncopied). The promise settles when its bytes reached the
   * socket: until then the parts' memory must not change. Frames stay in order. Nothing is
   * queued here: the payloads are views of the caller's arrays, so HTTP/2's own queue holds
   * no copies.
   */
  send(parts: readonly Uint8Array[]): Promise<void> {
    const failure = this.owner.failureFor(this);
    if (failure) return Promise.reject(failure);
    this.lastSend = performance.now();
    return new Promise<void>((resolve, reject) => {
      const w: PendingWrite = { resolve, reject };
      this.writes.add(w);
      this.tx!.writeMessage(parts, (err) => {
        if (!this.writes.delete(w)) return;
        if (err) reject(this.owner.failureFor(this) ?? new CollectiveError(`rank ${this.peer} unreachable: write failed: ${err.message}`, this.peer));
        else resolve();
      });
    });
  }

  /** Control frames (ABORT, GOODBYE, HEARTBEAT): written regardless of the group's state. */
  sendControl(buf: Buffer): void {
    if (!this.tx || this.txEnded || this.gone) return;
    this.lastSend = performance.now();
    try {
      this.tx.writeMessage([buf]);
    } catch {
      /* the stream is going away */
    }
  }

  /** Data frames are on their way to the socket (heartbeats would only queue behind them). */
  get blocked(): boolean {
    return this.writes.size > 0;
  }

  private endTx(): void {
    if (this.txEnded || !this.tx) return;
    this.txEnded = true;
    try {
      this.tx.end();
    } catch {
      /* already gone */
    }
  }

  private endRx(): void {
    if (this.rxEnded || !this.rx) return;
    this.rxEnded = true;
    try {
      this.rx.end();
    } catch {
      /* already gone */
    }
  }

  /** Ends both streams cleanly (after GOODBYE). */
  end(): void {
    this.endTx();
    this.endRx();
  }

  /** Abrupt: cancel the dialed stream, end the accepted one with a status. */
  kill(reason: string): void {
    this.txEnded = this.rxEnded = true;
    try {
      this.rx?.cancel();
    } catch {
      /* already gone */
    }
    try {
      this.tx?.finishWith(Status.ABORTED, reason);
    } catch {
      /* already gone */
    }
  }

  /** A frame of a started call. */
  deliver(f: Frame): void {
    const key = `${f.seq}:${f.op}:${f.chunk}:${f.offset}`;
    const w = this.waiters.get(key);
    if (w) {
      this.waiters.delete(key);
      w.resolve(f);
    } else this.inbox.set(key, f);
  }

  recv(seq: number, op: Op, chunk: number, offset: number): Promise<Frame> {
    const key = `${seq}:${op}:${chunk}:${offset}`;
    const f = this.inbox.get(key);
    if (f) {
      this.inbox.delete(key);
      return Promise.resolve(f);
    }
    const failure = this.owner.failureFor(this);
    if (failure) return Promise.reject(failure);
    return new Promise((resolve, reject) => this.waiters.set(key, { resolve, reject }));
  }

  /** Drop what is left of a finished call (nothing, unless it failed). */
  forget(seq: number): void {
    const prefix = `${seq}:`;
    if (this.inbox.size) for (const k of this.inbox.keys()) if (k.startsWith(prefix)) this.inbox.delete(k);
  }

  get pendingRecvs(): number {
    return this.waiters.size;
  }

  rejectAll(err: Error): void {
    const ws = [...this.waiters.values()];
    this.waiters.clear();
    this.inbox.clear();
    this.early = [];
    for (const w of ws) w.reject(err);
    const pending = [...this.writes];
    this.writes.clear();
    for (const w of pending) w.reject(err);
  }
}
