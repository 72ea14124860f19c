/** Which golden case a fixture is, by its fields (the format, not the file name). */
import { bnStep, preciseBn, runningStats, training } from './cases.js';
import type { Check } from './fixture.js';

type Json = Record<string, unknown>;
export interface GoldenCase {
  kind: string;
  run: (fx: Json, world: number) => Promise<Check[]>;
  worlds: number[];
}

export function caseFor(fx: Json): GoldenCase | null {
  if (fx.rank_splits && fx.final_state) return { kind: 'training', run: training, worlds: Object.keys(fx.rank_splits as Json).map(Number).sort((a, b) => a - b) };
  if (fx.modes && fx.batches) return { kind: 'running_stats', run: runningStats, worlds: [1, 2, 3] };
  if (fx.exact || fx.update_bn) return { kind: 'precise_bn', run: preciseBn, worlds: [1, 2, 3] };
  if (fx.inputs && fx.expected) return { kind: 'bn_step', run: bnStep, worlds: [1, 2, 3] };
  return null;
}
