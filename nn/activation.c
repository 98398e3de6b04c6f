/* Element-wise layers (ReLU, GELU, dropout), softmax and flatten, with the CPU twins of their
 * kernels; the CUDA twins are in activation_cuda.cu. The CPU twins compute in double. */
#include "nn/activation.h"

#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/half_vec.h"
#include "core/threads.h"
#include "core/ops.h"
#include "nn/activation_kernels.h"
#include "nn/gelu_vec.h"
#include "nn/plan.h"

/* ---- CPU kernels --------------------------------------------------------------------------- */

static double act_f(ng_act_kind k, double x) {
    switch (k) {
        case NG_ACT_RELU:
            return x > 0 ? x : 0.0;
        case NG_ACT_GELU_ERF:
            return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
        default: {
            double u = NG_GELU_TANH_C * (x + NG_GELU_TANH_K * x * x * x);
            return 0.5 * x * (1.0 + tanh(u));
        }
    }
}

static double act_df(ng_act_kind k, double x) {
    switch (k) {
        case NG_ACT_RELU:
            return x > 0 ? 1.0 : 0.0;
        case NG_ACT_GELU_ERF: {
            double cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
            double pdf = exp(-0.5 * x * x) * (0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2 pi) */
            return cdf + x * pdf;
        }
        default: {
            double x2 = x * x, t = tanh(NG_GELU_TANH_C * x * (1.0 + NG_GELU_TANH_K * x2));
            return 0.5 * (1.0 + t) +
                   0.5 * x * (1.0 - t * t) * NG_GELU_TANH_C * (1.0 + 3.0 * NG_GELU_TANH_K * x2);
        }
    }
}

/* ReLU in f32, the models' common case, as a loop the compiler vectorises: the same values as
 * the general loop (max with 0 and products with 1 or 0 are exact in float as in double). */
static void relu_f32(const float *x, float *y, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* no-trapping-math lets the compiler evaluate the product for every element (it cannot trap
 * here: natgrad never unmasks FP exceptions) and so vectorise it instead of branching on each
 * sign. */
__attribute__((optimize("no-trapping-math"))) static void
relu_backward_f32(const float *y, const float *dy, float *dx, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t i = 0; i < n; i++) /* a product with the mask, not a branch on random signs */
        dx[i] = dy[i] * (float)(y[i] > 0);
}

/* ReLU on f16/bf16 a chunk at a time through f32 with the bulk conversions (core/half_vec.h):
 * its results (x, 0, dy, dy x 0) are values of the half type, so this gives the element loop's
 * bits at the speed of the conversions. */
#define HALF_CHUNK 4096

static void relu_half(const void *x, void *y, ng_dtype dt, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t c = 0; c < n; c += HALF_CHUNK) {
        float b[HALF_CHUNK];
        int64_t k = n - c < HALF_CHUNK ? n - c : HALF_CHUNK;
        ng_half_to_f32((const uint16_t *)x + c, dt, b, k);
        for (int64_t i = 0; i < k; i++) b[i] = b[i] > 0 ? b[i] : 0.0f;
        ng_half_from_f32(b, dt, (uint16_t *)y + c, k);
    }
}

__attribute__((optimize("no-trapping-math"))) static void
relu_backward_half(const void *y, const void *dy, void *dx, ng_dtype dt, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t c = 0; c < n; c += HALF_CHUNK) {
        float a[HALF_CHUNK], g[HALF_CHUNK];
        int64_t k = n - c < HALF_CHUNK ? n - c : HALF_CHUNK;
        ng_half_to_f32((const uint16_t *)y + c, dt, a, k);
        ng_half_to_f32((const uint16_t *)dy + c, dt, g, k);
        for (int64_t i = 0; i < k; i++) g[i] = g[i] * (float)(a[i] > 0);
        ng_half_from_f32(g, dt, (uint16_t *)dx + c, k);
    }
}

/* GELU (erf form) in f32, the ViT's case: act_f's and act_df's expressions in double, element
 * for element the same bits as the general loop, without its per-element dtype and kind switches.
 */
static void gelu_erf_f32(const float *x, float *y, int64_t n) {
    if (ng_gelu_vec_ok()) {
        ng_gelu_vec_forward(x, y, n);
        return;
    }
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        y[i] = (float)(0.5 * v * (1.0 + erf(v * M_SQRT1_2)));
    }
}

static void gelu_erf_backward_f32(const float *x, const float *dy, float *dx, int64_t n) {
    if (ng_gelu_vec_ok()) {
        ng_gelu_vec_backward(x, dy, dx, n);
        return;
    }
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        double cdf = 0.5 * (1.0 + erf(v * M_SQRT1_2));
        double pdf = exp(-0.5 * v * v) * (0.5 * M_2_SQRTPI * M_SQRT1_2);
        dx[i] = (float)((double)dy[i] * (cdf + v * pdf));
    }
}

static int is_half(ng_dtype dt) {
    return dt == NG_F16 || dt == NG_BF16;
}

void ng_cpu_act_forward(ng_act_kind k, const ng_tensor *x, ng_tensor *y) {
    ng_dtype dt = x->dtype;
    if (k == NG_ACT_RELU && dt == NG_F32) {
        relu_f32(x->data, y->data, x->numel);
        return;
    }
    if (k == NG_ACT_RELU && is_half(dt)) {
        relu_half(x->data, y->data, dt, x->numel);
        return;
    }
    if (k == NG_ACT_GELU_ERF && dt == NG_F32) {
        gelu_erf_f32(x->data, y->data, x->numel);
        return;
    }
#pragma omp parallel for schedule(static) if (x->numel >= NG_OMP_MIN)
    for (int64_t i = 0; i < x->numel; i++)
        ng_act_st(y->data, dt, i, act_f(k, ng_act_ld(x->data, dt, i)));
}

void ng_cpu_act_backward(ng_act_kind k, const ng_tensor *x, const ng_tensor *dy, ng_tensor *dx) {
    ng_dtype dt = x->dtype;
    if (k == NG_ACT_RELU && dt == NG_F32) {
        relu_backward_f32(x->data, dy->data, dx->data, x->numel);
        return;
    }
    if (k == NG_ACT_RELU && is_half(dt)) {
        relu_backward_half(x->data, dy->data, dx->data, dt, x->numel);
        return;
    }
    if (k == NG_ACT_GELU_ERF && dt == NG_F32) {
        gelu_erf_backward_f32(x->data, dy->data, dx->data, x->numel);
        return;
    }
#pragma omp parallel for schedule(static) if (x->numel >= NG_OMP_MIN)
    for (int64_t i = 0; i < x->numel; i++)
        ng_act_st(dx->data, dt, i,
                  ng_act_ld(dy->data, dt, i) * act_df(k, ng_act_ld(x->data, dt, i)));
}

static void cpu_dropout(const ng_tensor *x, ng_tensor *y, ng_rng_key key, double keep,
                        double scale) {
    ng_dtype dt = x->dtype;
    int64_t n = x->numel;
    for (int64_t b = 0; 4 * b < n; b++) {
        uint32_t w[4];
        ng_rng_block(key, (uint64_t)b, w);
        for (int64_t j = 0; j < 4 && 4 * b + j < n; j++) {
            int64_t i = 4 * b + j;
            double v = (double)ng_rng_u01(w[j]) <= keep ? ng_act_ld(x->data, dt, i) * scale : 0.0;
            ng_act_st(y->data, dt, i, v);
        }
    }
}

/* Softmax rows are independent: they split over NG_THREADS (y may alias x: a row is read before
 * it is written, by the one thread that owns it). Rows of up to SOFTMAX_KEEP columns (attention's
 * tokens) compute each exponential once; longer rows compute it again for the store. */
#define SOFTMAX_KEEP 512
static void cpu_softmax_rows(const ng_tensor *x, ng_tensor *y, int64_t cols) {
    ng_dtype dt = x->dtype;
#pragma omp parallel for schedule(static) if (x->numel >= NG_OMP_MIN)
    for (int64_t r = 0; r < x->numel / cols; r++) {
        int64_t o = r * cols;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < cols; j++) {
            double v = ng_act_ld(x->data, dt, o + j);
            if (v > m) m = v;
        }
        double e[SOFTMAX_KEEP]; /* a short row's exponentials, kept from the sum for the store */
        int keep = cols <= SOFTMAX_KEEP;
        for (int64_t j = 0; j < cols; j++) {
            double ej = exp(ng_act_ld(x->data, dt, o + j) - m);
            if (keep) e[j] = ej;
            s += ej;
        }
        double inv = 1.0 / s;
        for (int64_t j = 0; j < cols; j++)
            ng_act_st(y->data, dt, o + j,
                      (keep ? e[j] : exp(ng_act_ld(x->data, dt, o + j) - m)) * inv);
    }
}

static void cpu_softmax_rows_backward(const ng_tensor *y, const ng_tensor *dy, ng_tensor *dx,
                                      int64_t cols) {
    ng_dtype dt = y->dtype;
#pragma omp parallel for schedule(static) if (y->numel >= NG_OMP_MIN)
    for (int64_t r = 0; r < y->numel / cols; r++) {
        int64_t o = r * cols;
        double dot = 0;
        for (int64_t j = 0; j < cols; j++)
            dot += ng_act_ld(dy->data, dt, o + j) * ng_act_ld(y->data, dt, o + j);
        for (int64_t j = 0; j < cols; j++) {
            double yj = ng_act_ld(y->data, dt, o + j);
            ng_act_st(dx->data, dt, o + j, yj * (ng_act_ld(dy->data, dt, o + j) - dot));
        }
    }
}

/* ---- checks and dispatch ------------------------------------------------------------------- */

static void need_float(const char *who, const char *name, const ng_tensor *t) {
    NG_CHECK(ng_dtype_is_float(t->dtype), "%s %s: '%s' is %s; a floating type is needed", who, name,
             ng_tensor_name(t), ng_tensor_desc(t));
}

/* b must match a in dtype, device and element count (shapes may differ where views do). */
static void need_like(const char *who, const char *name, const ng_tensor *a, const ng_tensor *b) {
    NG_CHECK(a->dtype == b->dtype && a->device == b->device && a->numel == b->numel,
             "%s %s: '%s' is %s but '%s' is %s: dtype, device and size must match", who, name,
             ng_tensor_name(a), ng_tensor_desc(a), ng_tensor_name(b), ng_tensor_desc(b));
}

static void need_same_shape(const char *who, const ng_tensor *a, const ng_tensor *b) {
    NG_CHECK(a->dtype == b->dtype && a->device == b->device && ng_tensor_same_shape(a, b) &&
                 a->ndim >= 1,
             "%s: '%s' is %s but '%s' is %s: dtype, device and shape (at least 1-D) must match",
             who, ng_tensor_name(a), ng_tensor_desc(a), ng_tensor_name(b), ng_tensor_desc(b));
}

void ng_softmax_rows(const ng_tensor *x, ng_tensor *y) {
    need_float("ng_softmax_rows", "", x);
    need_same_shape("ng_softmax_rows", x, y);
    int64_t cols = x->shape[x->ndim - 1];
    if (!x->numel) return;
    NG_DISPATCH(x, cpu_softmax_rows(x, y, cols), ng_cuda_softmax_rows(x, y, cols));
}

void ng_softmax_rows_backward(const ng_tensor *y, const ng_tensor *dy, ng_tensor *dx) {
    need_float("ng_softmax_rows_backward", "", y);
    need_same_shape("ng_softmax_rows_backward", y, dy);
    need_same_shape("ng_softmax_rows_backward", y, dx);
    int64_t cols = y->shape[y->ndim - 1];
    if (!y->numel) return;
    NG_DISPATCH(y, cpu_softmax_rows_backward(y, dy, dx, cols),
                ng_cuda_softmax_rows_backward(y, dy, dx, cols));
}

/* ---- shared layer pieces ------------------------------------------------------------------- */

static void same_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    (void)l;
    *out_ndim = ndim;
    for (int i = 0; i < ndim; i++) out[i] = in[i];
}

static ng_tensor new_output(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    need_float(l->ops->kind, l->name, x);
    return ng_arena_tensor(ctx->acts, x->dtype, x->ndim, x->shape, l->name);
}

/* The output gradient must fit the saved forward tensor; dx (when asked for) too. */
static void check_backward(const ng_layer *l, const ng_tensor *saved, const ng_tensor *dy,
                           const ng_tensor *dx) {
    NG_CHECK(saved->ndim, "%s %s: backward without a forward", l->ops->kind, l->name);
    need_like(l->ops->kind, l->name, saved, dy);
    if (dx) need_like(l->ops->kind, l->name, saved, dx);
}

/* ---- ReLU and GELU ------------------------------------------------------------------------- */

/* ReLU keeps its output for backward (relu'(x) is 1 exactly where relu(x) > 0), which lets it
 * write that output over its input when the sequence says nothing else reads the input
 * (ctx->inplace): after batch norm or a convolution the ReLU then costs no activation memory.
 * GELU keeps its input. */
typedef struct {
    ng_act_kind kind;
    ng_tensor x; /* what backward reads: the output (ReLU) or the input (GELU) */
} act_state;

static int is_relu(const act_state *s) {
    return s->kind == NG_ACT_RELU;
}

static ng_tensor act_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    act_state *s = l->impl;
    ng_tensor y = is_relu(s) && ctx->inplace ? *x : new_output(l, ctx, x);
    if (is_relu(s) && ctx->inplace) need_float(l->ops->kind, l->name, x);
    if (x->numel)
        NG_DISPATCH(x, ng_cpu_act_forward(s->kind, x, &y), ng_cuda_act_forward(s->kind, x, &y));
    s->x = is_relu(s) ? y : *x;
    return y;
}

static void act_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    act_state *s = l->impl;
    check_backward(l, &s->x, dy, dx);
    if (!dx || !dx->numel) return;
    NG_DISPATCH(dx, ng_cpu_act_backward(s->kind, &s->x, dy, dx),
                ng_cuda_act_backward(s->kind, &s->x, dy, dx));
}

static void act_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                     const int64_t *in, ng_dtype dt) {
    (void)need_dx;
    if (!backward && !(is_relu(l->impl) && sim->inplace)) ng_sim_tensor(&sim->acts, dt, ndim, in);
}

static const ng_layer_ops relu_ops = {
    .kind = "relu",
    .out_shape = same_out_shape,
    .forward = act_forward,
    .backward = act_backward,
    .plan = act_plan,
};

static const ng_layer_ops gelu_ops = {
    .kind = "gelu",
    .out_shape = same_out_shape,
    .forward = act_forward,
    .backward = act_backward,
    .plan = act_plan,
};

ng_layer *ng_relu(const char *name) {
    ng_layer *l = ng_layer_new(&relu_ops, name, sizeof(act_state));
    ((act_state *)l->impl)->kind = NG_ACT_RELU;
    return l;
}

ng_layer *ng_gelu(const char *name, int tanh_approx) {
    NG_CHECK(tanh_approx == 0 || tanh_approx == 1,
             "gelu %s: tanh_approx is %d; 0 (erf form) or 1 (tanh approximation)", name,
             tanh_approx);
    ng_layer *l = ng_layer_new(&gelu_ops, name, sizeof(act_state));
    ((act_state *)l->impl)->kind = tanh_approx ? NG_ACT_GELU_TANH : NG_ACT_GELU_ERF;
    return l;
}

const ng_tensor *ng_activation_input(const ng_layer *l) {
    if (l->ops != &relu_ops && l->ops != &gelu_ops) return NULL;
    const act_state *s = l->impl;
    return s->x.ndim ? &s->x : NULL;
}

/* ---- dropout ------------------------------------------------------------------------------- */

typedef struct {
    double p;
    int active;     /* the last forward applied a mask */
    ng_rng_key key; /* ... drawn from this key: all that backward needs to rebuild it */
    ng_tensor x;    /* the last forward's input, for the size checks in backward */
} dropout_state;

static ng_rng_key dropout_key(const ng_layer *l, const ng_ctx *ctx) {
    ng_rng_key k = ctx->rng;
    k.stream = ng_dropout_stream(l);
    return k;
}

static void dropout_apply(const dropout_state *s, const ng_tensor *x, ng_tensor *y) {
    /* p = 1 drops everything: scale 0 keeps the output finite. */
    double keep = 1.0 - s->p, scale = s->p < 1.0 ? 1.0 / keep : 0.0;
    if (!x->numel) return;
    NG_DISPATCH(x, cpu_dropout(x, y, s->key, keep, scale),
                ng_cuda_dropout(x, y, s->key, keep, scale));
}

static ng_tensor dropout_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    dropout_state *s = l->impl;
    need_float("dropout", l->name, x);
    s->x = *x;
    s->active = ctx->training && s->p > 0;
    if (!s->active) return *x;
    s->key = dropout_key(l, ctx);
    ng_tensor y = new_output(l, ctx, x);
    dropout_apply(s, x, &y);
    return y;
}

static void dropout_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    dropout_state *s = l->impl;
    check_backward(l, &s->x, dy, dx);
    if (!dx) return;
    if (s->active)
        dropout_apply(s, dy, dx);
    else if (dx->data != dy->data)
        ng_copy(dx, dy);
}

static void dropout_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                         const int64_t *in, ng_dtype dt) {
    (void)need_dx;
    dropout_state *s = l->impl;
    if (!backward && sim->training && s->p > 0) ng_sim_tensor(&sim->acts, dt, ndim, in);
}

static const ng_layer_ops dropout_ops = {
    .kind = "dropout",
    .out_shape = same_out_shape,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .plan = dropout_plan,
};

ng_layer *ng_dropout(const char *name, double p) {
    NG_CHECK(p >= 0 && p <= 1, "dropout %s: p = %g is not a probability in [0, 1]", name, p);
    ng_layer *l = ng_layer_new(&dropout_ops, name, sizeof(dropout_state));
    ((dropout_state *)l->impl)->p = p;
    return l;
}

/* ---- softmax ------------------------------------------------------------------------------- */

typedef struct {
    ng_tensor y; /* saved output: the backward needs only y */
} softmax_state;

static ng_tensor softmax_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    softmax_state *s = l->impl;
    ng_tensor y = new_output(l, ctx, x);
    ng_softmax_rows(x, &y);
    s->y = y;
    return y;
}

static void softmax_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    softmax_state *s = l->impl;
    check_backward(l, &s->y, dy, dx);
    if (!dx) return;
    /* dy and dx may arrive with other shapes of the same size (views): use y's rows. */
    ng_tensor g = ng_tensor_reshape(dy, s->y.ndim, s->y.shape);
    ng_tensor d = ng_tensor_reshape(dx, s->y.ndim, s->y.shape);
    ng_softmax_rows_backward(&s->y, &g, &d);
}

static const ng_layer_ops softmax_ops = {
    .kind = "softmax",
    .out_shape = same_out_shape,
    .forward = softmax_forward,
    .backward = softmax_backward,
};

ng_layer *ng_softmax(const char *name) {
    return ng_layer_new(&softmax_ops, name, sizeof(softmax_state));
}

/* ---- flatten ------------------------------------------------------------------------------- */

typedef struct {
    ng_tensor x; /* the last forward's input, for the size checks in backward */
} flatten_state;

static void flatten_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                              int64_t *out) {
    (void)l;
    int64_t rest = 1;
    for (int i = 1; i < ndim; i++) rest *= in[i];
    *out_ndim = 2;
    out[0] = in[0];
    out[1] = rest;
}

static ng_tensor flatten_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    (void)ctx;
    flatten_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(l, x->ndim, x->shape, &ndim, shape);
    s->x = *x;
    return ng_tensor_reshape(x, ndim, shape);
}

static void flatten_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    flatten_state *s = l->impl;
    NG_CHECK(s->x.ndim, "flatten %s: backward without a forward", l->name);
    need_like("flatten", l->name, &s->x, dy);
    if (!dx) return;
    need_like("flatten", l->name, &s->x, dx);
    if (dx->data != dy->data) ng_copy(dx, dy);
}

static void flatten_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                         const int64_t *in, ng_dtype dt) {
    (void)l, (void)sim, (void)backward, (void)need_dx, (void)ndim, (void)in, (void)dt; /* a view */
}

static int64_t no_flops(const ng_layer *l, int ndim, const int64_t *in) {
    (void)l, (void)ndim, (void)in; /* a view */
    return 0;
}

static const ng_layer_ops flatten_ops = {
    .kind = "flatten",
    .flops = no_flops,
    .out_shape = flatten_out_shape,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .plan = flatten_plan,
};

ng_layer *ng_flatten(const char *name) {
    return ng_layer_new(&flatten_ops, name, sizeof(flatten_state));
}
