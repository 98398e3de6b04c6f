/* Batch normalisation: the layer, its running statistics, and the CPU twin (CUDA twin in
 * batchnorm_cuda.cu). Statistics accumulate in double on both devices; the variance comes
 * from sums shifted by the channel's first element, so a large mean does not cancel it away.
 *
 * The fused batch norm + ReLU (ng_batchnorm_relu) computes exactly what the two layers did, with
 * the ReLU in place over the normalised output; what fusing buys is memory. Its backward needs
 * the input (for batch norm) and only the sign of the output (for ReLU), and the sign can be
 * recomputed from the input bit for bit. So when a sequence says nobody reads the output (the
 * last block of a replayed checkpoint segment) the layer keeps no output at all, and in the
 * recomputation chain of model.checkpoint: recompute, where no backward follows, it writes over
 * its input: a conv-BN-ReLU block then holds two activations where it held three. */
#include "nn/batchnorm.h"

#include <math.h>
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

typedef struct {
    int nd;
    int64_t C;
    double momentum, eps;
    ng_tensor x;            /* the input of the last forward */
    ng_tensor mean, invstd; /* f64 [C]: what the last forward normalised with */
    int training;           /* the mode of the last forward */
    int relu;               /* 1: fused ReLU on the output */
    ng_tensor y;            /* the last forward's output; no data when it was not computed */
} bn_state;

/* Element access for every float dtype: f16/bf16 widened exactly, stores rounded once through
 * float as the CUDA twin stores. */
static inline double ld(const void *p, ng_dtype t, int64_t i) {
    return ng_act_ld(p, t, i);
}

static inline void st(void *p, ng_dtype t, int64_t i, double v) {
    ng_act_st(p, t, i, v);
}

/* ---- CPU twin ------------------------------------------------------------------------------ */

static void bn_forward_cpu(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                           ng_tensor *rm, ng_tensor *rv, ng_tensor *mean, ng_tensor *invstd,
                           ng_tensor *y, int64_t A, int64_t C, int64_t S, int training, int update,
                           double momentum, double eps) {
    double M = (double)(A * S);
    /* y NULL: the statistics only */
    int f32 = x->dtype == NG_F32 && (!y || y->dtype == NG_F32);
    /* f16/bf16: the same arithmetic on chunks widened (and rounded back) by the bulk conversions
     * of core/half_vec.h, which give the element loads' and stores' bits */
    int half = (x->dtype == NG_F16 || x->dtype == NG_BF16) && (!y || y->dtype == x->dtype);
    /* channels are independent: each keeps its own sums in its own order */
#pragma omp parallel for schedule(static) if (A * C * S >= NG_OMP_MIN)
    for (int64_t c = 0; c < C; c++) {
        double mu, is;
        if (training) {
            double k = ld(x->data, x->dtype, c * S), s1 = 0, s2 = 0;
            for (int64_t a = 0; a < A; a++)
                if (f32) { /* the same sums without a dtype switch per element */
                    const float *xs = (const float *)x->data + (a * C + c) * S;
                    for (int64_t s = 0; s < S; s++) {
                        double v = (double)xs[s] - k;
                        s1 += v, s2 += v * v;
                    }
                } else if (half) {
                    float b[1024];
                    for (int64_t s0 = 0; s0 < S; s0 += 1024) {
                        int64_t n = S - s0 < 1024 ? S - s0 : 1024;
                        ng_half_to_f32((const uint16_t *)x->data + (a * C + c) * S + s0, x->dtype,
                                       b, n);
                        for (int64_t s = 0; s < n; s++) {
                            double v = (double)b[s] - k;
                            s1 += v, s2 += v * v;
                        }
                    }
                } else {
                    for (int64_t s = 0; s < S; s++) {
                        double v = ld(x->data, x->dtype, (a * C + c) * S + s) - k;
                        s1 += v, s2 += v * v;
                    }
                }
            double m1 = s1 / M, var = s2 / M - m1 * m1;
            if (var < 0) var = 0;
            mu = k + m1;
            is = 1.0 / sqrt(var + eps);
            if (update) {
                st(rm->data, rm->dtype, c,
                   (1 - momentum) * ld(rm->data, rm->dtype, c) + momentum * mu);
                st(rv->data, rv->dtype, c,
                   (1 - momentum) * ld(rv->data, rv->dtype, c) + momentum * var * M / (M - 1));
            }
        } else {
            mu = ld(rm->data, rm->dtype, c);
            is = 1.0 / sqrt(ld(rv->data, rv->dtype, c) + eps);
        }
        ((double *)mean->data)[c] = mu;
        ((double *)invstd->data)[c] = is;
        if (!y) continue;
        double scale = is * ld(gamma->data, gamma->dtype, c),
               shift = ld(beta->data, beta->dtype, c);
        for (int64_t a = 0; a < A; a++)
            if (f32) {
                const float *xs = (const float *)x->data + (a * C + c) * S;
                float *ys = (float *)y->data + (a * C + c) * S;
                for (int64_t s = 0; s < S; s++)
                    ys[s] = (float)(((double)xs[s] - mu) * scale + shift);
            } else if (half) {
                float b[1024];
                for (int64_t s0 = 0; s0 < S; s0 += 1024) {
                    int64_t n = S - s0 < 1024 ? S - s0 : 1024, i = (a * C + c) * S + s0;
                    ng_half_to_f32((const uint16_t *)x->data + i, x->dtype, b, n);
                    for (int64_t s = 0; s < n; s++)
                        b[s] = (float)(((double)b[s] - mu) * scale + shift);
                    ng_half_from_f32(b, y->dtype, (uint16_t *)y->data + i, n);
                }
            } else {
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = (a * C + c) * S + s;
                    st(y->data, y->dtype, i, (ld(x->data, x->dtype, i) - mu) * scale + shift);
                }
            }
    }
}

static void bn_backward_cpu(const ng_tensor *x, const ng_tensor *dy, const ng_tensor *gamma,
                            const ng_tensor *mean, const ng_tensor *invstd, ng_tensor *dgamma,
                            ng_tensor *dbeta, ng_tensor *dx, int64_t A, int64_t C, int64_t S,
                            int training) {
    double M = (double)(A * S);
    int f32 = x->dtype == NG_F32 && dy->dtype == NG_F32 && (!dx || dx->dtype == NG_F32);
#pragma omp parallel for schedule(static) if (A * C * S >= NG_OMP_MIN)
    for (int64_t c = 0; c < C; c++) {
        double mu = ((const double *)mean->data)[c], is = ((const double *)invstd->data)[c];
        double sdy = 0, sdyx = 0;
        for (int64_t a = 0; a < A; a++)
            if (f32) {
                const float *xs = (const float *)x->data + (a * C + c) * S;
                const float *gs = (const float *)dy->data + (a * C + c) * S;
                for (int64_t s = 0; s < S; s++) {
                    double g = gs[s];
                    sdy += g, sdyx += g * ((double)xs[s] - mu);
                }
            } else {
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = (a * C + c) * S + s;
                    double g = ld(dy->data, dy->dtype, i);
                    sdy += g, sdyx += g * (ld(x->data, x->dtype, i) - mu);
                }
            }
        st(dgamma->data, dgamma->dtype, c, ld(dgamma->data, dgamma->dtype, c) + sdyx * is);
        st(dbeta->data, dbeta->dtype, c, ld(dbeta->data, dbeta->dtype, c) + sdy);
        if (!dx) continue;
        double scale = ld(gamma->data, gamma->dtype, c) * is;
        double k1 = training ? sdy / M : 0, k2 = training ? sdyx * is / M : 0;
        for (int64_t a = 0; a < A; a++)
            if (f32) {
                const float *xs = (const float *)x->data + (a * C + c) * S;
                const float *gs = (const float *)dy->data + (a * C + c) * S;
                float *ds = (float *)dx->data + (a * C + c) * S;
                for (int64_t s = 0; s < S; s++) {
                    double xhat = ((double)xs[s] - mu) * is;
                    ds[s] = (float)(scale * ((double)gs[s] - k1 - xhat * k2));
                }
            } else {
                for (int64_t s = 0; s < S; s++) {
                    int64_t i = (a * C + c) * S + s;
                    double xhat = (ld(x->data, x->dtype, i) - mu) * is;
                    st(dx->data, dx->dtype, i,
                       scale * (ld(dy->data, dy->dtype, i) - k1 - xhat * k2));
                }
            }
    }
}

/* The fused ReLU's gradient without the output: g = dy where the stored output would be > 0,
 * dy x 0 elsewhere, as ReLU's backward computes it from the output. The output is recomputed with
 * the forward's expression and rounded to the dtype as the forward stored it (a value that rounds
 * to 0 is not > 0), so the mask is the forward's bit for bit. g may be dy. */
static void bn_relu_grad_cpu(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                             const ng_tensor *mean, const ng_tensor *invstd, const ng_tensor *dy,
                             ng_tensor *g, int64_t A, int64_t C, int64_t S) {
    ng_dtype t = x->dtype;
    int f32 = t == NG_F32 && dy->dtype == t && g->dtype == t;
    int half = (t == NG_F16 || t == NG_BF16) && dy->dtype == t && g->dtype == t;
#pragma omp parallel for schedule(static) if (A * C * S >= NG_OMP_MIN)
    for (int64_t p = 0; p < A * C; p++) {
        int64_t c = p % C;
        double mu = ((const double *)mean->data)[c];
        double scale = ((const double *)invstd->data)[c] * ld(gamma->data, gamma->dtype, c),
               shift = ld(beta->data, beta->dtype, c);
        if (f32) {
            const float *xs = (const float *)x->data + p * S, *gs = (const float *)dy->data + p * S;
            float *os = (float *)g->data + p * S;
            for (int64_t s = 0; s < S; s++) {
                float v = (float)(((double)xs[s] - mu) * scale + shift);
                os[s] = gs[s] * (float)(v > 0);
            }
        } else if (half) {
            float b[1024], d[1024];
            uint16_t h[1024];
            for (int64_t s0 = 0; s0 < S; s0 += 1024) {
                int64_t n = S - s0 < 1024 ? S - s0 : 1024, i = p * S + s0;
                ng_half_to_f32((const uint16_t *)x->data + i, t, b, n);
                for (int64_t s = 0; s < n; s++) b[s] = (float)(((double)b[s] - mu) * scale + shift);
                ng_half_from_f32(b, t, h, n); /* the stored output, and back */
                ng_half_to_f32(h, t, b, n);
                ng_half_to_f32((const uint16_t *)dy->data + i, t, d, n);
                for (int64_t s = 0; s < n; s++) d[s] = d[s] * (float)(b[s] > 0);
                ng_half_from_f32(d, t, (uint16_t *)g->data + i, n);
            }
        } else {
            for (int64_t s = 0; s < S; s++) {
                int64_t i = p * S + s;
                double stored[1];
                st(stored, t, 0, (ld(x->data, t, i) - mu) * scale + shift);
                st(g->data, g->dtype, i,
                   ld(dy->data, dy->dtype, i) * (ld(stored, t, 0) > 0 ? 1.0 : 0.0));
            }
        }
    }
}

/* ---- the layer ----------------------------------------------------------------------------- */

static void bn_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                         int64_t *out) {
    const bn_state *s = l->impl;
    int ok = s->nd == 1 ? ndim == 2 || ndim == 3 : ndim == s->nd + 2;
    NG_CHECK(ok, "batchnorm %s: input has %d dims; a %dd batch norm takes [N, C%s]", l->name, ndim,
             s->nd,
             s->nd == 1   ? "] or [N, C, L"
             : s->nd == 2 ? ", H, W"
                          : ", D, H, W");
    NG_CHECK(in[1] == s->C, "batchnorm %s: input has %lld channels, expected %lld", l->name,
             (long long)in[1], (long long)s->C);
    *out_ndim = ndim;
    memcpy(out, in, sizeof(int64_t) * (size_t)ndim);
}

static ng_tensor bn_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    bn_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    bn_out_shape(l, x->ndim, x->shape, &ndim, shape);
    const ng_tensor *gamma = &l->params[0].value, *beta = &l->params[1].value;
    /* Mixed precision: f16/bf16 activations, f32 parameters and running statistics. */
    int half = (x->dtype == NG_F16 || x->dtype == NG_BF16) && gamma->dtype == NG_F32;
    NG_CHECK((x->dtype == gamma->dtype || half) && x->device == gamma->device,
             "batchnorm %s: input %s must have the parameters' dtype (or be f16/bf16 with f32 "
             "parameters) and device (%s %s)",
             l->name, ng_tensor_desc(x), ng_dtype_name(gamma->dtype),
             ng_device_name(gamma->device));
    NG_CHECK(x->data || !x->numel, "batchnorm %s: input has no data", l->name);
    int64_t A = x->shape[0], C = s->C, S = A * C > 0 ? x->numel / (A * C) : 0;
    NG_CHECK(!ctx->training || A * S > 1,
             "batchnorm %s: training needs more than one value per channel, input is %s", l->name,
             ng_tensor_desc(x));
    ng_tensor *rm = &l->buffers[0].value, *rv = &l->buffers[1].value;
    NG_CHECK(rm->data, "batchnorm %s: running statistics missing: build the model first", l->name);
    s->x = *x;
    s->training = ctx->training;
    /* Over the input only when no backward follows (backward reads the input) and nothing else
     * reads it; none at all when nothing reads the output (backward recomputes ReLU's mask). */
    ng_tensor y = *x;
    y.name = l->name;
    if (ctx->output_unused)
        y.data = NULL;
    else if (!(ctx->forward_only && ctx->inplace))
        y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    s->y = y;
    s->mean = ng_arena_tensor(ctx->acts, NG_F64, 1, (int64_t[]){C}, "batchnorm mean");
    s->invstd = ng_arena_tensor(ctx->acts, NG_F64, 1, (int64_t[]){C}, "batchnorm invstd");
    int update = ctx->training && !ctx->recomputing;
    if (!x->numel) return y;
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor sums = ng_arena_tensor(ctx->grads, NG_F64, 1, (int64_t[]){2 * C}, "batchnorm sums");
    (void)sums; /* CUDA scratch; unused by the CPU twin */
    ng_tensor *out = y.data ? &y : NULL;
    NG_DISPATCH(x,
                bn_forward_cpu(x, gamma, beta, rm, rv, &s->mean, &s->invstd, out, A, C, S,
                               ctx->training, update, s->momentum, s->eps),
                ng_bn_cuda_forward(x, gamma, beta, rm, rv, &s->mean, &s->invstd, &sums, out, A, C,
                                   S, ctx->training, update, s->momentum, s->eps));
    ng_arena_release(ctx->grads, m);
    /* ReLU's own kernels, so the values are the separate layers' */
    if (s->relu && out)
        NG_DISPATCH(&y, ng_cpu_act_forward(NG_ACT_RELU, &y, &y),
                    ng_cuda_act_forward(NG_ACT_RELU, &y, &y));
    return y;
}

static void bn_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    bn_state *s = l->impl;
    const ng_tensor *x = &s->x;
    NG_CHECK(x->ndim >= 2, "batchnorm %s: backward without a forward", l->name);
    NG_CHECK(ng_tensor_same_shape(dy, x) && dy->dtype == x->dtype && dy->device == x->device,
             "batchnorm %s: output gradient %s does not fit the forward's output %s", l->name,
             ng_tensor_desc(dy), ng_tensor_desc(x));
    NG_CHECK(!dx ||
                 (ng_tensor_same_shape(dx, x) && dx->dtype == x->dtype && dx->device == x->device),
             "batchnorm %s: input gradient %s does not fit the input %s", l->name,
             ng_tensor_desc(dx), ng_tensor_desc(x));
    if (!x->numel) return;
    int64_t A = x->shape[0], C = s->C, S = x->numel / (A * C);
    const ng_tensor *gamma = &l->params[0].value, *beta = &l->params[1].value;
    ng_tensor *dgamma = &l->params[0].grad, *dbeta = &l->params[1].grad;
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor g;
    if (s->relu) {
        /* ReLU's gradient first, into dx (overwritten last, element by element), dy when the
         * caller gave it up, or scratch */
        g = dx                ? *dx
            : ctx->dy_scratch ? *dy
                              : ng_arena_tensor(ctx->grads, dy->dtype, dy->ndim, dy->shape,
                                                "batchnorm relu grad");
        g.name = "batchnorm relu grad";
        if (s->y.data)
            NG_DISPATCH(dy, ng_cpu_act_backward(NG_ACT_RELU, &s->y, dy, &g),
                        ng_cuda_act_backward(NG_ACT_RELU, &s->y, dy, &g));
        else
            NG_DISPATCH(
                dy, bn_relu_grad_cpu(x, gamma, beta, &s->mean, &s->invstd, dy, &g, A, C, S),
                ng_bn_cuda_relu_grad(x, gamma, beta, &s->mean, &s->invstd, dy, &g, A, C, S));
        dy = &g;
    }
    ng_tensor sums = ng_arena_tensor(ctx->grads, NG_F64, 1, (int64_t[]){2 * C}, "batchnorm sums");
    (void)sums; /* CUDA scratch; unused by the CPU twin */
    NG_DISPATCH(x,
                bn_backward_cpu(x, dy, gamma, &s->mean, &s->invstd, dgamma, dbeta, dx, A, C, S,
                                s->training),
                ng_bn_cuda_backward(x, dy, gamma, &s->mean, &s->invstd, &sums, dgamma, dbeta, dx, A,
                                    C, S, s->training));
    ng_arena_release(ctx->grads, m);
}

static void bn_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                    const int64_t *in, ng_dtype dt) {
    const bn_state *s = l->impl;
    int64_t C = in[1];
    if (!backward) {
        if (!sim->output_unused && !(sim->forward_only && sim->inplace))
            ng_sim_tensor(&sim->acts, dt, ndim, in);
        ng_sim_tensor(&sim->acts, NG_F64, 1, &C); /* mean */
        ng_sim_tensor(&sim->acts, NG_F64, 1, &C); /* invstd */
    }
    int64_t S = 1;
    for (int i = 2; i < ndim; i++) S *= in[i];
    if (backward || sim->training) /* the CUDA statistics' channel sums */
        ng_sim_workspace(sim, ng_channel_sums_workspace(in[0], C, S));
    size_t m = ng_sim_mark(&sim->grads);
    if (backward && s->relu && !need_dx && !sim->dy_scratch)
        ng_sim_tensor(&sim->grads, dt, ndim, in); /* ReLU's gradient */
    ng_sim_tensor(&sim->grads, NG_F64, 1, (int64_t[]){2 * C});
    ng_sim_release(&sim->grads, m);
}

/* Batch norm's count (1 per element), and ReLU's when fused. */
static int64_t bn_flops(const ng_layer *l, int ndim, const int64_t *in) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= in[i];
    return ((const bn_state *)l->impl)->relu ? 2 * n : n;
}

/* Backward reads its input, not its output (out_unread), and writes dx element by element after
 * its sums over dy (dx_over_dy). */
static const ng_layer_ops bn_ops = {
    .kind = "batchnorm",
    .out_shape = bn_out_shape,
    .forward = bn_forward,
    .backward = bn_backward,
    .plan = bn_plan,
    .flops = bn_flops,
    .out_unread = 1,
    .dx_over_dy = 1,
};

/* The fused layer's backward reads its output's sign (so the output is not free to overwrite). */
static const ng_layer_ops bn_relu_ops = {
    .kind = "batchnorm_relu",
    .out_shape = bn_out_shape,
    .forward = bn_forward,
    .backward = bn_backward,
    .plan = bn_plan,
    .flops = bn_flops,
    .dx_over_dy = 1,
};

static ng_layer *batchnorm(const ng_layer_ops *ops, const char *name, int nd, int64_t channels,
                           double momentum, double eps) {
    NG_CHECK(nd >= 1 && nd <= 3, "batchnorm %s: nd is %d; 1, 2 or 3", name, nd);
    NG_CHECK(channels > 0, "batchnorm %s: %lld channels; must be > 0", name, (long long)channels);
    NG_CHECK(momentum >= 0 && momentum <= 1, "batchnorm %s: momentum %g is outside [0, 1]", name,
             momentum);
    NG_CHECK(eps > 0, "batchnorm %s: eps %g must be > 0", name, eps);
    ng_layer *l = ng_layer_new(ops, name, sizeof(bn_state));
    bn_state *s = l->impl;
    s->nd = nd, s->C = channels, s->momentum = momentum, s->eps = eps;
    s->relu = ops == &bn_relu_ops;
    ng_layer_add_param(l, "weight", 1, (int64_t[]){channels},
                       (ng_init){.kind = NG_INIT_CONSTANT, .a = 1.0}, 0);
    ng_layer_add_param(l, "bias", 1, (int64_t[]){channels},
                       (ng_init){.kind = NG_INIT_CONSTANT, .a = 0.0}, 0);
    /* PyTorch's names and starting values, so the statistics load into torch.nn.BatchNorm. */
    ng_layer_add_buffer(l, "running_mean", 1, (int64_t[]){channels}, 0.0);
    ng_layer_add_buffer(l, "running_var", 1, (int64_t[]){channels}, 1.0);
    return l;
}

ng_layer *ng_batchnorm(const char *name, int nd, int64_t channels, double momentum, double eps) {
    return batchnorm(&bn_ops, name, nd, channels, momentum, eps);
}

ng_layer *ng_batchnorm_relu(const char *name, int nd, int64_t channels, double momentum,
                            double eps) {
    return batchnorm(&bn_relu_ops, name, nd, channels, momentum, eps);
}

void ng_batchnorm_running(const ng_layer *l, ng_tensor *mean, ng_tensor *var) {
    NG_CHECK(l && (l->ops == &bn_ops || l->ops == &bn_relu_ops),
             "ng_batchnorm_running: layer %s is a %s, not a batchnorm", l ? l->name : "(null)",
             l ? l->ops->kind : "null");
    NG_CHECK(l->buffers[0].value.data,
             "batchnorm %s: build the model before reading its statistics", l->name);
    *mean = l->buffers[0].value;
    *var = l->buffers[1].value;
}

const ng_tensor *ng_batchnorm_relu_output(const ng_layer *l) {
    if (!l || l->ops != &bn_relu_ops) return NULL;
    const bn_state *s = l->impl;
    return s->y.data ? &s->y : NULL;
}

int64_t ng_channel_sums_chunks(int64_t A, int64_t R, int64_t S) {
    int64_t chunks = (A * S + 4095) / 4096;     /* 4096 elements per block and row, at least */
    int64_t most = 8192 / R > 1 ? 8192 / R : 1; /* about 8192 blocks in all */
    if (chunks > most) chunks = most;
    return chunks < 1 ? 1 : chunks;
}

size_t ng_channel_sums_workspace(int64_t A, int64_t R, int64_t S) {
    return sizeof(double) * 2 * (size_t)(R * ng_channel_sums_chunks(A, R, S));
}
