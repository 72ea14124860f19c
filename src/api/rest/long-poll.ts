/**
 * Long polls that cost one read per resource, not one per waiting client. A request that
 * asks to wait (`?wait=S` with If-None-Match) parks here under its resource's key; while
 * any request waits on a key, the resource is read once every `checkMs` and every waiter
 * whose ETag no longer matches is answered. A poll starts from the last read when it is
 * at most one check old (`latest`). A thousand dashboards watching one job cost the same
 * reads as one; a key nobody polls is not read at all.
 */

export interface ChangeWatchOptions {
  /** How often a watched resource is read. @defaultValue 25 */
  readonly checkMs?: number;
}

interface Waiter {
  /** True while the client still has this ETag (nothing to answer yet). */
  readonly has: (etag: string) => boolean;
  latest: unknown;
  finish(value: unknown): void;
  fail(err: unknown): void;
}

interface Watched {
  readonly read: () => Promise<unknown>;
  readonly tagOf: (value: unknown) => string;
  readonly waiters: Set<Waiter>;
}

/** Keys whose last read is kept for `latest` (each a job view or a list page, both cached elsewhere too). */
const RECENT_KEYS = 5000;

export class ChangeWatch {
  private readonly watched = new Map<string, Watched>();
  /** The last read of each recently polled key (most recent last), and reads in flight. */
  private readonly recent = new Map<string, { value: unknown; at: number }>();
  private readonly reading = new Map<string, Promise<unknown>>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly checkMs: number;

  constructor(options: ChangeWatchOptions = {}) {
    this.checkMs = options.checkMs ?? 25;
  }

  /**
   * Resolves with the first read of `key` whose ETag the client does not have (`has`
   * false), or with the latest read (`latest` if none) after `waitMs` or when `gone`
   * fires (the client left). Rejects if a read fails (e.g. the resource was deleted).
   */
  wait<T>(key: string, read: () => Promise<T>, tagOf: (value: T) => string, has: (etag: string) => boolean, latest: T, waitMs: number, gone: AbortSignal): Promise<T> {
    if (this.closed || gone.aborted) return Promise.resolve(latest);
    return new Promise<T>((resolve, reject) => {
      let entry = this.watched.get(key);
      if (!entry) {
        entry = { read, tagOf: tagOf as (value: unknown) => string, waiters: new Set() };
        this.watched.set(key, entry);
      }
      const waiters = entry.waiters;
      const end = () => {
        clearTimeout(timeout);
        gone.removeEventListener('abort', onGone);
        waiters.delete(waiter);
      };
      const waiter: Waiter = {
        has,
        latest,
        finish: (value) => {
          end();
          resolve(value as T);
        },
        fail: (err) => {
          end();
          reject(err);
        },
      };
      const timeout = setTimeout(() => waiter.finish(waiter.latest), waitMs);
      const onGone = () => waiter.finish(waiter.latest);
      gone.addEventListener('abort', onGone, { once: true });
      waiters.add(waiter);
      this.schedule();
    });
  }

  /**
   * `key`'s value for a long poll: the last read of it when that is at most one check
   * old, else a new read shared by every caller asking meanwhile. However many polls
   * arrive, a resource is read at most about once per check (a change a cached read
   * misses is reported by the next check); plain GETs do not come here and read fresh.
   */
  latest<T>(key: string, read: () => Promise<T>): Promise<T> {
    const now = performance.now();
    const hit = this.recent.get(key);
    if (hit && now - hit.at <= this.checkMs) return Promise.resolve(hit.value as T);
    let pending = this.reading.get(key);
    if (!pending) {
      pending = read().then(
        (value) => {
          this.remember(key, value);
          return value;
        },
        (err: unknown) => {
          this.recent.delete(key);
          throw err;
        },
      );
      pending.finally(() => this.reading.delete(key)).catch(() => undefined);
      this.reading.set(key, pending);
    }
    return pending as Promise<T>;
  }

  private remember(key: string, value: unknown): void {
    this.recent.delete(key);
    this.recent.set(key, { value, at: performance.now() });
    if (this.recent.size > RECENT_KEYS) this.recent.delete(this.recent.keys().next().value!);
  }

  /** Waiters parked now (all keys). */
  get waiting(): number {
    let n = 0;
    for (const w of this.watched.values()) n += w.waiters.size;
    return n;
  }

  /** Answers every waiter with what it has and stops reading. */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.watched.values()) for (const waiter of [...w.waiters]) waiter.finish(waiter.latest);
    this.watched.clear();
    this.recent.clear();
  }

  private schedule(): void {
    if (this.timer === null && !this.closed && this.watched.size > 0) this.timer = setTimeout(() => void this.check(), this.checkMs);
  }

  /** One round: each watched key read once, its waiters answered if it changed for them. */
  private async check(): Promise<void> {
    await Promise.all(
      [...this.watched].map(async ([key, entry]) => {
        if (entry.waiters.size === 0) {
          this.watched.delete(key);
          return;
        }
        try {
          const value = await entry.read();
          this.remember(key, value);
          const etag = entry.tagOf(value);
          for (const waiter of [...entry.waiters]) {
            waiter.latest = value;
            if (!waiter.has(etag)) waiter.finish(value);
          }
        } catch (err) {
          for (const waiter of [...entry.waiters]) waiter.fail(err);
        }
        if (entry.waiters.size === 0 && this.watched.get(key) === entry) this.watched.delete(key);
      }),
    );
    this.timer = null;
    this.schedule();
  }
}
