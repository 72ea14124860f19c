/**
 * gRPC for the collective's one method (a bidirectional stream of raw messages), server
 * and client, on our own HTTP/2 (h2-connection.ts): the wire protocol of gRPC over HTTP/2
 * (length-prefixed messages, `application/grpc`, status in trailers), spoken to and from
 * grpc-js and every other gRPC implementation (grpc-collective.test.ts checks both
 * directions against grpc-js, plaintext and TLS).
 *
 * Why not grpc-js, nor node:http2: grpc-js allocates a fresh buffer per message on both
 * sides (its framing copy on send, the reassembly on receive); node:http2 reads the socket
 * into fresh zero-filled 64 KiB buffers and copies each once more before nghttp2 sees it.
 * For the collective's megabyte messages that was most of a large allReduce's CPU
 * (bench/collective.ts; docs/ARCHITECTURE.md, "What it costs"). Here:
 * - send: a message is written as its parts (the encoded fields, then a view of the
 *   caller's float32 values), no copy in user space; the write callback fires when the
 *   bytes reached the socket, so callers know when the memory may change again;
 * - receive: a dialed connection reads the socket into one reused buffer (`onread`); each
 *   message is reassembled into a buffer from the caller's allocator (the collective pools
 *   them), the only user-space copy; or, when the receiver's `Placer` claims a large
 *   message from its first bytes, its tail goes straight to where the receiver wants it
 *   (the collective: all-gather frames into the result);
 * - flow control: both ends advertise the largest windows HTTP/2 allows.
 *
 * Addresses: `host:port` (TCP) or `unix:/path` (a Unix domain socket: ranks on one host;
 * the same gRPC over a cheaper transport than loopback TCP).
 */
import { EventEmitter } from 'node:events';
import { readFileSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import type { HeaderList } from './hpack.js';
import { H2Connection, H2Error, header, type H2Stream } from './h2-connection.js';
import type { TlsFiles } from '../../grpc/tls-files.js';

/** gRPC status codes used here (the numbers of grpc's `status`). */
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  DEADLINE_EXCEEDED: 4,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

const STATUS_NAMES: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

/** `UNAVAILABLE` for 14, the number otherwise. */
export function statusName(code: number): string {
  return STATUS_NAMES[code] ?? String(code);
}

/** A call's end as gRPC reports it. */
export interface CallStatus {
  code: number;
  details: string;
}


/** Allocates a message buffer of exactly n bytes (the collective passes a pooled allocator). */
export type Alloc = (n: number) => Buffer;

/**
 * Where the tail of a large message goes, decided from its first bytes (`head`, up to
 * `PLACE_PEEK`) and its length: the bytes from `at` on are written straight into `dest`
 * (`dest.byteLength === length - at`), the ones before into a small buffer; undefined: the
 * whole message into a buffer from the allocator. The collective receives all-gather
 * payloads into the result this way, without a second copy.
 */
export type Placer = (head: Buffer, length: number) => { at: number; dest: Uint8Array } | undefined;

/** Messages from this size on are offered to the placer. */
export const PLACE_MIN = 64 * 1024;
/** Bytes of a message the placer sees. */
export const PLACE_PEEK = 256;

/**
 * Splits a stream of HTTP/2 DATA chunks into gRPC messages (1-byte compressed flag, 4-byte
 * big-endian length, bytes). Each message is copied once, into a buffer from `alloc`.
 */
export class MessageReader {
  private head = Buffer.alloc(5);
  private headFill = 0;
  private msg: Buffer | null = null;
  private msgFill = 0;
  /** A large message's first bytes, while they are collected for the placer. */
  private peek: Buffer | null = null;
  private peekFill = 0;
  private msgLen = 0;
  /** A placed message: its tail's destination and how much of it is written. */
  private dest: Uint8Array | null = null;
  private destFill = 0;
  placer: Placer | undefined;

  constructor(
    private readonly alloc: Alloc,
    private readonly onMessage: (m: Buffer, tail?: Uint8Array) => void,
  ) {}

  /** Feeds one chunk; throws on a compressed message (we never negotiate compression). */
  push(chunk: Buffer): void {
    let i = 0;
    const n = chunk.length;
    while (i < n) {
      if (this.peek) {
        const k = Math.min(PLACE_PEEK - this.peekFill, n - i);
        chunk.copy(this.peek, this.peekFill, i, i + k);
        this.peekFill += k;
        i += k;
        if (this.peekFill === PLACE_PEEK) this.route();
        continue;
      }
      if (this.dest) {
        const k = Math.min(this.dest.byteLength - this.destFill, n - i);
        this.dest.set(chunk.subarray(i, i + k), this.destFill);
        this.destFill += k;
        i += k;
        if (this.destFill === this.dest.byteLength) this.complete();
        continue;
      }
      if (this.msg === null) {
        const k = Math.min(5 - this.headFill, n - i);
        chunk.copy(this.head, this.headFill, i, i + k);
        this.headFill += k;
        i += k;
        if (this.headFill < 5) return;
        this.headFill = 0;
        if (this.head[0] !== 0) throw new Error('compressed gRPC message (no compression was negotiated)');
        const len = this.head.readUInt32BE(1);
        this.msgLen = len;
        if (this.placer && len >= PLACE_MIN) {
          this.peek = Buffer.allocUnsafe(PLACE_PEEK);
          this.peekFill = 0;
          continue;
        }
        this.msg = this.alloc(len);
        this.msgFill = 0;
        if (len === 0) this.complete();
        continue;
      }
      const k = Math.min(this.msg.length - this.msgFill, n - i);
      chunk.copy(this.msg, this.msgFill, i, i + k);
      this.msgFill += k;
      i += k;
      if (this.msgFill === this.msg.length) this.complete();
    }
  }

  /**
   * Where the next bytes of the message in progress go, at most `max` of them (a view of
   * its buffer or its placed tail), so that a socket can read them there; undefined before
   * a message's length and placement are known. `advance(n)` then counts them in.
   */
  target(max: number): Uint8Array | undefined {
    if (this.dest) return this.dest.subarray(this.destFill, this.destFill + Math.min(max, this.dest.byteLength - this.destFill));
    if (this.msg === null || this.peek) return undefined;
    return this.msg.subarray(this.msgFill, this.msgFill + Math.min(max, this.msg.length - this.msgFill));
  }

  advance(n: number): void {
    if (this.dest) {
      this.destFill += n;
      if (this.destFill === this.dest.byteLength) this.complete();
    } else {
      this.msgFill += n;
      if (this.msgFill === this.msg!.length) this.complete();
    }
  }

  /** Bytes of a message begun but not finished (a truncated stream leaves some). */
  get partial(): boolean {
    return this.msg !== null || this.peek !== null || this.headFill > 0;
  }

  /** The first PLACE_PEEK bytes of a large message are in: place its tail, or buffer it whole. */
  private route(): void {
    const peek = this.peek!;
    this.peek = null;
    const len = this.msgLen;
    const p = this.placer?.(peek, len);
    if (p && p.at >= 0 && p.at <= PLACE_PEEK && p.dest.byteLength === len - p.at) {
      this.msg = Buffer.from(peek.subarray(0, p.at));
      this.msgFill = p.at;
      this.dest = p.dest;
      this.dest.set(peek.subarray(p.at), 0);
      this.destFill = PLACE_PEEK - p.at;
      if (this.destFill === this.dest.byteLength) this.complete();
      return;
    }
    this.msg = this.alloc(len);
    peek.copy(this.msg, 0);
    this.msgFill = PLACE_PEEK;
  }

  private complete(): void {
    const m = this.msg!;
    const tail = this.dest ?? undefined;
    this.msg = null;
    this.dest = null;
    this.onMessage(m, tail);
  }
}

function prefix(len: number): Buffer {
  const p = Buffer.allocUnsafe(5);
  p[0] = 0;
  p.writeUInt32BE(len, 1);
  return p;
}

function decodeGrpcMessage(s: string | string[] | undefined): string {
  if (typeof s !== 'string') return '';
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

function encodeGrpcMessage(s: string): string {
  // Percent-encode what HTTP/2 header values cannot carry (gRPC's rule: outside 0x20-0x7e, and '%').
  return s.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => encodeURIComponent(c));
}

/**
 * One gRPC bidirectional call on an HTTP/2 stream, either end. Events, as grpc-js's call
 * objects name them:
 * - 'data' (message: Buffer, tail?: Uint8Array): a whole message, in a buffer from the
 *   allocator; or, placed (`setPlacer`), its head in `message` and the rest in `tail`;
 * - 'end': the peer half-closed its side;
 * - 'finish': our side's end reached the socket;
 * - 'status' (CallStatus), client only: the server's status (trailers);
 * - 'error' ({ code, details }): the call failed (a non-OK status, a reset, a dead
 *   connection); after 'status' when the status is not OK;
 * - 'cancelled', server only: the client reset the stream, or the connection died;
 * - 'close': the HTTP/2 stream is closed.
 */
export class GrpcCall extends EventEmitter {
  private status: CallStatus | null = null;
  private headersSent: boolean;
  private readonly reader: MessageReader;
  private failed = false;
  private gotResponse = false;

  constructor(
    readonly stream: H2Stream,
    readonly isClient: boolean,
    readonly peer: string,
    alloc: Alloc,
  ) {
    super();
    this.headersSent = isClient;
    const reader = (this.reader = new MessageReader(alloc, (m, tail) => this.emit('data', m, tail)));
    stream.on('data', (chunk: Buffer) => {
      if (this.failed) return;
      try {
        reader.push(chunk);
      } catch (e) {
        this.fail({ code: Status.INTERNAL, details: (e as Error).message });
      }
    });
    stream.readTarget = (max) => (this.failed ? undefined : reader.target(max));
    stream.placed = (n) => {
      try {
        reader.advance(n);
      } catch (e) {
        this.fail({ code: Status.INTERNAL, details: (e as Error).message });
      }
    };
    stream.on('end', () => this.emit('end'));
    stream.on('finish', () => this.emit('finish'));
    stream.on('close', () => {
      const rst = stream.rstCode;
      if (!this.failed && this.isClient && this.status === null) {
        const why = rst === -1 ? `connection lost: ${stream.conn.error?.message ?? 'closed'}` : `stream closed without a status (HTTP/2 code ${rst ?? 0})`;
        this.fail({ code: rst === H2Error.CANCEL ? Status.CANCELLED : Status.UNAVAILABLE, details: why });
      } else if (!this.failed && !this.isClient && rst !== undefined && rst !== H2Error.NO_ERROR) {
        this.failed = true;
        this.emit('cancelled');
      }
      this.emit('close');
    });
    if (isClient) {
      stream.on('headers', (h: HeaderList) => {
        if (!this.gotResponse) {
          this.gotResponse = true;
          const st = Number(header(h, ':status'));
          if (st !== 200) return this.fail({ code: st === 404 ? Status.UNIMPLEMENTED : Status.UNAVAILABLE, details: `HTTP status ${st} from ${peer}` });
        }
        const gs = header(h, 'grpc-status');
        if (gs === undefined || this.status) return;
        this.status = { code: Number(gs), details: decodeGrpcMessage(header(h, 'grpc-message')) };
        this.emit('status', this.status);
        if (this.status.code !== Status.OK) this.fail(this.status);
      });
    }
  }

  private fail(s: CallStatus): void {
    if (this.failed) return;
    this.failed = true;
    this.emit('error', Object.assign(new Error(`${statusName(s.code)}: ${s.details}`), s));
    if (!this.stream.closed) this.stream.reset(H2Error.CANCEL);
  }

  getPeer(): string {
    return this.peer;
  }

  /** Lets the receiver place large messages' tails (see `Placer`). */
  setPlacer(placer: Placer | undefined): void {
    this.reader.placer = placer;
  }

  private ensureHeaders(): void {
    if (this.headersSent) return;
    this.headersSent = true;
    this.stream.sendHeaders([
      [':status', '200'],
      ['content-type', 'application/grpc'],
    ]);
  }

  /**
   * Writes one message made of `parts` (no copy: the parts must not change until `done`
   * runs, which is when the bytes reached the socket, or the call failed). Returns false
   * when the stream is closed.
   */
  writeMessage(parts: readonly Uint8Array[], done?: (err?: Error | null) => void): boolean {
    const s = this.stream;
    if (s.closed || s.ending) {
      if (done) queueMicrotask(() => done(new Error('stream closed')));
      return false;
    }
    this.ensureHeaders();
    let len = 0;
    for (const p of parts) len += p.byteLength;
    s.write([prefix(len), ...parts], done);
    return true;
  }

  /** Half-closes our side: the client's end of stream, or the server's OK status. */
  end(): void {
    const s = this.stream;
    if (s.closed || s.ending) return;
    if (this.isClient) return s.end();
    this.ensureHeaders();
    s.end(trailers(this.status ?? { code: Status.OK, details: '' }));
  }

  /** Server: ends the call with a status (a trailers-only answer when nothing was sent). */
  finishWith(code: number, details: string): void {
    const s = this.stream;
    if (s.closed || s.ending) return;
    this.status = { code, details };
    if (!this.headersSent) {
      this.headersSent = true;
      s.sendHeaders(
        [
          [':status', '200'],
          ['content-type', 'application/grpc'],
          ...trailers(this.status),
        ],
        true,
      );
    } else s.end(trailers(this.status));
    // The client may still be writing: reset our receiving side once the status is out.
    s.once('finish', () => setImmediate(() => !s.closed && s.reset(H2Error.NO_ERROR)));
  }

  /** Client: cancels the call (RST_STREAM CANCEL). */
  cancel(): void {
    this.failed = true;
    if (!this.stream.closed) this.stream.reset(H2Error.CANCEL);
  }
}

function trailers(s: CallStatus): HeaderList {
  const t: HeaderList = [['grpc-status', String(s.code)]];
  if (s.details) t.push(['grpc-message', encodeGrpcMessage(s.details)]);
  return t;
}

// ---------------------------------------------------------------------------------------
// Server.

export interface ListenOptions {
  /** TCP host to bind (default 0.0.0.0); with `port`. */
  host?: string;
  /** TCP port (0: any free one). Omitted with `unixPath` alone: no TCP listener. */
  port?: number;
  /** Also (or only) listen on this Unix socket path (replaced if it exists). */
  unixPath?: string;
  tls?: TlsFiles;
}

/**
 * A gRPC server for one bidirectional method, on TCP and/or a Unix socket. 'call' is
 * emitted with (call, path) for every stream whose path is `path`; other paths are
 * answered UNIMPLEMENTED.
 */
export class GrpcH2Server extends EventEmitter {
  private readonly servers: net.Server[] = [];
  private readonly conns = new Set<H2Connection>();
  port = 0;
  unixPath: string | undefined;
  private shut = false;

  constructor(
    private readonly path: string,
    private readonly alloc: Alloc,
  ) {
    super();
  }

  static async listen(path: string, alloc: Alloc, options: ListenOptions): Promise<GrpcH2Server> {
    const s = new GrpcH2Server(path, alloc);
    try {
      if (options.port !== undefined || !options.unixPath) s.port = await s.bind(options.tls, (srv, cb) => srv.listen(options.port ?? 0, options.host ?? '0.0.0.0', cb));
      if (options.unixPath) {
        try {
          unlinkSync(options.unixPath);
        } catch {
          /* not there */
        }
        await s.bind(options.tls, (srv, cb) => srv.listen(options.unixPath, cb));
        s.unixPath = options.unixPath;
      }
    } catch (e) {
      s.forceShutdown();
      throw e;
    }
    return s;
  }

  private bind(files: TlsFiles | undefined, listen: (srv: net.Server, cb: () => void) => void): Promise<number> {
    const onSocket = (sock: net.Socket) => {
      if (this.shut) return void sock.destroy();
      const conn = new H2Connection(sock, false);
      this.conns.add(conn);
      conn.on('close', () => this.conns.delete(conn));
      conn.on('stream', (stream: H2Stream, headers: HeaderList) => this.onStream(conn, stream, headers));
    };
    const srv = files
      ? tls.createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key), ca: readFileSync(files.ca), requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'] }, onSocket)
      : net.createServer(onSocket);
    srv.on('tlsClientError', () => {});
    this.servers.push(srv);
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      listen(srv, () => {
        srv.off('error', reject);
        const a = srv.address();
        resolve(typeof a === 'object' && a ? a.port : 0);
      });
    });
  }

  private onStream(conn: H2Connection, stream: H2Stream, headers: HeaderList): void {
    const sock = conn.socket;
    const peer = sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : this.unixPath ? `unix:${this.unixPath}` : 'unknown';
    const call = new GrpcCall(stream, false, peer, this.alloc);
    const p = header(headers, ':path');
    const ct = header(headers, 'content-type') ?? '';
    if (header(headers, ':method') !== 'POST' || p !== this.path || !ct.startsWith('application/grpc')) {
      call.finishWith(Status.UNIMPLEMENTED, `no method ${String(p)} here`);
      return;
    }
    if (this.shut) {
      call.finishWith(Status.UNAVAILABLE, 'server shutting down');
      return;
    }
    this.emit('call', call);
  }

  private unlink(): void {
    if (!this.unixPath) return;
    try {
      unlinkSync(this.unixPath);
    } catch {
      /* already gone */
    }
  }

  /** Stops accepting connections; `cb` when the open connections have closed. */
  tryShutdown(cb: () => void): void {
    this.shut = true;
    this.unlink();
    let left = this.servers.length + this.conns.size;
    const one = () => --left === 0 && cb();
    if (left === 0) return void queueMicrotask(cb);
    for (const s of this.servers) s.close(() => one());
    for (const c of this.conns) {
      if (c.destroyed) one();
      else {
        c.once('close', one);
        c.close();
      }
    }
  }

  /** Closes every listener and connection now. */
  forceShutdown(): void {
    this.shut = true;
    this.unlink();
    for (const s of this.servers) s.close();
    for (const c of this.conns) c.destroy();
    this.conns.clear();
  }
}

// ---------------------------------------------------------------------------------------
// Client.

/** `host:port` (IPv6 in brackets) or `unix:/path` → what net.connect takes. */
function target(address: string): { path: string } | { host: string; port: number } {
  if (address.startsWith('unix:')) return { path: address.slice(5).replace(/^\/\/(?=\/)/u, '') };
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[(.*)\]$/u, '$1');
  return { host, port: Number(address.slice(i + 1)) };
}

/**
 * One HTTP/2 connection to `address` (`host:port` or `unix:/path`) and a call of `path` on
 * it. A connection that cannot be made fails the call with UNAVAILABLE (callers retry).
 * `close()` ends the connection (gracefully: after the call).
 */
export function dial(address: string, path: string, alloc: Alloc, files?: TlsFiles, options: { receiveWindow?: number } = {}): { call: GrpcCall; close: () => void } {
  const t = target(address);
  const authority = 'path' in t ? 'localhost' : address;
  let conn: H2Connection | undefined;
  const onread = H2Connection.onread(() => conn);
  let sock: net.Socket;
  if (files) {
    // TLS: 'data' events (the bulk path is plaintext: loopback or the pool's own network).
    const creds = { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) };
    const host = 'path' in t ? 'localhost' : t.host;
    sock = tls.connect({ ...t, ...creds, ALPNProtocols: ['h2'], ...(net.isIP(host) ? {} : { servername: host }) });
  } else sock = net.connect({ ...t, onread });
  conn = new H2Connection(sock, true, { readInto: !files, ...(options.receiveWindow ? { receiveWindow: options.receiveWindow } : {}) });
  const stream = conn.request([
    [':method', 'POST'],
    [':scheme', files ? 'https' : 'http'],
    [':path', path],
    [':authority', authority],
    ['content-type', 'application/grpc'],
    ['te', 'trailers'],
  ]);
  const call = new GrpcCall(stream, true, address, alloc);
  const c = conn;
  return { call, close: () => c.close() };
}
