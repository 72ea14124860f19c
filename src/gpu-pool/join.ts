/**
 * A worker's membership of a service's pool when it joins by itself (`tas worker --join
 * URL`): it asks the service to add it at the address it advertises (`POST /v1/workers`),
 * then repeats that as its heartbeat at the interval the service gives; a worker whose
 * heartbeats stop leaves the pool after the service's bound. Stopping says goodbye
 * (`DELETE /v1/workers/:address`), so the pool drops it at once.
 *
 * The service may not be up yet, or may restart: joining and heartbeats are retried
 * until they succeed, with one log line per change (not per try). A token the service
 * refuses (401/403) is a configuration error: `joined` rejects and the worker exits.
 */
import { setTimeout as delay } from 'node:timers/promises';

export interface JoinOptions {
  /** The service's REST base URL. */
  readonly url: string;
  /** host:port where the service and the other ranks reach this worker. */
  readonly address: string;
  /** TAS_WORKER_TOKEN; null with auth off. */
  readonly token: string | null;
  readonly log: (message: string) => void;
  /** Longest wait between two tries while the service does not answer. @defaultValue 5000 */
  readonly maxRetryMs?: number;
}

interface JoinAnswer {
  joined: boolean;
  heartbeat_ms: number;
  leave_after_ms: number;
}

export class JoinRefused extends Error {}

export class PoolMembership {
  private readonly base: string;
  private readonly stopping = new AbortController();
  private loop: Promise<void> | null = null;
  /** Resolves at the first successful join; rejects when the service refuses the token. */
  readonly joined: Promise<JoinAnswer>;

  constructor(private readonly options: JoinOptions) {
    this.base = options.url.replace(/\/+$/, '');
    let resolveJoined!: (a: JoinAnswer) => void;
    let rejectJoined!: (e: Error) => void;
    this.joined = new Promise((res, rej) => {
      resolveJoined = res;
      rejectJoined = rej;
    });
    this.joined.catch(() => undefined);
    this.loop = this.run(resolveJoined, rejectJoined);
  }

  /** Stops heartbeating and leaves the pool (bounded: a service that does not answer is not waited for). */
  async leave(): Promise<void> {
    this.stopping.abort();
    await this.loop;
    try {
      await fetch(`${this.base}/v1/workers/${encodeURIComponent(this.options.address)}`, { method: 'DELETE', headers: this.headers(), signal: AbortSignal.timeout(2000) });
    } catch {
      // The service is away: it lets the worker go when its heartbeats stop.
    }
  }

  private async run(resolveJoined: (a: JoinAnswer) => void, rejectJoined: (e: Error) => void): Promise<void> {
    const { log, address } = this.options;
    let first = true;
    let failing: string | null = null;
    let wait = 250;
    while (!this.stopping.signal.aborted) {
      let next: number;
      try {
        const a = await this.post();
        if (first) {
          log(`joined the pool of ${this.base} as ${address} (heartbeat every ${a.heartbeat_ms} ms; silent ${a.leave_after_ms} ms, the service lets this worker go)`);
          resolveJoined(a);
          first = false;
        } else if (a.joined) {
          log(`the service had let this worker go; joined again as ${address}`);
        } else if (failing) {
          log(`the service answers again; heartbeats resumed`);
        }
        failing = null;
        wait = 250;
        next = a.heartbeat_ms;
      } catch (e) {
        if (e instanceof JoinRefused) {
          log(e.message);
          rejectJoined(e);
          return;
        }
        const why = (e as Error).message;
        if (failing !== why) log(`${first ? 'cannot join' : 'heartbeat failed'}: ${why}; trying again`);
        failing = why;
        next = wait;
        wait = Math.min(wait * 2, this.options.maxRetryMs ?? 5000);
      }
      await delay(next, undefined, { signal: this.stopping.signal }).catch(() => undefined);
    }
  }

  private async post(): Promise<JoinAnswer> {
    const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(15_000)]);
    let r: Response;
    try {
      r = await fetch(`${this.base}/v1/workers`, {
        method: 'POST',
        headers: { ...this.headers(), 'content-type': 'application/json' },
        body: JSON.stringify({ address: this.options.address }),
        signal,
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`${this.base} does not answer (${cause?.code ?? cause?.message ?? (e as Error).message})`);
    }
    const text = await r.text();
    if (r.ok) return JSON.parse(text) as JoinAnswer;
    let message = text.slice(0, 300);
    try {
      message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
    } catch {
      /* not JSON */
    }
    if (r.status === 401 || r.status === 403) {
      throw new JoinRefused(`the service refuses this worker (HTTP ${r.status}: ${message}); start it with the service's TAS_WORKER_TOKEN`);
    }
    throw new Error(`HTTP ${r.status}: ${message}`);
  }

  private headers(): Record<string, string> {
    return this.options.token ? { authorization: `Bearer ${this.options.token}` } : {};
  }
}
