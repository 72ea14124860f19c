// The turn tracking that keeps pglite-socket's connections from interleaving
// extended-protocol messages: the backend stream scanner, and the wrapper against a
// real (in-memory) PGlite.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { PGlite } from '@electric-sql/pglite';
import { BackendMessageScanner, serialiseProtocolTurns } from './pglite-turns.js';

function message(type: string, body: Buffer = Buffer.alloc(0)): Buffer {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return out;
}
const cstr = (s: string) => Buffer.from(`${s}\0`, 'utf8');
const int16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeInt16BE(n);
  return b;
};
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const parse = (sql: string) => message('P', Buffer.concat([cstr(''), cstr(sql), int16(0)]));
const bind = () => message('B', Buffer.concat([cstr(''), cstr(''), int16(0), int16(0), int16(0)]));
const execute = () => message('E', Buffer.concat([cstr(''), int32(0)]));
const sync = () => message('S');
const readyForQuery = (status: string) => Buffer.concat([message('Z', Buffer.from(status, 'latin1'))]);

describe('BackendMessageScanner', () => {
  test('a stream ending with ReadyForQuery, whole or cut anywhere, ends the turn', () => {
    const stream = Buffer.concat([message('1'), message('2'), message('C', cstr('INSERT 0 1')), readyForQuery('I')]);
    for (let cut = 0; cut <= stream.length; cut++) {
      const s = new BackendMessageScanner();
      s.push(stream.subarray(0, cut));
      s.push(stream.subarray(cut));
      assert.equal(s.endsWithReadyForQuery(), true, `cut at ${cut}`);
    }
  });

  test('responses without a final ReadyForQuery leave the turn open', () => {
    const cases: Buffer[] = [
      Buffer.alloc(0), // Flush, Terminate: no answer
      message('1'), // ParseComplete
      Buffer.concat([readyForQuery('I'), message('1')]), // Z, then more
      readyForQuery('I').subarray(0, 5), // a Z whose body has not arrived
      message('G', Buffer.concat([Buffer.from([0]), int16(0)])), // CopyInResponse
      // a DataRow whose bytes look like ReadyForQuery at the end
      message('D', Buffer.concat([int16(1), int32(6), readyForQuery('I')])),
    ];
    for (const [i, bytes] of cases.entries()) {
      const s = new BackendMessageScanner();
      s.push(bytes);
      assert.equal(s.endsWithReadyForQuery(), false, `case ${i}`);
    }
  });
});

describe('serialiseProtocolTurns', () => {
  let db: PGlite;
  before(async () => {
    db = await PGlite.create();
    await db.exec('CREATE TABLE t (x int)');
  });
  after(async () => {
    await db.close();
  });

  async function send(target: PGlite, bytes: Buffer): Promise<void> {
    await target.execProtocolRawStream(new Uint8Array(bytes), { onRawData: () => undefined });
  }

  test('a turn is open from the first extended-protocol message to Sync', async () => {
    const wrapped = serialiseProtocolTurns(db);
    assert.equal(wrapped.db.isInTransaction(), false);
    await send(wrapped.db, parse('SELECT 1'));
    assert.equal(wrapped.midTurn(), true);
    assert.equal(wrapped.db.isInTransaction(), true, 'what pglite-socket pins the connection by');
    await send(wrapped.db, bind());
    await send(wrapped.db, execute());
    assert.equal(wrapped.db.isInTransaction(), true);
    await send(wrapped.db, sync());
    assert.equal(wrapped.midTurn(), false);
    assert.equal(wrapped.db.isInTransaction(), false);
  });

  test('the rollback of a connection lost mid-turn aborts the turn instead of committing it', async () => {
    const wrapped = serialiseProtocolTurns(db);
    await send(wrapped.db, parse('INSERT INTO t VALUES (42)'));
    await send(wrapped.db, bind());
    await send(wrapped.db, execute());
    assert.equal(wrapped.db.isInTransaction(), true);
    // What pglite-socket does when the pinned connection goes away.
    await wrapped.db.exec('ROLLBACK');
    assert.equal(wrapped.midTurn(), false);
    assert.equal(db.isInTransaction(), false);
    const rows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM t WHERE x = 42');
    assert.equal(rows.rows[0]?.n, 0, 'a Sync alone would have committed the INSERT');
  });

  test('other members are the real instance', () => {
    const wrapped = serialiseProtocolTurns(db);
    assert.equal(wrapped.db.closed, false);
    assert.equal(wrapped.db.waitReady, db.waitReady);
  });
});
