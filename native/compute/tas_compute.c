/*
 * The JS surface of the native kernels (loaded by src/trainer/kernels/native-addon.ts,
 * which owns the argument checks and the types). Every function works on the memory of
 * the Float32Arrays it is given: inputs are read and outputs written in place, nothing
 * is copied in or out. The checks here only keep a wrong call from touching memory
 * outside those arrays (TypeError / RangeError).
 *
 * Scratch memory (convolution patches, double accumulators) belongs to the JS
 * environment that loaded the addon, so inference threads each have their own.
 */
#include <node_api.h>
#include <stdlib.h>
#include <string.h>

#include "compute.h"

typedef struct {
  tc_scratch conv; /* convolution patches */
  tc_scratch acc;  /* per-channel accumulators (doubles, stored as floats' room) */
} instance;

#define MAX_ARGS 16

typedef struct {
  napi_env env;
  napi_value argv[MAX_ARGS];
  size_t argc;
  instance *inst;
  int failed;
} call;

static int begin(napi_env env, napi_callback_info info, call *c, size_t want, const char *usage) {
  c->env = env;
  c->argc = MAX_ARGS;
  c->failed = 0;
  c->inst = NULL;
  if (napi_get_cb_info(env, info, &c->argc, c->argv, NULL, NULL) != napi_ok || c->argc < want) {
    napi_throw_type_error(env, NULL, usage);
    return 0;
  }
  napi_get_instance_data(env, (void **)&c->inst);
  return 1;
}

static void fail(call *c, int range, const char *msg) {
  if (c->failed) return;
  c->failed = 1;
  if (range) napi_throw_range_error(c->env, NULL, msg);
  else napi_throw_type_error(c->env, NULL, msg);
}

/* A Float32Array argument with at least `need` elements; NULL argument allowed when `optional`. */
static float *f32(call *c, size_t i, size_t need, int optional) {
  if (c->failed) return NULL;
  napi_valuetype t;
  napi_typeof(c->env, c->argv[i], &t);
  if (optional && (t == napi_null || t == napi_undefined)) return NULL;
  bool is_ta = false;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  if (napi_is_typedarray(c->env, c->argv[i], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(c->env, c->argv[i], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_float32_array) {
    fail(c, 0, "expected a Float32Array");
    return NULL;
  }
  if (len < need) {
    fail(c, 1, "a Float32Array is shorter than the shapes need");
    return NULL;
  }
  return (float *)data;
}

static size_t f32_len(call *c, size_t i) {
  napi_typedarray_type type;
  size_t len = 0;
  bool is_ta = false;
  if (napi_is_typedarray(c->env, c->argv[i], &is_ta) != napi_ok || !is_ta) return 0;
  napi_get_typedarray_info(c->env, c->argv[i], &type, &len, NULL, NULL, NULL);
  return type == napi_float32_array ? len : 0;
}

static int64_t int_arg(call *c, size_t i, int64_t lo, int64_t hi) {
  if (c->failed) return 0;
  int64_t v = 0;
  if (napi_get_value_int64(c->env, c->argv[i], &v) != napi_ok) {
    fail(c, 0, "expected an integer");
    return 0;
  }
  if (v < lo || v > hi) {
    fail(c, 1, "an integer argument is out of range");
    return 0;
  }
  return v;
}

static double num_arg(call *c, size_t i) {
  if (c->failed) return 0;
  double v = 0;
  if (napi_get_value_double(c->env, c->argv[i], &v) != napi_ok) fail(c, 0, "expected a number");
  return v;
}

static int bool_arg(call *c, size_t i) {
  if (c->failed) return 0;
  bool v = false;
  if (napi_get_value_bool(c->env, c->argv[i], &v) != napi_ok) fail(c, 0, "expected a boolean");
  return v;
}

/* An Int32Array argument of exactly `n` elements (shapes, geometry). */
static const int *i32(call *c, size_t i, size_t n) {
  if (c->failed) return NULL;
  bool is_ta = false;
  napi_typedarray_type type;
  size_t len = 0;
  void *data = NULL;
  if (napi_is_typedarray(c->env, c->argv[i], &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(c->env, c->argv[i], &type, &len, &data, NULL, NULL) != napi_ok || type != napi_int32_array || len != n) {
    fail(c, 0, "expected an Int32Array of the right length");
    return NULL;
  }
  return (const int *)data;
}

static double *accumulators(call *c, size_t doubles) {
  float *p = tc_scratch_get(&c->inst->acc, doubles * 2 + 2);
  if (!p) fail(c, 1, "out of memory for accumulators");
  return (double *)p;
}

#define MAXI 2147483647LL

/* sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc): c = alpha op(a) op(b) + beta c, row-major. */
static napi_value js_sgemm(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 13, "sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)")) return NULL;
  int ta = bool_arg(&c, 0), tb = bool_arg(&c, 1);
  int64_t m = int_arg(&c, 2, 0, MAXI), n = int_arg(&c, 3, 0, MAXI), k = int_arg(&c, 4, 0, MAXI);
  double alpha = num_arg(&c, 5), beta = num_arg(&c, 10);
  int64_t lda = int_arg(&c, 7, 1, MAXI), ldb = int_arg(&c, 9, 1, MAXI), ldc = int_arg(&c, 12, 1, MAXI);
  if (c.failed) return NULL;
  /* Rows and leading dimension of each operand as stored (row-major). */
  int64_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
  if (lda < a_cols || ldb < b_cols || ldc < n) {
    fail(&c, 1, "sgemm: a leading dimension is smaller than its row");
    return NULL;
  }
  size_t need_a = a_rows ? (size_t)((a_rows - 1) * lda + a_cols) : 0;
  size_t need_b = b_rows ? (size_t)((b_rows - 1) * ldb + b_cols) : 0;
  size_t need_c = m ? (size_t)((m - 1) * ldc + n) : 0;
  float *a = f32(&c, 6, need_a, 0), *b = f32(&c, 8, need_b, 0), *cc = f32(&c, 11, need_c, 0);
  if (c.failed) return NULL;
  tc_sgemm(ta, tb, (int)m, (int)n, (int)k, (float)alpha, a, (int)lda, b, (int)ldb, (float)beta, cc, (int)ldc);
  return NULL;
}

/* Geometry: Int32Array [n, h, w, c, kh, kw, cout, sh, sw, pt, pl, ho, wo]. */
static int conv_geom(call *c, size_t i, tc_conv *g) {
  const int *v = i32(c, i, 13);
  if (!v) return 0;
  for (int j = 0; j < 13; j++)
    if (v[j] < 0 || (j >= 7 && j <= 8 && v[j] < 1)) {
      fail(c, 1, "conv2d: bad geometry");
      return 0;
    }
  *g = (tc_conv){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12]};
  return 1;
}

static size_t in_size(const tc_conv *g) { return (size_t)g->n * g->h * g->w * g->c; }
static size_t out_size(const tc_conv *g) { return (size_t)g->n * g->ho * g->wo * g->cout; }
static size_t filter_size(const tc_conv *g) { return (size_t)g->kh * g->kw * g->c * g->cout; }

static napi_value conv_done(call *c, int rc) {
  if (rc != 0) fail(c, 1, "conv2d: out of memory for the patches");
  return NULL;
}

/* conv2d(x, w, y, geom) */
static napi_value js_conv2d(napi_env env, napi_callback_info info) {
  call c;
  tc_conv g;
  if (!begin(env, info, &c, 4, "conv2d(x, w, y, geom)") || !conv_geom(&c, 3, &g)) return NULL;
  float *x = f32(&c, 0, in_size(&g), 0), *w = f32(&c, 1, filter_size(&g), 0), *y = f32(&c, 2, out_size(&g), 0);
  if (c.failed) return NULL;
  return conv_done(&c, tc_conv2d(&g, x, w, y, &c.inst->conv));
}

/* conv2dBackpropInput(dy, w, dx, geom) */
static napi_value js_conv2d_backprop_input(napi_env env, napi_callback_info info) {
  call c;
  tc_conv g;
  if (!begin(env, info, &c, 4, "conv2dBackpropInput(dy, w, dx, geom)") || !conv_geom(&c, 3, &g)) return NULL;
  float *dy = f32(&c, 0, out_size(&g), 0), *w = f32(&c, 1, filter_size(&g), 0), *dx = f32(&c, 2, in_size(&g), 0);
  if (c.failed) return NULL;
  return conv_done(&c, tc_conv2d_backprop_input(&g, dy, w, dx, &c.inst->conv));
}

/* conv2dBackpropFilter(x, dy, dw, geom) */
static napi_value js_conv2d_backprop_filter(napi_env env, napi_callback_info info) {
  call c;
  tc_conv g;
  if (!begin(env, info, &c, 4, "conv2dBackpropFilter(x, dy, dw, geom)") || !conv_geom(&c, 3, &g)) return NULL;
  float *x = f32(&c, 0, in_size(&g), 0), *dy = f32(&c, 1, out_size(&g), 0), *dw = f32(&c, 2, filter_size(&g), 0);
  if (c.failed) return NULL;
  return conv_done(&c, tc_conv2d_backprop_filter(&g, x, dy, dw, &c.inst->conv));
}

/* Rows of a [rows, c] block given as its first argument. */
static size_t rows_of(call *c, size_t i, size_t ch) {
  size_t len = f32_len(c, i);
  if (ch == 0 || len % ch != 0) {
    fail(c, 1, "a [rows, c] block's length is not a multiple of c");
    return 0;
  }
  return len / ch;
}

/* bnMoments(x, c, mean, m2) */
static napi_value js_bn_moments(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 4, "bnMoments(x, c, mean, m2)")) return NULL;
  size_t ch = (size_t)int_arg(&c, 1, 1, MAXI), rows = rows_of(&c, 0, ch);
  float *x = f32(&c, 0, rows * ch, 0), *mean = f32(&c, 2, ch, 0), *m2 = f32(&c, 3, ch, 0);
  double *acc = accumulators(&c, ch);
  if (c.failed) return NULL;
  tc_bn_moments(x, rows, ch, mean, m2, acc);
  return NULL;
}

/* bnNormalize(xmu, invstd, gamma | null, beta | null, y) */
static napi_value js_bn_normalize(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 5, "bnNormalize(xmu, invstd, gamma, beta, y)")) return NULL;
  size_t ch = f32_len(&c, 1), rows = rows_of(&c, 0, ch);
  float *xmu = f32(&c, 0, rows * ch, 0), *invstd = f32(&c, 1, ch, 0), *gamma = f32(&c, 2, ch, 1), *beta = f32(&c, 3, ch, 1);
  float *y = f32(&c, 4, rows * ch, 0);
  if (!c.failed && (gamma == NULL) != (beta == NULL)) fail(&c, 0, "bnNormalize: gamma and beta go together");
  if (c.failed) return NULL;
  tc_bn_normalize(xmu, invstd, gamma, beta, rows, ch, y);
  return NULL;
}

/* bnBackwardSums(dy, xmu, sumDy, sumDyXmu) */
static napi_value js_bn_backward_sums(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 4, "bnBackwardSums(dy, xmu, sumDy, sumDyXmu)")) return NULL;
  size_t ch = f32_len(&c, 2), rows = rows_of(&c, 0, ch);
  float *dy = f32(&c, 0, rows * ch, 0), *xmu = f32(&c, 1, rows * ch, 0), *sd = f32(&c, 2, ch, 0), *sdx = f32(&c, 3, ch, 0);
  double *acc = accumulators(&c, 2 * ch);
  if (c.failed) return NULL;
  tc_bn_backward_sums(dy, xmu, rows, ch, sd, sdx, acc);
  return NULL;
}

/* bnInputGrad(dy, xmu, invstd, gamma | null, sumDy, sumDyXmu, count, dx) */
static napi_value js_bn_input_grad(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 8, "bnInputGrad(dy, xmu, invstd, gamma, sumDy, sumDyXmu, count, dx)")) return NULL;
  size_t ch = f32_len(&c, 2), rows = rows_of(&c, 0, ch);
  float *dy = f32(&c, 0, rows * ch, 0), *xmu = f32(&c, 1, rows * ch, 0), *invstd = f32(&c, 2, ch, 0), *gamma = f32(&c, 3, ch, 1);
  float *sd = f32(&c, 4, ch, 0), *sdx = f32(&c, 5, ch, 0), *dx = f32(&c, 7, rows * ch, 0);
  double count = num_arg(&c, 6);
  float *k = (float *)accumulators(&c, 2 * ch);
  if (c.failed) return NULL;
  tc_bn_input_grad(dy, xmu, invstd, gamma, sd, sdx, (float)count, rows, ch, dx, k);
  return NULL;
}

static size_t shape_size(const int *s, int rank) {
  size_t n = 1;
  for (int d = 0; d < rank; d++) n *= (size_t)s[d];
  return n;
}

/* binary(op, a, aShape, b, bShape, outShape, out): shapes are Int32Arrays of one rank (<= 6). */
static napi_value js_binary(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 7, "binary(op, a, aShape, b, bShape, outShape, out)")) return NULL;
  int op = (int)int_arg(&c, 0, TC_ADD, TC_DIV);
  napi_typedarray_type type;
  size_t rank = 0;
  bool is_ta = false;
  if (!c.failed && (napi_is_typedarray(env, c.argv[5], &is_ta) != napi_ok || !is_ta ||
                    napi_get_typedarray_info(env, c.argv[5], &type, &rank, NULL, NULL, NULL) != napi_ok || rank > TC_MAX_RANK))
    fail(&c, 1, "binary: outShape must be an Int32Array of rank <= 6");
  const int *as = i32(&c, 2, rank), *bs = i32(&c, 4, rank), *os = i32(&c, 5, rank);
  if (c.failed) return NULL;
  for (size_t d = 0; d < rank; d++)
    if ((as[d] != os[d] && as[d] != 1) || (bs[d] != os[d] && bs[d] != 1) || os[d] < 0) {
      fail(&c, 1, "binary: shapes do not broadcast to outShape");
      return NULL;
    }
  float *a = f32(&c, 1, shape_size(as, (int)rank), 0), *b = f32(&c, 3, shape_size(bs, (int)rank), 0);
  float *out = f32(&c, 6, shape_size(os, (int)rank), 0);
  if (c.failed) return NULL;
  tc_binary(op, a, as, b, bs, os, (int)rank, out);
  return NULL;
}

/* unary(op, x, y, alpha) */
static napi_value js_unary(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 4, "unary(op, x, y, alpha)")) return NULL;
  int op = (int)int_arg(&c, 0, TC_RELU, TC_STEP);
  size_t n = f32_len(&c, 1);
  float *x = f32(&c, 1, n, 0), *y = f32(&c, 2, n, 0);
  double alpha = num_arg(&c, 3);
  if (c.failed) return NULL;
  tc_unary(op, x, n, (float)alpha, y);
  return NULL;
}

/* reluGrad(dy, y, dx) */
static napi_value js_relu_grad(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 3, "reluGrad(dy, y, dx)")) return NULL;
  size_t n = f32_len(&c, 0);
  float *dy = f32(&c, 0, n, 0), *y = f32(&c, 1, n, 0), *dx = f32(&c, 2, n, 0);
  if (c.failed) return NULL;
  tc_relu_grad(dy, y, n, dx);
  return NULL;
}

/* reduce(op, x, outer, mid, inner, y) */
static napi_value js_reduce(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 6, "reduce(op, x, outer, mid, inner, y)")) return NULL;
  int op = (int)int_arg(&c, 0, TC_SUM, TC_MEAN);
  size_t outer = (size_t)int_arg(&c, 2, 0, MAXI), mid = (size_t)int_arg(&c, 3, 0, MAXI), inner = (size_t)int_arg(&c, 4, 0, MAXI);
  float *x = f32(&c, 1, outer * mid * inner, 0), *y = f32(&c, 5, outer * inner, 0);
  double *acc = accumulators(&c, inner);
  if (c.failed) return NULL;
  tc_reduce(op, x, outer, mid, inner, y, acc);
  return NULL;
}

/* A number argument rounded to float32, as tfjs makes a scalar tensor of it. */
static float f32_num(call *c, napi_value obj, const char *key) {
  napi_value v;
  double d = 0;
  if (c->failed) return 0;
  if (napi_get_named_property(c->env, obj, key, &v) != napi_ok || napi_get_value_double(c->env, v, &d) != napi_ok) fail(c, 0, key);
  return (float)d;
}

static int flag(call *c, napi_value obj, const char *key) {
  napi_value v;
  bool b = false;
  if (c->failed) return 0;
  if (napi_get_named_property(c->env, obj, key, &v) != napi_ok || napi_get_value_bool(c->env, v, &b) != napi_ok) fail(c, 0, key);
  return b;
}

/* sgdUpdate(options, param, grad, buf | null, paramOut, bufOut | null) */
static napi_value js_sgd_update(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 6, "sgdUpdate(options, param, grad, buf, paramOut, bufOut)")) return NULL;
  tc_sgd o = {f32_num(&c, c.argv[0], "lr"), f32_num(&c, c.argv[0], "momentum"), f32_num(&c, c.argv[0], "oneMinusDampening"),
              f32_num(&c, c.argv[0], "weightDecay"), flag(&c, c.argv[0], "nesterov")};
  size_t n = f32_len(&c, 1);
  float *p = f32(&c, 1, n, 0), *g = f32(&c, 2, n, 0), *buf = f32(&c, 3, n, 1), *p_out = f32(&c, 4, n, 0);
  float *buf_out = f32(&c, 5, n, o.momentum == 0.0f);
  if (c.failed) return NULL;
  tc_sgd_update(&o, p, g, buf, n, p_out, buf_out);
  return NULL;
}

/* adamUpdate(options, param, grad, m | null, v | null, vmax | null, paramOut, mOut, vOut, vmaxOut | null) */
static napi_value js_adam_update(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 10, "adamUpdate(options, param, grad, m, v, vmax, paramOut, mOut, vOut, vmaxOut)")) return NULL;
  napi_value opt = c.argv[0];
  tc_adam o = {
      .decay = f32_num(&c, opt, "decay"),
      .weight_decay = f32_num(&c, opt, "weightDecay"),
      .decoupled = flag(&c, opt, "decoupled"),
      .amsgrad = flag(&c, opt, "amsgrad"),
      .lerp_low = flag(&c, opt, "lerpLow"),
      .w = f32_num(&c, opt, "w"),
      .one_minus_w = f32_num(&c, opt, "oneMinusW"),
      .beta2 = f32_num(&c, opt, "beta2"),
      .one_minus_beta2 = f32_num(&c, opt, "oneMinusBeta2"),
      .bias_correction2_sqrt = f32_num(&c, opt, "biasCorrection2Sqrt"),
      .eps = f32_num(&c, opt, "eps"),
      .step_size = f32_num(&c, opt, "stepSize"),
  };
  size_t n = f32_len(&c, 1);
  float *p = f32(&c, 1, n, 0), *g = f32(&c, 2, n, 0), *m = f32(&c, 3, n, 1), *v = f32(&c, 4, n, 1), *vmax = f32(&c, 5, n, 1);
  float *p_out = f32(&c, 6, n, 0), *m_out = f32(&c, 7, n, 0), *v_out = f32(&c, 8, n, 0), *vmax_out = f32(&c, 9, n, !o.amsgrad);
  if (!c.failed && (m == NULL) != (v == NULL)) fail(&c, 0, "adamUpdate: m and v go together");
  if (c.failed) return NULL;
  tc_adam_update(&o, p, g, m, v, vmax, n, p_out, m_out, v_out, vmax_out);
  return NULL;
}

/* setThreads(n): the BLAS's threads (process-wide). */
static napi_value js_set_threads(napi_env env, napi_callback_info info) {
  call c;
  if (!begin(env, info, &c, 1, "setThreads(n)")) return NULL;
  int n = (int)int_arg(&c, 0, 1, 1024);
  if (c.failed) return NULL;
  tc_set_blas_threads(n);
  return NULL;
}

static napi_value js_threads(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_int32(env, tc_blas_threads(), &v);
  return v;
}

static napi_value js_blas_config(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_create_string_utf8(env, tc_blas_config(), NAPI_AUTO_LENGTH, &v);
  return v;
}

static void free_instance(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  instance *inst = (instance *)data;
  tc_scratch_free(&inst->conv);
  tc_scratch_free(&inst->acc);
  free(inst);
}

NAPI_MODULE_INIT() {
  instance *inst = (instance *)calloc(1, sizeof(instance));
  if (!inst || napi_set_instance_data(env, inst, free_instance, NULL) != napi_ok) return NULL;
  static const struct {
    const char *name;
    napi_callback fn;
  } fns[] = {
      {"sgemm", js_sgemm},
      {"conv2d", js_conv2d},
      {"conv2dBackpropInput", js_conv2d_backprop_input},
      {"conv2dBackpropFilter", js_conv2d_backprop_filter},
      {"bnMoments", js_bn_moments},
      {"bnNormalize", js_bn_normalize},
      {"bnBackwardSums", js_bn_backward_sums},
      {"bnInputGrad", js_bn_input_grad},
      {"binary", js_binary},
      {"unary", js_unary},
      {"reluGrad", js_relu_grad},
      {"reduce", js_reduce},
      {"sgdUpdate", js_sgd_update},
      {"adamUpdate", js_adam_update},
      {"setThreads", js_set_threads},
      {"threads", js_threads},
      {"blasConfig", js_blas_config},
  };
  for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
    napi_value f;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].fn, NULL, &f) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, f) != napi_ok)
      return NULL;
  }
  return exports;
}
