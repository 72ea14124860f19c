/*
 * The trainer's native CPU kernels (see tas_compute.c for the JS surface). Tensors are
 * dense float32 arrays in row-major order; images are channels-last (NHWC) and filters
 * [kh, kw, in, out], as the trainer keeps them. Every kernel writes its whole output.
 *
 * Arithmetic: plain C float operations without fast-math or contraction (binding.gyp),
 * so an element-wise expression rounds to float32 after every operation, as the same
 * expression composed of tfjs ops does. Reductions accumulate in double and round once.
 * Matrix products go to the BLAS (cblas_sgemm).
 */
#ifndef TAS_COMPUTE_H
#define TAS_COMPUTE_H

#include <stddef.h>

/* Growable scratch memory, one per JS environment (main thread or worker thread). */
typedef struct {
  float *data;
  size_t cap; /* floats */
} tc_scratch;

float *tc_scratch_get(tc_scratch *s, size_t floats);
void tc_scratch_free(tc_scratch *s);

/* ---- gemm_conv.c ---- */
void tc_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb, float beta,
              float *c, int ldc);
void tc_set_blas_threads(int n);
int tc_blas_threads(void);
const char *tc_blas_config(void);

typedef struct {
  int n, h, w, c;      /* input [n, h, w, c] */
  int kh, kw, cout;    /* filter [kh, kw, c, cout] */
  int sh, sw;          /* strides */
  int pt, pl;          /* top and left zero padding (bottom/right follow from ho, wo) */
  int ho, wo;          /* output height and width */
} tc_conv;

/* y[n, ho, wo, cout] = conv(x, w). Returns 0, or -1 when scratch memory is short. */
int tc_conv2d(const tc_conv *g, const float *x, const float *w, float *y, tc_scratch *s);
/* dx[n, h, w, c] of conv2d from dy[n, ho, wo, cout]. */
int tc_conv2d_backprop_input(const tc_conv *g, const float *dy, const float *w, float *dx, tc_scratch *s);
/* dw[kh, kw, c, cout] of conv2d from x and dy. */
int tc_conv2d_backprop_filter(const tc_conv *g, const float *x, const float *dy, float *dw, tc_scratch *s);

/* ---- batchnorm.c: [rows, c] blocks, c channels innermost ---- */
void tc_bn_moments(const float *x, size_t rows, size_t c, float *mean, float *m2, double *acc);
void tc_bn_normalize(const float *xmu, const float *invstd, const float *gamma, const float *beta, size_t rows, size_t c, float *y);
void tc_bn_backward_sums(const float *dy, const float *xmu, size_t rows, size_t c, float *sum_dy, float *sum_dy_xmu, double *acc);
void tc_bn_input_grad(const float *dy, const float *xmu, const float *invstd, const float *gamma, const float *sum_dy,
                      const float *sum_dy_xmu, float count, size_t rows, size_t c, float *dx, float *k);

/* ---- elementwise.c ---- */
enum tc_binary { TC_ADD = 0, TC_SUB = 1, TC_MUL = 2, TC_DIV = 3 };
#define TC_MAX_RANK 6
/* out = a op b with NumPy broadcasting; shapes of rank <= TC_MAX_RANK, already padded to `rank`. */
void tc_binary(int op, const float *a, const int *a_shape, const float *b, const int *b_shape, const int *out_shape, int rank, float *out);

enum tc_unary { TC_RELU = 0, TC_NEG, TC_SQUARE, TC_SQRT, TC_RSQRT, TC_RECIPROCAL, TC_EXP, TC_LOG, TC_ABS, TC_STEP };
void tc_unary(int op, const float *x, size_t n, float alpha, float *y);
/* dx = y > 0 ? dy : 0 (ReLU's gradient from its output). */
void tc_relu_grad(const float *dy, const float *y, size_t n, float *dx);

enum tc_reduce { TC_SUM = 0, TC_MEAN = 1 };
/* x viewed as [outer, mid, inner]; y[outer, inner] = reduce over mid. acc: inner doubles. */
void tc_reduce(int op, const float *x, size_t outer, size_t mid, size_t inner, float *y, double *acc);

/* ---- optim.c ---- */
typedef struct {
  float lr, momentum, one_minus_dampening, weight_decay;
  int nesterov;
} tc_sgd;
/* buf: the momentum buffer or NULL (first step); buf_out only written when momentum != 0. */
void tc_sgd_update(const tc_sgd *o, const float *param, const float *grad, const float *buf, size_t n, float *param_out, float *buf_out);

typedef struct {
  float decay;           /* 1 - lr * weight_decay (AdamW) */
  float weight_decay;    /* Adam's L2 term */
  int decoupled, amsgrad;
  int lerp_low;          /* 1 - beta1 < 0.5: torch.lerp's first form */
  float w, one_minus_w;  /* 1 - beta1 and beta1, as the lerp takes them */
  float beta2, one_minus_beta2;
  float bias_correction2_sqrt, eps, step_size;
} tc_adam;
/* m0, v0, vmax0 NULL on a parameter's first step; vmax_out only written with amsgrad. */
void tc_adam_update(const tc_adam *o, const float *param, const float *grad, const float *m0, const float *v0, const float *vmax0, size_t n,
                    float *param_out, float *m_out, float *v_out, float *vmax_out);

#endif
