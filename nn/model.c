/* Flat parameter buffers, parameter initialisation, and whole-model passes. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"

static void gather(ng_model *m, ng_layer *l, int *index) {
    l->index = (*index)++;
    for (int i = 0; i < l->nparams; i++) {
        m->params = realloc(m->params, sizeof *m->params * (size_t)(m->nparams + 1));
        NG_CHECK(m->params, "out of host memory gathering parameters");
        m->params[m->nparams++] = (ng_param_entry){.param = &l->params[i], .layer = l};
    }
    for (int i = 0; i < l->nbuffers; i++) {
        m->buffers = realloc(m->buffers, sizeof *m->buffers * (size_t)(m->nbuffers + 1));
        NG_CHECK(m->buffers, "out of host memory gathering buffers");
        m->buffers[m->nbuffers++] = (ng_buffer_entry){.buffer = &l->buffers[i]};
    }
    for (int i = 0; i < l->nchildren; i++) gather(m, l->children[i], index);
}

ng_model *ng_model_new(ng_layer *root) {
    ng_model *m = calloc(1, sizeof *m);
    NG_CHECK(m, "out of host memory creating a model");
    m->root = root;
    int index = 0;
    gather(m, root, &index);
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        for (int j = 0; j < i; j++)
            if (!strcmp(p->name, m->params[j].param->name)) {
                /* The model owns root: free both before failing, so a caught error leaks nothing.
                 */
                char msg[512];
                snprintf(msg, sizeof msg, "model: two parameters are named %s", p->name);
                ng_model_free(m);
                ng_fail("%s", msg);
            }
        m->params[i].offset = m->numel;
        m->numel += (p->value.numel + NG_PARAM_ALIGN - 1) / NG_PARAM_ALIGN * NG_PARAM_ALIGN;
        m->count += p->value.numel;
    }
    for (int i = 0; i < m->nbuffers; i++) {
        m->buffers[i].offset = m->buffer_numel;
        m->buffer_numel += m->buffers[i].buffer->value.numel;
    }
    return m;
}

/* The standard normal from Philox words, in double on the host. */
static double normal_from(uint32_t a, uint32_t b) {
    double u1 = ((double)a + 1.0) / 4294967296.0, u2 = (double)b / 4294967296.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

void ng_init_tensor(ng_tensor *t, ng_init init, uint64_t seed, uint64_t stream) {
    /* host temporaries: not the parameters' memory */
    ng_mem_category was = ng_mem_set_category(NG_MEM_OTHER);
    ng_tensor h = ng_tensor_new(NG_F64, NG_CPU, t->ndim, t->shape, "init");
    double *v = h.data;
    ng_rng_key k = {.seed = seed, .stream = stream};
    uint64_t block = 0;
    uint32_t w[4];
    double fan = init.fan_in > 0 ? (double)init.fan_in : 1.0;
    for (int64_t i = 0; i < h.numel; i++) {
        switch (init.kind) {
            case NG_INIT_CONSTANT:
                v[i] = init.a;
                break;
            case NG_INIT_UNIFORM:
            case NG_INIT_KAIMING_UNIFORM: {
                double bound = init.kind == NG_INIT_UNIFORM ? init.a : 1.0 / sqrt(fan);
                ng_rng_block(k, block++, w);
                v[i] = bound * (2.0 * ((double)w[0] / 4294967296.0) - 1.0);
                break;
            }
            case NG_INIT_NORMAL:
            case NG_INIT_KAIMING_NORMAL: {
                double std = init.kind == NG_INIT_NORMAL ? init.a : sqrt(2.0 / fan);
                ng_rng_block(k, block++, w);
                v[i] = std * normal_from(w[0], w[1]);
                break;
            }
            case NG_INIT_TRUNC_NORMAL: { /* timm's trunc_normal_(std=a): redraw outside the
                                          * absolute bounds [-2, 2], not +-2 std */
                double z;
                do {
                    ng_rng_block(k, block++, w);
                    z = init.a * normal_from(w[0], w[1]);
                } while (fabs(z) > 2.0);
                v[i] = z;
                break;
            }
        }
    }
    ng_tensor c = ng_tensor_new(t->dtype, NG_CPU, t->ndim, t->shape, "init");
    ng_cast(&c, &h);
    ng_tensor_copy(t, &c);
    ng_tensor_free(&c);
    ng_tensor_free(&h);
    ng_mem_set_category(was);
}

static void build(ng_model *m, ng_device dev, ng_dtype dtype, ng_dtype compute, uint64_t seed,
                  size_t act_bytes, size_t grad_bytes) {
    NG_CHECK(dtype == NG_F32 || dtype == NG_F64, "model parameters must be f32 or f64, not %s",
             ng_dtype_name(dtype));
    NG_CHECK(compute == dtype || (dtype == NG_F32 && (compute == NG_F16 || compute == NG_BF16)),
             "model compute dtype %s does not go with %s master weights (f32 masters compute in "
             "f32, f16 or bf16; f64 masters in f64)",
             ng_dtype_name(compute), ng_dtype_name(dtype));
    m->device = dev;
    m->dtype = dtype;
    m->compute_dtype = compute;
    ng_mem_category was = ng_mem_set_category(NG_MEM_PARAMS);
    m->flat_params = ng_tensor_1d(dtype, dev, m->numel, "parameters");
    ng_mem_set_category(NG_MEM_GRADS);
    m->flat_grads = ng_tensor_1d(dtype, dev, m->numel, "gradients");
    ng_mem_set_category(NG_MEM_PARAMS);
    ng_fill(&m->flat_params, 0);
    ng_fill(&m->flat_grads, 0);
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        p->value = ng_tensor_view(&m->flat_params, m->params[i].offset, p->value.ndim,
                                  p->value.shape, p->name);
        p->grad = ng_tensor_view(&m->flat_grads, m->params[i].offset, p->value.ndim, p->value.shape,
                                 p->name);
        ng_init_tensor(&p->value, p->init, seed, (uint64_t)i);
    }
    if (compute == dtype) {
        m->flat_compute =
            ng_tensor_view(&m->flat_params, 0, 1, (int64_t[]){m->numel}, "parameters");
    } else {
        m->flat_compute = ng_tensor_1d(compute, dev, m->numel, "compute weights");
        ng_model_refresh_compute(m);
    }
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        p->compute = ng_tensor_view(&m->flat_compute, m->params[i].offset, p->value.ndim,
                                    p->value.shape, p->name);
    }
    m->flat_buffers = ng_tensor_1d(dtype, dev, m->buffer_numel, "buffers");
    for (int i = 0; i < m->nbuffers; i++) {
        ng_buffer *b = m->buffers[i].buffer;
        b->value = ng_tensor_view(&m->flat_buffers, m->buffers[i].offset, b->value.ndim,
                                  b->value.shape, b->name);
        ng_fill(&b->value, b->init);
    }
    /* One buffer: activations grow from its start, activation gradients and scratch down from its
     * end, so it needs the most both hold at once. */
    ng_mem_set_category(NG_MEM_ACTIVATIONS);
    ng_arena_pair(dev, act_bytes + grad_bytes, &m->acts, "activations", &m->grads,
                  "activation gradients", &m->arena_peak);
    ng_mem_set_category(was);
}

void ng_model_build(ng_model *m, ng_device dev, ng_dtype dtype, uint64_t seed, size_t act_bytes,
                    size_t grad_bytes) {
    build(m, dev, dtype, dtype, seed, act_bytes, grad_bytes);
}

void ng_model_build_mixed(ng_model *m, ng_device dev, ng_dtype compute, uint64_t seed,
                          size_t act_bytes, size_t grad_bytes) {
    build(m, dev, NG_F32, compute, seed, act_bytes, grad_bytes);
}

void ng_model_refresh_compute(ng_model *m) {
    /* One rounding per element, f32 -> f16/bf16 to nearest even, as the GPU's cast does. */
    if (m->compute_dtype != m->dtype) ng_cast(&m->flat_compute, &m->flat_params);
}

void ng_model_free(ng_model *m) {
    if (!m) return;
    if (m->compute_dtype != m->dtype) ng_tensor_free(&m->flat_compute);
    ng_tensor_free(&m->flat_params);
    ng_tensor_free(&m->flat_grads);
    ng_tensor_free(&m->flat_buffers);
    if (m->grads.base) ng_arena_free(&m->grads);
    if (m->acts.base) ng_arena_free(&m->acts);
    ng_layer_free(m->root);
    free(m->params);
    free(m->buffers);
    free(m);
}

ng_ctx ng_model_ctx(ng_model *m, int training, uint64_t seed, uint64_t step) {
    /* Step goes into the offset's high bits: each step draws from a fresh counter range. */
    return (ng_ctx){.device = m->device,
                    .acts = &m->acts,
                    .grads = &m->grads,
                    .training = training,
                    .rng = {.seed = seed, .offset = step << 40}};
}

void ng_model_reset_arenas(ng_model *m) {
    ng_arena_release(&m->acts, 0);
    ng_arena_release(&m->grads, 0);
}

ng_tensor ng_model_forward(ng_model *m, ng_ctx *ctx, const ng_tensor *x) {
    ctx->inplace = 0;       /* the caller's input stays as it is */
    ctx->output_unused = 0; /* and reads the output */
    /* Only a mixed model converts: other inputs go to the layers as they are, as they always did
     * (the layers check what they accept). */
    if (m->compute_dtype == m->dtype || x->dtype != m->dtype)
        return m->root->ops->forward(m->root, ctx, x);
    ng_tensor xc = ng_arena_tensor(ctx->acts, m->compute_dtype, x->ndim, x->shape, "input");
    ng_cast(&xc, x);
    return m->root->ops->forward(m->root, ctx, &xc);
}

void ng_model_backward(ng_model *m, ng_ctx *ctx, const ng_tensor *dy) {
    ctx->dy_scratch = 0; /* the caller's loss gradient stays as it is */
    ng_layer_backward(m->root, ctx, dy, NULL);
}

void ng_model_zero_grad(ng_model *m) {
    ng_fill(&m->flat_grads, 0);
}

ng_param_entry *ng_model_find(ng_model *m, const char *name) {
    for (int i = 0; i < m->nparams; i++)
        if (!strcmp(m->params[i].param->name, name)) return &m->params[i];
    return NULL;
}
