/* The LayerNorm layer and the CPU twin of its kernels. The CPU twin accumulates in double for
 * every dtype, so it is the reference the CUDA twin is compared with. Under mixed precision the
 * activations are f16/bf16 while weights, statistics and their gradients stay f32. */
#include "nn/layernorm.h"

#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/threads.h"
#include "nn/activation_kernels.h"
#include "nn/vit_kernels.h"
#include "nn/plan.h"

/* ---- CPU kernels ------------------------------------------------------------------------- */

/* Rows are independent, so forward and dx split over rows across NG_THREADS. dw and db sum over
 * rows: they split over column blocks instead, each column summed over the rows in order by one
 * thread, so the sums (and their bits) are those of a single thread whatever the count.
 *
 * A row's sums run in double one element after the other (their order is the result's), so each
 * is a chain of dependent adds; forward and dx take LN_GROUP rows at once, their chains
 * interleaved element by element, which keeps every row's own order and so its bits. */
#define LN_COLS 16 /* columns of dw/db per task */
#define LN_GROUP 4 /* rows whose sums run side by side */

/* clang-format off */
#define LN_CPU(T, sfx)                                                                             \
    /* Rows r0 .. r0+n-1 (n <= LN_GROUP). */                                                       \
    static inline void ln_fwd_rows_##sfx(const T *x, const T *w, const T *b, double eps, T *y,     \
                                         T *mean, T *rstd, int64_t r0, int n, int64_t d) {         \
        const T *xr = x + r0 * d;                                                                  \
        T *yr = y + r0 * d;                                                                        \
        double s[LN_GROUP] = {0}, v[LN_GROUP] = {0}, mu[LN_GROUP], rs[LN_GROUP];                   \
        for (int64_t i = 0; i < d; i++)                                                            \
            for (int k = 0; k < n; k++) s[k] += xr[k * d + i];                                     \
        for (int k = 0; k < n; k++) mu[k] = s[k] / (double)d;                                      \
        /* Two passes: the one-pass E[x^2] - mu^2 cancels badly for inputs far from 0. */          \
        for (int64_t i = 0; i < d; i++)                                                            \
            for (int k = 0; k < n; k++)                                                            \
                v[k] += ((double)xr[k * d + i] - mu[k]) * ((double)xr[k * d + i] - mu[k]);         \
        for (int k = 0; k < n; k++) rs[k] = 1.0 / sqrt(v[k] / (double)d + eps);                    \
        for (int k = 0; k < n; k++) {                                                              \
            for (int64_t i = 0; i < d; i++)                                                        \
                yr[k * d + i] =                                                                    \
                    (T)(((double)xr[k * d + i] - mu[k]) * rs[k] * (double)w[i] + (double)b[i]);    \
            mean[r0 + k] = (T)mu[k];                                                               \
            rstd[r0 + k] = (T)rs[k];                                                               \
        }                                                                                          \
    }                                                                                              \
    static void ln_fwd_##sfx(const T *x, const T *w, const T *b, double eps, T *y, T *mean,        \
                             T *rstd, int64_t rows, int64_t d) {                                   \
        int64_t groups = (rows + LN_GROUP - 1) / LN_GROUP;                                         \
        _Pragma("omp parallel for schedule(static) if (rows * d >= NG_OMP_MIN)")                   \
        for (int64_t g = 0; g < groups; g++) {                                                     \
            int64_t r0 = g * LN_GROUP;                                                             \
            if (rows - r0 >= LN_GROUP)                                                             \
                ln_fwd_rows_##sfx(x, w, b, eps, y, mean, rstd, r0, LN_GROUP, d);                   \
            else                                                                                   \
                ln_fwd_rows_##sfx(x, w, b, eps, y, mean, rstd, r0, (int)(rows - r0), d);           \
        }                                                                                          \
    }                                                                                              \
    static inline void ln_dx_rows_##sfx(const T *x, const T *w, const T *mean, const T *rstd,      \
                                        const T *dy, T *dx, int64_t r0, int n, int64_t d) {        \
        const T *xr = x + r0 * d, *gr = dy + r0 * d;                                               \
        T *dr = dx + r0 * d;                                                                       \
        double mu[LN_GROUP], rs[LN_GROUP], sg[LN_GROUP] = {0}, sgx[LN_GROUP] = {0};                \
        for (int k = 0; k < n; k++) mu[k] = mean[r0 + k], rs[k] = rstd[r0 + k];                    \
        for (int64_t i = 0; i < d; i++)                                                            \
            for (int k = 0; k < n; k++) {                                                          \
                double xh = ((double)xr[k * d + i] - mu[k]) * rs[k],                               \
                       g = (double)gr[k * d + i] * (double)w[i];                                   \
                sg[k] += g;                                                                        \
                sgx[k] += g * xh;                                                                  \
            }                                                                                      \
        for (int k = 0; k < n; k++) {                                                              \
            sg[k] /= (double)d;                                                                    \
            sgx[k] /= (double)d;                                                                   \
            for (int64_t i = 0; i < d; i++) {                                                      \
                double xh = ((double)xr[k * d + i] - mu[k]) * rs[k];                               \
                dr[k * d + i] =                                                                    \
                    (T)(rs[k] * ((double)gr[k * d + i] * (double)w[i] - sg[k] - xh * sgx[k]));     \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    static void ln_bwd_##sfx(const T *x, const T *w, const T *mean, const T *rstd, const T *dy,    \
                             T *dx, T *dw, T *db, int64_t rows, int64_t d) {                       \
        int par = rows * d >= NG_OMP_MIN;                                                          \
        int64_t groups = (rows + LN_GROUP - 1) / LN_GROUP;                                         \
        if (dx) {                                                                                  \
            _Pragma("omp parallel for schedule(static) if (par)")                                  \
            for (int64_t g = 0; g < groups; g++) {                                                 \
                int64_t r0 = g * LN_GROUP;                                                         \
                if (rows - r0 >= LN_GROUP)                                                         \
                    ln_dx_rows_##sfx(x, w, mean, rstd, dy, dx, r0, LN_GROUP, d);                   \
                else                                                                               \
                    ln_dx_rows_##sfx(x, w, mean, rstd, dy, dx, r0, (int)(rows - r0), d);           \
            }                                                                                      \
        }                                                                                          \
        _Pragma("omp parallel for schedule(static) if (par)")                                      \
        for (int64_t c0 = 0; c0 < d; c0 += LN_COLS) {                                              \
            int64_t nc = d - c0 < LN_COLS ? d - c0 : LN_COLS;                                      \
            double aw[LN_COLS] = {0}, ab[LN_COLS] = {0};                                           \
            for (int64_t r = 0; r < rows; r++) {                                                   \
                const T *xr = x + r * d + c0, *gr = dy + r * d + c0;                               \
                double mu = mean[r], rs = rstd[r];                                                 \
                for (int64_t i = 0; i < nc; i++) {                                                 \
                    double xh = ((double)xr[i] - mu) * rs;                                         \
                    aw[i] += (double)gr[i] * xh;                                                   \
                    ab[i] += (double)gr[i];                                                        \
                }                                                                                  \
            }                                                                                      \
            for (int64_t i = 0; i < nc; i++) {                                                     \
                dw[c0 + i] = (T)((double)dw[c0 + i] + aw[i]);                                      \
                db[c0 + i] = (T)((double)db[c0 + i] + ab[i]);                                      \
            }                                                                                      \
        }                                                                                          \
    }
/* clang-format on */

LN_CPU(float, f32)
LN_CPU(double, f64)

/* Half activations (dtype dt) with f32 weights and statistics: the same sums as LN_CPU, loads
 * widened exactly and each stored activation rounded once (through float, as the GPU stores). */
static void ln_fwd_half(ng_dtype dt, const void *x, const float *w, const float *b, double eps,
                        void *y, float *mean, float *rstd, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= NG_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r * d;
        double s = 0, v = 0;
        for (int64_t i = 0; i < d; i++) s += ng_act_ld(x, dt, o + i);
        double mu = s / (double)d;
        for (int64_t i = 0; i < d; i++)
            v += (ng_act_ld(x, dt, o + i) - mu) * (ng_act_ld(x, dt, o + i) - mu);
        double rs = 1.0 / sqrt(v / (double)d + eps);
        for (int64_t i = 0; i < d; i++)
            ng_act_st(y, dt, o + i,
                      (ng_act_ld(x, dt, o + i) - mu) * rs * (double)w[i] + (double)b[i]);
        mean[r] = (float)mu;
        rstd[r] = (float)rs;
    }
}

static void ln_bwd_half(ng_dtype dt, const void *x, const float *w, const float *mean,
                        const float *rstd, const void *dy, void *dx, float *dw, float *db,
                        int64_t rows, int64_t d) {
    int par = rows * d >= NG_OMP_MIN;
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++) {
            int64_t o = r * d;
            double mu = mean[r], rs = rstd[r], sg = 0, sgx = 0;
            for (int64_t i = 0; i < d; i++) {
                double xh = (ng_act_ld(x, dt, o + i) - mu) * rs, gy = ng_act_ld(dy, dt, o + i);
                double g = gy * (double)w[i];
                sg += g;
                sgx += g * xh;
            }
            sg /= (double)d;
            sgx /= (double)d;
            for (int64_t i = 0; i < d; i++) {
                double xh = (ng_act_ld(x, dt, o + i) - mu) * rs;
                ng_act_st(dx, dt, o + i,
                          rs * (ng_act_ld(dy, dt, o + i) * (double)w[i] - sg - xh * sgx));
            }
        }
    }
#pragma omp parallel for schedule(static) if (par)
    for (int64_t c0 = 0; c0 < d; c0 += LN_COLS) {
        int64_t nc = d - c0 < LN_COLS ? d - c0 : LN_COLS;
        double aw[LN_COLS] = {0}, ab[LN_COLS] = {0};
        for (int64_t r = 0; r < rows; r++) {
            int64_t o = r * d + c0;
            double mu = mean[r], rs = rstd[r];
            for (int64_t i = 0; i < nc; i++) {
                double xh = (ng_act_ld(x, dt, o + i) - mu) * rs, gy = ng_act_ld(dy, dt, o + i);
                aw[i] += gy * xh;
                ab[i] += gy;
            }
        }
        for (int64_t i = 0; i < nc; i++) {
            dw[c0 + i] = (float)((double)dw[c0 + i] + aw[i]);
            db[c0 + i] = (float)((double)db[c0 + i] + ab[i]);
        }
    }
}

static void ln_fwd_cpu(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b, double eps,
                       ng_tensor *y, ng_tensor *mean, ng_tensor *rstd) {
    int64_t d = w->numel, rows = x->numel / d;
    if (x->dtype == NG_F64)
        ln_fwd_f64(x->data, w->data, b->data, eps, y->data, mean->data, rstd->data, rows, d);
    else if (x->dtype != NG_F32)
        ln_fwd_half(x->dtype, x->data, w->data, b->data, eps, y->data, mean->data, rstd->data, rows,
                    d);
    else
        ln_fwd_f32(x->data, w->data, b->data, eps, y->data, mean->data, rstd->data, rows, d);
}

static void ln_bwd_cpu(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean,
                       const ng_tensor *rstd, const ng_tensor *dy, ng_tensor *dx, ng_tensor *dw,
                       ng_tensor *db) {
    int64_t d = w->numel, rows = x->numel / d;
    if (x->dtype == NG_F64)
        ln_bwd_f64(x->data, w->data, mean->data, rstd->data, dy->data, dx ? dx->data : NULL,
                   dw->data, db->data, rows, d);
    else if (x->dtype != NG_F32)
        ln_bwd_half(x->dtype, x->data, w->data, mean->data, rstd->data, dy->data,
                    dx ? dx->data : NULL, dw->data, db->data, rows, d);
    else
        ln_bwd_f32(x->data, w->data, mean->data, rstd->data, dy->data, dx ? dx->data : NULL,
                   dw->data, db->data, rows, d);
}

/* ---- checked entry points ---------------------------------------------------------------- */

/* Weights and statistics: f32 for half activations, else the activations' own dtype. */
static ng_dtype stat_dtype(ng_dtype x) {
    return x == NG_F16 || x == NG_BF16 ? NG_F32 : x;
}

static void need_dt(const char *op, const ng_tensor *t, const ng_tensor *x, ng_dtype dt,
                    int64_t numel) {
    NG_CHECK(t->dtype == dt && t->device == x->device && t->numel == numel,
             "%s: '%s' is %s but %lld elements of %s %s (for '%s' %s) are needed", op,
             ng_tensor_name(t), ng_tensor_desc(t), (long long)numel, ng_dtype_name(dt),
             ng_device_name(x->device), ng_tensor_name(x), ng_tensor_desc(x));
}

/* t holds activations like x */
static void need(const char *op, const ng_tensor *t, const ng_tensor *x, int64_t numel) {
    need_dt(op, t, x, x->dtype, numel);
}

/* t holds weights or statistics for x */
static void need_stat(const char *op, const ng_tensor *t, const ng_tensor *x, int64_t numel) {
    need_dt(op, t, x, stat_dtype(x->dtype), numel);
}

static int64_t ln_check(const char *op, const ng_tensor *x, const ng_tensor *w) {
    NG_CHECK(ng_dtype_is_float(x->dtype), "%s: '%s' is %s; a floating type is needed", op,
             ng_tensor_name(x), ng_tensor_desc(x));
    int64_t d = w->numel;
    NG_CHECK(d > 0 && x->ndim >= 1 && x->shape[x->ndim - 1] == d,
             "%s: '%s' is %s but the weight has %lld features", op, ng_tensor_name(x),
             ng_tensor_desc(x), (long long)d);
    need_stat(op, w, x, d);
    return x->numel / d;
}

void ng_vit_layernorm_forward(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b,
                              double eps, ng_tensor *y, ng_tensor *mean, ng_tensor *rstd) {
    const char *op = "ng_vit_layernorm_forward";
    int64_t rows = ln_check(op, x, w);
    need_stat(op, b, x, w->numel);
    need(op, y, x, x->numel);
    need_stat(op, mean, x, rows);
    need_stat(op, rstd, x, rows);
    if (!rows) return;
    NG_DISPATCH(x, ln_fwd_cpu(x, w, b, eps, y, mean, rstd),
                ng_vit_layernorm_forward_cuda(x, w, b, eps, y, mean, rstd));
}

void ng_vit_layernorm_backward(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean,
                               const ng_tensor *rstd, const ng_tensor *dy, ng_tensor *dx,
                               ng_tensor *dw, ng_tensor *db) {
    const char *op = "ng_vit_layernorm_backward";
    int64_t rows = ln_check(op, x, w);
    need_stat(op, mean, x, rows);
    need_stat(op, rstd, x, rows);
    need(op, dy, x, x->numel);
    if (dx) need(op, dx, x, x->numel);
    need_stat(op, dw, x, w->numel);
    need_stat(op, db, x, w->numel);
    if (!rows) return;
    NG_DISPATCH(x, ln_bwd_cpu(x, w, mean, rstd, dy, dx, dw, db),
                ng_vit_layernorm_backward_cuda(x, w, mean, rstd, dy, dx, dw, db));
}

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    int64_t dim;
    double eps;
    ng_tensor x, mean, rstd; /* saved by forward: the input as [rows, dim] and row statistics */
} ln_state;

static void ln_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                         int64_t *out) {
    const ln_state *s = l->impl;
    NG_CHECK(in[ndim - 1] == s->dim, "layernorm %s: input's last dim is %lld, expected %lld",
             l->name, (long long)in[ndim - 1], (long long)s->dim);
    *out_ndim = ndim;
    for (int i = 0; i < ndim; i++) out[i] = in[i];
}

static ng_tensor ln_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    ln_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(l, x->ndim, x->shape, &ndim, shape);
    int64_t rows = x->numel / s->dim;
    s->x = ng_tensor_reshape(x, 2, (int64_t[]){rows, s->dim});
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    ng_dtype st = stat_dtype(x->dtype);
    s->mean = ng_arena_tensor(ctx->acts, st, 1, (int64_t[]){rows}, "layernorm mean");
    s->rstd = ng_arena_tensor(ctx->acts, st, 1, (int64_t[]){rows}, "layernorm rstd");
    ng_vit_layernorm_forward(&s->x, &l->params[0].value, &l->params[1].value, s->eps, &y, &s->mean,
                             &s->rstd);
    return y;
}

static void ln_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    ln_state *s = l->impl;
    NG_CHECK(s->x.data && dy->numel == s->x.numel,
             "layernorm %s: output gradient %s does not fit the last forward", l->name,
             ng_tensor_desc(dy));
    ng_tensor g = ng_tensor_reshape(dy, 2, s->x.shape);
    ng_tensor d2 = dx ? ng_tensor_reshape(dx, 2, s->x.shape) : (ng_tensor){0};
    ng_vit_layernorm_backward(&s->x, &l->params[0].value, &s->mean, &s->rstd, &g, dx ? &d2 : NULL,
                              &l->params[0].grad, &l->params[1].grad);
}

static void ln_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                    const int64_t *in, ng_dtype dt) {
    (void)need_dx;
    ln_state *s = l->impl;
    int64_t rows = 1;
    for (int i = 0; i < ndim; i++) rows *= in[i];
    rows /= s->dim;
    if (backward) { /* the CUDA twin's partial sums, in the CUDA workspace */
        size_t ws = (size_t)(ng_ln_partial_chunks(rows) * 2 * s->dim) * (dt == NG_F64 ? 8 : 4);
        if (sim->device == NG_CUDA && rows && ws > sim->workspace) sim->workspace = ws;
        return;
    }
    ng_sim_tensor(&sim->acts, dt, ndim, in);
    ng_sim_tensor(&sim->acts, stat_dtype(dt), 1, &rows);
    ng_sim_tensor(&sim->acts, stat_dtype(dt), 1, &rows);
}

static const ng_layer_ops ln_ops = {
    .kind = "layernorm",
    .out_shape = ln_out_shape,
    .forward = ln_forward,
    .backward = ln_backward,
    .plan = ln_plan,
    .out_unread = 1,
};

ng_layer *ng_layernorm(const char *name, int64_t dim, double eps) {
    NG_CHECK(dim > 0, "layernorm %s: dim %lld must be > 0", name, (long long)dim);
    NG_CHECK(eps > 0, "layernorm %s: eps %g must be > 0", name, eps);
    ng_layer *l = ng_layer_new(&ln_ops, name, sizeof(ln_state));
    ln_state *s = l->impl;
    s->dim = dim;
    s->eps = eps;
    ng_layer_add_param(l, "weight", 1, (int64_t[]){dim},
                       (ng_init){.kind = NG_INIT_CONSTANT, .a = 1}, 0);
    ng_layer_add_param(l, "bias", 1, (int64_t[]){dim}, (ng_init){.kind = NG_INIT_CONSTANT, .a = 0},
                       0);
    return l;
}
