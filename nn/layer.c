/* Layer construction: names, parameter declarations, children. */
#include "layer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

ng_layer *ng_layer_new(const ng_layer_ops *ops, const char *name, size_t impl_bytes) {
    ng_layer *l = calloc(1, sizeof *l);
    NG_CHECK(l, "out of host memory creating layer %s", name);
    l->ops = ops;
    NG_CHECK(strlen(name) < sizeof l->name, "layer name '%s' is longer than %zu characters", name,
             sizeof l->name - 1);
    snprintf(l->name, sizeof l->name, "%s", name);
    if (impl_bytes) {
        l->impl = calloc(1, impl_bytes);
        NG_CHECK(l->impl, "out of host memory creating layer %s", name);
    }
    return l;
}

ng_param *ng_layer_add_param(ng_layer *l, const char *short_name, int ndim, const int64_t *shape,
                             ng_init init, int decay) {
    NG_CHECK(l->nparams < NG_LAYER_MAX_PARAMS, "layer %s: more than %d parameters", l->name,
             NG_LAYER_MAX_PARAMS);
    ng_param *p = &l->params[l->nparams++];
    memset(p, 0, sizeof *p);
    int n = snprintf(p->name, sizeof p->name, "%s%s%s", l->name, l->name[0] ? "." : "", short_name);
    NG_CHECK(n < (int)sizeof p->name, "parameter name %s.%s is too long", l->name, short_name);
    /* Shape only until the model binds the flat buffers. */
    p->value = ng_tensor_wrap(NULL, NG_F32, NG_CPU, ndim, shape, p->name);
    p->grad = p->value;
    p->compute = p->value;
    p->init = init;
    p->decay = decay;
    return p;
}

ng_buffer *ng_layer_add_buffer(ng_layer *l, const char *short_name, int ndim, const int64_t *shape,
                               double init) {
    NG_CHECK(l->nbuffers < NG_LAYER_MAX_BUFFERS, "layer %s: more than %d buffers", l->name,
             NG_LAYER_MAX_BUFFERS);
    ng_buffer *b = &l->buffers[l->nbuffers++];
    memset(b, 0, sizeof *b);
    int n = snprintf(b->name, sizeof b->name, "%s%s%s", l->name, l->name[0] ? "." : "", short_name);
    NG_CHECK(n < (int)sizeof b->name, "buffer name %s.%s is too long", l->name, short_name);
    b->value = ng_tensor_wrap(NULL, NG_F32, NG_CPU, ndim, shape, b->name);
    b->init = init;
    return b;
}

void ng_layer_add_child(ng_layer *l, ng_layer *child) {
    ng_layer **c = realloc(l->children, sizeof *c * (size_t)(l->nchildren + 1));
    NG_CHECK(c, "out of host memory adding a child to %s", l->name);
    l->children = c;
    l->children[l->nchildren++] = child;
}

void ng_layer_free(ng_layer *l) {
    if (!l) return;
    for (int i = 0; i < l->nchildren; i++) ng_layer_free(l->children[i]);
    if (l->ops->destroy) l->ops->destroy(l);
    free(l->children);
    free(l->impl);
    free(l);
}

void ng_layer_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                        int64_t *out) {
    NG_CHECK(ndim >= 1 && ndim <= NG_MAX_DIMS, "layer %s: input has %d dims", l->name, ndim);
    l->ops->out_shape(l, ndim, in, out_ndim, out);
}

int64_t ng_layer_flops(const ng_layer *l, int ndim, const int64_t *in) {
    if (l->ops->flops) return l->ops->flops(l, ndim, in);
    int64_t out[NG_MAX_DIMS], n = 1;
    int on;
    ng_layer_out_shape(l, ndim, in, &on, out);
    for (int i = 0; i < on; i++) n *= out[i];
    return n;
}

void ng_layer_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    l->ops->backward(l, ctx, dy, dx);
    if (ctx->grad_ready && l->nparams > 0) ctx->grad_ready->ready(ctx->grad_ready->self, l);
}
