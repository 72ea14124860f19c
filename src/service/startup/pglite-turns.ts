/**
 * Makes @electric-sql/pglite-socket safe for more than one client connection.
 *
 * PGlite is ONE PostgreSQL backend (single-user mode). PGLiteSocketServer (0.2.x) lets
 * several sockets share it through a queue of single wire-protocol messages: one
 * message at a time, and while `db.isInTransaction()` is true only the connection that
 * ran the last message is served (so BEGIN ... COMMIT of one client is never mixed with
 * another's statements). That check misses the other state that spans several messages:
 * an extended-protocol query (Parse, Bind, Describe, Execute, ..., Sync) outside an
 * explicit transaction, and COPY FROM STDIN. When one client's messages arrive in more
 * than one TCP read (any parameter over ~64 KiB), another client's Parse can run between
 * them and replace the unnamed statement: the first client's Bind then binds to the other
 * client's SQL (seen here: `invalid input syntax for type integer: "xxx..."` for a
 * `length($1::text)` query). Measured with pglite-socket 0.2.17 and `pg` 8.
 *
 * The fix, without patching the package: hand the server a PGlite whose
 * `isInTransaction()` is also true while the last message left its connection in the
 * middle of a turn. A turn ends when the backend sends ReadyForQuery ('Z'), which it does
 * after Sync, after a simple Query, and after start-up; a message whose response does not
 * end with ReadyForQuery (Parse, Bind, Execute, Flush, a COPY FROM STDIN that now waits
 * for data) leaves the turn open, and the server's own pinning then serves only that
 * connection until its turn ends. When a pinned connection goes away mid-turn, the server
 * calls `db.exec('ROLLBACK')`; before that, the open turn is aborted as a backend would
 * abort a lost connection's (CopyFail, an Execute that fails, Sync: the implicit
 * transaction rolls back instead of being committed by the Sync).
 */
import type { PGlite } from '@electric-sql/pglite';

const READY_FOR_QUERY = 0x5a; // 'Z'
const TERMINATE = 0x58; // 'X'

/**
 * Follows the framing of the backend's byte stream (type byte, int32 length including
 * itself, body) across chunks and remembers the type of the last complete message.
 */
export class BackendMessageScanner {
  private readonly header = Buffer.alloc(5);
  private headerFill = 0;
  private remaining = 0;
  private currentType = 0;
  private lastType = 0;

  push(chunk: Uint8Array): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        i += n;
        this.remaining -= n;
        if (this.remaining === 0) this.lastType = this.currentType;
        continue;
      }
      this.header[this.headerFill++] = chunk[i++]!;
      if (this.headerFill === 5) {
        this.headerFill = 0;
        this.currentType = this.header[0]!;
        this.remaining = Math.max(0, this.header.readInt32BE(1) - 4);
        if (this.remaining === 0) this.lastType = this.currentType;
      }
    }
  }

  /** Whether the stream so far ends exactly at the end of a ReadyForQuery message. */
  endsWithReadyForQuery(): boolean {
    return this.headerFill === 0 && this.remaining === 0 && this.lastType === READY_FOR_QUERY;
  }
}

function frontendMessage(type: string, body: Buffer = Buffer.alloc(0)): Uint8Array {
  const out = Buffer.alloc(5 + body.length);
  out.write(type, 0, 'latin1');
  out.writeInt32BE(4 + body.length, 1);
  body.copy(out, 5);
  return new Uint8Array(out);
}

/** CopyFail (ends a COPY FROM STDIN; ignored outside one), Execute of a portal that does
 * not exist (an error: the implicit transaction is aborted), Sync (ends the turn). */
const ABORT_TURN: readonly Uint8Array[] = [
  frontendMessage('f', Buffer.from('connection closed\0', 'latin1')),
  frontendMessage('E', Buffer.concat([Buffer.from('tas_no_such_portal\0', 'latin1'), Buffer.alloc(4)])),
  frontendMessage('S'),
];

export interface TurnSerialisedPGlite {
  /** The PGlite to give PGLiteSocketServer (a proxy of the real one). */
  readonly db: PGlite;
  /** Whether the last message left its connection in the middle of a turn. */
  readonly midTurn: () => boolean;
}

/** Wraps `db` as described above; the real instance stays usable (close it, not the proxy). */
export function serialiseProtocolTurns(db: PGlite): TurnSerialisedPGlite {
  let midTurn = false;

  const execProtocolRawStream: PGlite['execProtocolRawStream'] = async (message, options) => {
    const scanner = new BackendMessageScanner();
    await db.execProtocolRawStream(message, {
      ...options,
      onRawData: (data) => {
        scanner.push(data);
        options.onRawData(data);
      },
    });
    const terminate = message.length === 5 && message[0] === TERMINATE;
    midTurn = !terminate && !scanner.endsWithReadyForQuery();
  };

  const isInTransaction: PGlite['isInTransaction'] = () => midTurn || db.isInTransaction();

  const exec: PGlite['exec'] = async (query, options) => {
    if (midTurn) {
      await db.runExclusive(async () => {
        for (const message of ABORT_TURN) await db.execProtocolRaw(message);
      });
      midTurn = false;
    }
    return db.exec(query, options);
  };

  const overrides: Partial<Record<PropertyKey, unknown>> = { execProtocolRawStream, isInTransaction, exec };
  const proxy = new Proxy(db, {
    get(target, prop) {
      if (Object.prototype.hasOwnProperty.call(overrides, prop)) return overrides[prop];
      // PGlite keeps its state in #private fields: its methods must run with `this` the
      // real instance, never the proxy.
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { db: proxy, midTurn: () => midTurn };
}
