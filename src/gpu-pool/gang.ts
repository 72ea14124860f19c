/**
 * Gang placement (pure: no I/O). A job of N ranks starts only on N workers reserved
 * together, all of one device kind (every rank then runs the same backend, so the ranks'
 * arithmetic agrees). The registry applies `pickGang` inside one database transaction
 * that locks the idle workers, so a reservation is all-or-nothing: two jobs competing
 * for the same workers never hold part of a gang each, and so never deadlock.
 */
export type DeviceKind = 'gpu' | 'cpu';

export interface GangCandidate {
  readonly id: string;
  readonly address: string;
  readonly deviceKind: DeviceKind;
}

export interface PoolCounts {
  /** Workers answering their probes (idle or busy), by device kind. */
  readonly online: Readonly<Record<DeviceKind, number>>;
  /** Idle workers, by device kind. */
  readonly idle: Readonly<Record<DeviceKind, number>>;
}

export interface GangPreferences<W> {
  /**
   * Workers to take only when no others are free (the workers of a job's failed
   * attempt: its retry goes elsewhere while it can).
   */
  readonly avoid?: ReadonlySet<string>;
  /** Workers that can hold the job (its memory); the others are never taken. */
  readonly fits?: (w: W) => boolean;
}

/**
 * N idle workers of one kind, GPUs first, in id order (stable, so placements are
 * reproducible), workers to avoid last; null when no kind has N idle workers that fit.
 */
export function pickGang<W extends GangCandidate>(idle: readonly W[], n: number, prefs: GangPreferences<W> = {}): W[] | null {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`a gang needs at least 1 worker, got ${n}`);
  const avoided = (w: W) => (prefs.avoid?.has(w.id) ? 1 : 0);
  for (const kind of ['gpu', 'cpu'] as const) {
    const ofKind = idle
      .filter((w) => w.deviceKind === kind && (prefs.fits?.(w) ?? true))
      .sort((a, b) => avoided(a) - avoided(b) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    if (ofKind.length >= n) return ofKind.slice(0, n);
  }
  return null;
}

/** The largest gang the pool could ever form (all online workers of one kind). */
export function gangCapacity(counts: PoolCounts): number {
  return Math.max(counts.online.gpu, counts.online.cpu);
}

/** What a queued job waits for, in the words the job status shows. */
export interface WaitingFor {
  readonly requestedWorkers: number;
  readonly freeWorkers: number;
  readonly onlineWorkers: number;
  readonly reason: string;
}

export function waitingFor(n: number, counts: PoolCounts): WaitingFor {
  const free = Math.max(counts.idle.gpu, counts.idle.cpu);
  const online = gangCapacity(counts);
  const reason =
    online < n
      ? `needs ${n} workers of one device kind; only ${online} online`
      : free >= n
        ? `${n} workers are free; waiting for the scheduler to place the job`
        : `waiting for ${n} free workers of one device kind (${free} free of ${online})`;
  return { requestedWorkers: n, freeWorkers: free, onlineWorkers: online, reason };
}
