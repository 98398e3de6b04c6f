/* Max and average pooling of f32 CPU tensors (2-D and 3-D) through oneDNN: forward, and backward
 * from the forward's workspace (max) or from the shapes alone (average). Primitives are made once
 * per layer and input shape and kept in the layer's cache, as conv_onednn.c does.
 *
 * Layouts: natgrad's plain NCHW / NCDHW on both sides, no reorders. Unlike convolution, oneDNN's
 * jit pooling runs on plain layouts (it transposes channel blocks through its scratchpad
 * internally), and a reorder would be a full pass over a computation that is itself one pass.
 * Scratchpads are the user's, taken from the gradient arena for the call and given back; the
 * planning entry takes the same sizes from the plan's counters. The max workspace is the layer's
 * to keep (pool.c allocates it in the activation arena in place of natgrad's i32 argmax).
 *
 * A forward that no backward will read (an evaluation, ctx->training 0, or a forward_only pass)
 * runs max pooling's forward_inference primitive, which writes no workspace.
 *
 * bf16 (pool.c's native path, where the CPU has AVX512_BF16): the same primitives on bf16 src and
 * dst. oneDNN's jit kernels widen each bf16 load to f32 and round each stored value once (nearest
 * even): a maximum is one of the inputs, an average an f32 sum divided and rounded once, as the
 * f32 copies give; the gradient too is summed in f32 where windows overlap. */
#include "nn/pool_onednn.h"

#include <stdlib.h>
#include <string.h>

#include "nn/onednn.h"

/* Shapes a layer keeps primitives for: training, evaluation and a last partial batch fit. */
#define CACHE_SLOTS 4

typedef struct {
    ng_dnnl_key key; /* the input shape it is made for */
    ng_dtype dt;     /* f32 or bf16, one per cache */
    /* forward for training (max: with the workspace), backward, forward for inference (max) */
    dnnl_primitive_desc_t fpd, bpd, ipd;
    dnnl_primitive_t fwd, bwd, ifwd;
    dnnl_memory_t fmem[4], bmem[4], imem[4]; /* one per argument slot, in ng_dnnl_run's order */
} pool_prims;

typedef struct {
    pool_prims slot[CACHE_SLOTS];
    uint64_t clock;
} pool_cache;

static int use_onednn = 1, use_native = 1;

void ng_pool_use_onednn(int enabled) {
    use_onednn = enabled;
}

void ng_pool_use_native_bf16(int enabled) {
    use_native = enabled;
}

int ng_pool_bf16_native(void) {
    return use_onednn && use_native && ng_dnnl_bf16_native();
}

int ng_pool_onednn_enabled(void) {
    return use_onednn;
}

int ng_pool_onednn_takes(const ng_tensor *x) {
    return use_onednn && x->device == NG_CPU && x->dtype == NG_F32;
}

/* ---- descriptors and primitives ------------------------------------------------------------ */

typedef struct {
    dnnl_memory_desc_t src, dst;
    dnnl_dims_t strides, kernel, dilation, pad_l, pad_r;
    dnnl_alg_kind_t alg;
} pool_mds;

static pool_mds descs(const ng_pool_geom *g, ng_dtype dt, int ndim, const int64_t *in) {
    pool_mds m;
    memset(&m, 0, sizeof m); /* dilation 0: none (oneDNN counts the gaps) */
    int64_t out[5] = {in[0], in[1]};
    for (int i = 0; i < g->nd; i++) {
        /* natgrad floors the output size and pads symmetrically; oneDNN floors too */
        out[2 + i] = (in[2 + i] + 2 * g->padding[i] - g->kernel[i]) / g->stride[i] + 1;
        m.strides[i] = g->stride[i];
        m.kernel[i] = g->kernel[i];
        m.pad_l[i] = m.pad_r[i] = g->padding[i];
    }
    NG_CHECK(dt == NG_F32 || dt == NG_BF16, "pool (oneDNN): %s; f32 or bf16", ng_dtype_name(dt));
    dnnl_data_type_t t = dt == NG_BF16 ? dnnl_bf16 : dnnl_f32;
    m.src = ng_dnnl_plain(ndim, in, t);
    m.dst = ng_dnnl_plain(ndim, out, t);
    /* include_padding divides by prod(kernel) everywhere: PyTorch's count_include_pad */
    m.alg = g->max ? dnnl_pooling_max : dnnl_pooling_avg_include_padding;
    return m;
}

static void make_pd(dnnl_primitive_desc_t *pd, const void *desc, const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t a = ng_dnnl_user_scratchpad();
    NG_DNNL_CHECK(dnnl_primitive_desc_create(pd, desc, a, ng_dnnl_engine(), hint));
    NG_DNNL_CHECK(dnnl_primitive_attr_destroy(a));
}

static void forward_pd(pool_prims *p, const ng_pool_geom *g) {
    if (p->fpd) return;
    pool_mds m = descs(g, p->dt, p->key.ndim, p->key.shape);
    dnnl_pooling_v2_desc_t d;
    /* training: max pooling then leaves the workspace its backward needs */
    NG_DNNL_CHECK(dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_training, m.alg, &m.src,
                                                    &m.dst, m.strides, m.kernel, m.dilation,
                                                    m.pad_l, m.pad_r));
    make_pd(&p->fpd, &d, NULL);
}

/* The forward no backward reads: max pooling without the workspace (average pooling has none
 * and uses the training primitive). */
static const_dnnl_primitive_desc_t infer_pd(pool_prims *p, const ng_pool_geom *g) {
    if (!g->max) {
        forward_pd(p, g);
        return p->fpd;
    }
    if (p->ipd) return p->ipd;
    pool_mds m = descs(g, p->dt, p->key.ndim, p->key.shape);
    dnnl_pooling_v2_desc_t d;
    NG_DNNL_CHECK(dnnl_pooling_v2_forward_desc_init(&d, dnnl_forward_inference, m.alg, &m.src,
                                                    &m.dst, m.strides, m.kernel, m.dilation,
                                                    m.pad_l, m.pad_r));
    make_pd(&p->ipd, &d, NULL);
    return p->ipd;
}

static void backward_pd(pool_prims *p, const ng_pool_geom *g) {
    if (p->bpd) return;
    forward_pd(p, g);
    pool_mds m = descs(g, p->dt, p->key.ndim, p->key.shape);
    dnnl_pooling_v2_desc_t d;
    NG_DNNL_CHECK(dnnl_pooling_v2_backward_desc_init(&d, m.alg, &m.src, &m.dst, m.strides, m.kernel,
                                                     m.dilation, m.pad_l, m.pad_r));
    make_pd(&p->bpd, &d, p->fpd);
}

static void free_prims(pool_prims *p) {
    for (int i = 0; i < 4; i++) {
        if (p->fmem[i]) dnnl_memory_destroy(p->fmem[i]);
        if (p->bmem[i]) dnnl_memory_destroy(p->bmem[i]);
        if (p->imem[i]) dnnl_memory_destroy(p->imem[i]);
    }
    if (p->fwd) dnnl_primitive_destroy(p->fwd);
    if (p->bwd) dnnl_primitive_destroy(p->bwd);
    if (p->ifwd) dnnl_primitive_destroy(p->ifwd);
    if (p->fpd) dnnl_primitive_desc_destroy(p->fpd);
    if (p->bpd) dnnl_primitive_desc_destroy(p->bpd);
    if (p->ipd) dnnl_primitive_desc_destroy(p->ipd);
    memset(p, 0, sizeof *p);
}

/* The slot for input shape `in`, made (evicting the least recently used) when missing. */
static pool_prims *lookup(void **cache, int ndim, const int64_t *in, ng_dtype dt) {
    NG_CHECK(ndim >= 4 && ndim <= 5, "pool (oneDNN): input has %d dims; 4 or 5", ndim);
    if (!*cache) {
        *cache = calloc(1, sizeof(pool_cache));
        NG_CHECK(*cache, "pool: out of host memory for the oneDNN primitive cache");
    }
    pool_cache *c = *cache;
    int miss, i = ng_dnnl_slot(&c->slot[0].key, sizeof c->slot[0], CACHE_SLOTS, &c->clock, ndim, in,
                               &miss);
    if (miss) {
        free_prims(&c->slot[i]);
        ng_dnnl_key_set(&c->slot[i].key, ndim, in, c->clock);
        c->slot[i].dt = dt;
    }
    NG_CHECK(c->slot[i].dt == dt, "pool (oneDNN): a cache made for %s asked for %s",
             ng_dtype_name(c->slot[i].dt), ng_dtype_name(dt));
    return &c->slot[i];
}

/* ---- the interface ------------------------------------------------------------------------- */

size_t ng_pool_onednn_workspace(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                                ng_dtype dt) {
    if (!g->max) return 0;
    pool_prims *p = lookup(cache, ndim, in, dt);
    forward_pd(p, g);
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(p->fpd, dnnl_query_workspace_md, 0);
    return md ? dnnl_memory_desc_get_size(md) : 0;
}

int ng_pool_onednn_native(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                          ng_dtype dt, int infer) {
    pool_prims *p = lookup(cache, ndim, in, dt);
    if (infer) return ng_dnnl_impl_native(infer_pd(p, g));
    backward_pd(p, g);
    return ng_dnnl_impl_native(p->fpd) && ng_dnnl_impl_native(p->bpd);
}

void ng_pool_onednn_forward(void **cache, const ng_pool_geom *g, const ng_tensor *x, ng_tensor *y,
                            void *ws, ng_arena *scratch) {
    pool_prims *p = lookup(cache, x->ndim, x->shape, x->dtype);
    int infer = g->max && !ws;
    const_dnnl_primitive_desc_t pd;
    dnnl_primitive_t *prim;
    dnnl_memory_t *mems;
    if (infer) {
        pd = infer_pd(p, g), prim = &p->ifwd, mems = p->imem;
    } else {
        forward_pd(p, g);
        pd = p->fpd, prim = &p->fwd, mems = p->fmem;
    }
    size_t sb = ng_dnnl_scratch_bytes(pd);
    ng_arena_mark m = ng_arena_get_mark(scratch);
    void *pad = sb ? ng_arena_alloc(scratch, sb) : NULL;
    if (!*prim) NG_DNNL_CHECK(dnnl_primitive_create(prim, pd));
    /* memory objects are per argument slot, so the slots keep one order for a primitive */
    ng_dnnl_buf b[4] = {{DNNL_ARG_SRC, x->data}, {DNNL_ARG_DST, y->data}};
    int n = 2;
    if (g->max && !infer) b[n++] = (ng_dnnl_buf){DNNL_ARG_WORKSPACE, ws};
    if (sb) b[n++] = (ng_dnnl_buf){DNNL_ARG_SCRATCHPAD, pad};
    ng_dnnl_run(*prim, pd, mems, n, b);
    ng_arena_release(scratch, m);
}

void ng_pool_onednn_backward(void **cache, const ng_pool_geom *g, const ng_tensor *x,
                             const ng_tensor *dy, const void *ws, ng_tensor *dx,
                             ng_arena *scratch) {
    NG_CHECK(!g->max || ws, "pool (oneDNN): a max pooling backward without the workspace");
    /* x gives the shape; its dtype may be the half type whose f32 copies dy and dx are */
    pool_prims *p = lookup(cache, x->ndim, x->shape, dy->dtype);
    backward_pd(p, g);
    size_t sb = ng_dnnl_scratch_bytes(p->bpd);
    ng_arena_mark m = ng_arena_get_mark(scratch);
    void *pad = sb ? ng_arena_alloc(scratch, sb) : NULL;
    if (!p->bwd) NG_DNNL_CHECK(dnnl_primitive_create(&p->bwd, p->bpd));
    ng_dnnl_buf b[4] = {{DNNL_ARG_DIFF_DST, dy->data}, {DNNL_ARG_DIFF_SRC, dx->data}};
    int n = 2;
    if (g->max) b[n++] = (ng_dnnl_buf){DNNL_ARG_WORKSPACE, (void *)ws};
    if (sb) b[n++] = (ng_dnnl_buf){DNNL_ARG_SCRATCHPAD, pad};
    ng_dnnl_run(p->bwd, p->bpd, p->bmem, n, b);
    ng_arena_release(scratch, m);
}

void ng_pool_onednn_plan(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                         ng_dtype dt, int pass, ng_sim_arena *grads) {
    pool_prims *p = lookup(cache, ndim, in, dt);
    const_dnnl_primitive_desc_t pd;
    if (pass == NG_POOL_BACKWARD) {
        backward_pd(p, g);
        pd = p->bpd;
    } else if (pass == NG_POOL_INFER) {
        pd = infer_pd(p, g);
    } else {
        forward_pd(p, g);
        pd = p->fpd;
    }
    size_t sb = ng_dnnl_scratch_bytes(pd);
    size_t m = ng_sim_mark(grads);
    if (sb) ng_sim_alloc(grads, sb);
    ng_sim_release(grads, m);
}

void ng_pool_onednn_free(void *cache) {
    pool_cache *c = cache;
    if (!c) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free_prims(&c->slot[i]);
    free(c);
}
