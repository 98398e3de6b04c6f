/* The f32 and bf16 GEMMs of a Linear layer on oneDNN's matmul (see linear_onednn.h). Four
 * matmuls, each with operands read where natgrad keeps them (no copies: a transposed operand is a
 * strided memory descriptor) and an f32 destination:
 *   forward        y  = x W^T      src x [rows,in],   weights W^T [in,out] (W read by strides)
 *   backward data  dx = dy W       src dy [rows,out], weights W [out,in]
 *   backward wei.  dW += dy^T x    src dy^T [out,rows] (strided), weights x [rows,in]
 *   bias gradient  db += 1^T dy    src ones [1,rows], weights dy [rows,out]
 * In bf16, y and dx land in f32 scratch and are rounded to bf16 here, once, by natgrad's rounding
 * (to nearest even, the rounding the widened path uses); in f32 they are written in place, the
 * bias added to each f32 sum by the kernel (one rounding, as linear.c's loop after ng_gemm). dW
 * and db land in natgrad's f32 master gradients directly: a sum post-op (dst = 1.0 * dst +
 * product) makes oneDNN accumulate as natgrad does, so they need no scratch. Each pass runs, or is
 * planned (the plan's counter given, nothing runs), by the same function, so plan and run cannot
 * disagree. */
#include "nn/linear_onednn.h"

#include <stdlib.h>
#include <string.h>

#include "core/half_vec.h"
#include "core/threads.h"
#include "nn/onednn.h"

/* Row counts a layer keeps primitives for: training, evaluation and a last partial batch fit. */
#define CACHE_SLOTS 4

enum { FWD, DATA, WEI, BIAS, NPASS };

typedef struct {
    ng_dnnl_key key; /* {rows, dtype} */
    dnnl_primitive_desc_t pd[NPASS];
    dnnl_primitive_t prim[NPASS];
    dnnl_memory_t mem[NPASS][5]; /* src, weights, dst, scratchpad, bias */
} lin_prims;

typedef struct {
    lin_prims slot[CACHE_SLOTS];
    uint64_t clock;
} lin_cache;

/* ---- descriptors and primitives ------------------------------------------------------------ */

/* A 2-D [r, c] descriptor with strides (sr, sc). */
static dnnl_memory_desc_t md2(int64_t r, int64_t c, int64_t sr, int64_t sc, dnnl_data_type_t t) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {r, c}, s = {sr, sc};
    NG_DNNL_CHECK(dnnl_memory_desc_init_by_strides(&md, 2, d, t, s));
    return md;
}

/* bias: the f32 forward adds it in the kernel, to the f32 sum, one rounding (bf16 adds its own
 * after rounding y, as the widened path does). */
static void make_pd(lin_prims *p, int pass, int64_t in, int64_t out, int bias) {
    if (p->pd[pass]) return;
    int64_t rows = p->key.shape[0];
    dnnl_data_type_t t = p->key.shape[1] == NG_BF16 ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src, wei, dst;
    switch (pass) {
        case FWD:
            src = md2(rows, in, in, 1, t);
            wei = md2(in, out, 1, in, t); /* W^T: W [out,in] read by strides */
            dst = md2(rows, out, out, 1, dnnl_f32);
            break;
        case DATA:
            src = md2(rows, out, out, 1, t);
            wei = md2(out, in, in, 1, t);
            dst = md2(rows, in, in, 1, dnnl_f32);
            break;
        case WEI:
            src = md2(out, rows, 1, out, t); /* dy^T: dy [rows,out] read by strides */
            wei = md2(rows, in, in, 1, t);
            dst = md2(out, in, in, 1, dnnl_f32);
            break;
        default: /* BIAS */
            src = md2(1, rows, rows, 1, t);
            wei = md2(rows, out, out, 1, t);
            dst = md2(1, out, out, 1, dnnl_f32);
            break;
    }
    dnnl_memory_desc_t bmd = md2(1, out, out, 1, dnnl_f32);
    int with_bias = pass == FWD && bias && t == dnnl_f32;
    dnnl_matmul_desc_t d;
    NG_DNNL_CHECK(dnnl_matmul_desc_init(&d, &src, &wei, with_bias ? &bmd : NULL, &dst));
    dnnl_primitive_attr_t a = ng_dnnl_user_scratchpad();
    dnnl_post_ops_t po = NULL;
    if (pass == WEI || pass == BIAS) { /* natgrad accumulates parameter gradients */
        NG_DNNL_CHECK(dnnl_post_ops_create(&po));
        NG_DNNL_CHECK(dnnl_post_ops_append_sum(po, 1.0f));
        NG_DNNL_CHECK(dnnl_primitive_attr_set_post_ops(a, po));
    }
    NG_DNNL_CHECK(dnnl_primitive_desc_create(&p->pd[pass], &d, a, ng_dnnl_engine(), NULL));
    if (po) NG_DNNL_CHECK(dnnl_post_ops_destroy(po));
    NG_DNNL_CHECK(dnnl_primitive_attr_destroy(a));
}

static void free_prims(lin_prims *p) {
    for (int k = 0; k < NPASS; k++) {
        for (int i = 0; i < 5; i++)
            if (p->mem[k][i]) dnnl_memory_destroy(p->mem[k][i]);
        if (p->prim[k]) dnnl_primitive_destroy(p->prim[k]);
        if (p->pd[k]) dnnl_primitive_desc_destroy(p->pd[k]);
    }
    memset(p, 0, sizeof *p);
}

static lin_prims *lookup(void **cache, int64_t rows, ng_dtype dt) {
    NG_CHECK(dt == NG_F32 || dt == NG_BF16, "linear: oneDNN's matmul runs f32 or bf16, not %s",
             ng_dtype_name(dt));
    if (!*cache) {
        *cache = calloc(1, sizeof(lin_cache));
        NG_CHECK(*cache, "linear: out of host memory for the oneDNN primitive cache");
    }
    lin_cache *c = *cache;
    int64_t key[2] = {rows, dt};
    int miss,
        i = ng_dnnl_slot(&c->slot[0].key, sizeof c->slot[0], CACHE_SLOTS, &c->clock, 2, key, &miss);
    if (miss) {
        free_prims(&c->slot[i]);
        ng_dnnl_key_set(&c->slot[i].key, 2, key, c->clock);
    }
    return &c->slot[i];
}

/* Runs (or plans) one matmul (bias: the f32 forward's, or NULL); its scratchpad is taken from t
 * and given back. */
static void matmul(lin_prims *p, int pass, ng_dnnl_taker *t, const void *src, const void *wei,
                   void *dst, const void *bias) {
    size_t m = ng_dnnl_mark(t);
    size_t sb = ng_dnnl_scratch_bytes(p->pd[pass]);
    void *pad = ng_dnnl_take(t, sb);
    if (!t->sim) {
        if (!p->prim[pass]) NG_DNNL_CHECK(dnnl_primitive_create(&p->prim[pass], p->pd[pass]));
        ng_dnnl_buf b[5] = {
            {DNNL_ARG_SRC, (void *)src}, {DNNL_ARG_WEIGHTS, (void *)wei}, {DNNL_ARG_DST, dst}};
        int n = 3;
        if (sb) b[n++] = (ng_dnnl_buf){DNNL_ARG_SCRATCHPAD, pad};
        if (bias) b[n++] = (ng_dnnl_buf){DNNL_ARG_BIAS, (void *)bias};
        ng_dnnl_run(p->prim[pass], p->pd[pass], p->mem[pass], n, b);
    }
    ng_dnnl_release(t, m);
}

/* dst [rows,n] bf16 = round(f [rows,n]); with bias, then dst = round(dst + bias) (two roundings,
 * as the widened path's rank-1 bias GEMM into the stored bf16 y). Rows are independent, so the
 * thread split changes no bits. f is overwritten. */
static void round_rows(float *f, const float *bias, uint16_t *dst, int64_t rows, int64_t n) {
#pragma omp parallel for schedule(static) if (rows * n >= NG_OMP_MIN)
    for (int64_t r = 0; r < rows; r++) {
        float *fr = f + r * n;
        uint16_t *dr = dst + r * n;
        ng_half_from_f32(fr, NG_BF16, dr, n);
        if (bias) {
            ng_half_to_f32(dr, NG_BF16, fr, n);
            for (int64_t j = 0; j < n; j++) fr[j] = fr[j] + bias[j];
            ng_half_from_f32(fr, NG_BF16, dr, n);
        }
    }
}

/* ---- the passes (run, or planned when t->sim is set) --------------------------------------- */

static int is_f32(const lin_prims *p) {
    return p->key.shape[1] == NG_F32;
}

static void forward_pass(lin_prims *p, ng_dnnl_taker *t, int64_t out, const void *x, const void *w,
                         const void *b, int bias, void *y) {
    int64_t rows = p->key.shape[0];
    if (is_f32(p)) { /* in place, the bias in the kernel, no scratch but oneDNN's own */
        matmul(p, FWD, t, x, w, y, bias ? b : NULL);
        return;
    }
    size_t m = ng_dnnl_mark(t);
    float *yf = ng_dnnl_take(t, sizeof(float) * (size_t)(rows * out));
    float *bf = bias ? ng_dnnl_take(t, sizeof(float) * (size_t)out) : NULL;
    matmul(p, FWD, t, x, w, yf, NULL);
    if (!t->sim) {
        if (bias) ng_half_to_f32(b, NG_BF16, bf, out);
        round_rows(yf, bias ? bf : NULL, y, rows, out);
    }
    ng_dnnl_release(t, m);
}

static void backward_pass(lin_prims *p, ng_dnnl_taker *t, int64_t in, const void *x, const void *w,
                          const void *dy, float *dw, int bias, float *db, int need_dx, void *dx) {
    int64_t rows = p->key.shape[0];
    size_t m = ng_dnnl_mark(t);
    matmul(p, WEI, t, dy, x, dw, NULL);
    if (bias) {
        if (is_f32(p)) {
            float *one = ng_dnnl_take(t, sizeof(float) * (size_t)rows);
            if (!t->sim)
                for (int64_t i = 0; i < rows; i++) one[i] = 1.0f;
            matmul(p, BIAS, t, one, dy, db, NULL);
        } else {
            uint16_t *one = ng_dnnl_take(t, sizeof(uint16_t) * (size_t)rows);
            if (!t->sim)
                for (int64_t i = 0; i < rows; i++) one[i] = 0x3f80; /* bf16 1.0 */
            matmul(p, BIAS, t, one, dy, db, NULL);
        }
        ng_dnnl_release(t, m);
    }
    if (need_dx && is_f32(p)) {
        matmul(p, DATA, t, dy, w, dx, NULL); /* in place */
    } else if (need_dx) {
        float *dxf = ng_dnnl_take(t, sizeof(float) * (size_t)(rows * in));
        matmul(p, DATA, t, dy, w, dxf, NULL);
        if (!t->sim) round_rows(dxf, NULL, dx, rows, in);
    }
    ng_dnnl_release(t, m);
}

/* ---- the interface ------------------------------------------------------------------------- */

/* A pass runs on oneDNN only on its brgemm kernels ("brg:..."): they split rows and columns over
 * threads, never a sum, so a Linear layer's bits do not depend on NG_THREADS. oneDNN's other
 * matmuls are a reference loop or its gemm-based one ("gemm:jit", what Debian's oneDNN 2.6 runs on
 * aarch64), which splits sums across threads: built for aarch64, a ViT step's bits changed with
 * the thread count (test_vit_threads under qemu-aarch64). Those shapes keep ng_gemm. */
static int brgemm(const_dnnl_primitive_desc_t pd) {
    const char *name = NULL;
    NG_DNNL_CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name));
    return name && !strncmp(name, "brg", 3);
}

int ng_linear_onednn_native(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                            int bias, int backward) {
    lin_prims *p = lookup(cache, rows, dt);
    if (!backward) {
        make_pd(p, FWD, in, out, bias);
        return brgemm(p->pd[FWD]);
    }
    make_pd(p, WEI, in, out, 0);
    make_pd(p, DATA, in, out, 0);
    if (bias) make_pd(p, BIAS, in, out, 0);
    return brgemm(p->pd[WEI]) && brgemm(p->pd[DATA]) && (!bias || brgemm(p->pd[BIAS]));
}

int ng_linear_onednn_f32_here(void) {
    static int here = -1;
    if (here < 0) { /* a 64 -> 64 layer on 64 rows, forward and backward, asked once */
        void *probe = NULL;
        here = ng_linear_onednn_native(&probe, NG_F32, 64, 64, 64, 1, 0) &&
               ng_linear_onednn_native(&probe, NG_F32, 64, 64, 64, 1, 1);
        ng_linear_onednn_free(probe);
    }
    return here;
}

void ng_linear_onednn_forward(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                              const void *x, const void *w, const void *b, void *y,
                              ng_arena *scratch) {
    lin_prims *p = lookup(cache, rows, dt);
    make_pd(p, FWD, in, out, b != NULL);
    ng_dnnl_taker t = {scratch, NULL};
    forward_pass(p, &t, out, x, w, b, b != NULL, y);
}

void ng_linear_onednn_backward(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                               const void *x, const void *w, const void *dy, float *dw, float *db,
                               void *dx, ng_arena *scratch) {
    lin_prims *p = lookup(cache, rows, dt);
    make_pd(p, WEI, in, out, 0);
    if (db) make_pd(p, BIAS, in, out, 0);
    if (dx) make_pd(p, DATA, in, out, 0);
    ng_dnnl_taker t = {scratch, NULL};
    backward_pass(p, &t, in, x, w, dy, dw, db != NULL, db, dx != NULL, dx);
}

void ng_linear_onednn_plan(void **cache, ng_dtype dt, int64_t rows, int64_t in, int64_t out,
                           int bias, int backward, int need_dx, ng_sim_arena *grads) {
    lin_prims *p = lookup(cache, rows, dt);
    ng_dnnl_taker t = {NULL, grads};
    if (!backward) {
        make_pd(p, FWD, in, out, bias);
        forward_pass(p, &t, out, NULL, NULL, NULL, bias, NULL);
        return;
    }
    make_pd(p, WEI, in, out, 0);
    if (bias) make_pd(p, BIAS, in, out, 0);
    if (need_dx) make_pd(p, DATA, in, out, 0);
    backward_pass(p, &t, in, NULL, NULL, NULL, NULL, bias, NULL, need_dx, NULL);
}

void ng_linear_onednn_free(void *cache) {
    lin_cache *c = cache;
    if (!c) return;
    for (int i = 0; i < CACHE_SLOTS; i++) free_prims(&c->slot[i]);
    free(c);
}
