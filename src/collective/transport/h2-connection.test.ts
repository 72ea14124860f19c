/**
 * Our HTTP/2 (h2-connection.ts, under grpc-h2.ts) against Node's own (nghttp2): padded
 * DATA frames, the default 64 KiB flow-control windows, 16 KiB frames, messages of several
 * megabytes (read straight into the receiver's buffers), trailers, resets.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { dial, GrpcH2Server, MessageReader, type GrpcCall } from './grpc-h2.js';

const PATH = '/test.Echo/Exchange';
const alloc = (n: number) => Buffer.allocUnsafe(n);

function grpcMessage(b: Buffer): Buffer {
  const p = Buffer.alloc(5);
  p.writeUInt32BE(b.length, 1);
  return Buffer.concat([p, b]);
}

/** Messages a call receives, until its status. */
function collect(call: GrpcCall): Promise<{ messages: Buffer[]; status: { code: number; details: string } }> {
  const messages: Buffer[] = [];
  call.on('data', (m: Buffer) => messages.push(Buffer.from(m)));
  return new Promise((resolve, reject) => {
    call.on('status', (status: { code: number; details: string }) => resolve({ messages, status }));
    call.on('error', (e: Error & { code?: number }) => (e.code !== undefined ? undefined : reject(e)));
  });
}

const cleanup: Array<() => void> = [];
after(() => cleanup.forEach((f) => f()));

describe('HTTP/2 interop with node:http2', () => {
  it('our client: large messages both ways through padded frames and 64 KiB windows, status from trailers', async () => {
    // A node:http2 gRPC-style echo server with default settings (64 KiB windows, 16 KiB frames) and maximal padding.
    const srv = http2.createServer({ paddingStrategy: http2.constants.PADDING_STRATEGY_MAX });
    srv.on('stream', (stream, headers) => {
      assert.equal(headers[':path'], PATH);
      assert.equal(headers['content-type'], 'application/grpc');
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.pipe(stream); // echo the length-prefixed messages as they come
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanup.push(() => srv.close());
    const { call, close } = dial(`127.0.0.1:${(srv.address() as AddressInfo).port}`, PATH, alloc);
    cleanup.push(close);
    const sent = [randomBytes(3 << 20), randomBytes(10), Buffer.alloc(0), randomBytes(200_000)];
    const got = collect(call);
    const written = sent.map((m) => new Promise<void>((res, rej) => call.writeMessage([m.subarray(0, 7), m.subarray(7)], (e) => (e ? rej(e) : res()))));
    await Promise.all(written);
    call.end();
    const { messages, status } = await got;
    assert.equal(status.code, 0);
    assert.equal(messages.length, sent.length);
    messages.forEach((m, i) => assert.ok(m.equals(sent[i]), `message ${i}`));
    // The large messages were read from the socket straight into their buffers, not copied
    // from a read buffer (all but message starts, frame headers and padding).
    const total = sent.reduce((s, m) => s + m.length, 0);
    assert.ok(call.stream.conn.bytesReadDirect > 0.9 * total, `${call.stream.conn.bytesReadDirect} of ${total} bytes read in place`);
  });

  it('our client with a bounded receive window: the server may send only that much at once, in quarter-window frames, and every byte arrives', { timeout: 15_000 }, async () => {
    const srv = http2.createServer();
    const seen: { maxFrame?: number; window?: number } = {};
    const body = randomBytes(2 << 20);
    srv.on('stream', (stream) => {
      // What our client told this server: its largest frame and the connection's window.
      seen.maxFrame = stream.session!.remoteSettings.maxFrameSize;
      seen.window = stream.session!.state.remoteWindowSize;
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(grpcMessage(body));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanup.push(() => srv.close());
    const port = (srv.address() as AddressInfo).port;
    const { call, close } = dial(`127.0.0.1:${port}`, PATH, alloc, undefined, { receiveWindow: 128 << 10 });
    cleanup.push(close);
    const got = collect(call);
    call.end();
    const { messages, status } = await got;
    assert.equal(status.code, 0);
    assert.equal(seen.maxFrame, 32 << 10);
    assert.ok(seen.window !== undefined && seen.window <= 128 << 10, `connection window ${seen.window}`);
    assert.equal(messages.length, 1);
    assert.ok(messages[0]!.equals(body));
    // The smallest window, HTTP/2's initial one: no window update is sent (an increment of
    // 0 would be a protocol error) and the message still arrives, in 16 KiB frames.
    const smallest = dial(`127.0.0.1:${port}`, PATH, alloc, undefined, { receiveWindow: 1 });
    cleanup.push(smallest.close);
    const again = collect(smallest.call);
    smallest.call.end();
    const second = await again;
    assert.equal(second.status.code, 0);
    assert.equal(seen.maxFrame, 16 << 10);
    assert.ok(second.messages[0]!.equals(body));
  });

  it('node:http2 client against our server: echo of large messages, trailers, and UNIMPLEMENTED for another path', async () => {
    const server = await GrpcH2Server.listen(PATH, alloc, { host: '127.0.0.1', port: 0 });
    cleanup.push(() => server.forceShutdown());
    server.on('call', (call: GrpcCall) => {
      call.on('data', (m: Buffer) => call.writeMessage([Buffer.from(m)]));
      call.on('end', () => call.end());
    });
    const session = http2.connect(`http://127.0.0.1:${server.port}`, { paddingStrategy: http2.constants.PADDING_STRATEGY_MAX });
    cleanup.push(() => session.destroy());
    const exchange = (path: string, body: Buffer) =>
      new Promise<{ body: Buffer; trailers: http2.IncomingHttpHeaders; headers: http2.IncomingHttpHeaders }>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
        const chunks: Buffer[] = [];
        let headers: http2.IncomingHttpHeaders = {};
        let trailers: http2.IncomingHttpHeaders = {};
        req.on('response', (h) => (headers = h));
        req.on('trailers', (t) => (trailers = t));
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => resolve({ body: Buffer.concat(chunks), trailers, headers }));
        req.on('error', reject);
        req.end(body);
      });
    const a = randomBytes(2 << 20),
      b = randomBytes(1000);
    const r = await exchange(PATH, Buffer.concat([grpcMessage(a), grpcMessage(b)]));
    assert.equal(r.trailers['grpc-status'], '0');
    assert.ok(r.body.equals(Buffer.concat([grpcMessage(a), grpcMessage(b)])));
    const other = await exchange('/no.Such/Method', grpcMessage(b));
    assert.equal(other.headers['grpc-status'], '12'); // trailers-only answer
    assert.equal(other.body.length, 0);
  });

  it('a reset stream fails our client call with its code; a dead server fails it as UNAVAILABLE', async () => {
    const srv = http2.createServer();
    srv.on('stream', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
      stream.once('data', () => stream.close(http2.constants.NGHTTP2_CANCEL));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanup.push(() => srv.close());
    const addr = `127.0.0.1:${(srv.address() as AddressInfo).port}`;
    const { call, close } = dial(addr, PATH, alloc);
    cleanup.push(close);
    const failed = new Promise<{ code: number; details: string }>((r) => call.on('error', r));
    call.writeMessage([Buffer.from('x')]);
    assert.equal((await failed).code, 1); // CANCELLED

    const dead = dial('127.0.0.1:1', PATH, alloc);
    cleanup.push(dead.close);
    const e = await new Promise<{ code: number; details: string }>((r) => dead.call.on('error', r));
    assert.equal(e.code, 14);
    assert.match(e.details, /ECONNREFUSED/u);
  });

  it('MessageReader: bytes written to its targets count as received, mixed with pushed chunks', () => {
    const got: Buffer[] = [];
    const r = new MessageReader(alloc, (m) => got.push(Buffer.from(m)));
    const body = randomBytes(100_000);
    const wire = Buffer.concat([grpcMessage(body), grpcMessage(Buffer.from('tail'))]);
    r.push(wire.subarray(0, 10));
    let i = 10;
    // As a socket would: read straight into the target while there is one.
    for (let t = r.target(30_000); t; t = r.target(30_000)) {
      const n = Math.min(t.byteLength, 30_000);
      wire.copy(t, 0, i, i + n);
      i += n;
      r.advance(n);
    }
    r.push(wire.subarray(i));
    assert.equal(got.length, 2);
    assert.ok(got[0].equals(body));
    assert.equal(got[1].toString(), 'tail');
  });
});
