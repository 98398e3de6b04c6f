/* Element-wise layers (ReLU, GELU, dropout), softmax over the last dim, flatten, and the row
 * softmax kernels that attention calls directly. Every kernel has a CPU and a CUDA twin. */
#ifndef NG_ACTIVATION_H
#define NG_ACTIVATION_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y = max(x, 0); the gradient at exactly 0 is 0, as in PyTorch. */
ng_layer *ng_relu(const char *name);
/* y = x Phi(x) with the erf form (tanh_approx = 0), or torch.nn.GELU(approximate='tanh'):
 * y = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (tanh_approx = 1). */
ng_layer *ng_gelu(const char *name, int tanh_approx);
/* What the last forward of a ReLU or GELU layer kept for backward (GELU: its input; ReLU: its
 * output, positive exactly where its input was), or NULL for any other layer (or before a
 * forward): lets a test see on which side of ReLU's kink each unit fell. */
const ng_tensor *ng_activation_input(const ng_layer *l);
/* Inverted dropout, active only when ctx->training and p > 0: kept elements are scaled by
 * 1/(1-p). The mask is element i kept iff u_i <= 1-p, u_i the Philox uniform of ng_rng_bernoulli
 * (core/rng.h) for the key ctx->rng with stream ((uint64_t)1 << 32) | l->index, i.e. exactly
 * ng_rng_bernoulli(mask, key, 1-p). It is never stored: backward regenerates it from the key, so
 * a checkpoint replay sees the same mask. In eval mode (or p = 0) forward returns x itself. */
ng_layer *ng_dropout(const char *name, double p);
/* Softmax over the last dim, with the row max subtracted first. */
ng_layer *ng_softmax(const char *name);
/* [N, ...] -> [N, prod(...)]: forward returns a view of x; backward copies dy into dx. */
ng_layer *ng_flatten(const char *name);

/* The Philox stream a dropout layer draws its mask from. */
static inline uint64_t ng_dropout_stream(const ng_layer *l) {
    return ((uint64_t)1 << 32) | (uint64_t)(uint32_t)l->index;
}

/* y = softmax of x over the last dim; x and y of the same shape, dtype and device (y may be x).
 * Attention calls it on scores [B*H, T, T]. */
void ng_softmax_rows(const ng_tensor *x, ng_tensor *y);
/* dx = y * (dy - sum(dy * y, last dim)) for y = softmax(x); all of one shape (dx may be dy). */
void ng_softmax_rows_backward(const ng_tensor *y, const ng_tensor *dy, ng_tensor *dx);

#ifdef __cplusplus
}
#endif
#endif
