/*
 * Optimizer updates in one pass per parameter. Each mirrors, operation for operation and
 * rounding for rounding, the tfjs composition in src/trainer/optim/ (sgd.ts, adam.ts),
 * so the native backend updates parameters to the same bits as the other backends
 * compose them. Scalars arrive already rounded to float32, as tfjs makes them tensors.
 */
#include <math.h>

#include "compute.h"

/* PyTorch SGD: dp = g + wd*p; buf = momentum*buf + (1 - dampening)*dp (or dp on the first
   step); dp = nesterov ? dp + momentum*buf : buf; p -= lr*dp. */
void tc_sgd_update(const tc_sgd *o, const float *restrict param, const float *restrict grad, const float *restrict buf, size_t n,
                   float *restrict param_out, float *restrict buf_out) {
  /* Scalars in locals: the loop conditions are then invariant and gcc unswitches them. */
  const float lr = o->lr, momentum = o->momentum, damp = o->one_minus_dampening, wd = o->weight_decay;
  const int nesterov = o->nesterov;
  for (size_t i = 0; i < n; i++) {
    const float p = param[i];
    float dp = wd != 0.0f ? grad[i] + p * wd : grad[i];
    if (momentum != 0.0f) {
      const float b = buf ? buf[i] * momentum + dp * damp : dp;
      buf_out[i] = b;
      dp = nesterov ? dp + b * momentum : b;
    }
    param_out[i] = p - dp * lr;
  }
}

static float max_as_js(float a, float b) {
  /* Math.max: NaN wins, and +0 is above -0. */
  if (isnan(a) || isnan(b)) return NAN;
  if (a == b) return signbit(a) ? b : a;
  return a > b ? a : b;
}

/* One Adam pass; has_state and amsgrad are constants at each call below, so each of the
   four variants compiles to its own vectorized loop. */
static inline __attribute__((always_inline)) void adam_pass(const tc_adam *o, const float *restrict param, const float *restrict grad,
                                                            const float *restrict m0, const float *restrict v0,
                                                            const float *restrict vmax0, size_t n, float *restrict param_out,
                                                            float *restrict m_out, float *restrict v_out, float *restrict vmax_out,
                                                            const int has_state, const int amsgrad) {
  const float decay = o->decay, wd = o->weight_decay, w = o->w, omw = o->one_minus_w, beta2 = o->beta2, omb2 = o->one_minus_beta2;
  const float bc2 = o->bias_correction2_sqrt, eps = o->eps, step_size = o->step_size;
  const int decoupled = o->decoupled, lerp_low = o->lerp_low;
  for (size_t i = 0; i < n; i++) {
    float p = param[i], g = grad[i];
    if (wd != 0.0f) {
      if (decoupled) p = p * decay;
      else g = g + p * wd;
    }
    const float m_old = has_state ? m0[i] : 0.0f, v_old = has_state ? v0[i] : 0.0f;
    const float m = lerp_low ? m_old + (g - m_old) * w : g - (g - m_old) * omw;
    const float v = v_old * beta2 + g * g * omb2;
    float used = v;
    if (amsgrad) {
      used = vmax0 ? max_as_js(vmax0[i], v) : v;
      vmax_out[i] = used;
    }
    const float denom = sqrtf(used) / bc2 + eps;
    param_out[i] = p - m / denom * step_size;
    m_out[i] = m;
    v_out[i] = v;
  }
}

/* PyTorch Adam / AdamW (see adam.ts for the formulas and where each rounding happens). */
void tc_adam_update(const tc_adam *o, const float *param, const float *grad, const float *m0, const float *v0, const float *vmax0, size_t n,
                    float *param_out, float *m_out, float *v_out, float *vmax_out) {
  const int has_state = m0 != NULL;
  if (o->amsgrad) {
    if (has_state) adam_pass(o, param, grad, m0, v0, vmax0, n, param_out, m_out, v_out, vmax_out, 1, 1);
    else adam_pass(o, param, grad, m0, v0, vmax0, n, param_out, m_out, v_out, vmax_out, 0, 1);
  } else {
    if (has_state) adam_pass(o, param, grad, m0, v0, vmax0, n, param_out, m_out, v_out, vmax_out, 1, 0);
    else adam_pass(o, param, grad, m0, v0, vmax0, n, param_out, m_out, v_out, vmax_out, 0, 0);
  }
}
