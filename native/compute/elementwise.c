/*
 * Element-wise operations with NumPy broadcasting, unary maps and reductions over one
 * contiguous run of axes. Results match tfjs's cpu kernels: a binary op on two float32
 * values rounds once to float32, unary maps compute in double where tfjs's do (sqrt,
 * rsqrt, exp, log) and round once, and sums accumulate in double in index order.
 */
#include <math.h>
#include <string.h>

#include "compute.h"

#define BINARY_LOOP(EXPR)                                                        \
  do {                                                                           \
    if (ia && ib)                                                                \
      for (size_t i = 0; i < len; i++) { const float x = a[i], y = b[i]; o[i] = (EXPR); } \
    else if (ia) {                                                               \
      const float y = b[0];                                                      \
      for (size_t i = 0; i < len; i++) { const float x = a[i]; o[i] = (EXPR); }   \
    } else if (ib) {                                                             \
      const float x = a[0];                                                      \
      for (size_t i = 0; i < len; i++) { const float y = b[i]; o[i] = (EXPR); }   \
    } else {                                                                     \
      const float x = a[0], y = b[0];                                            \
      for (size_t i = 0; i < len; i++) o[i] = (EXPR);                            \
    }                                                                            \
  } while (0)

/* One innermost run: o[i] = a[i*ia] op b[i*ib], ia and ib each 0 or 1. */
static void binary_run(int op, const float *a, int ia, const float *b, int ib, size_t len, float *o) {
  switch (op) {
    case TC_ADD: BINARY_LOOP(x + y); break;
    case TC_SUB: BINARY_LOOP(x - y); break;
    case TC_MUL: BINARY_LOOP(x * y); break;
    case TC_DIV: BINARY_LOOP(x / y); break;
  }
}

void tc_binary(int op, const float *a, const int *a_shape, const float *b, const int *b_shape, const int *out_shape, int rank, float *out) {
  /* Element strides of a and b over the output's axes (0 where an operand is broadcast),
     then adjacent axes merged where both operands step through them as one axis. */
  size_t shape[TC_MAX_RANK], sa[TC_MAX_RANK], sb[TC_MAX_RANK];
  size_t ra[TC_MAX_RANK], rb[TC_MAX_RANK];
  size_t acc_a = 1, acc_b = 1, total = 1;
  for (int d = rank - 1; d >= 0; d--) {
    ra[d] = a_shape[d] == 1 ? 0 : acc_a;
    rb[d] = b_shape[d] == 1 ? 0 : acc_b;
    acc_a *= (size_t)a_shape[d];
    acc_b *= (size_t)b_shape[d];
    total *= (size_t)out_shape[d];
  }
  if (total == 0) return;
  int r = 0;
  for (int d = 0; d < rank; d++) {
    if (out_shape[d] == 1) continue;
    if (r > 0 && sa[r - 1] == ra[d] * (size_t)out_shape[d] && sb[r - 1] == rb[d] * (size_t)out_shape[d]) {
      shape[r - 1] *= (size_t)out_shape[d];
      sa[r - 1] = ra[d];
      sb[r - 1] = rb[d];
      continue;
    }
    shape[r] = (size_t)out_shape[d];
    sa[r] = ra[d];
    sb[r] = rb[d];
    r++;
  }
  if (r == 0) {
    binary_run(op, a, 0, b, 0, 1, out);
    return;
  }
  const size_t len = shape[r - 1];
  const int ia = sa[r - 1] != 0, ib = sb[r - 1] != 0;
  size_t idx[TC_MAX_RANK] = {0};
  size_t oa = 0, ob = 0;
  for (size_t o = 0; o < total; o += len) {
    binary_run(op, a + oa, ia, b + ob, ib, len, out + o);
    for (int d = r - 2; d >= 0; d--) {
      idx[d]++;
      oa += sa[d];
      ob += sb[d];
      if (idx[d] < shape[d]) break;
      oa -= sa[d] * shape[d];
      ob -= sb[d] * shape[d];
      idx[d] = 0;
    }
  }
}

void tc_unary(int op, const float *x, size_t n, float alpha, float *y) {
  switch (op) {
    case TC_RELU:
      for (size_t i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : (isnan(x[i]) ? x[i] : 0.0f);
      break;
    case TC_NEG:
      for (size_t i = 0; i < n; i++) y[i] = -x[i];
      break;
    case TC_SQUARE:
      for (size_t i = 0; i < n; i++) y[i] = x[i] * x[i];
      break;
    case TC_SQRT:
      for (size_t i = 0; i < n; i++) y[i] = (float)sqrt((double)x[i]);
      break;
    case TC_RSQRT:
      for (size_t i = 0; i < n; i++) y[i] = (float)(1.0 / sqrt((double)x[i]));
      break;
    case TC_RECIPROCAL:
      for (size_t i = 0; i < n; i++) y[i] = (float)(1.0 / (double)x[i]);
      break;
    case TC_EXP:
      for (size_t i = 0; i < n; i++) y[i] = (float)exp((double)x[i]);
      break;
    case TC_LOG:
      for (size_t i = 0; i < n; i++) y[i] = (float)log((double)x[i]);
      break;
    case TC_ABS:
      for (size_t i = 0; i < n; i++) y[i] = fabsf(x[i]);
      break;
    case TC_STEP:
      for (size_t i = 0; i < n; i++) y[i] = isnan(x[i]) ? x[i] : (x[i] > 0.0f ? 1.0f : alpha);
      break;
  }
}

void tc_relu_grad(const float *dy, const float *y, size_t n, float *dx) {
  /* dy * step(y), as tfjs's mul(dy, step(y, 0)): a NaN output passes NaN on. */
  for (size_t i = 0; i < n; i++) dx[i] = dy[i] * (isnan(y[i]) ? y[i] : (y[i] > 0.0f ? 1.0f : 0.0f));
}

void tc_reduce(int op, const float *x, size_t outer, size_t mid, size_t inner, float *y, double *acc) {
  for (size_t o = 0; o < outer; o++) {
    const float *xo = x + o * mid * inner;
    float *yo = y + o * inner;
    if (inner == 1) {
      double s = 0.0;
      for (size_t m = 0; m < mid; m++) s += xo[m];
      yo[0] = op == TC_MEAN ? (float)s / (float)mid : (float)s;
      continue;
    }
    memset(acc, 0, inner * sizeof(double));
    for (size_t m = 0; m < mid; m++) {
      const float *xm = xo + m * inner;
      for (size_t i = 0; i < inner; i++) acc[i] += xm[i];
    }
    for (size_t i = 0; i < inner; i++) yo[i] = op == TC_MEAN ? (float)acc[i] / (float)mid : (float)acc[i];
  }
}
