/* The sequence container. Backward ping-pongs activation gradients between two scratch
 * buffers sized for the largest child input, so gradient memory is two activations, not all. */
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "nn/containers.h"

typedef struct {
    int n; /* children seen at the last forward */
    int ndim[64];
    int64_t shape[64][NG_MAX_DIMS]; /* input shape of each child at the last forward */
    ng_dtype dtype;
} seq_state;

void ng_children_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    int64_t cur[NG_MAX_DIMS];
    int cn = ndim;
    memcpy(cur, in, sizeof(int64_t) * (size_t)ndim);
    for (int i = 0; i < l->nchildren; i++) {
        int64_t next[NG_MAX_DIMS];
        int nn;
        ng_layer_out_shape(l->children[i], cn, cur, &nn, next);
        cn = nn;
        memcpy(cur, next, sizeof(int64_t) * (size_t)nn);
    }
    *out_ndim = cn;
    memcpy(out, cur, sizeof(int64_t) * (size_t)cn);
}

static ng_tensor seq_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    seq_state *s = l->impl;
    NG_CHECK(l->nchildren <= 64, "sequence %s: more than 64 children; nest sequences", l->name);
    ng_tensor cur = *x;
    s->n = l->nchildren;
    s->dtype = x->dtype;
    for (int i = 0; i < l->nchildren; i++) {
        s->ndim[i] = cur.ndim;
        memcpy(s->shape[i], cur.shape, sizeof cur.shape);
        cur = l->children[i]->ops->forward(l->children[i], ctx, &cur);
    }
    return cur;
}

static void seq_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    seq_state *s = l->impl;
    NG_CHECK(s->n == l->nchildren, "sequence %s: backward without a forward", l->name);
    if (!l->nchildren) {
        if (dx) ng_copy(dx, dy);
        return;
    }
    int64_t most = 0;
    for (int i = 1; i < s->n; i++) {
        int64_t n = 1;
        for (int d = 0; d < s->ndim[i]; d++) n *= s->shape[i][d];
        if (n > most) most = n;
    }
    ng_arena_mark mark = ng_arena_get_mark(ctx->grads);
    ng_tensor buf[2];
    for (int b = 0; b < 2; b++)
        buf[b] = ng_arena_tensor(ctx->grads, s->dtype, 1, (int64_t[]){most}, "activation grad");
    ng_tensor cur = *dy;
    for (int i = s->n - 1; i >= 0; i--) {
        ng_layer *c = l->children[i];
        if (i == 0) {
            ng_layer_backward(c, ctx, &cur, dx);
            break;
        }
        ng_tensor next = ng_tensor_view(&buf[i & 1], 0, s->ndim[i], s->shape[i], "activation grad");
        ng_layer_backward(c, ctx, &cur, &next);
        cur = next;
    }
    ng_arena_release(ctx->grads, mark);
}

static const ng_layer_ops seq_ops = {
    .kind = "sequence",
    .out_shape = ng_children_out_shape,
    .forward = seq_forward,
    .backward = seq_backward,
};

ng_layer *ng_sequence(const char *name) {
    return ng_layer_new(&seq_ops, name, sizeof(seq_state));
}
