/**
 * Single-flight: concurrent calls for the same key share one in-flight promise. Fifty
 * dashboards polling one job at the same moment cost one database read, not fifty; the
 * answer is never older than the read that produced it (nothing is cached after it
 * settles). `forget` stops later callers from joining a call already in flight, for when
 * its answer may predate a change just announced.
 */
export class SingleFlight<K, V> {
  private readonly inFlight = new Map<K, Promise<V>>();

  run(key: K, fn: () => Promise<V>): Promise<V> {
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    const p = fn().finally(() => {
      if (this.inFlight.get(key) === p) this.inFlight.delete(key);
    });
    this.inFlight.set(key, p);
    return p;
  }

  /** The next call for `key` (every key, without one) starts anew; callers already waiting keep theirs. */
  forget(key?: K): void {
    if (key === undefined) this.inFlight.clear();
    else this.inFlight.delete(key);
  }
}
