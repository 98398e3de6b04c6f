/* The residual block y = x + f(x). */
#include "core/error.h"
#include "core/ops.h"
#include "nn/containers.h"
#include "nn/plan.h"

static void res_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                          int64_t *out) {
    ng_layer_out_shape(l->children[0], ndim, in, out_ndim, out);
    int same = *out_ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = out[i] == in[i];
    NG_CHECK(same, "residual %s: the branch changes the shape of its input", l->name);
}

static ng_tensor res_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    ng_layer *f = l->children[0];
    ctx->inplace = 0, ctx->output_unused = 0; /* x and f(x) are added after the branch */
    ng_tensor fx = f->ops->forward(f, ctx, x);
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, x->ndim, x->shape, l->name);
    ng_add(x, &fx, &y);
    return y;
}

static void res_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    ng_layer *f = l->children[0];
    ctx->dy_scratch = 0; /* dy is added to dx after the branch */
    if (!dx) {
        ng_layer_backward(f, ctx, dy, NULL);
        return;
    }
    /* dx = dy + f'(x)^T dy: the branch writes into dx, then the skip path adds dy. */
    ng_layer_backward(f, ctx, dy, dx);
    ng_axpy(1.0, dy, dx);
}

static void res_plan(ng_layer *l, ng_mem_sim *s, int backward, int need_dx, int ndim,
                     const int64_t *in, ng_dtype dt) {
    s->inplace = 0, s->dy_scratch = 0, s->output_unused = 0;
    ng_layer_plan(l->children[0], s, backward, need_dx, ndim, in, dt);
    if (!backward) ng_sim_tensor(&s->acts, dt, ndim, in);
}

/* The branch, and the addition of the skip path. */
static int64_t res_flops(const ng_layer *l, int ndim, const int64_t *in) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= in[i];
    return ng_layer_flops(l->children[0], ndim, in) + n;
}

static const ng_layer_ops res_ops = {
    .kind = "residual",
    .flops = res_flops,
    .out_shape = res_out_shape,
    .forward = res_forward,
    .backward = res_backward,
    .plan = res_plan,
    .out_unread = 1,
};

ng_layer *ng_residual(const char *name, ng_layer *f) {
    ng_layer *l = ng_layer_new(&res_ops, name, 0);
    ng_layer_add_child(l, f);
    return l;
}
