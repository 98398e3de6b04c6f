/* The CPU convolution through oneDNN (f32, 2-D and 3-D, stride, padding, dilation): forward
 * with the bias fused, backward data, backward weights with the bias gradient. Primitives are
 * made once per layer and input shape and kept in the layer's cache.
 *
 * Layouts: oneDNN is left to choose (format "any"). Its fast AVX2 kernels want channels in
 * blocks of 8 (nChw8c, OIhw8i8o); given natgrad's plain PyTorch layouts it falls back to
 * im2col + its own GEMM, 2-6x slower on the zoo's layers. So each pass reorders its operands
 * into the chosen layouts at the layer's edges and its results back; a reorder is a copy, small
 * beside the convolution it feeds, and where oneDNN chooses the plain layout (a first layer's
 * input of 1 or 3 channels) none runs. Blocked copies, scratchpads and the weight gradient
 * (natgrad accumulates, oneDNN overwrites) come from the gradient arena; the pass functions run
 * in a planning mode too, taking the same sizes from the memory plan's counters, so plan and
 * run cannot disagree.
 *
 * bf16 (conv.c's half_forward/half_backward, where the CPU has AVX512_BF16): the same passes with
 * bf16 x, weights and dy and oneDNN's native bf16 kernels (vdpbf16ps: exact products of bf16 pairs
 * summed in f32). y and dx come out bf16, rounded once from the f32 sums by oneDNN (to nearest
 * even; tests/test_conv_onednn.c checks the bits on single-product sums, where the f32 sum is
 * exact); the weight gradient is asked for in f32 and added into natgrad's f32 master gradient.
 * The bias stays natgrad's (added after the rounding, as every half conv does). A layer keeps
 * these primitives in a cache of their own (one dtype per cache). */
#include <stdlib.h>
#include <string.h>

#include "core/memory.h"
#include "nn/conv_kernels.h"
#include "nn/onednn.h"
#include "nn/plan.h"

/* Shapes a layer keeps primitives for: training, evaluation and a last partial batch fit. */
#define CACHE_SLOTS 4

/* A reorder between natgrad's plain layout and a primitive's; pd NULL when they are the same. */
typedef struct {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_t mem[3];
    size_t bytes; /* of the primitive's side */
} edge;

typedef struct {
    ng_dnnl_key key;                     /* the input shape it is made for */
    ng_dtype dt;                         /* of x, w, y, dy, dx: f32 or bf16 (dW is f32) */
    dnnl_primitive_desc_t fpd, dpd, wpd; /* forward, backward data, backward weights */
    dnnl_primitive_t fwd, bwd_data, bwd_w;
    dnnl_memory_t fmem[5], dmem[4], wmem[5];
    /* forward: x in, w in, y out; backward data: dy in, w in, dx out; backward weights: x in,
     * dy in, dW out */
    edge f_src, f_wei, f_dst, d_dst, d_wei, d_src, w_src, w_dst, w_wei;
} conv_prims;

typedef struct {
    conv_prims slot[CACHE_SLOTS];
    uint64_t clock;
} conv_cache;

/* ---- descriptors and primitives ------------------------------------------------------------ */

typedef struct {
    dnnl_memory_desc_t src, wei, bias, dst;       /* natgrad's plain layouts */
    dnnl_memory_desc_t src_any, wei_any, dst_any; /* for oneDNN to choose */
    dnnl_memory_desc_t gw, gw_any;                /* the weight gradient: f32 always */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
} conv_mds;

static dnnl_memory_desc_t any_md(int ndim, const int64_t *dims, dnnl_data_type_t t) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {0};
    for (int i = 0; i < ndim; i++) d[i] = dims[i];
    NG_DNNL_CHECK(dnnl_memory_desc_init_by_tag(&md, ndim, d, t, dnnl_format_tag_any));
    return md;
}

static conv_mds descs(const ng_conv_geom *g, ng_dtype dt, int ndim, const int64_t *in) {
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
        /* PyTorch's symmetric padding; oneDNN floors the output size as PyTorch does */
        m.pad_l[i] = m.pad_r[i] = g->padding[i];
    }
    NG_CHECK(dt == NG_F32 || (dt == NG_BF16 && !g->bias),
             "conv (oneDNN): %s%s; f32, or bf16 without the bias", ng_dtype_name(dt),
             g->bias ? " with a bias" : "");
    dnnl_data_type_t t = dt == NG_BF16 ? dnnl_bf16 : dnnl_f32;
    m.src = ng_dnnl_plain(ndim, in, t);
    m.wei = ng_dnnl_plain(ndim, wd, t);
    m.dst = ng_dnnl_plain(ndim, od, t);
    m.bias = ng_dnnl_plain_f32(1, &g->out_ch);
    m.src_any = any_md(ndim, in, t);
    m.wei_any = any_md(ndim, wd, t);
    m.dst_any = any_md(ndim, od, t);
    m.gw = ng_dnnl_plain_f32(ndim, wd);
    m.gw_any = any_md(ndim, wd, dnnl_f32);
    return m;
}

static void make_pd(dnnl_primitive_desc_t *pd, const void *desc, const_dnnl_primitive_desc_t hint) {
    dnnl_primitive_attr_t a = ng_dnnl_user_scratchpad();
    NG_DNNL_CHECK(dnnl_primitive_desc_create(pd, desc, a, ng_dnnl_engine(), hint));
    NG_DNNL_CHECK(dnnl_primitive_attr_destroy(a));
}

static const dnnl_memory_desc_t *arg_md(const_dnnl_primitive_desc_t pd, int arg) {
    return dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, arg);
}

/* The reorder from `from` to `to` (one of them the primitive's argument `arg`, whose size it
 * keeps), or none when the layouts agree. */
static void edge_make(edge *e, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to,
                      const dnnl_memory_desc_t *prim_side) {
    e->bytes = dnnl_memory_desc_get_size(prim_side);
    if (dnnl_memory_desc_equal(from, to)) return;
    dnnl_primitive_attr_t a = ng_dnnl_user_scratchpad();
    NG_DNNL_CHECK(dnnl_reorder_primitive_desc_create(&e->pd, from, ng_dnnl_engine(), to,
                                                     ng_dnnl_engine(), a));
    NG_DNNL_CHECK(dnnl_primitive_attr_destroy(a));
}

static void edge_free(edge *e) {
    for (int i = 0; i < 3; i++)
        if (e->mem[i]) dnnl_memory_destroy(e->mem[i]);
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->pd) dnnl_primitive_desc_destroy(e->pd);
    memset(e, 0, sizeof *e);
}

/* Runs (or plans) the reorder from `from` to `to`, its scratchpad taken and given back. */
static void edge_run(edge *e, ng_dnnl_taker *t, const void *from, void *to) {
    if (!e->pd) return;
    size_t m = ng_dnnl_mark(t);
    size_t sb = ng_dnnl_scratch_bytes(e->pd);
    void *pad = ng_dnnl_take(t, sb);
    if (!t->sim) {
        if (!e->prim) NG_DNNL_CHECK(dnnl_primitive_create(&e->prim, e->pd));
        ng_dnnl_buf b[3] = {
            {DNNL_ARG_FROM, (void *)from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, pad}};
        ng_dnnl_run(e->prim, e->pd, e->mem, 2 + (sb > 0), b);
    }
    ng_dnnl_release(t, m);
}

/* An operand going in: natgrad's buffer itself when the layouts agree, else a copy in the
 * primitive's layout taken from t. */
static const void *edge_in(edge *e, ng_dnnl_taker *t, const void *plain) {
    if (!e->pd) return plain;
    void *buf = ng_dnnl_take(t, e->bytes);
    edge_run(e, t, plain, buf);
    return buf;
}

/* A result coming out: where the primitive writes it (natgrad's buffer or a blocked one). */
static void *edge_out_buf(edge *e, ng_dnnl_taker *t, void *plain) {
    return e->pd ? ng_dnnl_take(t, e->bytes) : plain;
}

static void forward_pd(conv_prims *p, const ng_conv_geom *g) {
    if (p->fpd) return;
    conv_mds m = descs(g, p->dt, p->key.ndim, p->key.shape);
    dnnl_convolution_desc_t d;
    NG_DNNL_CHECK(dnnl_dilated_convolution_forward_desc_init(
        &d, dnnl_forward_training, dnnl_convolution_direct, &m.src_any, &m.wei_any,
        g->bias ? &m.bias : NULL, &m.dst_any, m.strides, m.dilates, m.pad_l, m.pad_r));
    make_pd(&p->fpd, &d, NULL);
    edge_make(&p->f_src, &m.src, arg_md(p->fpd, DNNL_ARG_SRC), arg_md(p->fpd, DNNL_ARG_SRC));
    edge_make(&p->f_wei, &m.wei, arg_md(p->fpd, DNNL_ARG_WEIGHTS),
              arg_md(p->fpd, DNNL_ARG_WEIGHTS));
    edge_make(&p->f_dst, arg_md(p->fpd, DNNL_ARG_DST), &m.dst, arg_md(p->fpd, DNNL_ARG_DST));
}

static void backward_pds(conv_prims *p, const ng_conv_geom *g) {
    if (p->dpd) return;
    forward_pd(p, g);
    conv_mds m = descs(g, p->dt, p->key.ndim, p->key.shape);
    dnnl_convolution_desc_t d;
    NG_DNNL_CHECK(dnnl_dilated_convolution_backward_data_desc_init(
        &d, dnnl_convolution_direct, &m.src_any, &m.wei_any, &m.dst_any, m.strides, m.dilates,
        m.pad_l, m.pad_r));
    make_pd(&p->dpd, &d, p->fpd);
    edge_make(&p->d_dst, &m.dst, arg_md(p->dpd, DNNL_ARG_DIFF_DST),
              arg_md(p->dpd, DNNL_ARG_DIFF_DST));
    edge_make(&p->d_wei, &m.wei, arg_md(p->dpd, DNNL_ARG_WEIGHTS),
              arg_md(p->dpd, DNNL_ARG_WEIGHTS));
    edge_make(&p->d_src, arg_md(p->dpd, DNNL_ARG_DIFF_SRC), &m.src,
              arg_md(p->dpd, DNNL_ARG_DIFF_SRC));
    NG_DNNL_CHECK(dnnl_dilated_convolution_backward_weights_desc_init(
        &d, dnnl_convolution_direct, &m.src_any, &m.gw_any, g->bias ? &m.bias : NULL, &m.dst_any,
        m.strides, m.dilates, m.pad_l, m.pad_r));
    make_pd(&p->wpd, &d, p->fpd);
    edge_make(&p->w_src, &m.src, arg_md(p->wpd, DNNL_ARG_SRC), arg_md(p->wpd, DNNL_ARG_SRC));
    edge_make(&p->w_dst, &m.dst, arg_md(p->wpd, DNNL_ARG_DIFF_DST),
              arg_md(p->wpd, DNNL_ARG_DIFF_DST));
    edge_make(&p->w_wei, arg_md(p->wpd, DNNL_ARG_DIFF_WEIGHTS), &m.gw,
              arg_md(p->wpd, DNNL_ARG_DIFF_WEIGHTS));
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
    edge *edges[] = {&p->f_src, &p->f_wei, &p->f_dst, &p->d_dst, &p->d_wei,
                     &p->d_src, &p->w_src, &p->w_dst, &p->w_wei};
    for (int i = 0; i < 9; i++) edge_free(edges[i]);
    memset(p, 0, sizeof *p);
}

/* The slot for input shape `in`, made (evicting the least recently used) when missing. */
static conv_prims *lookup(void **cache, int ndim, const int64_t *in, ng_dtype dt) {
    if (!*cache) {
        *cache = calloc(1, sizeof(conv_cache));
        NG_CHECK(*cache, "conv: out of host memory for the oneDNN primitive cache");
    }
    conv_cache *c = *cache;
    int miss, i = ng_dnnl_slot(&c->slot[0].key, sizeof c->slot[0], CACHE_SLOTS, &c->clock, ndim, in,
                               &miss);
    if (miss) {
        free_prims(&c->slot[i]);
        ng_dnnl_key_set(&c->slot[i].key, ndim, in, c->clock);
        c->slot[i].dt = dt;
    }
    NG_CHECK(c->slot[i].dt == dt, "conv (oneDNN): a cache made for %s asked for %s",
             ng_dtype_name(c->slot[i].dt), ng_dtype_name(dt));
    return &c->slot[i];
}

static size_t max_size(size_t a, size_t b) {
    return a > b ? a : b;
}

/* ---- the passes (run, or planned when t->sim is set) --------------------------------------- */

static void forward_pass(conv_prims *p, const ng_conv_geom *g, ng_dnnl_taker *t, const void *x,
                         const void *w, const void *b, void *y) {
    size_t m = ng_dnnl_mark(t);
    const void *src = edge_in(&p->f_src, t, x), *wei = edge_in(&p->f_wei, t, w);
    void *dst = edge_out_buf(&p->f_dst, t, y);
    size_t sb = ng_dnnl_scratch_bytes(p->fpd);
    void *pad = ng_dnnl_take(t, sb);
    if (!t->sim) {
        if (!p->fwd) NG_DNNL_CHECK(dnnl_primitive_create(&p->fwd, p->fpd));
        /* memory objects are per argument slot, so the order of the slots is fixed */
        ng_dnnl_buf bufs[5] = {{DNNL_ARG_SRC, (void *)src},
                               {DNNL_ARG_WEIGHTS, (void *)wei},
                               {DNNL_ARG_DST, dst},
                               {DNNL_ARG_SCRATCHPAD, pad},
                               {DNNL_ARG_BIAS, (void *)b}};
        int n = 3 + (sb > 0);
        if (g->bias) bufs[n++] = bufs[4];
        ng_dnnl_run(p->fwd, p->fpd, p->fmem, n, bufs);
    }
    edge_run(&p->f_dst, t, dst, y);
    ng_dnnl_release(t, m);
}

static void backward_pass(conv_prims *p, const ng_conv_geom *g, ng_dnnl_taker *t, const void *x,
                          const void *w, const void *dy, float *dw, float *db, void *dx) {
    size_t m = ng_dnnl_mark(t);
    int64_t wn = g->out_ch * g->in_ch * g->kernel[0] * g->kernel[1] * g->kernel[2];
    /* the weight gradient in plain layout, then added into natgrad's */
    float *gw = ng_dnnl_take(t, sizeof(float) * (size_t)wn);
    float *gb = g->bias ? ng_dnnl_take(t, sizeof(float) * (size_t)g->out_ch) : NULL;
    void *gw_blk = edge_out_buf(&p->w_wei, t, gw);
    const void *src = edge_in(&p->w_src, t, x), *ddst = edge_in(&p->w_dst, t, dy);
    size_t sw = ng_dnnl_scratch_bytes(p->wpd), sd = dx ? ng_dnnl_scratch_bytes(p->dpd) : 0;
    void *pad = ng_dnnl_take(t, max_size(sw, sd));
    if (!t->sim) {
        if (!p->bwd_w) NG_DNNL_CHECK(dnnl_primitive_create(&p->bwd_w, p->wpd));
        ng_dnnl_buf wb[5] = {{DNNL_ARG_SRC, (void *)src},
                             {DNNL_ARG_DIFF_DST, (void *)ddst},
                             {DNNL_ARG_DIFF_WEIGHTS, gw_blk},
                             {DNNL_ARG_SCRATCHPAD, pad},
                             {DNNL_ARG_DIFF_BIAS, gb}};
        int n = 3 + (sw > 0);
        if (g->bias) wb[n++] = wb[4];
        ng_dnnl_run(p->bwd_w, p->wpd, p->wmem, n, wb);
    }
    edge_run(&p->w_wei, t, gw_blk, gw);
    if (!t->sim) { /* natgrad accumulates parameter gradients (passes may add into them) */
        for (int64_t i = 0; i < wn; i++) dw[i] += gw[i];
        if (g->bias)
            for (int64_t i = 0; i < g->out_ch; i++) db[i] += gb[i];
    }
    if (dx) {
        /* backward data mostly wants dy as backward weights did: then the copy is shared */
        const void *ddst_d = dnnl_memory_desc_equal(arg_md(p->dpd, DNNL_ARG_DIFF_DST),
                                                    arg_md(p->wpd, DNNL_ARG_DIFF_DST))
                                 ? ddst
                                 : edge_in(&p->d_dst, t, dy);
        const void *wei = edge_in(&p->d_wei, t, w);
        void *dsrc = edge_out_buf(&p->d_src, t, dx);
        if (!t->sim) {
            if (!p->bwd_data) NG_DNNL_CHECK(dnnl_primitive_create(&p->bwd_data, p->dpd));
            ng_dnnl_buf dbufs[4] = {{DNNL_ARG_DIFF_DST, (void *)ddst_d},
                                    {DNNL_ARG_WEIGHTS, (void *)wei},
                                    {DNNL_ARG_DIFF_SRC, dsrc},
                                    {DNNL_ARG_SCRATCHPAD, pad}};
            ng_dnnl_run(p->bwd_data, p->dpd, p->dmem, 3 + (sd > 0), dbufs);
        }
        edge_run(&p->d_src, t, dsrc, dx);
    }
    ng_dnnl_release(t, m);
}

/* ---- the interface ------------------------------------------------------------------------- */

static int use_native = 1;

void ng_conv_use_native_bf16(int enabled) {
    use_native = enabled;
}

int ng_conv_bf16_native(void) {
    return use_native && ng_dnnl_bf16_native();
}

int ng_conv_onednn_takes(const ng_tensor *x) {
    return x->device == NG_CPU && x->dtype == NG_F32;
}

void ng_conv_onednn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                            const ng_tensor *w, const ng_tensor *b, ng_tensor *y,
                            ng_arena *scratch) {
    conv_prims *p = lookup(cache, x->ndim, x->shape, x->dtype);
    forward_pd(p, g);
    ng_dnnl_taker t = {scratch, NULL};
    forward_pass(p, g, &t, x->data, w->data, b ? b->data : NULL, y->data);
}

void ng_conv_onednn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                             const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *db,
                             ng_tensor *dx, ng_arena *scratch) {
    NG_CHECK(dw->dtype == NG_F32, "conv (oneDNN): the weight gradient must be f32");
    conv_prims *p = lookup(cache, x->ndim, x->shape, x->dtype);
    backward_pds(p, g);
    ng_dnnl_taker t = {scratch, NULL};
    backward_pass(p, g, &t, x->data, w->data, dy->data, dw->data, db ? db->data : NULL,
                  dx ? dx->data : NULL);
}

void ng_conv_onednn_plan(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                         int backward, int need_dx, ng_sim_arena *grads) {
    ng_conv_onednn_plan_dt(cache, g, ndim, in, NG_F32, backward, need_dx, grads);
}

int ng_conv_onednn_native(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                          ng_dtype dt, int backward) {
    conv_prims *p = lookup(cache, ndim, in, dt);
    if (!backward) {
        forward_pd(p, g);
        return ng_dnnl_impl_native(p->fpd);
    }
    backward_pds(p, g);
    return ng_dnnl_impl_native(p->dpd) && ng_dnnl_impl_native(p->wpd);
}

void ng_conv_onednn_plan_dt(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                            ng_dtype dt, int backward, int need_dx, ng_sim_arena *grads) {
    conv_prims *p = lookup(cache, ndim, in, dt);
    ng_dnnl_taker t = {NULL, grads};
    if (!backward) {
        forward_pd(p, g);
        forward_pass(p, g, &t, NULL, NULL, NULL, NULL);
    } else {
        backward_pds(p, g);
        /* any non-NULL dx: the planning pass only asks whether one is wanted */
        backward_pass(p, g, &t, NULL, NULL, NULL, NULL, NULL, need_dx ? (void *)&t : NULL);
    }
}

void ng_conv_onednn_free(void *cache) {
    conv_cache *c = cache;
    if (!c) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free_prims(&c->slot[i]);
    free(c);
}
