/* Max, average and global average pooling: layers and CPU twins (CUDA twins in pool_cuda.cu).
 * f32 max and average pooling on the CPU run on oneDNN (pool_onednn.c), and so do bf16 on oneDNN's
 * bf16 kernels where the CPU has AVX512_BF16 (native_forward) and f16 (and bf16 elsewhere)
 * through f32 copies (half_forward); the loops here are the reference the tests hold it to and
 * serve f64 and the calls oneDNN's max cannot take (see has_special). Backward on both devices
 * visits each input's windows in increasing output order, so the CPU scatter and the CUDA gather
 * add the same terms in the same order. */
#include "nn/pool.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/half_vec.h"
#include "core/threads.h"
#include "nn/activation_kernels.h"
#include "core/ops.h"
#include "nn/conv_kernels.h"
#include "nn/plan.h"
#include "nn/pool_onednn.h"

/* How the last forward ran, so its backward runs the same way. */
enum { BY_LOOPS, BY_ONEDNN, BY_LOOPS_NO_ARGMAX };

typedef struct {
    int max, global, nd;
    int64_t kernel[3], stride[3], padding[3];
    ng_tensor x;       /* the input of the last forward (its shape, dtype and device) */
    ng_tensor argmax;  /* i32, the output's shape: max pooling on the loops only */
    int path;          /* BY_* of the last forward */
    int native;        /* the last forward was bf16 on oneDNN's bf16 kernels (or their fallback) */
    void *ws;          /* oneDNN max pooling's workspace, in the activation arena */
    void *onednn;      /* oneDNN primitives per input shape */
    void *onednn_bf16; /* ... and those of the native bf16 path */
} pool_state;

static long native_passes;

long ng_pool_native_passes(void) {
    return native_passes;
}

/* Max pooling whose forward no backward will read (an evaluation, or a forward_only pass: a
 * checkpoint segment's first forward, the recompute chain) runs oneDNN's inference forward and
 * keeps no workspace; should a backward come anyway (gradient checks in evaluation mode), it finds
 * each window's maximum again in x (BY_LOOPS_NO_ARGMAX), which gives the same bits. */
static int infer_pass(const pool_state *s, int training, int forward_only) {
    return s->max && (!training || forward_only);
}

/* Element access for every float dtype: f16/bf16 widened exactly, stores rounded once through
 * float as the CUDA twin stores. */
static inline double ld(const void *p, ng_dtype t, int64_t i) {
    return ng_act_ld(p, t, i);
}

static inline void st(void *p, ng_dtype t, int64_t i, double v) {
    ng_act_st(p, t, i, v);
}

/* ---- CPU twins ----------------------------------------------------------------------------- */

/* [lo, hi) of kernel offsets that land inside an input of size n from start position p0. */
static void clamp_window(int64_t p0, int64_t k, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = p0 < 0 ? -p0 : 0;
    *hi = n - p0 < k ? n - p0 : k;
}

/* The maximum of the window [d0,d1) x [h0,h1) x [w0,w1) of offsets from (id0, ih0, iw0) and its
 * index in the plane: the first maximum in row-major window order, or the last NaN. */
__attribute__((optimize("no-trapping-math"))) /* as in relu_backward_f32: selects, not jumps */
static inline int64_t
window_max_f32(const ng_win3 *w, const float *xp, int64_t id0, int64_t d0, int64_t d1, int64_t ih0,
               int64_t h0, int64_t h1, int64_t iw0, int64_t w0, int64_t w1, float *max) {
    float best = 0;
    int64_t arg = -1;
    for (int64_t kd = d0; kd < d1; kd++)
        for (int64_t kh = h0; kh < h1; kh++) {
            int64_t row = ((id0 + kd) * w->in[1] + ih0 + kh) * w->in[2] + iw0;
            for (int64_t kw = w0; kw < w1; kw++) {
                float v = xp[row + kw];
                /* masks, not branches: the data decide */
                int64_t take = -(int64_t)((arg < 0) | (v > best) | (v != v));
                int32_t vb, bb;
                memcpy(&vb, &v, 4), memcpy(&bb, &best, 4);
                bb = (vb & (int32_t)take) | (bb & ~(int32_t)take);
                memcpy(&best, &bb, 4);
                arg = ((row + kw) & take) | (arg & ~take);
            }
        }
    *max = best;
    return arg;
}

/* One plane's outputs; argmax (max pooling) may be NULL. (The attribute matches window_max_f32's,
 * without which GCC will not inline it.) */
__attribute__((optimize("no-trapping-math"))) static void
pool_plane_f32(int max, const ng_win3 *w, const float *xp, float *y, int32_t *argmax) {
    double kk = (double)ng_win3_k_size(w);
    int64_t o = 0;
    for (int64_t od = 0; od < w->out[0]; od++) {
        int64_t id0 = od * w->s[0] - w->p[0], d0, d1;
        clamp_window(id0, w->k[0], w->in[0], &d0, &d1);
        for (int64_t oh = 0; oh < w->out[1]; oh++) {
            int64_t ih0 = oh * w->s[1] - w->p[1], h0, h1;
            clamp_window(ih0, w->k[1], w->in[1], &h0, &h1);
            for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {
                int64_t iw0 = ow * w->s[2] - w->p[2], w0, w1;
                clamp_window(iw0, w->k[2], w->in[2], &w0, &w1);
                if (max) {
                    float best;
                    int64_t arg =
                        window_max_f32(w, xp, id0, d0, d1, ih0, h0, h1, iw0, w0, w1, &best);
                    y[o] = best;
                    if (argmax) argmax[o] = (int32_t)arg;
                    continue;
                }
                double sum = 0;
                for (int64_t kd = d0; kd < d1; kd++)
                    for (int64_t kh = h0; kh < h1; kh++) {
                        int64_t row = ((id0 + kd) * w->in[1] + ih0 + kh) * w->in[2] + iw0;
                        for (int64_t kw = w0; kw < w1; kw++) sum += xp[row + kw];
                    }
                y[o] = (float)(sum / kk);
            }
        }
    }
}

/* f32 pooling, the models' case: the general loop's visiting order and tie rule (the first
 * maximum, the last NaN) with the window clamped to the input once per output instead of a
 * bounds test and a dtype switch per element. Planes are independent. */
static void pool_forward_f32(int max, const ng_win3 *w, int64_t planes, const float *x, float *y,
                             int32_t *argmax) {
    int64_t in = ng_win3_in_size(w), out = ng_win3_out_size(w);
#pragma omp parallel for schedule(static) if (planes * in >= NG_OMP_MIN)
    for (int64_t pl = 0; pl < planes; pl++)
        pool_plane_f32(max, w, x + pl * in, y + pl * out, argmax ? argmax + pl * out : NULL);
}

/* f32 max pooling's gradient without a stored argmax: each window's maximum found again in x by
 * the forward's rule and dy added there, in increasing output order as pool_backward_cpu adds
 * it, so the bits are the same. For the calls whose forward could not go to oneDNN. */
__attribute__((optimize("no-trapping-math"))) static void
max_backward_f32(const ng_win3 *w, int64_t planes, const float *x, const float *dy, float *dx) {
    int64_t in = ng_win3_in_size(w), out = ng_win3_out_size(w);
#pragma omp parallel for schedule(static) if (planes * in >= NG_OMP_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * in, *g = dy + pl * out;
        float *dp = dx + pl * in;
        memset(dp, 0, sizeof(float) * (size_t)in);
        int64_t o = 0;
        for (int64_t od = 0; od < w->out[0]; od++) {
            int64_t id0 = od * w->s[0] - w->p[0], d0, d1;
            clamp_window(id0, w->k[0], w->in[0], &d0, &d1);
            for (int64_t oh = 0; oh < w->out[1]; oh++) {
                int64_t ih0 = oh * w->s[1] - w->p[1], h0, h1;
                clamp_window(ih0, w->k[1], w->in[1], &h0, &h1);
                for (int64_t ow = 0; ow < w->out[2]; ow++, o++) {
                    int64_t iw0 = ow * w->s[2] - w->p[2], w0, w1;
                    clamp_window(iw0, w->k[2], w->in[2], &w0, &w1);
                    float best;
                    dp[window_max_f32(w, xp, id0, d0, d1, ih0, h0, h1, iw0, w0, w1, &best)] += g[o];
                }
            }
        }
    }
}

/* Whether x holds a value oneDNN's max pooling would treat otherwise than natgrad: a NaN (natgrad
 * and its CUDA twin make a NaN its window's maximum; oneDNN's comparisons drop it) or a value at
 * or below -FLT_MAX (oneDNN starts each window at -FLT_MAX, not -inf, so a window of -inf gives
 * -FLT_MAX, and a window whose values are all -FLT_MAX or -inf keeps its first, possibly padded,
 * position as the argmax). Such a call runs on the loops instead. A check of the input is one
 * read of it, cheaper than a pass that repairs outputs, and NaNs in a forward are rare (a
 * diverging step, which is then skipped), so the slow path costs nothing in practice. */
__attribute__((optimize("no-trapping-math"))) static int has_special(const ng_tensor *x) {
    const float *v = x->data;
    int any = 0;
#pragma omp parallel for reduction(| : any) schedule(static) if (x->numel >= NG_OMP_MIN)
    for (int64_t i = 0; i < x->numel; i++) any |= !(v[i] > -FLT_MAX);
    return any;
}

/* The same for bf16 x on oneDNN's bf16 kernels, on the bits: a NaN (magnitude above inf's), -inf,
 * or -0x1.fep127, bf16's lowest finite value, at or below which oneDNN's starting value may lie
 * (whether it starts from f32's lowest or bf16's); the loops then run. */
static int has_special_bf16(const ng_tensor *x) {
    const uint16_t *v = x->data;
    int any = 0;
#pragma omp parallel for reduction(| : any) schedule(static) if (x->numel >= NG_OMP_MIN)
    for (int64_t i = 0; i < x->numel; i++) {
        unsigned b = v[i], mag = b & 0x7fffu;
        any |= (mag > 0x7f80u) | ((b >> 15) & (mag >= 0x7f7fu));
    }
    return any;
}

static void pool_forward_cpu(int max, const ng_win3 *w, int64_t planes, const ng_tensor *x,
                             ng_tensor *y, ng_tensor *argmax) {
    if (x->dtype == NG_F32 && y->dtype == NG_F32) {
        pool_forward_f32(max, w, planes, x->data, y->data, max ? argmax->data : NULL);
        return;
    }
    int64_t in = ng_win3_in_size(w), out = ng_win3_out_size(w);
    /* f16/bf16 image planes: widened a plane at a time (core/half_vec.h), pooled by the f32
     * kernel, rounded back: a maximum is one of the inputs and an average is rounded through f32
     * as the element loop stores it, so the bits are the loop's. The plane buffer is bounded
     * (larger planes, 3-D volumes, take the loop), so it is not planned memory. */
    if ((x->dtype == NG_F16 || x->dtype == NG_BF16) && y->dtype == x->dtype &&
        in + out <= (1 << 16)) {
#pragma omp parallel if (planes * in >= NG_OMP_MIN)
        {
            float *b = malloc(sizeof(float) * (size_t)(in + out));
            NG_CHECK(b, "pooling: out of host memory for a %lld-element plane", (long long)in);
#pragma omp for schedule(static)
            for (int64_t pl = 0; pl < planes; pl++) {
                ng_half_to_f32((const uint16_t *)x->data + pl * in, x->dtype, b, in);
                pool_plane_f32(max, w, b, b + in, max ? (int32_t *)argmax->data + pl * out : NULL);
                ng_half_from_f32(b + in, y->dtype, (uint16_t *)y->data + pl * out, out);
            }
            free(b);
        }
        return;
    }
    double kk = (double)ng_win3_k_size(w);
    /* planes are independent (a window stays in its plane) */
#pragma omp parallel for schedule(static) if (planes * in >= NG_OMP_MIN)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t o = 0; o < out; o++) {
            int64_t ow = o % w->out[2], t = o / w->out[2], oh = t % w->out[1], od = t / w->out[1];
            double best = 0, sum = 0;
            int64_t arg = -1;
            for (int64_t kd = 0; kd < w->k[0]; kd++) {
                int64_t id = od * w->s[0] - w->p[0] + kd;
                if (id < 0 || id >= w->in[0]) continue;
                for (int64_t kh = 0; kh < w->k[1]; kh++) {
                    int64_t ih = oh * w->s[1] - w->p[1] + kh;
                    if (ih < 0 || ih >= w->in[1]) continue;
                    for (int64_t kw = 0; kw < w->k[2]; kw++) {
                        int64_t iw = ow * w->s[2] - w->p[2] + kw;
                        if (iw < 0 || iw >= w->in[2]) continue;
                        int64_t i = (id * w->in[1] + ih) * w->in[2] + iw;
                        double v = ld(x->data, x->dtype, pl * in + i);
                        if (arg < 0 || v > best || isnan(v)) best = v, arg = i;
                        sum += v;
                    }
                }
            }
            st(y->data, y->dtype, pl * out + o, max ? best : sum / kk);
            if (max) ((int32_t *)argmax->data)[pl * out + o] = (int32_t)arg;
        }
}

/* v stored in t and loaded back. */
static double round_to(ng_dtype t, double v) {
    double d = 0;
    ng_act_st(&d, t, 0, v);
    return ng_act_ld(&d, t, 0);
}

static void pool_backward_cpu(int max, const ng_win3 *w, int64_t planes, const ng_tensor *dy,
                              const ng_tensor *argmax, ng_tensor *dx) {
    int64_t in = ng_win3_in_size(w), out = ng_win3_out_size(w);
    double kk = (double)ng_win3_k_size(w);
    memset(dx->data, 0, ng_tensor_bytes(dx));
#pragma omp parallel for schedule(static) if (planes * in >= NG_OMP_MIN)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t o = 0; o < out; o++) {
            double g = ld(dy->data, dy->dtype, pl * out + o);
            if (max) {
                int64_t i = pl * in + ((const int32_t *)argmax->data)[pl * out + o];
                st(dx->data, dx->dtype, i, ld(dx->data, dx->dtype, i) + g);
                continue;
            }
            /* Rounded to the element type once, as the CUDA gather does. */
            double v = round_to(dy->dtype, g / kk);
            int64_t ow = o % w->out[2], t = o / w->out[2], oh = t % w->out[1], od = t / w->out[1];
            for (int64_t kd = 0; kd < w->k[0]; kd++) {
                int64_t id = od * w->s[0] - w->p[0] + kd;
                if (id < 0 || id >= w->in[0]) continue;
                for (int64_t kh = 0; kh < w->k[1]; kh++) {
                    int64_t ih = oh * w->s[1] - w->p[1] + kh;
                    if (ih < 0 || ih >= w->in[1]) continue;
                    for (int64_t kw = 0; kw < w->k[2]; kw++) {
                        int64_t iw = ow * w->s[2] - w->p[2] + kw;
                        if (iw < 0 || iw >= w->in[2]) continue;
                        int64_t i = pl * in + (id * w->in[1] + ih) * w->in[2] + iw;
                        st(dx->data, dx->dtype, i, ld(dx->data, dx->dtype, i) + v);
                    }
                }
            }
        }
}

static void global_forward_cpu(const ng_tensor *x, int64_t R, int64_t S, ng_tensor *y) {
#pragma omp parallel for schedule(static) if (R * S >= NG_OMP_MIN)
    for (int64_t r = 0; r < R; r++) {
        double sum = 0;
        for (int64_t s = 0; s < S; s++) sum += ld(x->data, x->dtype, r * S + s);
        st(y->data, y->dtype, r, sum / (double)S);
    }
}

static void global_backward_cpu(const ng_tensor *dy, int64_t R, int64_t S, ng_tensor *dx) {
#pragma omp parallel for schedule(static) if (R * S >= NG_OMP_MIN)
    for (int64_t r = 0; r < R; r++) {
        double v = ld(dy->data, dy->dtype, r) / (double)S;
        for (int64_t s = 0; s < S; s++) st(dx->data, dx->dtype, r * S + s, v);
    }
}

/* ---- the layers ---------------------------------------------------------------------------- */

static void pool_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    const pool_state *s = l->impl;
    if (s->global) {
        NG_CHECK(ndim >= 3, "global_avgpool %s: input has %d dims; it takes [N, C, spatial...]",
                 l->name, ndim);
        for (int i = 2; i < ndim; i++)
            NG_CHECK(in[i] >= 1, "global_avgpool %s: spatial dim %d has size %lld", l->name, i - 2,
                     (long long)in[i]);
        *out_ndim = 2;
        out[0] = in[0], out[1] = in[1];
        return;
    }
    NG_CHECK(ndim == s->nd + 2, "%s %s: input has %d dims; a %dd pool takes [N, C, %s]",
             l->ops->kind, l->name, ndim, s->nd, s->nd == 2 ? "H, W" : "D, H, W");
    for (int i = 0; i < s->nd; i++) {
        int64_t room = in[2 + i] + 2 * s->padding[i];
        NG_CHECK(in[2 + i] >= 1 && room >= s->kernel[i],
                 "%s %s: input is too small: spatial dim %d has size %lld, padded %lld, less "
                 "than the kernel %lld",
                 l->ops->kind, l->name, i, (long long)in[2 + i], (long long)room,
                 (long long)s->kernel[i]);
        out[2 + i] = (room - s->kernel[i]) / s->stride[i] + 1;
    }
    out[0] = in[0], out[1] = in[1];
    *out_ndim = ndim;
}

static ng_win3 win_of(const pool_state *s, const int64_t *in_sp, const int64_t *out_sp) {
    ng_conv_geom g = {.nd = s->nd};
    for (int i = 0; i < 3; i++) {
        g.kernel[i] = s->kernel[i], g.stride[i] = s->stride[i], g.padding[i] = s->padding[i];
        g.dilation[i] = 1;
    }
    return ng_win3_from_conv(&g, in_sp, out_sp);
}

static ng_pool_geom geom_of(const pool_state *s) {
    ng_pool_geom g = {.max = s->max, .nd = s->nd};
    for (int i = 0; i < 3; i++)
        g.kernel[i] = s->kernel[i], g.stride[i] = s->stride[i], g.padding[i] = s->padding[i];
    return g;
}

static void check_input(const ng_layer *l, const ng_tensor *x) {
    NG_CHECK(ng_dtype_is_float(x->dtype), "%s %s: input %s must be a floating type", l->ops->kind,
             l->name, ng_tensor_desc(x));
    NG_CHECK(x->data || !x->numel, "%s %s: input has no data", l->ops->kind, l->name);
}

/* f16/bf16 on the CPU through oneDNN's f32 kernels: the input widened (exactly) into the gradient
 * arena, pooled, the output rounded back once. A maximum is one of the inputs, so max pooling's
 * output is the loops' bits; an average is oneDNN's f32 mean rounded once where the loops round
 * their own. Backward widens dy, runs oneDNN's f32 backward and rounds dx once, where the loops
 * round after each window's term: the same bits where windows do not overlap (max), within
 * rounding otherwise. The f32 copies are planned (pool_plan). */
static int half_onednn(const pool_state *s, const ng_tensor *x) {
    return !s->global && ng_pool_onednn_enabled() && x->device == NG_CPU &&
           (x->dtype == NG_F16 || x->dtype == NG_BF16);
}

static void half_forward(pool_state *s, ng_ctx *ctx, const ng_win3 *w, int64_t planes,
                         const ng_tensor *x, ng_tensor *y, int infer) {
    ng_pool_geom g = geom_of(s);
    size_t wb = infer ? 0 : ng_pool_onednn_workspace(&s->onednn, &g, x->ndim, x->shape, NG_F32);
    s->ws = wb ? ng_arena_alloc(ctx->acts, wb) : NULL;
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor xf = ng_arena_tensor(ctx->grads, NG_F32, x->ndim, x->shape, "pool input f32");
    ng_tensor yf = ng_arena_tensor(ctx->grads, NG_F32, y->ndim, y->shape, "pool output f32");
    ng_cast(&xf, x);
    int special = s->max && has_special(&xf);
    s->native = 0;
    s->path = special || infer ? BY_LOOPS_NO_ARGMAX : BY_ONEDNN;
    if (!special) /* ws NULL: max pooling's inference forward */
        ng_pool_onednn_forward(&s->onednn, &g, &xf, &yf, s->ws, ctx->grads);
    else
        pool_forward_f32(1, w, planes, xf.data, yf.data, NULL);
    ng_cast(y, &yf);
    ng_arena_release(ctx->grads, m);
}

/* bf16 on oneDNN's bf16 kernels (ng_pool_bf16_native): no copies; the workspace (training max
 * pooling) in the activation arena and oneDNN's scratch as for f32. A call holding a special
 * value runs on the loops over heap copies (widened exactly, rounded back once: the half_forward
 * fallback's bits), as does its backward, so the arenas never take more than planned. */
static void native_forward(pool_state *s, ng_ctx *ctx, const ng_win3 *w, int64_t planes,
                           const ng_tensor *x, ng_tensor *y, int infer) {
    ng_pool_geom g = geom_of(s);
    size_t wb =
        infer ? 0 : ng_pool_onednn_workspace(&s->onednn_bf16, &g, x->ndim, x->shape, NG_BF16);
    s->ws = wb ? ng_arena_alloc(ctx->acts, wb) : NULL;
    int special = s->max && has_special_bf16(x);
    s->native = 1;
    s->path = special || infer ? BY_LOOPS_NO_ARGMAX : BY_ONEDNN;
    if (!special) {
        ng_pool_onednn_forward(&s->onednn_bf16, &g, x, y, s->ws, ctx->grads);
        native_passes++;
        return;
    }
    ng_tensor xf = ng_tensor_new(NG_F32, NG_CPU, x->ndim, x->shape, "pool input f32");
    ng_tensor yf = ng_tensor_new(NG_F32, NG_CPU, y->ndim, y->shape, "pool output f32");
    ng_cast(&xf, x);
    pool_forward_f32(1, w, planes, xf.data, yf.data, NULL);
    ng_cast(y, &yf);
    ng_tensor_free(&xf), ng_tensor_free(&yf);
}

static void native_backward(pool_state *s, ng_ctx *ctx, const ng_win3 *w, int64_t planes,
                            const ng_tensor *dy, ng_tensor *dx) {
    if (s->path == BY_ONEDNN) {
        ng_pool_geom g = geom_of(s);
        ng_pool_onednn_backward(&s->onednn_bf16, &g, &s->x, dy, s->ws, dx, ctx->grads);
        native_passes++;
        return;
    }
    /* max pooling whose forward kept no workspace: f32 heap copies, as half_backward's fallback */
    ng_tensor xf = ng_tensor_new(NG_F32, NG_CPU, s->x.ndim, s->x.shape, "pool input f32");
    ng_tensor dyf = ng_tensor_new(NG_F32, NG_CPU, dy->ndim, dy->shape, "pool grad f32");
    ng_tensor dxf = ng_tensor_new(NG_F32, NG_CPU, dx->ndim, dx->shape, "pool input grad f32");
    ng_cast(&xf, &s->x), ng_cast(&dyf, dy);
    max_backward_f32(w, planes, xf.data, dyf.data, dxf.data);
    ng_cast(dx, &dxf);
    ng_tensor_free(&xf), ng_tensor_free(&dyf), ng_tensor_free(&dxf);
}

/* Whether this bf16 pass runs natively; the plan asks the same of the same primitives. */
static int native_for(pool_state *s, ng_dtype dt, int ndim, const int64_t *in, int infer) {
    ng_pool_geom g = geom_of(s);
    return dt == NG_BF16 && ng_pool_bf16_native() &&
           ng_pool_onednn_native(&s->onednn_bf16, &g, ndim, in, dt, infer);
}

static void half_backward(pool_state *s, ng_ctx *ctx, const ng_win3 *w, int64_t planes,
                          const ng_tensor *dy, ng_tensor *dx) {
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor dyf = ng_arena_tensor(ctx->grads, NG_F32, dy->ndim, dy->shape, "pool grad f32");
    ng_tensor dxf = ng_arena_tensor(ctx->grads, NG_F32, dx->ndim, dx->shape, "pool input grad f32");
    ng_cast(&dyf, dy);
    if (s->path == BY_ONEDNN) {
        ng_pool_geom g = geom_of(s);
        ng_pool_onednn_backward(&s->onednn, &g, &s->x, &dyf, s->ws, &dxf, ctx->grads);
    } else { /* a forward that fell back (a NaN: a step to be skipped; an evaluation forward):
              * x widened on the heap */
        ng_tensor xf = ng_tensor_new(NG_F32, NG_CPU, s->x.ndim, s->x.shape, "pool input f32");
        ng_cast(&xf, &s->x);
        max_backward_f32(w, planes, xf.data, dyf.data, dxf.data);
        ng_tensor_free(&xf);
    }
    ng_cast(dx, &dxf);
    ng_arena_release(ctx->grads, m);
}

static ng_tensor pool_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    pool_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    pool_out_shape(l, x->ndim, x->shape, &ndim, shape);
    check_input(l, x);
    s->x = *x;
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    if (!y.numel) return y;
    int64_t planes = x->shape[0] * x->shape[1];
    if (s->global) {
        int64_t S = x->numel / planes;
        ng_arena_mark m = ng_arena_get_mark(ctx->grads);
        ng_tensor sums = ng_arena_tensor(ctx->grads, NG_F64, 1, (int64_t[]){2 * planes}, "sums");
        (void)sums; /* CUDA scratch; unused by the CPU twin */
        NG_DISPATCH(x, global_forward_cpu(x, planes, S, &y),
                    ng_global_avgpool_cuda_forward(x, planes, S, &y, &sums));
        ng_arena_release(ctx->grads, m);
        return y;
    }
    ng_win3 w = win_of(s, x->shape + 2, shape + 2);
    int infer = infer_pass(s, ctx->training, ctx->forward_only);
    if (half_onednn(s, x)) {
        if (native_for(s, x->dtype, x->ndim, x->shape, infer))
            native_forward(s, ctx, &w, planes, x, &y, infer);
        else
            half_forward(s, ctx, &w, planes, x, &y, infer);
        return y;
    }
    if (ng_pool_onednn_takes(x)) {
        ng_pool_geom g = geom_of(s);
        size_t wb = infer ? 0 : ng_pool_onednn_workspace(&s->onednn, &g, x->ndim, x->shape, NG_F32);
        s->ws = wb ? ng_arena_alloc(ctx->acts, wb) : NULL; /* in place of the i32 argmax */
        int special = s->max && has_special(x);
        s->path = special || infer ? BY_LOOPS_NO_ARGMAX : BY_ONEDNN;
        if (!special) /* ws NULL: max pooling's inference forward */
            ng_pool_onednn_forward(&s->onednn, &g, x, &y, s->ws, ctx->grads);
        else
            pool_forward_f32(1, &w, planes, x->data, y.data, NULL);
        return y;
    }
    s->path = BY_LOOPS;
    ng_tensor *am = NULL;
    if (s->max) {
        NG_CHECK(ng_win3_in_size(&w) <= INT32_MAX,
                 "maxpool %s: an input plane of %lld positions is too big for the i32 argmax",
                 l->name, (long long)ng_win3_in_size(&w));
        s->argmax = ng_arena_tensor(ctx->acts, NG_I32, ndim, shape, "maxpool argmax");
        am = &s->argmax;
    }
    NG_DISPATCH(x, pool_forward_cpu(s->max, &w, planes, x, &y, am),
                ng_pool_cuda_forward(s->max, &w, planes, x, &y, am));
    return y;
}

static void pool_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    pool_state *s = l->impl;
    const ng_tensor *x = &s->x;
    NG_CHECK(x->ndim >= 3, "%s %s: backward without a forward", l->ops->kind, l->name);
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    pool_out_shape(l, x->ndim, x->shape, &ndim, shape);
    NG_CHECK(dy->ndim == ndim && !memcmp(dy->shape, shape, sizeof(int64_t) * (size_t)ndim) &&
                 dy->dtype == x->dtype && dy->device == x->device,
             "%s %s: output gradient %s does not fit the forward's output", l->ops->kind, l->name,
             ng_tensor_desc(dy));
    if (!dx) return;
    NG_CHECK(ng_tensor_same_shape(dx, x) && dx->dtype == x->dtype && dx->device == x->device,
             "%s %s: input gradient %s does not fit the input %s", l->ops->kind, l->name,
             ng_tensor_desc(dx), ng_tensor_desc(x));
    if (!dx->numel) return;
    int64_t planes = x->shape[0] * x->shape[1];
    if (s->global) {
        int64_t S = x->numel / planes;
        NG_DISPATCH(dx, global_backward_cpu(dy, planes, S, dx),
                    ng_global_avgpool_cuda_backward(dy, planes, S, dx));
        return;
    }
    ng_win3 w = win_of(s, x->shape + 2, shape + 2);
    if ((x->dtype == NG_F16 || x->dtype == NG_BF16) && s->path != BY_LOOPS) {
        if (s->native)
            native_backward(s, ctx, &w, planes, dy, dx);
        else
            half_backward(s, ctx, &w, planes, dy, dx);
        return;
    }
    if (s->path == BY_ONEDNN) {
        ng_pool_geom g = geom_of(s);
        ng_pool_onednn_backward(&s->onednn, &g, x, dy, s->ws, dx, ctx->grads);
        return;
    }
    if (s->path == BY_LOOPS_NO_ARGMAX) {
        max_backward_f32(&w, planes, x->data, dy->data, dx->data);
        return;
    }
    const ng_tensor *am = s->max ? &s->argmax : NULL;
    NG_DISPATCH(dx, pool_backward_cpu(s->max, &w, planes, dy, am, dx),
                ng_pool_cuda_backward(s->max, &w, planes, dy, am, dx));
}

static void pool_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                      const int64_t *in, ng_dtype dt) {
    pool_state *s = l->impl;
    int on;
    int64_t out[NG_MAX_DIMS];
    pool_out_shape(l, ndim, in, &on, out);
    if (!backward) ng_sim_tensor(&sim->acts, dt, on, out);
    int64_t n = 1;
    for (int i = 0; i < on; i++) n *= out[i];
    if (!n) return;
    int onednn = !s->global && ng_pool_onednn_enabled() && sim->device == NG_CPU && dt == NG_F32;
    int half = !s->global && ng_pool_onednn_enabled() && sim->device == NG_CPU &&
               (dt == NG_F16 || dt == NG_BF16);
    ng_pool_geom g = geom_of(s);
    /* the forward of a training step's backward kept its workspace */
    int infer = !backward && infer_pass(s, sim->training, sim->forward_only);
    int fwd_pass = infer ? NG_POOL_INFER : NG_POOL_FORWARD;
    if (half && native_for(s, dt, ndim, in, infer)) { /* native_forward, native_backward */
        if (!backward) {
            size_t wb = infer ? 0 : ng_pool_onednn_workspace(&s->onednn_bf16, &g, ndim, in, dt);
            if (wb) ng_sim_alloc(&sim->acts, wb);
            ng_pool_onednn_plan(&s->onednn_bf16, &g, ndim, in, dt, fwd_pass, &sim->grads);
        } else if (need_dx) {
            ng_pool_onednn_plan(&s->onednn_bf16, &g, ndim, in, dt, NG_POOL_BACKWARD, &sim->grads);
        }
        return;
    }
    if (half) { /* half_forward's and half_backward's f32 copies around oneDNN's passes */
        if (!backward && !infer) {
            size_t wb = ng_pool_onednn_workspace(&s->onednn, &g, ndim, in, NG_F32);
            if (wb) ng_sim_alloc(&sim->acts, wb);
        }
        size_t m = ng_sim_mark(&sim->grads);
        if (!backward) {
            ng_sim_tensor(&sim->grads, NG_F32, ndim, in);
            ng_sim_tensor(&sim->grads, NG_F32, on, out);
            ng_pool_onednn_plan(&s->onednn, &g, ndim, in, NG_F32, fwd_pass, &sim->grads);
        } else if (need_dx) {
            ng_sim_tensor(&sim->grads, NG_F32, on, out);
            ng_sim_tensor(&sim->grads, NG_F32, ndim, in);
            ng_pool_onednn_plan(&s->onednn, &g, ndim, in, NG_F32, NG_POOL_BACKWARD, &sim->grads);
        }
        ng_sim_release(&sim->grads, m);
        return;
    }
    if (backward) {
        /* oneDNN's scratch (the loops take none); a call that fell back takes less */
        if (onednn && need_dx)
            ng_pool_onednn_plan(&s->onednn, &g, ndim, in, NG_F32, NG_POOL_BACKWARD, &sim->grads);
        return;
    }
    if (onednn) {
        size_t wb = infer ? 0 : ng_pool_onednn_workspace(&s->onednn, &g, ndim, in, NG_F32);
        if (wb) ng_sim_alloc(&sim->acts, wb);
        ng_pool_onednn_plan(&s->onednn, &g, ndim, in, NG_F32, fwd_pass, &sim->grads);
        return;
    }
    if (s->global) { /* the plane sums, on CUDA through the channel sums */
        int64_t S = 1;
        for (int i = 2; i < ndim; i++) S *= in[i];
        ng_sim_workspace(sim, ng_channel_sums_workspace(1, in[0] * in[1], S));
        size_t m = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, NG_F64, 1, (int64_t[]){2 * in[0] * in[1]});
        ng_sim_release(&sim->grads, m);
    } else if (s->max) {
        ng_sim_tensor(&sim->acts, NG_I32, on, out); /* argmax */
    }
}

static void pool_destroy(ng_layer *l) {
    pool_state *s = l->impl;
    ng_pool_onednn_free(s->onednn);
    ng_pool_onednn_free(s->onednn_bf16);
    s->onednn = s->onednn_bf16 = NULL;
}

static const ng_layer_ops maxpool_ops = {
    .kind = "maxpool",
    .out_shape = pool_out_shape,
    .forward = pool_forward,
    .backward = pool_backward,
    .plan = pool_plan,
    .destroy = pool_destroy,
    .out_unread = 1,
};
static const ng_layer_ops avgpool_ops = {
    .kind = "avgpool",
    .out_shape = pool_out_shape,
    .forward = pool_forward,
    .backward = pool_backward,
    .plan = pool_plan,
    .destroy = pool_destroy,
    .out_unread = 1,
};
static const ng_layer_ops global_avgpool_ops = {
    .kind = "global_avgpool",
    .out_shape = pool_out_shape,
    .forward = pool_forward,
    .backward = pool_backward,
    .plan = pool_plan,
    .out_unread = 1,
};

static ng_layer *make_pool(const char *kind, const char *name, int max, int nd,
                           const int64_t *kernel, const int64_t *stride, const int64_t *padding) {
    NG_CHECK(nd == 2 || nd == 3, "%s %s: nd is %d; 2 (images) or 3 (volumes)", kind, name, nd);
    NG_CHECK(kernel, "%s %s: no kernel size given", kind, name);
    /* Checked before the layer exists, so a caught error leaks nothing. */
    pool_state st = {.max = max, .nd = nd};
    for (int i = 0; i < 3; i++) {
        int real = i < nd;
        st.kernel[i] = real ? kernel[i] : 1;
        st.stride[i] = real && stride ? stride[i] : st.kernel[i];
        st.padding[i] = real && padding ? padding[i] : 0;
        NG_CHECK(st.kernel[i] >= 1 && st.stride[i] >= 1 && st.padding[i] >= 0 &&
                     2 * st.padding[i] <= st.kernel[i],
                 "%s %s: dim %d has kernel %lld, stride %lld, padding %lld; kernel and stride "
                 "must be >= 1 and padding between 0 and half the kernel",
                 kind, name, i, (long long)st.kernel[i], (long long)st.stride[i],
                 (long long)st.padding[i]);
    }
    ng_layer *l = ng_layer_new(max ? &maxpool_ops : &avgpool_ops, name, sizeof(pool_state));
    *(pool_state *)l->impl = st;
    return l;
}

ng_layer *ng_maxpool(const char *name, int nd, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding) {
    return make_pool("maxpool", name, 1, nd, kernel, stride, padding);
}

ng_layer *ng_avgpool(const char *name, int nd, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding) {
    return make_pool("avgpool", name, 0, nd, kernel, stride, padding);
}

ng_layer *ng_global_avgpool(const char *name) {
    ng_layer *l = ng_layer_new(&global_avgpool_ops, name, sizeof(pool_state));
    ((pool_state *)l->impl)->global = 1;
    return l;
}
