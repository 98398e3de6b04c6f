/* The checkpoint segment: activation memory of its interior is released after forward and
 * rebuilt by a replay during backward. The replay sets ctx->recomputing, so observers (K-FAC)
 * and batch-norm running statistics see the interior once per step, not twice. */
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "nn/containers.h"

typedef struct {
    int enabled;
    ng_tensor x; /* the segment's input, kept for the replay (it lives outside the segment) */
} ckpt_state;

static void ckpt_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    ng_layer_out_shape(l->children[0], ndim, in, out_ndim, out);
}

static ng_tensor ckpt_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    ckpt_state *s = l->impl;
    ng_layer *f = l->children[0];
    s->x = *x;
    if (!s->enabled) return f->ops->forward(f, ctx, x);
    /* The output goes below the mark so it survives the release of the interior. */
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(f, x->ndim, x->shape, &ndim, shape);
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    ng_arena_mark mark = ng_arena_get_mark(ctx->acts);
    ng_tensor fy = f->ops->forward(f, ctx, x);
    ng_copy(&y, &fy);
    ng_arena_release(ctx->acts, mark);
    return y;
}

static void ckpt_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    ckpt_state *s = l->impl;
    ng_layer *f = l->children[0];
    if (!s->enabled) {
        ng_layer_backward(f, ctx, dy, dx);
        return;
    }
    ng_arena_mark mark = ng_arena_get_mark(ctx->acts);
    int was = ctx->recomputing;
    ctx->recomputing = 1;
    f->ops->forward(f, ctx, &s->x);
    ctx->recomputing = was;
    ng_layer_backward(f, ctx, dy, dx);
    ng_arena_release(ctx->acts, mark);
}

static const ng_layer_ops ckpt_ops = {
    .kind = "checkpoint",
    .out_shape = ckpt_out_shape,
    .forward = ckpt_forward,
    .backward = ckpt_backward,
};

ng_layer *ng_checkpoint(const char *name, ng_layer *inner, int enabled) {
    ng_layer *l = ng_layer_new(&ckpt_ops, name, sizeof(ckpt_state));
    ((ckpt_state *)l->impl)->enabled = enabled;
    ng_layer_add_child(l, inner);
    return l;
}
