/**
 * Model spec types. `schemas/model.schema.json` is the source of truth; these types
 * mirror it (snake_case, as users write it and the REST API accepts it).
 */
import type { BnConvention } from '../math/momentum.js';

interface Common {
  index?: number;
  note?: string;
}

export type LayerSpec =
  | (Common & { type: 'linear'; in?: number; out: number; bias?: boolean })
  | (Common & { type: 'conv2d'; in?: number; out: number; kernel: number; stride?: number; padding?: number; bias?: boolean })
  | (Common & {
      type: 'batchnorm';
      channels?: number;
      eps?: number;
      momentum?: number | null;
      affine?: boolean;
      track_running_stats?: boolean;
      sync?: boolean;
    })
  | (Common & { type: 'groupnorm'; groups: number; channels?: number; eps?: number; affine?: boolean })
  | (Common & { type: 'layernorm'; eps?: number; affine?: boolean })
  | (Common & { type: 'instancenorm'; channels?: number; eps?: number; affine?: boolean })
  | (Common & { type: 'relu' | 'global_avg_pool' | 'flatten' })
  | (Common & { type: 'gelu'; approximate?: 'none' | 'tanh' })
  | (Common & { type: 'maxpool' | 'avgpool'; kernel: number; stride?: number; padding?: number })
  | (Common & { type: 'dropout'; p?: number })
  | (Common & { type: 'residual'; body: LayerSpec[]; shortcut?: LayerSpec[]; activation?: 'relu' | 'none' });

export interface ModelSpec {
  /** One sample in PyTorch layout: [features] or [channels, height, width]. */
  input_shape: number[];
  bn_convention?: BnConvention;
  layers: LayerSpec[];
}

/** BN defaults per convention (bn-semantics.md). */
export const BN_DEFAULTS: Record<BnConvention, { eps: number; momentum: number }> = {
  pytorch: { eps: 1e-5, momentum: 0.1 },
  keras: { eps: 1e-3, momentum: 0.99 },
};
