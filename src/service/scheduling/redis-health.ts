/**
 * Whether Redis answers, as one connection sees it, with one log line per change of
 * state instead of one per reconnection attempt: ioredis retries a lost connection in the
 * background and reports every failed attempt as an 'error' event, which would flood the
 * log (dozens of ECONNREFUSED a minute). Who needs Redis asks `up` before depending on
 * it (a submission answers 503 at once rather than hanging), and `onUp` runs when it
 * comes back (the scheduler re-queues every unfinished job then: a Redis that restarted
 * empty loses none).
 */
import type { Redis } from 'ioredis';

export class RedisHealth {
  private state: 'connecting' | 'up' | 'down';
  private since = Date.now();
  private lastError: string | null = null;
  private readonly upListeners: Array<() => void> = [];
  private closed = false;

  constructor(
    private readonly client: Redis,
    private readonly log: (message: string) => void = () => undefined,
  ) {
    this.state = client.status === 'ready' ? 'up' : 'connecting';
    client.on('ready', () => this.set('up'));
    client.on('error', (e: Error) => {
      this.lastError = e.message;
    });
    // 'close' on every lost connection (then ioredis reconnects); 'end' when it gives up.
    client.on('close', () => this.set('down'));
    client.on('end', () => this.set('down'));
  }

  /** False only while Redis is known to be unreachable (not while first connecting). */
  get up(): boolean {
    return this.state !== 'down';
  }

  /** Why Redis is down, for error messages. */
  get reason(): string {
    return this.lastError ?? 'connection lost';
  }

  /** `fn` runs each time Redis answers again after being down. */
  onUp(fn: () => void): void {
    this.upListeners.push(fn);
  }

  /** The service is stopping and closes its connections: nothing more to report. */
  close(): void {
    this.closed = true;
  }

  private set(next: 'up' | 'down'): void {
    if (next === this.state || this.closed) return;
    const was = this.state;
    const seconds = ((Date.now() - this.since) / 1000).toFixed(1);
    this.state = next;
    this.since = Date.now();
    if (next === 'down') {
      this.log(`redis: unreachable (${this.lastError ?? 'connection closed'}); retrying in the background, job submissions answer 503 meanwhile`);
      return;
    }
    if (was === 'down') {
      this.log(`redis: reachable again after ${seconds} s`);
      for (const fn of this.upListeners) fn();
    }
  }
}

/** Rejects with `error()` when `p` takes longer than `ms` (the promise itself is left to settle). */
export function within<T>(p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(error()), ms)))]).finally(() => clearTimeout(timer));
}
