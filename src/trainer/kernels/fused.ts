/**
 * Names of the fused kernels kernels.ts asks a backend for. A backend that registers one
 * (today: `native`) computes it in one pass; on any other backend kernels.ts composes the
 * same arithmetic from tfjs ops. Inputs are named tensors, channels innermost ([rows, C]
 * blocks and [C] vectors):
 *   bnMoments       {x}                                     → [mean, m2]  two-pass, per channel
 *   bnNormalize     {xmu, invstd, gamma?, beta?}            → y = xmu·invstd·gamma + beta
 *   bnBackwardSums  {dy, xmu}                               → [Σdy, Σdy·xmu]
 *   bnInputGrad     {dy, xmu, invstd, gamma?, sumDy, sumDyXmu}, attrs {count} → dx
 *   reluGrad        {dy, y}                                 → dy where y > 0, else 0
 *   sgdUpdate       {param, grad, buf?}, attrs SgdUpdateOptions → [param, buf?]  (optim/sgd.ts)
 *   adamUpdate      {param, grad, m?, v?, vmax?}, attrs AdamUpdateOptions → [param, m, v, vmax?]  (optim/adam.ts)
 * The optimizer updates compute exactly the roundings of the compositions in optim/.
 */
export const FUSED = {
  bnMoments: 'TasBnMoments',
  bnNormalize: 'TasBnNormalize',
  bnBackwardSums: 'TasBnBackwardSums',
  bnInputGrad: 'TasBnInputGrad',
  reluGrad: 'TasReluGrad',
  sgdUpdate: 'TasSgdUpdate',
  adamUpdate: 'TasAdamUpdate',
} as const;
