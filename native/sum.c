/*
 * The collective's float32 sums in C (src/gpu-pool/collective-math.ts has the same in JS,
 * the reference): out[i] = (((0 + p0[i]) + p1[i]) + ...) + p(k-1)[i], rounded to float32
 * after every addition, the bits of the in-process group's `out[i] += x_r[i]` from zeros.
 * Plain C float arithmetic without fast-math or contraction (binding.gyp) is exactly that,
 * and the compiler vectorizes the lanes (each lane rounds like the scalar code). A NaN
 * stays a NaN, though which operand's payload survives may differ from the JS.
 *
 * Blocks of BLOCK values: every part's block is read before `out`'s is written, so `out`
 * may be any of the parts.
 */
#include <node_api.h>
#include <stddef.h>

#define BLOCK 1024
#define MAX_PARTS 64

static void sum_block(float *restrict out, const float *const *parts, size_t k, size_t at, size_t n) {
  float acc[BLOCK];
  const float *p0 = parts[0] + at;
  for (size_t j = 0; j < n; j++) acc[j] = 0.0f + p0[j];
  for (size_t r = 1; r < k; r++) {
    const float *p = parts[r] + at;
    for (size_t j = 0; j < n; j++) acc[j] += p[j];
  }
  for (size_t j = 0; j < n; j++) out[at + j] = acc[j];
}

static float *floats_of(napi_env env, napi_value v, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return NULL;
  napi_typedarray_type type;
  void *data = NULL;
  if (napi_get_typedarray_info(env, v, &type, len, &data, NULL, NULL) != napi_ok || type != napi_float32_array) return NULL;
  return (float *)data;
}

/* sumInRankOrder(out: Float32Array, parts: Float32Array[]): undefined; throws on bad arguments. */
static napi_value sum_in_rank_order(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, NULL, "sumInRankOrder(out, parts)");
    return NULL;
  }
  size_t n = 0;
  float *out = floats_of(env, argv[0], &n);
  uint32_t k = 0;
  bool is_array = false;
  if (!out || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[1], &k) != napi_ok || k == 0 || k > MAX_PARTS) {
    napi_throw_type_error(env, NULL, "sumInRankOrder: out must be a Float32Array, parts an array of 1 to 64 Float32Arrays");
    return NULL;
  }
  const float *parts[MAX_PARTS];
  for (uint32_t r = 0; r < k; r++) {
    napi_value e;
    size_t len = 0;
    if (napi_get_element(env, argv[1], r, &e) != napi_ok || !(parts[r] = floats_of(env, e, &len)) || len != n) {
      if (n == 0 && len == 0 && napi_get_element(env, argv[1], r, &e) == napi_ok) { parts[r] = NULL; continue; }
      napi_throw_range_error(env, NULL, "sumInRankOrder: every part must be a Float32Array of out's length");
      return NULL;
    }
  }
  if (n == 0) return NULL;
  for (size_t at = 0; at < n; at += BLOCK) sum_block(out, parts, k, at, n - at < BLOCK ? n - at : BLOCK);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "sumInRankOrder", NAPI_AUTO_LENGTH, sum_in_rank_order, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "sumInRankOrder", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
