/**
 * Committed changes of jobs, workers and tenants, as PostgreSQL announces them: the
 * triggers of migration 20261222000000_change_announcements NOTIFY on `CHANNEL` with
 * "<schema> <topic>" (`job:<id>` for a job row, `pool` for workers, `tenants`), and this
 * feed LISTENs on its own connection and passes its schema's topics on. The API's long
 * polls use it to answer when a change commits, whichever process wrote it (the
 * scheduler's progress, a worker's heartbeat), rather than at their next periodic read.
 *
 * While the connection is down the feed is not `live` (pollers fall back to reading
 * periodically) and it reconnects with backoff; when it is back it reports `null`
 * (changes may have been missed). A ping every `pingMs` finds a connection that died
 * silently.
 */
import pg from 'pg';
import { resolveDatabaseUrl } from './url.js';

export const CHANGE_CHANNEL = 'tas_changes';

/** Where announced changes are heard: `changed(topic)` for each, `changed(null)` when some may have been missed. */
export interface ChangeSubscriptions {
  subscribe(changed: (topic: string | null) => void): () => void;
}

export interface ChangeFeedOptions {
  /** First reconnect delay, doubled up to `maxRetryMs`. @defaultValue 100 */
  readonly retryMs?: number;
  /** @defaultValue 5000 */
  readonly maxRetryMs?: number;
  /** How often the connection is checked, and how long a ping may take. @defaultValue 5000 */
  readonly pingMs?: number;
  readonly log?: (line: string) => void;
}

export class ChangeFeed implements ChangeSubscriptions {
  private client: pg.Client | null = null;
  private readonly listeners = new Set<(topic: string | null) => void>();
  private readonly schema: string;
  private readonly connectionString: string;
  private retryMs: number;
  private retryTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private closed = false;
  /** An outage is logged once, when it starts, and once when it ends. */
  private down = false;
  private listening = false;

  constructor(
    databaseUrl: string,
    private readonly options: ChangeFeedOptions = {},
  ) {
    const target = resolveDatabaseUrl(databaseUrl);
    this.schema = target.schema;
    this.connectionString = target.connectionString;
    this.retryMs = options.retryMs ?? 100;
  }

  /** True while LISTEN is in effect on a connection believed alive. */
  get live(): boolean {
    return this.listening;
  }

  subscribe(changed: (topic: string | null) => void): () => void {
    this.listeners.add(changed);
    return () => this.listeners.delete(changed);
  }

  /** Connects and listens; resolves once live or after the first failure (it keeps retrying). */
  async start(): Promise<void> {
    await this.connect();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.listening = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
  }

  private emit(topic: string | null): void {
    for (const changed of [...this.listeners]) changed(topic);
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.connectionString, keepAlive: true });
    this.client = client;
    client.on('notification', (msg) => {
      if (msg.channel !== CHANGE_CHANNEL || msg.payload === undefined) return;
      const space = msg.payload.indexOf(' ');
      if (space > 0 && msg.payload.slice(0, space) === this.schema) this.emit(msg.payload.slice(space + 1));
    });
    client.on('error', (err) => this.lost(client, err));
    client.on('end', () => this.lost(client, new Error('connection ended')));
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANGE_CHANNEL}`);
    } catch (err) {
      this.lost(client, err as Error);
      return;
    }
    if (this.client !== client) return;
    this.listening = true;
    this.retryMs = this.options.retryMs ?? 100;
    if (this.down) this.options.log?.('change feed: listening again');
    this.down = false;
    // Whatever committed while not listening went unannounced.
    this.emit(null);
    const pingMs = this.options.pingMs ?? 5000;
    this.pingTimer = setInterval(() => {
      const timeout = setTimeout(() => this.lost(client, new Error(`no answer to a ping within ${pingMs} ms`)), pingMs);
      client.query('SELECT 1').then(
        () => clearTimeout(timeout),
        (err: Error) => {
          clearTimeout(timeout);
          this.lost(client, err);
        },
      );
    }, pingMs);
    this.pingTimer.unref();
  }

  /** `client` failed: not live until a new connection listens. */
  private lost(client: pg.Client, err: Error): void {
    if (this.client !== client || this.closed) return;
    this.client = null;
    this.listening = false;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    client.end().catch(() => undefined);
    if (!this.down) this.options.log?.(`change feed: ${err.message}; long polls fall back to periodic reads until it listens again (retrying)`);
    this.down = true;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.connect();
    }, this.retryMs);
    this.retryTimer.unref();
    this.retryMs = Math.min(this.retryMs * 2, this.options.maxRetryMs ?? 5000);
  }
}
