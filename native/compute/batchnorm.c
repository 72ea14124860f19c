/*
 * BatchNorm's per-channel kernels over a [rows, c] block (channels innermost: a [N, C]
 * batch, or an [N, H, W, C] image batch viewed as [N*H*W, C]).
 *
 * Each element-wise expression is evaluated in the order, and with the float32 roundings,
 * of the tfjs ops it replaces in src/trainer/kernels/kernels.ts, so the native path and
 * the composed one agree to the bit wherever the composed backend rounds each op to
 * float32. Sums over rows accumulate in double (one accumulator per channel, rows in
 * order) and round once: at least as exact as a float32 sum, and the same every run.
 */
#include <string.h>

#include "compute.h"

/* Two passes: mean, then M2 = sum of squared deviations from the float32 mean. */
void tc_bn_moments(const float *x, size_t rows, size_t c, float *mean, float *m2, double *acc) {
  memset(acc, 0, c * sizeof(double));
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * c;
    for (size_t k = 0; k < c; k++) acc[k] += xr[k];
  }
  for (size_t k = 0; k < c; k++) mean[k] = rows ? (float)(acc[k] / (double)rows) : 0.0f;
  memset(acc, 0, c * sizeof(double));
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * c;
    for (size_t k = 0; k < c; k++) {
      const float d = xr[k] - mean[k];
      acc[k] += (double)(d * d);
    }
  }
  for (size_t k = 0; k < c; k++) m2[k] = (float)acc[k];
}

/* y = xmu * invstd * gamma + beta, left to right (gamma, beta may be NULL: no affine). */
void tc_bn_normalize(const float *xmu, const float *invstd, const float *gamma, const float *beta, size_t rows, size_t c, float *y) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = xmu + r * c;
    float *o = y + r * c;
    if (gamma && beta)
      for (size_t k = 0; k < c; k++) o[k] = xr[k] * invstd[k] * gamma[k] + beta[k];
    else
      for (size_t k = 0; k < c; k++) o[k] = xr[k] * invstd[k];
  }
}

/* sum_dy = sum over rows of dy; sum_dy_xmu = sum of the float32 products dy * xmu. */
void tc_bn_backward_sums(const float *dy, const float *xmu, size_t rows, size_t c, float *sum_dy, float *sum_dy_xmu, double *acc) {
  double *a = acc, *b = acc + c;
  memset(acc, 0, 2 * c * sizeof(double));
  for (size_t r = 0; r < rows; r++) {
    const float *d = dy + r * c, *xr = xmu + r * c;
    for (size_t k = 0; k < c; k++) {
      a[k] += d[k];
      b[k] += (double)(d[k] * xr[k]);
    }
  }
  for (size_t k = 0; k < c; k++) {
    sum_dy[k] = (float)a[k];
    sum_dy_xmu[k] = (float)b[k];
  }
}

/*
 * dx = (dy - sum_dy/N - xmu * invstd^2 * sum_dy_xmu/N) * invstd * gamma, with N the
 * global count, as kernels.bnInputGrad composes it:
 *   mean_dy = sum_dy / N; proj_k = invstd^2 * (sum_dy_xmu / N); scale = invstd * gamma;
 *   dx = ((dy - mean_dy) - xmu * proj_k) * scale.
 * k: scratch of 3c floats.
 */
void tc_bn_input_grad(const float *dy, const float *xmu, const float *invstd, const float *gamma, const float *sum_dy,
                      const float *sum_dy_xmu, float count, size_t rows, size_t c, float *dx, float *k) {
  float *mean_dy = k, *proj = k + c, *scale = k + 2 * c;
  for (size_t j = 0; j < c; j++) {
    mean_dy[j] = sum_dy[j] / count;
    const float sq = invstd[j] * invstd[j];
    proj[j] = sq * (sum_dy_xmu[j] / count);
    scale[j] = gamma ? invstd[j] * gamma[j] : invstd[j];
  }
  for (size_t r = 0; r < rows; r++) {
    const float *d = dy + r * c, *xr = xmu + r * c;
    float *o = dx + r * c;
    for (size_t j = 0; j < c; j++) o[j] = (d[j] - mean_dy[j] - xr[j] * proj[j]) * scale[j];
  }
}
