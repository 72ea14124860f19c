/**
 * HTTP/2 (RFC 9113) over one socket, as much as the collective's gRPC needs, in JS: the
 * connection preface, SETTINGS, flow control both ways, HEADERS/CONTINUATION (HPACK,
 * hpack.ts), DATA (padding accepted), RST_STREAM, PING (answered), GOAWAY;
 * PRIORITY and unknown frame types are ignored, PUSH_PROMISE is a protocol error (we
 * disable push).
 *
 * Why not node:http2: measured on the collective's bulk path (16 MB all-reduce, 4 ranks
 * on 2 cores), Node's HTTP/2 reads each 64 KiB from the socket into a fresh zero-filled
 * buffer, copies it again (the shrink to the bytes read), runs nghttp2 and calls into JS
 * per DATA chunk: a third of the user CPU of a call. Here a client connection reads the
 * socket with `onread` into one reused buffer (no allocation, no copy before the
 * receiver's own), and frames are parsed in place; DATA payloads reach the stream as views
 * of that buffer, valid until the listener returns.
 *
 * Sending: DATA frames are written as [9-byte header, view of the caller's bytes], no copy;
 * a write's callback runs when its bytes reached the socket (net.Socket's write callback),
 * or with an error when the connection dies first.
 *
 * Why one file of this length: it is one state machine. The frame parser, the flow-control
 * windows of the connection and of each stream, the streams' send queues and the socket
 * reads placed into the receiver's buffers all change the same connection state in the
 * same turn; cut apart, each piece would need the others' internals. The HPACK codec, the
 * one part with a clean interface, is already its own file (hpack.ts).
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { encodeHeaders, HpackDecoder, type HeaderList } from './hpack.js';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

const T = { DATA: 0, HEADERS: 1, PRIORITY: 2, RST_STREAM: 3, SETTINGS: 4, PUSH_PROMISE: 5, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
const END_STREAM = 0x1;
const ACK = 0x1;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;

/** HTTP/2 error codes (RFC 9113 7). */
export const H2Error = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, STREAM_CLOSED: 5, FRAME_SIZE_ERROR: 6, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9 } as const;

const S = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;

const MAX_WINDOW = 2 ** 31 - 1;
/** Largest frame payload we accept (advertised as SETTINGS_MAX_FRAME_SIZE). */
const LOCAL_MAX_FRAME = 1 << 20;
/** Largest DATA frame we send (within the peer's SETTINGS_MAX_FRAME_SIZE). */
const SEND_MAX_FRAME = 1 << 20;
/** Receive windows are topped up once this much of them is consumed. */
const WINDOW_REFILL = 2 ** 30;
/** The smallest receive window a connection may ask for (HTTP/2's initial window, 64 KiB). */
const MIN_RECEIVE_WINDOW = 65535;
/** HTTP/2's smallest SETTINGS_MAX_FRAME_SIZE. */
const MIN_MAX_FRAME = 16384;
/** A header block larger than this is refused (ours are a few hundred bytes). */
const MAX_HEADER_BLOCK = 64 * 1024;
/** Bytes a client connection's socket reads into at a time (one reused buffer). */
const READ_BUFFER = 1 << 20;
/** Reads straight into a receiver's buffer only from this size on (smaller ones are cheaper copied). */
const DIRECT_MIN = 4096;
/**
 * A read that may carry the start of a message (frame header, gRPC prefix, the bytes the
 * receiver places it by) takes at most this much, so that the rest is read in place.
 */
const SMALL_READ = 4096;

type WriteCb = (err?: Error | null) => void;

class ProtocolError extends Error {
  constructor(
    message: string,
    readonly code: number = H2Error.PROTOCOL_ERROR,
  ) {
    super(message);
  }
}

function frameHeader(len: number, type: number, flags: number, sid: number): Buffer {
  const h = Buffer.allocUnsafe(9);
  h[0] = (len >>> 16) & 0xff;
  h[1] = (len >>> 8) & 0xff;
  h[2] = len & 0xff;
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(sid >>> 0, 5);
  return h;
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

/** A queued piece of a stream's output: DATA bytes, or its end (with trailers or not). */
type Out = { data: Uint8Array; off: number; cb?: WriteCb } | { end: true; trailers?: HeaderList };

/**
 * One HTTP/2 stream. Events:
 * - 'headers' (headers: HeaderList, endStream: boolean): a header block (the request, the
 *   response, or trailers);
 * - 'data' (chunk: Buffer): DATA bytes, a view valid only during the call;
 * - 'end': the peer ended its side (END_STREAM);
 * - 'finish': our END_STREAM reached the socket;
 * - 'close' : the stream is over (both sides ended, a reset, or the connection died);
 *   `rstCode` says why when it was not a clean end (undefined: clean; a number: the
 *   RST_STREAM/GOAWAY code; -1: the connection was lost).
 */
export class H2Stream extends EventEmitter {
  sendWindow: number;
  /** Received DATA bytes not yet given back with WINDOW_UPDATE. */
  recvUnacked = 0;
  localEnded = false;
  remoteEnded = false;
  closed = false;
  rstCode: number | undefined;
  readonly queue: Out[] = [];
  /** The end of our side is queued. */
  ending = false;
  /**
   * Set by a receiver that takes raw DATA bytes into its own memory: a view of at most
   * `max` bytes where the next ones go (undefined: deliver them as 'data'); `placed(n)`
   * then says that n bytes landed there.
   */
  readTarget: ((max: number) => Uint8Array | undefined) | undefined;
  placed: ((n: number) => void) | undefined;

  constructor(
    readonly conn: H2Connection,
    readonly id: number,
    sendWindow: number,
  ) {
    super();
    this.sendWindow = sendWindow;
  }

  /** A header block (response headers, or trailers with `endStream`). */
  sendHeaders(headers: HeaderList, endStream = false): void {
    if (this.closed || this.localEnded || this.ending) return;
    if (endStream) {
      // After any queued data.
      this.ending = true;
      this.queue.push({ end: true, trailers: headers });
      this.conn.pump(this);
      return;
    }
    this.conn.writeHeaders(this.id, headers, false);
  }

  /** Queues DATA (uncopied; `cb` when the last byte reached the socket). */
  write(parts: readonly Uint8Array[], cb?: WriteCb): void {
    if (this.closed || this.ending) {
      if (cb) queueMicrotask(() => cb(new Error('stream closed')));
      return;
    }
    const live = parts.filter((p) => p.byteLength > 0);
    if (live.length === 0) {
      // Nothing to send: done once everything before it is.
      this.queue.push({ data: new Uint8Array(0), off: 0, cb });
    } else live.forEach((p, i) => this.queue.push({ data: p, off: 0, cb: i === live.length - 1 ? cb : undefined }));
    this.conn.pump(this);
  }

  /** Ends our side: END_STREAM after the queued data (trailers, when given, carry it). */
  end(trailers?: HeaderList): void {
    if (this.closed || this.ending) return;
    this.ending = true;
    this.queue.push({ end: true, trailers });
    this.conn.pump(this);
  }

  /** RST_STREAM with `code`; the stream closes now. */
  reset(code: number = H2Error.CANCEL): void {
    if (this.closed) return;
    this.conn.writeFrame(T.RST_STREAM, 0, this.id, u32(code));
    this.conn.closeStream(this, code);
  }
}

export interface H2ConnectionOptions {
  /** Client: read with `onread` into one reused buffer (the socket must have been created with `onread`); false: 'data' events. */
  readInto?: boolean;
  /**
   * The connection's receive window in bytes: at most this much of the peer's DATA is in
   * flight to us at once (we ask for DATA frames of at most a quarter of it and give the
   * window back a quarter at a time). Default: 2^31-1, as good as none: TCP alone paces.
   */
  receiveWindow?: number;
}

/**
 * One HTTP/2 connection over `socket`, either end. Events: 'stream' (stream, headers),
 * server only: a new request; 'close' (error?): the connection is over (every open stream
 * closed first); 'goaway' (code).
 */
export class H2Connection extends EventEmitter {
  private readonly streams = new Map<number, H2Stream>();
  private nextStreamId: number;
  private lastPeerStream = 0;
  private readonly decoder = new HpackDecoder();
  private peerInitialWindow = 65535;
  private peerMaxFrame = 16384;
  private connSendWindow = 65535;
  private connRecvUnacked = 0;
  /** Received DATA bytes that make us give the connection window back (`receiveWindow`). */
  private readonly connRefill: number;
  /** Streams waiting for connection-level send window. */
  private readonly blocked = new Set<H2Stream>();
  private goawaySent = false;
  private goawayReceived = false;
  private dead = false;
  private closing = false;
  /** Why the connection is over (once it is). */
  error: Error | undefined;
  // Parser state.
  private prefaceLeft: number;
  private readonly hdr = Buffer.alloc(9);
  private hdrFill = 0;
  private fLen = 0;
  private fType = 0;
  private fFlags = 0;
  private fSid = 0;
  /** Payload of a non-DATA frame being collected. */
  private fBuf: Buffer | null = null;
  private fFill = 0;
  /** DATA frame in progress: padding length still to read (-1: none or read), body and pad bytes left. */
  private dPadLenNeeded = false;
  private dBodyLeft = 0;
  private dPadLeft = 0;
  private dStream: H2Stream | undefined;
  private inFrame = false;
  /** A header block continued by CONTINUATION frames. */
  private headerBlock: { sid: number; parts: Buffer[]; size: number; endStream: boolean } | null = null;
  /** The reused read buffer (client connections with `readInto`). */
  readonly readBuffer: Buffer | undefined;
  /** The target of the read in progress, when it is a stream's own buffer. */
  private direct: Uint8Array | undefined;
  /** DATA bytes read straight into a stream's own buffer (diagnostics, tests). */
  bytesReadDirect = 0;
  /** The stream of the last DATA frame (its message may continue in the next frame). */
  private lastData: H2Stream | undefined;

  constructor(
    readonly socket: Socket,
    readonly isClient: boolean,
    opts: H2ConnectionOptions = {},
  ) {
    super();
    this.nextStreamId = isClient ? 1 : 2;
    this.prefaceLeft = isClient ? 0 : PREFACE.length;
    socket.setNoDelay?.(true);
    if (opts.readInto) this.readBuffer = Buffer.allocUnsafe(READ_BUFFER);
    else socket.on('data', (chunk: Buffer) => this.onBytes(chunk, 0, chunk.length));
    socket.on('error', (e: Error) => this.die(e));
    socket.on('close', () => this.die(new Error('connection closed')));
    socket.on('end', () => this.die(new Error('connection ended by the peer')));
    // Our settings: stream windows at the maximum; the connection's receive window the
    // one asked for (else the maximum), with frames small enough to give it back in parts.
    const window = Math.min(MAX_WINDOW, Math.max(MIN_RECEIVE_WINDOW, Math.floor(opts.receiveWindow ?? MAX_WINDOW)));
    const maxFrame = Math.min(LOCAL_MAX_FRAME, Math.max(MIN_MAX_FRAME, Math.floor(window / 4)));
    this.connRefill = window === MAX_WINDOW ? WINDOW_REFILL : maxFrame;
    socket.cork();
    if (isClient) socket.write(PREFACE);
    const settings: Array<[number, number]> = [
      [S.INITIAL_WINDOW_SIZE, MAX_WINDOW],
      [S.MAX_FRAME_SIZE, maxFrame],
    ];
    if (isClient) settings.push([S.ENABLE_PUSH, 0]);
    const p = Buffer.allocUnsafe(6 * settings.length);
    settings.forEach(([id, v], i) => {
      p.writeUInt16BE(id, 6 * i);
      p.writeUInt32BE(v, 6 * i + 2);
    });
    this.writeFrame(T.SETTINGS, 0, 0, p);
    // The connection starts at HTTP/2's 65,535 bytes; an increment of 0 is an error.
    if (window > 65535) this.writeFrame(T.WINDOW_UPDATE, 0, 0, u32(window - 65535));
    socket.uncork();
  }

  /** `onread` options for a client socket of this kind (`buffer` is filled, `callback` parses). */
  static onread(get: () => H2Connection | undefined): { buffer: () => Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } {
    let fallback: Buffer | undefined; // only before the connection exists (never read into in practice)
    return {
      buffer: () => get()?.nextReadTarget() ?? (fallback ??= Buffer.allocUnsafe(READ_BUFFER)),
      callback: (n: number, buf: Uint8Array) => {
        const c = get();
        if (c) c.onRead(n, buf);
        return true;
      },
    };
  }

  /**
   * Where the next socket read goes (client connections with `readInto`): inside a DATA
   * frame whose stream takes raw bytes (`H2Stream.readTarget`: the receiver's message
   * buffer), straight there, at most to the frame's end; at a frame boundary in the middle
   * of such a message, just the next frame header, so that its payload can go straight
   * too; otherwise the reused read buffer.
   */
  nextReadTarget(): Uint8Array {
    this.direct = undefined;
    const buf = this.readBuffer!;
    if (this.dead || this.prefaceLeft > 0) return buf;
    if (this.inFrame && this.fType === T.DATA) {
      const s = this.dStream;
      if (!s?.readTarget) return buf;
      if (this.dBodyLeft > 0 && !this.dPadLenNeeded) {
        const t = s.readTarget(this.dBodyLeft);
        if (t && t.byteLength >= DIRECT_MIN) return (this.direct = t);
        // A message's prefix and first bytes (which decide where it goes), or a small one.
        return buf.subarray(0, SMALL_READ);
      }
      // A padded frame (peers such as node:http2 may pad) in the middle of a message: just
      // its pad length, or just its padding, so that the body and the next frame's go in place.
      if (s.readTarget(1)) return buf.subarray(0, this.dPadLenNeeded ? 1 : this.dPadLeft);
      return buf.subarray(0, SMALL_READ);
    }
    // Between frames, or in another frame (WINDOW_UPDATE, PING, ...) in the middle of a
    // message: just that header or payload, so that the message's next DATA goes in place.
    const last = this.lastData;
    if (!last?.readTarget || last.closed) return buf;
    if (!last.readTarget(1)) return buf.subarray(0, SMALL_READ);
    return buf.subarray(0, this.inFrame ? this.fLen - this.fFill : 9 - this.hdrFill);
  }

  private onRead(n: number, buf: Uint8Array): void {
    const d = this.direct;
    this.direct = undefined;
    if (d && buf === d) this.onDirect(n);
    else this.onBytes(buf as Buffer, 0, n);
  }

  /** n bytes of the current DATA frame's body were read straight into the stream's target. */
  private onDirect(n: number): void {
    if (this.dead || n <= 0) return;
    this.bytesReadDirect += n;
    this.dBodyLeft -= n;
    const s = this.dStream;
    if (s && !s.closed) s.placed?.(n);
    if (this.dBodyLeft === 0 && this.dPadLeft === 0) this.endData();
  }

  get destroyed(): boolean {
    return this.dead;
  }

  // ---- streams ---------------------------------------------------------------------------

  /** Client: opens a stream with a request header block. */
  request(headers: HeaderList): H2Stream {
    const s = new H2Stream(this, this.nextStreamId, this.peerInitialWindow);
    this.nextStreamId += 2;
    if (this.dead || this.goawayReceived) {
      queueMicrotask(() => this.closeStream(s, this.dead ? -1 : H2Error.REFUSED_STREAM));
      return s;
    }
    this.streams.set(s.id, s);
    this.writeHeaders(s.id, headers, false);
    return s;
  }

  /** Sends a header block (split into HEADERS + CONTINUATION frames as the peer's frame size requires); `cb` after its last frame. */
  writeHeaders(sid: number, headers: HeaderList, endStream: boolean, cb?: WriteCb): void {
    const block = encodeHeaders(headers);
    const max = this.peerMaxFrame;
    this.socket.cork();
    for (let off = 0, first = true; first || off < block.length; first = false) {
      const end = Math.min(block.length, off + max);
      const last = end === block.length;
      const flags = (last ? END_HEADERS : 0) | (first && endStream ? END_STREAM : 0);
      this.writeFrame(first ? T.HEADERS : T.CONTINUATION, flags, sid, block.subarray(off, end), last ? cb : undefined);
      off = end;
    }
    this.socket.uncork();
  }

  writeFrame(type: number, flags: number, sid: number, payload?: Uint8Array, cb?: WriteCb): void {
    if (this.dead) {
      if (cb) queueMicrotask(() => cb(new Error('connection closed')));
      return;
    }
    const len = payload?.byteLength ?? 0;
    if (len === 0) this.socket.write(frameHeader(0, type, flags, sid), cb);
    else {
      this.socket.cork();
      this.socket.write(frameHeader(len, type, flags, sid));
      this.socket.write(payload!, cb);
      this.socket.uncork();
    }
  }

  /** Writes as much of the stream's queue as the flow-control windows allow. */
  pump(s: H2Stream): void {
    if (this.dead || s.closed) return;
    this.socket.cork();
    try {
      while (s.queue.length > 0) {
        const next = s.queue[0];
        if ('end' in next) {
          s.queue.shift();
          s.localEnded = true;
          const onFinish = () => {
            s.emit('finish');
            this.maybeClose(s);
          };
          if (next.trailers) {
            this.writeHeaders(s.id, next.trailers, true, (e) => !e && onFinish());
          } else this.writeFrame(T.DATA, END_STREAM, s.id, undefined, (e) => !e && onFinish());
          continue;
        }
        const left = next.data.byteLength - next.off;
        if (left === 0) {
          s.queue.shift();
          if (next.cb) this.socket.write(Buffer.alloc(0), next.cb);
          continue;
        }
        const n = Math.min(left, this.connSendWindow, s.sendWindow, this.peerMaxFrame, SEND_MAX_FRAME);
        if (n <= 0) {
          if (this.connSendWindow <= 0) this.blocked.add(s);
          return;
        }
        const done = next.off + n === next.data.byteLength;
        const view = next.off === 0 && done ? next.data : next.data.subarray(next.off, next.off + n);
        next.off += n;
        this.connSendWindow -= n;
        s.sendWindow -= n;
        if (done) s.queue.shift();
        this.writeFrame(T.DATA, 0, s.id, view, done ? next.cb : undefined);
      }
    } finally {
      this.socket.uncork();
    }
  }

  /** Marks a stream closed (reset, clean end, or a dead connection) and tells its listeners. */
  closeStream(s: H2Stream, code: number | undefined): void {
    if (s.closed) return;
    s.closed = true;
    s.rstCode = code;
    this.streams.delete(s.id);
    this.blocked.delete(s);
    const err = new Error(code === -1 ? 'connection closed' : `stream reset (HTTP/2 code ${code})`);
    for (const next of s.queue.splice(0)) if ('data' in next && next.cb) next.cb(err);
    s.emit('close');
    if ((this.closing || this.goawayReceived) && this.streams.size === 0) this.finishClose();
  }

  private maybeClose(s: H2Stream): void {
    if (s.localEnded && s.remoteEnded && s.queue.length === 0) this.closeStream(s, undefined);
  }

  // ---- connection ------------------------------------------------------------------------

  /** Graceful: GOAWAY now, the socket ends once the open streams are over. */
  close(): void {
    if (this.dead || this.closing) return;
    this.closing = true;
    this.sendGoaway(H2Error.NO_ERROR);
    if (this.streams.size === 0) this.finishClose();
  }

  private finishClose(): void {
    if (this.dead) return;
    this.socket.end();
  }

  /** Abrupt: the socket is destroyed, every stream closes as reset. */
  destroy(err?: Error): void {
    if (this.dead) return;
    this.socket.destroy();
    this.die(err ?? new Error('connection destroyed'));
  }

  private sendGoaway(code: number): void {
    if (this.goawaySent || this.dead) return;
    this.goawaySent = true;
    const p = Buffer.allocUnsafe(8);
    p.writeUInt32BE(this.lastPeerStream, 0);
    p.writeUInt32BE(code, 4);
    this.writeFrame(T.GOAWAY, 0, 0, p);
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    this.error = err;
    if (!this.socket.destroyed) this.socket.destroy();
    for (const s of [...this.streams.values()]) this.closeStream(s, -1);
    this.emit('close', err);
  }

  private fatal(e: ProtocolError): void {
    this.sendGoaway(e.code);
    this.socket.end();
    this.die(e);
  }

  // ---- receiving -------------------------------------------------------------------------

  /** Parses bytes [from, to) of `b` (a view: nothing is kept past this call). */
  onBytes(b: Buffer, from: number, to: number): void {
    if (this.dead) return;
    try {
      this.parse(b, from, to);
    } catch (e) {
      if (e instanceof ProtocolError) return this.fatal(e);
      // A listener's own exception: the connection cannot go on (the parse stopped midway),
      // and the exception is not ours to swallow: it surfaces as uncaught, as it would
      // from any socket listener.
      this.fatal(new ProtocolError(`a listener threw: ${(e as Error).message}`, H2Error.INTERNAL_ERROR));
      process.nextTick(() => {
        throw e;
      });
    }
  }

  private parse(b: Buffer, i: number, n: number): void {
    while (i < n && !this.dead) {
      if (this.prefaceLeft > 0) {
        const k = Math.min(this.prefaceLeft, n - i);
        const at = PREFACE.length - this.prefaceLeft;
        if (!b.subarray(i, i + k).equals(PREFACE.subarray(at, at + k))) throw new ProtocolError('bad connection preface');
        this.prefaceLeft -= k;
        i += k;
        continue;
      }
      if (!this.inFrame) {
        const k = Math.min(9 - this.hdrFill, n - i);
        b.copy(this.hdr, this.hdrFill, i, i + k);
        this.hdrFill += k;
        i += k;
        if (this.hdrFill < 9) return;
        this.hdrFill = 0;
        this.beginFrame();
        continue;
      }
      if (this.fType === T.DATA) {
        if (this.dPadLenNeeded) {
          this.dPadLenNeeded = false;
          const pad = b[i++];
          this.dBodyLeft = this.fLen - 1 - pad;
          this.dPadLeft = pad;
          if (this.dBodyLeft < 0) throw new ProtocolError('DATA padding longer than the frame');
        } else if (this.dBodyLeft > 0) {
          const k = Math.min(this.dBodyLeft, n - i);
          this.dBodyLeft -= k;
          const s = this.dStream;
          const chunk = b.subarray(i, i + k);
          i += k;
          if (s && !s.closed) s.emit('data', chunk);
        } else {
          const k = Math.min(this.dPadLeft, n - i);
          this.dPadLeft -= k;
          i += k;
        }
        if (!this.dPadLenNeeded && this.dBodyLeft === 0 && this.dPadLeft === 0) this.endData();
        continue;
      }
      const k = Math.min(this.fLen - this.fFill, n - i);
      b.copy(this.fBuf!, this.fFill, i, i + k);
      this.fFill += k;
      i += k;
      if (this.fFill === this.fLen) {
        this.inFrame = false;
        this.onFrame(this.fBuf!);
      }
    }
  }

  private beginFrame(): void {
    const h = this.hdr;
    this.fLen = (h[0] << 16) | (h[1] << 8) | h[2];
    this.fType = h[3];
    this.fFlags = h[4];
    this.fSid = h.readUInt32BE(5) & 0x7fffffff;
    if (this.fLen > LOCAL_MAX_FRAME) throw new ProtocolError(`frame of ${this.fLen} bytes over our maximum ${LOCAL_MAX_FRAME}`, H2Error.FRAME_SIZE_ERROR);
    if (this.headerBlock && this.fType !== T.CONTINUATION) throw new ProtocolError('header block interrupted');
    this.inFrame = true;
    if (this.fType === T.DATA) {
      if (this.fSid === 0) throw new ProtocolError('DATA on stream 0');
      const s = this.streams.get(this.fSid);
      if (!s && this.fSid > (this.isClient ? this.nextStreamId - 2 : this.lastPeerStream)) throw new ProtocolError(`DATA on idle stream ${this.fSid}`);
      this.dStream = s && !s.remoteEnded ? s : undefined;
      this.lastData = this.dStream;
      this.dPadLenNeeded = (this.fFlags & PADDED) !== 0 && this.fLen > 0;
      if ((this.fFlags & PADDED) !== 0 && this.fLen === 0) throw new ProtocolError('padded DATA frame without its pad length');
      this.dBodyLeft = this.dPadLenNeeded ? 0 : this.fLen;
      this.dPadLeft = 0;
      if (this.fLen === 0) this.endData();
      return;
    }
    this.fBuf = Buffer.allocUnsafe(this.fLen);
    this.fFill = 0;
    if (this.fLen === 0) {
      this.inFrame = false;
      this.onFrame(this.fBuf);
    }
  }

  /** A DATA frame is fully read: flow control, then END_STREAM. */
  private endData(): void {
    this.inFrame = false;
    const len = this.fLen;
    const s = this.dStream;
    this.dStream = undefined;
    this.connRecvUnacked += len;
    if (this.connRecvUnacked >= this.connRefill) {
      this.writeFrame(T.WINDOW_UPDATE, 0, 0, u32(this.connRecvUnacked));
      this.connRecvUnacked = 0;
    }
    if (!s || s.closed) return;
    s.recvUnacked += len;
    const end = (this.fFlags & END_STREAM) !== 0;
    if (!end && s.recvUnacked >= WINDOW_REFILL) {
      this.writeFrame(T.WINDOW_UPDATE, 0, s.id, u32(s.recvUnacked));
      s.recvUnacked = 0;
    }
    if (end) this.remoteEnd(s);
  }

  private remoteEnd(s: H2Stream): void {
    if (s.remoteEnded) return;
    s.remoteEnded = true;
    s.emit('end');
    this.maybeClose(s);
  }

  private onFrame(p: Buffer): void {
    const sid = this.fSid,
      flags = this.fFlags;
    switch (this.fType) {
      case T.HEADERS: {
        if (sid === 0) throw new ProtocolError('HEADERS on stream 0');
        let off = 0,
          end = p.length;
        if (flags & PADDED) {
          const pad = p[0];
          off = 1;
          end -= pad;
        }
        if (flags & PRIORITY) off += 5;
        if (off > end) throw new ProtocolError('HEADERS padding or priority longer than the frame');
        this.headerBlock = { sid, parts: [p.subarray(off, end)], size: end - off, endStream: (flags & END_STREAM) !== 0 };
        if (flags & END_HEADERS) this.endHeaders();
        return;
      }
      case T.CONTINUATION: {
        const hb = this.headerBlock;
        if (!hb || hb.sid !== sid) throw new ProtocolError('CONTINUATION without its HEADERS');
        hb.parts.push(p);
        hb.size += p.length;
        if (hb.size > MAX_HEADER_BLOCK) throw new ProtocolError('header block too large');
        if (flags & END_HEADERS) this.endHeaders();
        return;
      }
      case T.SETTINGS:
        if (sid !== 0) throw new ProtocolError('SETTINGS on a stream');
        if (flags & ACK) return;
        if (p.length % 6 !== 0) throw new ProtocolError('SETTINGS length not a multiple of 6', H2Error.FRAME_SIZE_ERROR);
        for (let next = 0; next < p.length; next += 6) this.setting(p.readUInt16BE(next), p.readUInt32BE(next + 2));
        this.writeFrame(T.SETTINGS, ACK, 0);
        for (const s of this.streams.values()) this.pump(s);
        return;
      case T.WINDOW_UPDATE: {
        if (p.length !== 4) throw new ProtocolError('WINDOW_UPDATE of the wrong size', H2Error.FRAME_SIZE_ERROR);
        const inc = p.readUInt32BE(0) & 0x7fffffff;
        if (sid === 0) {
          if (inc === 0) throw new ProtocolError('connection WINDOW_UPDATE of 0');
          this.connSendWindow += inc;
          if (this.connSendWindow > MAX_WINDOW) throw new ProtocolError('connection send window over 2^31-1', H2Error.FLOW_CONTROL_ERROR);
          const waiting = [...this.blocked];
          this.blocked.clear();
          for (const s of waiting) this.pump(s);
        } else {
          const s = this.streams.get(sid);
          if (!s) return;
          if (inc === 0) return void s.reset(H2Error.PROTOCOL_ERROR);
          s.sendWindow += inc;
          if (s.sendWindow > MAX_WINDOW) return void s.reset(H2Error.FLOW_CONTROL_ERROR);
          this.pump(s);
        }
        return;
      }
      case T.PING:
        if (p.length !== 8) throw new ProtocolError('PING of the wrong size', H2Error.FRAME_SIZE_ERROR);
        if (!(flags & ACK)) this.writeFrame(T.PING, ACK, 0, p);
        return;
      case T.RST_STREAM: {
        if (p.length !== 4) throw new ProtocolError('RST_STREAM of the wrong size', H2Error.FRAME_SIZE_ERROR);
        const s = this.streams.get(sid);
        if (s) this.closeStream(s, p.readUInt32BE(0));
        return;
      }
      case T.GOAWAY: {
        if (p.length < 8) throw new ProtocolError('GOAWAY too short', H2Error.FRAME_SIZE_ERROR);
        const last = p.readUInt32BE(0) & 0x7fffffff,
          code = p.readUInt32BE(4);
        this.goawayReceived = true;
        this.emit('goaway', code);
        // Our streams the peer will not process are refused; the rest go on.
        for (const s of [...this.streams.values()]) if (s.id > last && (s.id % 2 === 1) === this.isClient) this.closeStream(s, H2Error.REFUSED_STREAM);
        if (code !== H2Error.NO_ERROR) for (const s of [...this.streams.values()]) this.closeStream(s, code);
        if (this.streams.size === 0) this.finishClose();
        return;
      }
      case T.PUSH_PROMISE:
        throw new ProtocolError('PUSH_PROMISE (push is disabled)');
      default:
        return; // PRIORITY, unknown types: ignored
    }
  }

  private setting(id: number, v: number): void {
    switch (id) {
      case S.INITIAL_WINDOW_SIZE: {
        if (v > MAX_WINDOW) throw new ProtocolError('INITIAL_WINDOW_SIZE over 2^31-1', H2Error.FLOW_CONTROL_ERROR);
        const delta = v - this.peerInitialWindow;
        this.peerInitialWindow = v;
        for (const s of this.streams.values()) s.sendWindow += delta;
        return;
      }
      case S.MAX_FRAME_SIZE:
        if (v < 16384 || v > 16777215) throw new ProtocolError(`MAX_FRAME_SIZE ${v} out of range`);
        this.peerMaxFrame = v;
        return;
      case S.ENABLE_PUSH:
        if (v > 1) throw new ProtocolError('ENABLE_PUSH not 0 or 1');
        return;
      default:
        return; // HEADER_TABLE_SIZE: our encoder uses no dynamic table; others: advisory
    }
  }

  private endHeaders(): void {
    const hb = this.headerBlock!;
    this.headerBlock = null;
    let headers: HeaderList;
    try {
      headers = this.decoder.decode(hb.parts.length === 1 ? hb.parts[0] : Buffer.concat(hb.parts));
    } catch (e) {
      throw new ProtocolError(`header block: ${(e as Error).message}`, H2Error.COMPRESSION_ERROR);
    }
    let s = this.streams.get(hb.sid);
    if (!s) {
      if (this.isClient || hb.sid % 2 === 0 || hb.sid <= this.lastPeerStream) return; // a closed stream's late headers
      this.lastPeerStream = hb.sid;
      if (this.goawaySent) {
        this.writeFrame(T.RST_STREAM, 0, hb.sid, u32(H2Error.REFUSED_STREAM));
        return;
      }
      s = new H2Stream(this, hb.sid, this.peerInitialWindow);
      this.streams.set(s.id, s);
      this.emit('stream', s, headers);
    } else s.emit('headers', headers, hb.endStream);
    if (hb.endStream) this.remoteEnd(s);
  }
}

/** The value of `name` in a header list (the first one). */
export function header(h: HeaderList, name: string): string | undefined {
  for (const [n, v] of h) if (n === name) return v;
  return undefined;
}
