/* Multi-head self-attention (timm layout) from core's batched GEMMs, the row softmax of
 * nn/activation.h and a permute kernel whose CPU twin lives here. The Linear children run
 * inside this layer, so observers (K-FAC) see qkv and proj like any other Linear. */
#include "nn/attention.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/threads.h"
#include "nn/activation.h"
#include "nn/linear.h"
#include "nn/vit_kernels.h"
#include "nn/plan.h"

/* ---- permute ----------------------------------------------------------------------------- */

/* Walks output rows r0..r1-1 of y in order with an odometer over its outer dims; the source
 * offset follows by strides, so the inner loop is a strided gather of one output row. */
#define PERMUTE_CPU(E)                                                                             \
    static void permute_##E(const E *x, E *y, int nd, const int64_t *oshape,                       \
                            const int64_t *sstride, int64_t r0, int64_t r1) {                      \
        int64_t idx[NG_VIT_PERMUTE_MAX_DIMS] = {0}, src = 0, last = oshape[nd - 1],                \
                ls = sstride[nd - 1];                                                              \
        for (int64_t k = nd - 2, q = r0; k >= 0; k--) {                                            \
            idx[k] = q % oshape[k], q /= oshape[k];                                                \
            src += idx[k] * sstride[k];                                                            \
        }                                                                                          \
        y += r0 * last;                                                                            \
        for (int64_t r = r0; r < r1; r++) {                                                        \
            for (int64_t i = 0; i < last; i++) y[i] = x[src + i * ls];                             \
            y += last;                                                                             \
            for (int k = nd - 2; k >= 0; k--) {                                                    \
                src += sstride[k];                                                                 \
                if (++idx[k] < oshape[k]) break;                                                   \
                src -= sstride[k] * oshape[k];                                                     \
                idx[k] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }

PERMUTE_CPU(uint8_t)
PERMUTE_CPU(uint16_t)
PERMUTE_CPU(uint32_t)
PERMUTE_CPU(uint64_t)

static void permute_cpu(const ng_tensor *x, ng_tensor *y, int nd, const int64_t *shape,
                        const int *perm) {
    int64_t istride[NG_VIT_PERMUTE_MAX_DIMS], oshape[NG_VIT_PERMUTE_MAX_DIMS],
        sstride[NG_VIT_PERMUTE_MAX_DIMS];
    istride[nd - 1] = 1;
    for (int k = nd - 2; k >= 0; k--) istride[k] = istride[k + 1] * shape[k + 1];
    for (int k = 0; k < nd; k++) oshape[k] = shape[perm[k]], sstride[k] = istride[perm[k]];
    /* Output rows split over NG_THREADS: a pure copy, so any split gives the same bits. */
    int64_t rows = 1, n = x->numel, es = (int64_t)ng_dtype_size(x->dtype);
    for (int k = 0; k < nd - 1; k++) rows *= oshape[k];
    NG_CHECK(es == 1 || es == 2 || es == 4 || es == 8, "ng_vit_permute: element size %lld",
             (long long)es);
#pragma omp parallel if (n >= NG_OMP_MIN)
    {
        int nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t r0 = rows * t / nt, r1 = rows * (t + 1) / nt;
        switch (es) {
            case 1:
                permute_uint8_t(x->data, y->data, nd, oshape, sstride, r0, r1);
                break;
            case 2:
                permute_uint16_t(x->data, y->data, nd, oshape, sstride, r0, r1);
                break;
            case 4:
                permute_uint32_t(x->data, y->data, nd, oshape, sstride, r0, r1);
                break;
            default:
                permute_uint64_t(x->data, y->data, nd, oshape, sstride, r0, r1);
                break;
        }
    }
}

void ng_vit_permute(const ng_tensor *x, ng_tensor *y, int ndim, const int64_t *shape,
                    const int *perm) {
    NG_CHECK(ndim >= 1 && ndim <= NG_VIT_PERMUTE_MAX_DIMS, "ng_vit_permute: %d dims (1 to %d)",
             ndim, NG_VIT_PERMUTE_MAX_DIMS);
    int seen[NG_VIT_PERMUTE_MAX_DIMS] = {0};
    int64_t n = 1;
    for (int k = 0; k < ndim; k++) {
        NG_CHECK(perm[k] >= 0 && perm[k] < ndim && !seen[perm[k]],
                 "ng_vit_permute: the order is not a permutation of %d dims", ndim);
        seen[perm[k]] = 1;
        NG_CHECK(shape[k] >= 0, "ng_vit_permute: negative dim");
        n *= shape[k];
    }
    NG_CHECK(x->numel == n && y->numel == n && x->dtype == y->dtype && x->device == y->device,
             "ng_vit_permute: '%s' %s to '%s' %s: both need %lld elements of one dtype and device",
             ng_tensor_name(x), ng_tensor_desc(x), ng_tensor_name(y), ng_tensor_desc(y),
             (long long)n);
    size_t bytes = ng_tensor_bytes(x);
    const char *xb = x->data, *yb = y->data;
    NG_CHECK(xb + bytes <= yb || yb + bytes <= xb, "ng_vit_permute: '%s' and '%s' overlap",
             ng_tensor_name(x), ng_tensor_name(y));
    if (!n) return;
    NG_DISPATCH(x, permute_cpu(x, y, ndim, shape, perm),
                ng_vit_permute_cuda(x, y, ndim, shape, perm));
}

/* ---- the layer --------------------------------------------------------------------------- */

typedef struct {
    int64_t dim, heads, hd;
    int64_t B, T;    /* of the last forward */
    ng_tensor qkvp;  /* [3, B*H, T, hd]: q, k, v per (batch, head) */
    ng_tensor probs; /* [B*H, T, T]: softmax(q k^T / sqrt(hd)) */
} attn_state;

static void attn_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    const attn_state *s = l->impl;
    NG_CHECK(ndim == 3 && in[2] == s->dim,
             "attention %s: input must be [batch, tokens, %lld], got %d dims with last dim %lld",
             l->name, (long long)s->dim, ndim, (long long)in[ndim - 1]);
    *out_ndim = 3;
    for (int i = 0; i < 3; i++) out[i] = in[i];
}

/* q, k or v (which = 0, 1, 2) of a [3, B*H, T, hd] tensor as [B*H, T, hd]. */
static ng_tensor part(const ng_tensor *t, int which, const char *name) {
    int64_t bh = t->shape[1], T = t->shape[2], hd = t->shape[3];
    return ng_tensor_view(t, which * bh * T * hd, 3, (int64_t[]){bh, T, hd}, name);
}

static ng_tensor attn_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    attn_state *s = l->impl;
    ng_layer *qkv = l->children[0], *proj = l->children[1];
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(l, x->ndim, x->shape, &ndim, shape);
    int64_t B = x->shape[0], T = x->shape[1], H = s->heads, hd = s->hd, bh = B * H;
    s->B = B, s->T = T;

    s->qkvp = ng_arena_tensor(ctx->acts, x->dtype, 4, (int64_t[]){3, bh, T, hd}, "attention qkv");
    /* qkv's output is only needed for the permute: a Linear's backward reads its input and
     * weights, never its output, so the output's memory is given back at once. */
    ng_arena_mark am = ng_arena_get_mark(ctx->acts);
    ctx->inplace = 0, ctx->output_unused = 0;
    ng_tensor y3 = qkv->ops->forward(qkv, ctx, x);
    ng_vit_permute(&y3, &s->qkvp, 5, (int64_t[]){B, T, 3, H, hd}, (int[]){2, 0, 3, 1, 4});
    ng_arena_release(ctx->acts, am);

    ng_tensor q = part(&s->qkvp, 0, "q"), k = part(&s->qkvp, 1, "k"), v = part(&s->qkvp, 2, "v");
    s->probs = ng_arena_tensor(ctx->acts, x->dtype, 3, (int64_t[]){bh, T, T}, "attention probs");
    ng_gemm(0, 1, 1.0 / sqrt((double)hd), &q, &k, 0.0, &s->probs);
    ng_softmax_rows(&s->probs, &s->probs);

    ng_arena_mark gm = ng_arena_get_mark(ctx->grads);
    ng_tensor o = ng_arena_tensor(ctx->grads, x->dtype, 3, (int64_t[]){bh, T, hd}, "heads out");
    ng_gemm(0, 0, 1.0, &s->probs, &v, 0.0, &o);
    /* proj keeps its input for backward, so the merged heads live in the activation arena. */
    ng_tensor merged = ng_arena_tensor(ctx->acts, x->dtype, 3, x->shape, "attention heads");
    ng_vit_permute(&o, &merged, 4, (int64_t[]){B, H, T, hd}, (int[]){0, 2, 1, 3});
    ng_arena_release(ctx->grads, gm);
    return proj->ops->forward(proj, ctx, &merged);
}

static void attn_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    attn_state *s = l->impl;
    ng_layer *qkv = l->children[0], *proj = l->children[1];
    ctx->dy_scratch = 0; /* its sub-layers keep their hands off dy */
    int64_t B = s->B, T = s->T, H = s->heads, hd = s->hd, bh = B * H;
    NG_CHECK(s->qkvp.data && dy->numel == B * T * s->dim,
             "attention %s: output gradient %s does not fit the last forward", l->name,
             ng_tensor_desc(dy));
    ng_dtype dt = s->qkvp.dtype;
    double scale = 1.0 / sqrt((double)hd);
    ng_arena_mark gm = ng_arena_get_mark(ctx->grads);

    ng_tensor dmerged = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){B, T, s->dim}, "d heads");
    ng_layer_backward(proj, ctx, dy, &dmerged);
    ng_tensor dout = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){bh, T, hd}, "d heads out");
    ng_vit_permute(&dmerged, &dout, 4, (int64_t[]){B, T, H, hd}, (int[]){0, 2, 1, 3});

    ng_tensor q = part(&s->qkvp, 0, "q"), k = part(&s->qkvp, 1, "k"), v = part(&s->qkvp, 2, "v");
    ng_tensor dqkvp = ng_arena_tensor(ctx->grads, dt, 4, (int64_t[]){3, bh, T, hd}, "d qkv");
    ng_tensor dq = part(&dqkvp, 0, "dq"), dk = part(&dqkvp, 1, "dk"), dv = part(&dqkvp, 2, "dv");
    ng_tensor dp = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){bh, T, T}, "d probs");
    ng_gemm(0, 1, 1.0, &dout, &v, 0.0, &dp);        /* dP = dO v^T */
    ng_gemm(1, 0, 1.0, &s->probs, &dout, 0.0, &dv); /* dv = P^T dO */
    ng_softmax_rows_backward(&s->probs, &dp, &dp);  /* now d(scores) */
    ng_gemm(0, 0, scale, &dp, &k, 0.0, &dq);        /* dq = scale dS k */
    ng_gemm(1, 0, scale, &dp, &q, 0.0, &dk);        /* dk = scale dS^T q */

    ng_tensor dy3 = ng_arena_tensor(ctx->grads, dt, 3, (int64_t[]){B, T, 3 * s->dim}, "d qkv out");
    ng_vit_permute(&dqkvp, &dy3, 5, (int64_t[]){3, B, H, T, hd}, (int[]){1, 3, 0, 2, 4});
    ng_layer_backward(qkv, ctx, &dy3, dx);
    ng_arena_release(ctx->grads, gm);
}

static void attn_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                      const int64_t *in, ng_dtype dt) {
    attn_state *s = l->impl;
    ng_layer *qkv = l->children[0], *proj = l->children[1];
    int64_t B = in[0], T = in[1], bh = B * s->heads, hd = s->hd;
    int64_t qkv4[4] = {3, bh, T, hd}, heads[3] = {bh, T, hd}, probs[3] = {bh, T, T};
    if (!backward) {
        ng_sim_tensor(&sim->acts, dt, 4, qkv4);
        size_t am = ng_sim_mark(&sim->acts);
        sim->inplace = 0, sim->output_unused = 0;
        ng_layer_plan(qkv, sim, 0, 0, ndim, in, dt);
        ng_sim_release(&sim->acts, am);
        ng_sim_tensor(&sim->acts, dt, 3, probs);
        size_t gm = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, dt, 3, heads);
        ng_sim_tensor(&sim->acts, dt, ndim, in); /* merged heads, proj's input */
        ng_sim_release(&sim->grads, gm);
        ng_layer_plan(proj, sim, 0, 0, ndim, in, dt);
        return;
    }
    size_t gm = ng_sim_mark(&sim->grads);
    ng_sim_tensor(&sim->grads, dt, 3, (int64_t[]){B, T, s->dim});
    ng_layer_plan(proj, sim, 1, 1, ndim, in, dt);
    ng_sim_tensor(&sim->grads, dt, 3, heads);
    ng_sim_tensor(&sim->grads, dt, 4, qkv4);
    ng_sim_tensor(&sim->grads, dt, 3, probs);
    ng_sim_tensor(&sim->grads, dt, 3, (int64_t[]){B, T, 3 * s->dim});
    ng_layer_plan(qkv, sim, 1, need_dx, ndim, in, dt);
    ng_sim_release(&sim->grads, gm);
}

/* qkv and proj, q k^T and probs v (T x T x head_dim multiply-adds per batch entry and head),
 * and the softmax, one per score. */
static int64_t attn_flops(const ng_layer *l, int ndim, const int64_t *in) {
    const attn_state *s = l->impl;
    int64_t B = in[0], T = in[1];
    return ng_layer_flops(l->children[0], ndim, in) + ng_layer_flops(l->children[1], ndim, in) +
           2 * 2 * B * T * T * s->dim + B * s->heads * T * T;
}

static const ng_layer_ops attn_ops = {
    .kind = "attention",
    .flops = attn_flops,
    .out_shape = attn_out_shape,
    .forward = attn_forward,
    .backward = attn_backward,
    .plan = attn_plan,
};

ng_layer *ng_attention(const char *name, int64_t dim, int64_t heads, int qkv_bias) {
    NG_CHECK(dim > 0 && heads > 0 && dim % heads == 0,
             "attention %s: dim %lld must be a positive multiple of heads %lld", name,
             (long long)dim, (long long)heads);
    ng_layer *l = ng_layer_new(&attn_ops, name, sizeof(attn_state));
    attn_state *s = l->impl;
    s->dim = dim, s->heads = heads, s->hd = dim / heads;
    char child[sizeof l->name + 8];
    snprintf(child, sizeof child, "%s.qkv", name);
    ng_layer_add_child(l, ng_linear(child, dim, 3 * dim, qkv_bias));
    snprintf(child, sizeof child, "%s.proj", name);
    ng_layer_add_child(l, ng_linear(child, dim, dim, 1));
    return l;
}
