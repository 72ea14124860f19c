/**
 * Long polls that cost one read per resource, not one per waiting client. A request that
 * asks to wait (`?wait=S` with If-None-Match) parks here under its resource's key; while
 * any request waits on a key, the resource is read again when it may have changed, and
 * every waiter whose ETag no longer matches is answered. A poll starts from the last read
 * while that is current (`latest`). A thousand dashboards watching one job cost the same
 * reads as one; a key nobody polls is not read at all.
 *
 * When it may have changed: with a live `ChangeSource` (the database announcing each
 * committed change), a key is read again as soon as a change that `affects` it is
 * announced (one check per `checkMs` at most, however many arrive), and a read stays
 * current until then, or `quietMs` at most (a view can also move with time alone: a
 * worker whose probes stop shows offline without a write). With no source, or while it
 * is down (the listener reconnecting), every `checkMs`.
 */

import type { ChangeSubscriptions } from '../../service/db/change-feed.js';

/** Announcements of committed changes, as topics (`job:<id>`, `pool`, ...): `ChangeFeed`. */
export interface ChangeSource extends ChangeSubscriptions {
  /** True while every committed change is announced (the listener is connected). */
  readonly live: boolean;
}

export interface ChangeWatchOptions {
  /** How often a watched resource is read without a live source. @defaultValue 25 */
  readonly checkMs?: number;
  /** Announced changes; without one, reads every `checkMs`. */
  readonly source?: ChangeSource;
  /** Whether a change announced as `topic` may change the resource under `key`. @defaultValue every key */
  readonly affects?: (key: string, topic: string) => boolean;
  /** The longest a read stays current, and the interval of reads of watched keys, with a live source. @defaultValue 1000 */
  readonly quietMs?: number;
  /** Milliseconds on a monotonic clock (tests step it). @defaultValue performance.now */
  readonly now?: () => number;
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

/** A read of a key: its value, when it started, and the key's change count then. */
interface Read {
  readonly value: unknown;
  readonly at: number;
  readonly changes: number;
}

/** Keys whose last read is kept for `latest` (each a job view or a list page, both cached elsewhere too). */
const RECENT_KEYS = 5000;

export class ChangeWatch {
  private readonly watched = new Map<string, Watched>();
  /** The last read of each recently polled key (most recent last), and reads in flight. */
  private readonly recent = new Map<string, Read>();
  private readonly reading = new Map<string, Promise<unknown>>();
  /** Announced changes per key since it was first polled (a read made before the last one is not current). */
  private readonly changes = new Map<string, number>();
  /** Keys to read at the next check (an announced change); null: every watched key. */
  private dirty: Set<string> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;
  private checking = false;
  /** When every watched key was last read (announcements read only the keys they name), and when any check last began. */
  private lastFull = -Infinity;
  private lastCheck = -Infinity;
  private closed = false;
  private readonly unsubscribe: (() => void) | null;
  readonly checkMs: number;
  readonly quietMs: number;
  private readonly now: () => number;

  constructor(private readonly options: ChangeWatchOptions = {}) {
    this.checkMs = options.checkMs ?? 25;
    this.now = options.now ?? (() => performance.now());
    this.quietMs = Math.max(this.checkMs, options.quietMs ?? 1000);
    this.unsubscribe = options.source ? options.source.subscribe((topic) => this.announced(topic)) : null;
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
      // A change announced since the read this poll started from is read at once.
      const last = this.recent.get(key);
      if (!last || last.changes !== this.changeCount(key)) {
        this.markDirty(key);
        this.schedule(this.soon());
      } else this.schedule(this.interval());
    });
  }

  /**
   * `key`'s value for a long poll: the last read of it while that is current (see the
   * header), else a new read shared by every caller asking meanwhile. However many polls
   * arrive, a resource is read at most about once per change or check (a change a
   * cached read misses is reported by the next check); plain GETs do not come here and
   * read fresh.
   */
  latest<T>(key: string, read: () => Promise<T>): Promise<T> {
    const hit = this.recent.get(key);
    if (hit && this.current(key, hit)) return Promise.resolve(hit.value as T);
    let pending = this.reading.get(key);
    if (!pending) {
      const at = this.now();
      const changes = this.changeCount(key);
      pending = read().then(
        (value) => {
          this.remember(key, { value, at, changes });
          return value;
        },
        (err: unknown) => {
          this.recent.delete(key);
          if (!this.watched.has(key)) this.changes.delete(key);
          throw err;
        },
      );
      pending.finally(() => this.reading.delete(key)).catch(() => undefined);
      this.reading.set(key, pending);
    }
    return pending as Promise<T>;
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
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of this.watched.values()) for (const waiter of [...w.waiters]) waiter.finish(waiter.latest);
    this.watched.clear();
    this.recent.clear();
  }

  /** A read is current while no change was announced since it started (live source, `quietMs` at most), else for `checkMs`. */
  private current(key: string, read: Read): boolean {
    const age = this.now() - read.at;
    if (age <= this.checkMs) return true;
    return this.live() && age <= this.quietMs && read.changes === this.changeCount(key);
  }

  private live(): boolean {
    return this.options.source?.live === true;
  }

  private interval(): number {
    return this.live() ? this.quietMs : this.checkMs;
  }

  private changeCount(key: string): number {
    return this.changes.get(key) ?? 0;
  }

  /** A change was announced (`null`: changes may have been missed): the keys it affects are read at once. */
  private announced(topic: string | null): void {
    if (this.closed) return;
    const affects = this.options.affects;
    for (const key of new Set([...this.recent.keys(), ...this.watched.keys(), ...this.reading.keys()])) {
      if (topic !== null && affects && !affects(key, topic)) continue;
      this.changes.set(key, this.changeCount(key) + 1);
      if (this.watched.has(key)) this.markDirty(key);
    }
    if (topic === null) this.dirty = null;
    if (this.dirty === null || this.dirty.size > 0) this.schedule(this.soon());
  }

  /** The delay before a check for announced changes: at once, but one check per `checkMs` at most, however many arrive. */
  private soon(): number {
    return Math.max(0, this.lastCheck + this.checkMs - this.now());
  }

  private markDirty(key: string): void {
    if (this.dirty !== null) this.dirty.add(key);
  }

  private remember(key: string, read: Read): void {
    this.recent.delete(key);
    this.recent.set(key, read);
    if (this.recent.size > RECENT_KEYS) {
      const oldest = this.recent.keys().next().value!;
      this.recent.delete(oldest);
      // A key being read keeps its count: the read compares with it when it lands.
      if (!this.watched.has(oldest) && !this.reading.has(oldest)) this.changes.delete(oldest);
    }
  }

  /** A check within `delayMs` (an earlier one already due stands). */
  private schedule(delayMs: number): void {
    if (this.closed || this.watched.size === 0) return;
    const due = this.now() + delayMs;
    if (this.checking || due >= this.timerDue) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerDue = Infinity;
      void this.check();
    }, delayMs);
  }

  /** One round: each key due read once, its waiters answered if it changed for them. */
  private async check(): Promise<void> {
    this.checking = true;
    // Every watched key once per interval; in between, the keys announced changes named.
    const only = this.dirty;
    this.dirty = new Set();
    const now = this.now();
    this.lastCheck = now;
    const full = only === null || now - this.lastFull >= this.interval() - 1;
    if (full) this.lastFull = now;
    const due = [...this.watched].filter(([key]) => full || only.has(key));
    await Promise.all(
      due.map(async ([key, entry]) => {
        if (entry.waiters.size === 0) {
          this.watched.delete(key);
          return;
        }
        try {
          const at = this.now();
          const changes = this.changeCount(key);
          const value = await entry.read();
          this.remember(key, { value, at, changes });
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
    this.checking = false;
    // Changes announced during this round are read now; else at the next full check.
    this.schedule(this.dirty === null || this.dirty.size > 0 ? this.soon() : Math.max(0, this.lastFull + this.interval() - this.now()));
  }
}
