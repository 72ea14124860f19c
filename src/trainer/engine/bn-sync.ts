/**
 * The bridge from BatchNorm to the Collective: SyncBN's forward all-gather and backward
 * all-reduce, timed so a job can report what synchronisation costs (the first seed's
 * question: how much does the per-layer barrier slow us down?).
 */
import type { Collective } from '../collective/collective.js';
import type { BnSync } from '../layers/layer.js';

export interface BnSyncTimer {
  forwardMs: number;
  backwardMs: number;
}

export function collectiveBnSync(collective: Collective, timer: BnSyncTimer = { forwardMs: 0, backwardMs: 0 }): BnSync {
  const timed = async <T>(slot: keyof BnSyncTimer, op: () => Promise<T>): Promise<T> => {
    const t = performance.now();
    try {
      return await op();
    } finally {
      timer[slot] += performance.now() - t;
    }
  };
  return {
    gatherStats: (local) => timed('forwardMs', () => collective.allGather(local)),
    reduceSums: (local) => timed('backwardMs', () => collective.allReduce(local)),
  };
}
