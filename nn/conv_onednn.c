/* The CPU convolution through oneDNN (f32, 2-D and 3-D, stride, padding, dilation): forward
 * with the bias fused, backward data, backward weights with the bias gradient. Primitives are
 * made once per layer and input shape and kept in the layer's cache. natgrad's PyTorch layouts
 * (NC(D)HW, OI(D)HW) are given to oneDNN as they are, so no reorder runs at the layer's edges;
 * every primitive's scratchpad and the weight gradient it writes (natgrad accumulates, oneDNN
 * overwrites) come from the gradient arena, in the order conv_onednn_plan replays. */
#include <stdlib.h>
#include <string.h>

#include "core/memory.h"
#include "nn/conv_kernels.h"
#include "nn/onednn.h"
#include "nn/plan.h"

/* Shapes a layer keeps primitives for: training, evaluation and a last partial batch fit. */
#define CACHE_SLOTS 4

typedef struct {
    int ndim;
    int64_t shape[5]; /* the input's; ndim 0: an empty slot */
    int bias;
    dnnl_convolution_desc_t fd, dd, wd;
    dnnl_primitive_desc_t fpd, dpd, wpd; /* forward, backward data, backward weights */
    dnnl_primitive_t fwd, bwd_data, bwd_w;
    dnnl_memory_t fmem[5], dmem[4], wmem[5];
    uint64_t used; /* for eviction: the clock of the last use */
} conv_prims;

typedef struct {
    conv_prims slot[CACHE_SLOTS];
    uint64_t clock;
} conv_cache;

/* The descriptors of sample shape `in` (ndim dims, the batch first) and geometry g. */
typedef struct {
    dnnl_memory_desc_t src, wei, bias, dst;
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static conv_mds descs(const ng_conv_geom *g, int ndim, const int64_t *in) {
    conv_mds m;
    int64_t out[3], wd[5] = {g->out_ch, g->in_ch}, od[5] = {in[0], g->out_ch};
    ng_conv_out_spatial(g, in + 2, out, "conv (oneDNN)");
    memset(&m.strides, 0, sizeof m.strides);
    memset(&m.dilates, 0, sizeof m.dilates);
    memset(&m.pad_l, 0, sizeof m.pad_l);
    memset(&m.pad_r, 0, sizeof m.pad_r);
    for (int i = 0; i < g->nd; i++) {
        wd[2 + i] = g->kernel[i];
        od[2 + i] = out[i];
        m.strides[i] = g->stride[i];
        m.dilates[i] = g->dilation[i] - 1; /* oneDNN counts the gaps: 0 is no dilation */
        m.pad_l[i] = g->padding[i];
        /* PyTorch's symmetric padding; oneDNN floors the output size like PyTorch. */
        m.pad_r[i] = g->padding[i];
    }
    m.src = ng_dnnl_plain_f32(ndim, in);
    m.wei = ng_dnnl_plain_f32(ndim, wd);
    m.dst = ng_dnnl_plain_f32(ndim, od);
    m.bias = ng_dnnl_plain_f32(1, &g->out_ch);
    return m;
}

static void make_pd(dnnl_primitive_desc_t *pd, const void *desc, const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t a = ng_dnnl_user_scratchpad();
    NG_DNNL_CHECK(dnnl_primitive_desc_create(pd, desc, a, ng_dnnl_engine(), hint));
    NG_DNNL_CHECK(dnnl_primitive_attr_destroy(a));
}

static void forward_pd(conv_prims *p, const ng_conv_geom *g) {
    if (p->fpd) return;
    conv_mds m = descs(g, p->ndim, p->shape);
    NG_DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
        &p->fd, dnnl_forward_training, dnnl_convolution_direct, &m.src, &m.wei,
        g->bias ? &m.bias : NULL, &m.dst, m.strides, m.dilates, m.pad_l, m.pad_r));
    make_pd(&p->fpd, &p->fd, NULL);
}

static void backward_pds(conv_prims *p, const ng_conv_geom *g) {
    if (p->dpd) return;
    forward_pd(p, g);
    conv_mds m = descs(g, p->ndim, p->shape);
    NG_DNNL_CHECK(dnnl_dilated_convolution_backward_data_desc_init(
        &p->dd, dnnl_convolution_direct, &m.src, &m.wei, &m.dst, m.strides, m.dilates, m.pad_l,
        m.pad_r));
    make_pd(&p->dpd, &p->dd, p->fpd);
    NG_DNNL_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
        &p->wd, dnnl_convolution_direct, &m.src, &m.wei, g->bias ? &m.bias : NULL, &m.dst,
        m.strides, m.dilates, m.pad_l, m.pad_r));
    make_pd(&p->wpd, &p->wd, p->fpd);
}

static void free_prims(conv_prims *p) {
    dnnl_memory_t *mems[] = {p->fmem, p->dmem, p->wmem};
    int counts[] = {5, 4, 5};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < counts[k]; i++)
            if (mems[k][i]) dnnl_memory_destroy(mems[k][i]);
    dnnl_primitive_t prims[] = {p->fwd, p->bwd_data, p->bwd_w};
    for (int i = 0; i < 3; i++)
        if (prims[i]) dnnl_primitive_destroy(prims[i]);
    dnnl_primitive_desc_t pds[] = {p->fpd, p->dpd, p->wpd};
    for (int i = 0; i < 3; i++)
        if (pds[i]) dnnl_primitive_desc_destroy(pds[i]);
    memset(p, 0, sizeof *p);
}

/* The slot for input shape `in`, made (evicting the least recently used) when missing. */
static conv_prims *lookup(void **cache, int ndim, const int64_t *in) {
    if (!*cache) {
        *cache = calloc(1, sizeof(conv_cache));
        NG_CHECK(*cache, "conv: out of host memory for the oneDNN primitive cache");
    }
    conv_cache *c = *cache;
    conv_prims *victim = &c->slot[0];
    c->clock++;
    for (int i = 0; i < CACHE_SLOTS; i++) {
        conv_prims *p = &c->slot[i];
        if (p->ndim == ndim && !memcmp(p->shape, in, sizeof(int64_t) * (size_t)ndim)) {
            p->used = c->clock;
            return p;
        }
        if (p->used < victim->used) victim = p;
    }
    free_prims(victim);
    victim->ndim = ndim;
    memcpy(victim->shape, in, sizeof(int64_t) * (size_t)ndim);
    victim->used = c->clock;
    return victim;
}

static size_t max_size(size_t a, size_t b) {
    return a > b ? a : b;
}

int ng_conv_onednn_takes(const ng_tensor *x) {
    return x->device == NG_CPU && x->dtype == NG_F32;
}

void ng_conv_onednn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                            const ng_tensor *w, const ng_tensor *b, ng_tensor *y,
                            ng_arena *scratch) {
    conv_prims *p = lookup(cache, x->ndim, x->shape);
    forward_pd(p, g);
    if (!p->fwd) NG_DNNL_CHECK(dnnl_primitive_create(&p->fwd, p->fpd));
    ng_arena_mark m = ng_arena_get_mark(scratch);
    size_t sb = ng_dnnl_scratch_bytes(p->fpd);
    void *pad = sb ? ng_arena_alloc(scratch, sb) : NULL;
    ng_dnnl_buf bufs[5] = {{DNNL_ARG_SRC, x->data},
                           {DNNL_ARG_WEIGHTS, w->data},
                           {DNNL_ARG_DST, y->data},
                           {DNNL_ARG_SCRATCHPAD, pad},
                           {DNNL_ARG_BIAS, g->bias ? b->data : NULL}};
    int n = 3 + (sb > 0);
    if (g->bias) bufs[n++] = bufs[4];
    /* memory objects are per argument slot; the slots' order is fixed per primitive */
    ng_dnnl_run(p->fwd, p->fpd, p->fmem, n, bufs);
    ng_arena_release(scratch, m);
}

void ng_conv_onednn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                             const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *db,
                             ng_tensor *dx, ng_arena *scratch) {
    conv_prims *p = lookup(cache, x->ndim, x->shape);
    backward_pds(p, g);
    if (!p->bwd_w) NG_DNNL_CHECK(dnnl_primitive_create(&p->bwd_w, p->wpd));
    if (dx && !p->bwd_data) NG_DNNL_CHECK(dnnl_primitive_create(&p->bwd_data, p->dpd));
    ng_arena_mark m = ng_arena_get_mark(scratch);
    ng_tensor gw = ng_arena_tensor(scratch, NG_F32, 1, (int64_t[]){w->numel}, "conv dW (oneDNN)");
    ng_tensor gb = {0};
    if (g->bias) gb = ng_arena_tensor(scratch, NG_F32, 1, (int64_t[]){g->out_ch}, "conv db");
    size_t sw = ng_dnnl_scratch_bytes(p->wpd), sd = dx ? ng_dnnl_scratch_bytes(p->dpd) : 0;
    size_t sb = max_size(sw, sd);
    void *pad = sb ? ng_arena_alloc(scratch, sb) : NULL;
    ng_dnnl_buf wb[5] = {{DNNL_ARG_SRC, x->data},
                         {DNNL_ARG_DIFF_DST, dy->data},
                         {DNNL_ARG_DIFF_WEIGHTS, gw.data},
                         {DNNL_ARG_SCRATCHPAD, pad},
                         {DNNL_ARG_DIFF_BIAS, gb.data}};
    int n = 3 + (sw > 0);
    if (g->bias) wb[n++] = wb[4];
    ng_dnnl_run(p->bwd_w, p->wpd, p->wmem, n, wb);
    /* natgrad accumulates parameter gradients (several backward passes may add into them) */
    float *acc = dw->data;
    const float *add = gw.data;
    for (int64_t i = 0; i < w->numel; i++) acc[i] += add[i];
    if (g->bias) {
        float *bacc = db->data;
        const float *badd = gb.data;
        for (int64_t i = 0; i < g->out_ch; i++) bacc[i] += badd[i];
    }
    if (dx) {
        ng_dnnl_buf dbufs[4] = {{DNNL_ARG_DIFF_DST, dy->data},
                                {DNNL_ARG_WEIGHTS, w->data},
                                {DNNL_ARG_DIFF_SRC, dx->data},
                                {DNNL_ARG_SCRATCHPAD, pad}};
        ng_dnnl_run(p->bwd_data, p->dpd, p->dmem, 3 + (sd > 0), dbufs);
    }
    ng_arena_release(scratch, m);
}

void ng_conv_onednn_plan(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                         int backward, int need_dx, ng_sim_arena *grads) {
    conv_prims *p = lookup(cache, ndim, in);
    size_t m = ng_sim_mark(grads);
    if (!backward) {
        forward_pd(p, g);
        size_t sb = ng_dnnl_scratch_bytes(p->fpd);
        if (sb) ng_sim_alloc(grads, sb);
    } else {
        backward_pds(p, g);
        int64_t wn = g->out_ch * g->in_ch * g->kernel[0] * g->kernel[1] * g->kernel[2];
        ng_sim_tensor(grads, NG_F32, 1, &wn);
        if (g->bias) ng_sim_tensor(grads, NG_F32, 1, &g->out_ch);
        size_t sw = ng_dnnl_scratch_bytes(p->wpd), sd = need_dx ? ng_dnnl_scratch_bytes(p->dpd) : 0;
        size_t sb = max_size(sw, sd);
        if (sb) ng_sim_alloc(grads, sb);
    }
    ng_sim_release(grads, m);
}

void ng_conv_onednn_free(void *cache) {
    conv_cache *c = cache;
    if (!c) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free_prims(&c->slot[i]);
    free(c);
}
