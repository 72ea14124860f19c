/**
 * The service's database when DATABASE_URL is unset: PostgreSQL 18 compiled to WASM
 * (PGlite), its files under `<dataDir>/pglite/` so jobs survive restarts, served over
 * the PostgreSQL wire protocol on loopback by @electric-sql/pglite-socket. Everything
 * above it (the Prisma client over `pg`, the migrator, the job repository) talks to it
 * exactly as to a real server through the returned URL.
 *
 * What differs from a real server (pglite-socket 0.2.17, read in its source and measured):
 *
 * - ONE backend for every connection. The socket server queues wire messages from all
 *   connections and runs them one at a time; while a connection is inside a transaction
 *   (or, with `pglite-turns.ts`, in the middle of an extended-protocol query) only that
 *   connection is served, so transactions of different connections never interleave:
 *   they run one after the other. A row lock (SELECT ... FOR UPDATE) therefore never
 *   waits, and a unique-index race is decided by whichever transaction runs first.
 * - Session state is shared by all connections: SET, prepared statements, and advisory
 *   locks. pg_advisory_lock taken by one connection is held by "all" of them, so it does
 *   not exclude a second migrator inside this process: two concurrent migrate() calls
 *   both proceed and the second fails (`type "JobStatus" already exists`, rolled back).
 *   The pid lock below excludes other processes, and the service migrates once.
 * - Start-up options are ignored (`options=-c search_path=...`, which `?schema=` becomes):
 *   the tables live in `public`, and the URL carries no schema. Do not add one: Prisma
 *   would qualify its queries with it while raw SQL and the migrator stay in `public`.
 * - No idle-in-transaction timeout: a client that opens a transaction and stops talking
 *   holds up every other connection until it commits, rolls back or disconnects.
 *
 * Pool size: `maxConnections` (1) is what the service passes to `createPrismaClient`.
 * More connections buy nothing (one backend runs one message at a time) and one
 * connection keeps Prisma's traffic off the shared-session caveats. The server itself
 * accepts `serverConnections` (default 16) so the migrator and a `psql` can connect next
 * to the pool. With pool size 1, code that awaits the outer client inside an interactive
 * `$transaction` callback (instead of using `tx`) waits for the only connection, which
 * the transaction holds, until Prisma's transaction timeout (5 s) rolls it back; the
 * repository never does that. (With a larger pool the same code waits just as long: the
 * second connection's query is queued behind the open transaction in the socket server.)
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import { ServiceStartError } from './start-errors.js';
import { serialiseProtocolTurns } from './pglite-turns.js';
import { acquirePidLock, type PidLock } from './pid-lock.js';

/** The Prisma pool size to use against the embedded database (see the module comment). */
export const EMBEDDED_POOL_SIZE = 1;
/** Client connections the socket server accepts at once. */
export const DEFAULT_SERVER_CONNECTIONS = 16;

export interface EmbeddedPostgresOptions {
  /** The service's data directory; the database lives in `<dataDir>/pglite/`. */
  readonly dataDir: string;
  /**
   * Address to listen on. There is no authentication (any user name is accepted), so
   * keep it on loopback. @defaultValue '127.0.0.1'
   */
  readonly host?: string;
  /** TCP port; 0 picks a free one. @defaultValue 0 */
  readonly port?: number;
  /** Client connections accepted at once (more are refused). @defaultValue 16 */
  readonly serverConnections?: number;
}

export interface EmbeddedPostgres {
  /** `postgresql://postgres@127.0.0.1:<port>/postgres` for createPrismaClient and migrate. */
  readonly url: string;
  /** The Prisma pool size to use: `createPrismaClient(url, { maxConnections })`. */
  readonly maxConnections: number;
  readonly port: number;
  /** Where the database files are: `<dataDir>/pglite`. */
  readonly dataPath: string;
  /** Closes client connections, then the database (a checkpoint), and frees the directory. */
  stop(): Promise<void>;
}

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const host = opts.host ?? '127.0.0.1';
  const dataPath = join(resolve(opts.dataDir), 'pglite');
  mkdirSync(dataPath, { recursive: true });
  const lock = acquirePidLock(join(resolve(opts.dataDir), 'pglite.lock'), `the embedded database ${dataPath}`);

  let db: PGlite | undefined;
  let server: PGLiteSocketServer | undefined;
  try {
    try {
      db = await PGlite.create({ dataDir: dataPath });
    } catch (err) {
      throw new ServiceStartError(
        'TAS_ERR_EMBEDDED_POSTGRES_FAILED',
        `the embedded database in ${dataPath} did not open: ${errorMessage(err)} ` +
          `(a directory written by another PostgreSQL version or a damaged one: move it away, or set DATABASE_URL)`,
        { cause: err },
      );
    }
    server = new PGLiteSocketServer({
      db: serialiseProtocolTurns(db).db,
      host,
      port: opts.port ?? 0,
      maxConnections: opts.serverConnections ?? DEFAULT_SERVER_CONNECTIONS,
    });
    try {
      await server.start();
    } catch (err) {
      throw new ServiceStartError(
        'TAS_ERR_EMBEDDED_POSTGRES_FAILED',
        `the embedded database could not listen on ${host}:${opts.port ?? 0}: ${errorMessage(err)}`,
        { cause: err },
      );
    }
    const port = portOf(server);
    return {
      url: `postgresql://postgres@${urlHost(host)}:${port}/postgres`,
      maxConnections: EMBEDDED_POOL_SIZE,
      port,
      dataPath,
      stop: once(() => shutdown(server, db, lock)),
    };
  } catch (err) {
    await shutdown(server, db, lock).catch(() => undefined);
    throw err;
  }
}

async function shutdown(server: PGLiteSocketServer | undefined, db: PGlite | undefined, lock: PidLock): Promise<void> {
  try {
    // Detaching a connection that is inside a transaction rolls it back on the database,
    // so the sockets go first, then the database.
    await server?.stop();
    // stop() starts each connection's detach without awaiting it; one more turn of the
    // event loop lets their rollbacks reach the database before it closes.
    await new Promise<void>((done) => setImmediate(done));
    if (db && !db.closed) await db.close();
  } finally {
    lock.release();
  }
}

/** The port the server listens on (the server only exposes it as "host:port"). */
function portOf(server: PGLiteSocketServer): number {
  const conn = server.getServerConn();
  const port = Number(conn.slice(conn.lastIndexOf(':') + 1));
  if (!Number.isInteger(port) || port <= 0) throw new Error(`unexpected pglite-socket address ${conn}`);
  return port;
}

/** The host to put in a client URL: wildcards become loopback, IPv6 gets brackets. */
function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let done: Promise<void> | undefined;
  return () => (done ??= fn());
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
