/* The convolution layer. f32 on the CPU runs on oneDNN (conv_onednn.c), bf16 on oneDNN's native
 * bf16 kernels where the CPU has AVX512_BF16, f16 (and bf16 elsewhere) on its f32 kernels over
 * widened copies; on CUDA every dtype runs on cuDNN wherever it can take the shape
 * (halves on tensor cores). Everything else (f64 gradient checks on the CPU, shapes cuDNN cannot
 * take, and the tests' reference) runs im2col/vol2col + ng_gemm, in chunks of whole samples
 * or of output positions so that the column matrix of a large volume stays inside a fixed
 * scratch. The CPU twins of the patch kernels live here; their CUDA twins are in conv_cuda.cu. */
#include "nn/conv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/dispatch.h"
#include "core/error.h"
#include "core/half_vec.h"
#include "core/hgemm.h"
#include "core/ops.h"
#include "nn/activation_kernels.h"
#include "nn/conv_kernels.h"
#include "nn/plan.h"

/* The most scratch the im2col path takes from ctx->grads: big enough that GEMMs are efficient,
 * small enough that a 512^3 volume (whose column matrix would be tens of GiB) fits anywhere. */
#define SCRATCH_CAP ((size_t)64 << 20)

typedef struct {
    ng_conv_geom g;
    ng_tensor x;  /* the input of the last forward, for backward */
    void *cudnn;  /* cuDNN descriptors and algorithms per input shape (CUDA builds) */
    void *onednn; /* oneDNN primitives per input shape */
    /* ... and those of the f32 convolution (bias left out) that computes an f16/bf16 forward */
    void *onednn_half;
    void *onednn_bf16; /* ... and those of oneDNN's native bf16 convolution (bias left out) */
} conv_state;

static int use_cudnn = 1, use_onednn = 1;

void ng_conv_use_cudnn(int enabled) {
    use_cudnn = enabled;
}

void ng_conv_use_onednn(int enabled) {
    use_onednn = enabled;
}

/* oneDNN runs this tensor's convolution (it then also adds the bias and its gradient). */
static int onednn_for(const ng_tensor *x) {
    return use_onednn && ng_conv_onednn_takes(x);
}

/* ---- CPU twins of the patch kernels -------------------------------------------------------- */

/* Offsets into one sample of x of the patch at output position p, in column order
 * (c, kd, kh, kw); -1 where the patch lies in the padding. */
static void patch_offsets(const ng_win3 *w, int64_t p, int64_t *idx) {
    int64_t ow = p % w->out[2], t = p / w->out[2], oh = t % w->out[1], od = t / w->out[1];
    int64_t plane = ng_win3_in_size(w), kk = ng_win3_k_size(w), j = 0;
    for (int64_t kd = 0; kd < w->k[0]; kd++) {
        int64_t id = od * w->s[0] - w->p[0] + kd * w->d[0];
        int din = id >= 0 && id < w->in[0];
        for (int64_t kh = 0; kh < w->k[1]; kh++) {
            int64_t ih = oh * w->s[1] - w->p[1] + kh * w->d[1];
            int hin = din && ih >= 0 && ih < w->in[1];
            for (int64_t kw = 0; kw < w->k[2]; kw++) {
                int64_t iw = ow * w->s[2] - w->p[2] + kw * w->d[2];
                idx[j++] =
                    hin && iw >= 0 && iw < w->in[2] ? (id * w->in[1] + ih) * w->in[2] + iw : -1;
            }
        }
    }
    for (int64_t c = 1; c < w->C; c++)
        for (int64_t i = 0; i < kk; i++) idx[c * kk + i] = idx[i] < 0 ? -1 : idx[i] + c * plane;
}

static int64_t *offsets_buffer(int64_t K) {
    int64_t *idx = malloc(sizeof *idx * (size_t)K);
    NG_CHECK(idx, "out of host memory for %lld patch offsets", (long long)K);
    return idx;
}

static void im2col_cpu(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                       ng_tensor *cols) {
    int64_t K = w->C * ng_win3_k_size(w), base = n * w->C * ng_win3_in_size(w);
    int64_t *idx = offsets_buffer(K);
    for (int64_t r = 0; r < np; r++) {
        patch_offsets(w, p0 + r, idx);
        if (x->dtype == NG_F64) {
            const double *xs = (const double *)x->data + base;
            double *o = (double *)cols->data + r * K;
            for (int64_t j = 0; j < K; j++) o[j] = idx[j] < 0 ? 0.0 : xs[idx[j]];
        } else if (x->dtype != NG_F32) { /* f16, bf16: a copy of the bits; +0 is all zero bits */
            const uint16_t *xs = (const uint16_t *)x->data + base;
            uint16_t *o = (uint16_t *)cols->data + r * K;
            for (int64_t j = 0; j < K; j++) o[j] = idx[j] < 0 ? 0 : xs[idx[j]];
        } else {
            const float *xs = (const float *)x->data + base;
            float *o = (float *)cols->data + r * K;
            for (int64_t j = 0; j < K; j++) o[j] = idx[j] < 0 ? 0.0f : xs[idx[j]];
        }
    }
    free(idx);
}

/* Half dx: the call's contributions are summed in double and each element rounded once,
 * dx = round(dx + sum), as the CUDA twin's gather does. */
static void col2im_add_half(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                            int64_t np, ng_tensor *dx) {
    int64_t K = w->C * ng_win3_k_size(w), S = w->C * ng_win3_in_size(w), base = n * S;
    int64_t *idx = offsets_buffer(K);
    double *acc = calloc((size_t)S, sizeof *acc);
    NG_CHECK(acc, "conv: out of host memory for %lld input gradients", (long long)S);
    for (int64_t r = 0; r < np; r++) {
        patch_offsets(w, p0 + r, idx);
        for (int64_t j = 0; j < K; j++)
            if (idx[j] >= 0) acc[idx[j]] += ng_act_ld(dcols->data, dcols->dtype, r * K + j);
    }
    for (int64_t i = 0; i < S; i++)
        ng_act_st(dx->data, dx->dtype, base + i, ng_act_ld(dx->data, dx->dtype, base + i) + acc[i]);
    free(acc);
    free(idx);
}

static void col2im_add_cpu(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                           int64_t np, ng_tensor *dx) {
    if (dx->dtype == NG_F16 || dx->dtype == NG_BF16) {
        col2im_add_half(dcols, n, w, p0, np, dx);
        return;
    }
    int64_t K = w->C * ng_win3_k_size(w), base = n * w->C * ng_win3_in_size(w);
    int64_t *idx = offsets_buffer(K);
    for (int64_t r = 0; r < np; r++) {
        patch_offsets(w, p0 + r, idx);
        if (dx->dtype == NG_F64) {
            double *d = (double *)dx->data + base;
            const double *c = (const double *)dcols->data + r * K;
            for (int64_t j = 0; j < K; j++)
                if (idx[j] >= 0) d[idx[j]] += c[j];
        } else {
            float *d = (float *)dx->data + base;
            const float *c = (const float *)dcols->data + r * K;
            for (int64_t j = 0; j < K; j++)
                if (idx[j] >= 0) d[idx[j]] += c[j];
        }
    }
    free(idx);
}

static void bias_add_cpu(ng_tensor *y, const ng_tensor *b, int64_t N, int64_t O, int64_t P) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++) {
            int64_t off = (n * O + o) * P;
            if (y->dtype == NG_F64) {
                double v = ((const double *)b->data)[o], *r = (double *)y->data + off;
                for (int64_t p = 0; p < P; p++) r[p] += v;
            } else if (y->dtype != NG_F32) { /* half y and b: add in f32, round once */
                float v = (float)ng_act_ld(b->data, b->dtype, o), t[1024];
                for (int64_t p = 0; p < P; p += 1024) { /* through the bulk conversions */
                    int64_t k = P - p < 1024 ? P - p : 1024;
                    uint16_t *h = (uint16_t *)y->data + off + p;
                    ng_half_to_f32(h, y->dtype, t, k);
                    for (int64_t i = 0; i < k; i++) t[i] += v;
                    ng_half_from_f32(t, y->dtype, h, k);
                }
            } else {
                float v = ((const float *)b->data)[o], *r = (float *)y->data + off;
                for (int64_t p = 0; p < P; p++) r[p] += v;
            }
        }
}

static void bias_grad_cpu(const ng_tensor *dy, ng_tensor *db, int64_t N, int64_t O, int64_t P) {
    for (int64_t o = 0; o < O; o++) {
        double acc = 0;
        for (int64_t n = 0; n < N; n++) {
            int64_t off = (n * O + o) * P;
            if (dy->dtype == NG_F64)
                for (int64_t p = 0; p < P; p++) acc += ((const double *)dy->data)[off + p];
            else if (dy->dtype != NG_F32) /* half dy into the f32 master gradient */
                for (int64_t p = 0; p < P; p++) acc += ng_act_ld(dy->data, dy->dtype, off + p);
            else
                for (int64_t p = 0; p < P; p++) acc += ((const float *)dy->data)[off + p];
        }
        if (db->dtype == NG_F64)
            ((double *)db->data)[o] += acc;
        else
            ((float *)db->data)[o] = (float)(((float *)db->data)[o] + acc);
    }
}

static void copy_rows_cpu(void *dst, int64_t dst_ld, const void *src, int64_t src_ld, int64_t rows,
                          int64_t cols, size_t es) {
    for (int64_t r = 0; r < rows; r++)
        memcpy((char *)dst + (size_t)(r * dst_ld) * es,
               (const char *)src + (size_t)(r * src_ld) * es, (size_t)cols * es);
}

/* ---- dispatch by device -------------------------------------------------------------------- */

static void im2col_any(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                       ng_tensor *cols) {
    NG_DISPATCH(x, im2col_cpu(x, n, w, p0, np, cols), ng_im2col_cuda(x, n, w, p0, np, cols));
}

static void col2im_add_any(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                           int64_t np, ng_tensor *dx) {
    NG_DISPATCH(dx, col2im_add_cpu(dcols, n, w, p0, np, dx),
                ng_col2im_add_cuda(dcols, n, w, p0, np, dx));
}

static void copy_rows_any(ng_device dev, void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                          int64_t rows, int64_t cols, size_t es) {
    ng_tensor where = {.device = dev};
    NG_DISPATCH(&where, copy_rows_cpu(dst, dst_ld, src, src_ld, rows, cols, es),
                ng_copy_rows_cuda(dst, dst_ld, src, src_ld, rows, cols, es));
}

/* ---- geometry ------------------------------------------------------------------------------ */

void ng_conv_out_spatial(const ng_conv_geom *g, const int64_t *in, int64_t *out, const char *who) {
    for (int i = 0; i < g->nd; i++) {
        int64_t span = g->dilation[i] * (g->kernel[i] - 1) + 1;
        int64_t room = in[i] + 2 * g->padding[i];
        NG_CHECK(in[i] >= 1 && room >= span,
                 "%s: input is too small: spatial dim %d has size %lld, padded %lld, but the "
                 "kernel %lld with dilation %lld spans %lld",
                 who, i, (long long)in[i], (long long)room, (long long)g->kernel[i],
                 (long long)g->dilation[i], (long long)span);
        out[i] = (room - span) / g->stride[i] + 1;
    }
}

static const ng_layer_ops conv_ops;

ng_conv_geom ng_conv_geometry(const ng_layer *l) {
    NG_CHECK(l && l->ops == &conv_ops, "ng_conv_geometry: layer %s is a %s, not a conv",
             l ? l->name : "(null)", l ? l->ops->kind : "null");
    return ((const conv_state *)l->impl)->g;
}

static void conv_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    const conv_state *s = l->impl;
    const ng_conv_geom *g = &s->g;
    NG_CHECK(ndim == g->nd + 2, "conv %s: input has %d dims; a %dd conv takes [N, C, %s]", l->name,
             ndim, g->nd, g->nd == 2 ? "H, W" : "D, H, W");
    NG_CHECK(in[1] == g->in_ch, "conv %s: input has %lld channels, expected %lld", l->name,
             (long long)in[1], (long long)g->in_ch);
    char who[128];
    snprintf(who, sizeof who, "conv %s", l->name);
    ng_conv_out_spatial(g, in + 2, out + 2, who);
    out[0] = in[0];
    out[1] = g->out_ch;
    *out_ndim = ndim;
}

static void check_input(const ng_layer *l, const ng_tensor *x) {
    const ng_tensor *w = &l->params[0].compute;
    NG_CHECK(x->dtype == w->dtype && x->device == w->device,
             "conv %s: input %s must have the weights' dtype and device (%s %s)", l->name,
             ng_tensor_desc(x), ng_dtype_name(w->dtype), ng_device_name(w->device));
    NG_CHECK(x->data || !x->numel, "conv %s: input has no data", l->name);
}

static ng_win3 win_of(const conv_state *s, const ng_tensor *x) {
    int64_t out_sp[3];
    ng_conv_out_spatial(&s->g, x->shape + 2, out_sp, "conv");
    return ng_win3_from_conv(&s->g, x->shape + 2, out_sp);
}

/* ---- the im2col path ----------------------------------------------------------------------- */

/* Whole samples per chunk (nb >= 1) when one sample's columns fit the scratch; otherwise nb = 0
 * and np output positions of one sample per chunk, whole output rows or planes where possible
 * so that col2im on CUDA touches a tight box of the input. */
typedef struct {
    int64_t nb, np;
} chunking;

static chunking plan_chunks(const ng_arena *a, const ng_win3 *w, int64_t N, int64_t K, int64_t O,
                            int bufs, size_t es) {
    size_t room = ng_arena_free_bytes(a);
    size_t free_bytes = room > 4 * NG_ALIGN ? room - 4 * NG_ALIGN : 0;
    size_t budget = (free_bytes < SCRATCH_CAP ? free_bytes : SCRATCH_CAP) / es;
    int64_t P = ng_win3_out_size(w);
    chunking c = {0, 0};
    int64_t per_sample = P * K * bufs;
    if ((size_t)per_sample <= budget) {
        c.nb = (int64_t)(budget / (size_t)per_sample);
        if (c.nb > N) c.nb = N;
        c.np = P;
        return c;
    }
    /* Position chunks also need an [O, np] buffer for the strided slice of y or dy. */
    c.np = (int64_t)(budget / (size_t)(K * bufs + O));
    int64_t plane = w->out[1] * w->out[2];
    if (c.np >= plane)
        c.np -= c.np % plane;
    else if (c.np >= w->out[2])
        c.np -= c.np % w->out[2];
    if (c.np < 1) c.np = 1; /* the arena then reports that it is too small */
    return c;
}

static void gemm_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x, ng_tensor *y) {
    conv_state *s = l->impl;
    ng_win3 w = win_of(s, x);
    int64_t N = x->shape[0], O = s->g.out_ch, K = w.C * ng_win3_k_size(&w);
    int64_t P = ng_win3_out_size(&w);
    size_t es = ng_dtype_size(x->dtype);
    const ng_tensor *W = &l->params[0].compute;
    ng_tensor W2 = ng_tensor_reshape(W, 2, (int64_t[]){O, K});
    ng_tensor W3 = ng_tensor_reshape(W, 3, (int64_t[]){1, O, K});
    chunking c = plan_chunks(ctx->grads, &w, N, K, O, 1, es);
    ng_arena_mark mark = ng_arena_get_mark(ctx->grads);
    if (c.nb) {
        ng_tensor buf =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){c.nb * P * K}, "conv columns");
        for (int64_t n0 = 0; n0 < N; n0 += c.nb) {
            int64_t b = N - n0 < c.nb ? N - n0 : c.nb;
            ng_tensor cols = ng_tensor_view(&buf, 0, 3, (int64_t[]){b, P, K}, "conv columns");
            for (int64_t i = 0; i < b; i++) {
                ng_tensor ci = ng_tensor_view(&buf, i * P * K, 2, (int64_t[]){P, K}, "columns");
                im2col_any(x, n0 + i, &w, 0, P, &ci);
            }
            ng_tensor yv = ng_tensor_view(y, n0 * O * P, 3, (int64_t[]){b, O, P}, l->name);
            ng_gemm(0, 1, 1.0, &W3, &cols, 0.0, &yv);
        }
    } else {
        ng_tensor buf =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){c.np * K}, "conv columns");
        ng_tensor tmp =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){O * c.np}, "conv output slice");
        for (int64_t n = 0; n < N; n++)
            for (int64_t p0 = 0; p0 < P; p0 += c.np) {
                int64_t np = P - p0 < c.np ? P - p0 : c.np;
                ng_tensor cols = ng_tensor_view(&buf, 0, 2, (int64_t[]){np, K}, "conv columns");
                ng_tensor t = ng_tensor_view(&tmp, 0, 2, (int64_t[]){O, np}, "conv output slice");
                im2col_any(x, n, &w, p0, np, &cols);
                ng_gemm(0, 1, 1.0, &W2, &cols, 0.0, &t);
                copy_rows_any(x->device, (char *)y->data + (size_t)(n * O * P + p0) * es, P, t.data,
                              np, O, np, es);
            }
    }
    ng_arena_release(ctx->grads, mark);
}

static void gemm_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    conv_state *s = l->impl;
    const ng_tensor *x = &s->x;
    ng_win3 w = win_of(s, x);
    int64_t N = x->shape[0], O = s->g.out_ch, K = w.C * ng_win3_k_size(&w);
    int64_t P = ng_win3_out_size(&w);
    size_t es = ng_dtype_size(x->dtype);
    const ng_tensor *W = &l->params[0].compute;
    ng_tensor W2 = ng_tensor_reshape(W, 2, (int64_t[]){O, K});
    ng_tensor W3 = ng_tensor_reshape(W, 3, (int64_t[]){1, O, K});
    ng_tensor dW = ng_tensor_reshape(&l->params[0].grad, 2, (int64_t[]){O, K});
    if (dx) ng_fill(dx, 0);
    int bufs = dx ? 2 : 1;
    chunking c = plan_chunks(ctx->grads, &w, N, K, O, bufs, es);
    ng_arena_mark mark = ng_arena_get_mark(ctx->grads);
    if (c.nb) {
        int64_t chunk = c.nb * P * K;
        ng_tensor buf =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){chunk * bufs}, "conv columns");
        for (int64_t n0 = 0; n0 < N; n0 += c.nb) {
            int64_t b = N - n0 < c.nb ? N - n0 : c.nb;
            for (int64_t i = 0; i < b; i++) {
                ng_tensor ci = ng_tensor_view(&buf, i * P * K, 2, (int64_t[]){P, K}, "columns");
                im2col_any(x, n0 + i, &w, 0, P, &ci);
                ng_tensor di = ng_tensor_view(dy, (n0 + i) * O * P, 2, (int64_t[]){O, P}, "dy");
                ng_gemm(0, 0, 1.0, &di, &ci, 1.0, &dW); /* dW += dy_n cols_n */
            }
            if (!dx) continue;
            ng_tensor dy3 = ng_tensor_view(dy, n0 * O * P, 3, (int64_t[]){b, O, P}, "dy");
            ng_tensor dcols =
                ng_tensor_view(&buf, chunk, 3, (int64_t[]){b, P, K}, "conv column grads");
            ng_gemm(1, 0, 1.0, &dy3, &W3, 0.0, &dcols); /* dcols_n = dy_n^T W */
            for (int64_t i = 0; i < b; i++) {
                ng_tensor di =
                    ng_tensor_view(&buf, chunk + i * P * K, 2, (int64_t[]){P, K}, "column grads");
                col2im_add_any(&di, n0 + i, &w, 0, P, dx);
            }
        }
    } else {
        ng_tensor buf =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){c.np * K * bufs}, "conv columns");
        ng_tensor tmp =
            ng_arena_tensor(ctx->grads, x->dtype, 1, (int64_t[]){O * c.np}, "conv dy slice");
        for (int64_t n = 0; n < N; n++)
            for (int64_t p0 = 0; p0 < P; p0 += c.np) {
                int64_t np = P - p0 < c.np ? P - p0 : c.np;
                ng_tensor cols = ng_tensor_view(&buf, 0, 2, (int64_t[]){np, K}, "conv columns");
                ng_tensor t = ng_tensor_view(&tmp, 0, 2, (int64_t[]){O, np}, "conv dy slice");
                im2col_any(x, n, &w, p0, np, &cols);
                copy_rows_any(x->device, t.data, np,
                              (const char *)dy->data + (size_t)(n * O * P + p0) * es, P, O, np, es);
                ng_gemm(0, 0, 1.0, &t, &cols, 1.0, &dW);
                if (!dx) continue;
                ng_tensor dcols =
                    ng_tensor_view(&buf, c.np * K, 2, (int64_t[]){np, K}, "conv column grads");
                ng_gemm(1, 0, 1.0, &t, &W2, 0.0, &dcols);
                col2im_add_any(&dcols, n, &w, p0, np, dx);
            }
    }
    ng_arena_release(ctx->grads, mark);
}

/* ---- the layer ----------------------------------------------------------------------------- */

/* An f16/bf16 forward on the CPU: the input and the (half-rounded) weights widened to f32 with
 * the SIMD conversions, oneDNN's f32 convolution, the output rounded once to the half type, then
 * the bias added as every half conv does (in f32, rounded again: the GPU's cuDNN-then-bias order).
 * The values are those of the im2col path up to the f32 summation order; half storage with f32
 * compute, at oneDNN's speed instead of im2col's. Backward likewise (half_backward): x, the weights
 * and dy widened, oneDNN's f32 backward adding into the f32 master gradient, dx rounded once to the
 * half type (im2col rounds its column gradients and each of their additions into dx).
 *
 * bf16 on a CPU with AVX512_BF16 (decided once, ng_dnnl_bf16_native) skips the copies: oneDNN's
 * native bf16 kernels read x, the weights and dy as they are, multiply pairs exactly and sum in
 * f32, and round y and dx once to bf16 (nearest even, as the copies path's cast; the one
 * difference is that the hardware flushes denormal bf16 inputs and outputs, below 1.2e-38, to
 * zero), while the weight gradient comes out f32 and is added into the master. Same semantics
 * without the f32 copies: the bf16 3D-CNN step's scratch 28.1 -> 14.2 MiB, its time 118 -> 84 ms
 * (docs/BENCHMARKS.md). A pass whose kernel oneDNN would take from its reference loops keeps the
 * copies. f16 keeps them too (oneDNN 2.6 has no f16 CPU convolution), except an evaluation forward
 * on a CPU with fp16 arithmetic (Arm FP16, AVX512-FP16): im2col and ng_hgemm, computing in fp16
 * (nn/conv_hgemm.c). Training keeps the f32 arithmetic, so a checkpoint's replay and the
 * backward see the same sums. */
static int half_onednn(const ng_tensor *x) {
    return use_onednn && x->device == NG_CPU && (x->dtype == NG_F16 || x->dtype == NG_BF16);
}

static long native_passes;

long ng_conv_native_passes(void) {
    return native_passes;
}

/* Whether a bf16 pass (forward, or backward) of input shape `in` runs natively; the plan asks
 * the same question of the same primitives. */
static int half_native(conv_state *s, const ng_conv_geom *g, ng_dtype dt, int ndim,
                       const int64_t *in, int backward) {
    return dt == NG_BF16 && ng_conv_bf16_native() &&
           ng_conv_onednn_native(&s->onednn_bf16, g, ndim, in, dt, backward);
}

/* Whether an f16 CPU forward computes in fp16: an evaluation on a CPU with fp16 arithmetic. */
static int hgemm_eval(ng_dtype dt, int training) {
    return dt == NG_F16 && !training && ng_hgemm_kind_now() != NG_HGEMM_NONE;
}

static void half_forward(conv_state *s, ng_layer *l, ng_ctx *ctx, const ng_tensor *x,
                         ng_tensor *y) {
    if (hgemm_eval(x->dtype, ctx->training)) {
        ng_win3 w = win_of(s, x);
        ng_conv_hgemm_forward(&w, x, &l->params[0].compute, y, ctx->grads);
        return;
    }
    ng_conv_geom g = s->g;
    g.bias = 0;
    const ng_tensor *w = &l->params[0].compute;
    if (half_native(s, &g, x->dtype, x->ndim, x->shape, 0)) {
        ng_conv_onednn_forward(&s->onednn_bf16, &g, x, w, NULL, y, ctx->grads);
        native_passes++;
        return;
    }
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor xf = ng_arena_tensor(ctx->grads, NG_F32, x->ndim, x->shape, "conv input f32");
    ng_tensor wf = ng_arena_tensor(ctx->grads, NG_F32, w->ndim, w->shape, "conv weights f32");
    ng_tensor yf = ng_arena_tensor(ctx->grads, NG_F32, y->ndim, y->shape, "conv output f32");
    ng_cast(&xf, x);
    ng_cast(&wf, w);
    ng_conv_onednn_forward(&s->onednn_half, &g, &xf, &wf, NULL, &yf, ctx->grads);
    ng_cast(y, &yf);
    ng_arena_release(ctx->grads, m);
}

static void half_backward(conv_state *s, ng_layer *l, ng_ctx *ctx, const ng_tensor *dy,
                          ng_tensor *dx) {
    ng_conv_geom g = s->g;
    g.bias = 0; /* the bias gradient is the common half path's, after this */
    const ng_tensor *x = &s->x, *w = &l->params[0].compute;
    ng_tensor *dw = &l->params[0].grad;
    NG_CHECK(dw->dtype == NG_F32, "conv %s: a half-precision backward needs f32 master gradients",
             l->name);
    if (half_native(s, &g, x->dtype, x->ndim, x->shape, 1)) {
        ng_conv_onednn_backward(&s->onednn_bf16, &g, x, w, dy, dw, NULL, dx, ctx->grads);
        native_passes++;
        return;
    }
    ng_arena_mark m = ng_arena_get_mark(ctx->grads);
    ng_tensor xf = ng_arena_tensor(ctx->grads, NG_F32, x->ndim, x->shape, "conv input f32");
    ng_tensor wf = ng_arena_tensor(ctx->grads, NG_F32, w->ndim, w->shape, "conv weights f32");
    ng_tensor dyf = ng_arena_tensor(ctx->grads, NG_F32, dy->ndim, dy->shape, "conv grad f32");
    ng_tensor dxf = {0};
    if (dx) dxf = ng_arena_tensor(ctx->grads, NG_F32, x->ndim, x->shape, "conv input grad f32");
    ng_cast(&xf, x);
    ng_cast(&wf, w);
    ng_cast(&dyf, dy);
    ng_conv_onednn_backward(&s->onednn_half, &g, &xf, &wf, &dyf, dw, NULL, dx ? &dxf : NULL,
                            ctx->grads);
    if (dx) ng_cast(dx, &dxf);
    ng_arena_release(ctx->grads, m);
}

static ng_tensor conv_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    conv_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    conv_out_shape(l, x->ndim, x->shape, &ndim, shape);
    check_input(l, x);
    s->x = *x;
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, ndim, shape, l->name);
    if (ctx->observer && !ctx->recomputing) ctx->observer->input(ctx->observer->self, l, x);
    if (!y.numel) return y;
    if (onednn_for(x)) {
        const ng_tensor *b = s->g.bias ? &l->params[1].compute : NULL;
        ng_conv_onednn_forward(&s->onednn, &s->g, x, &l->params[0].compute, b, &y, ctx->grads);
        return y;
    }
    int done = 0;
    if (x->device == NG_CUDA && use_cudnn)
        NG_CUDA_ONLY(done = ng_conv_cudnn_forward(&s->cudnn, &s->g, x, &l->params[0].compute, &y));
    if (!done && half_onednn(x)) {
        half_forward(s, l, ctx, x, &y);
        done = 1;
    }
    if (!done) gemm_forward(l, ctx, x, &y);
    if (s->g.bias) {
        int64_t N = shape[0], O = shape[1], P = y.numel / (N * O);
        const ng_tensor *b = &l->params[1].compute;
        NG_DISPATCH(&y, bias_add_cpu(&y, b, N, O, P), ng_conv_bias_add_cuda(&y, b, N, O, P));
    }
    return y;
}

static void conv_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    conv_state *s = l->impl;
    NG_CHECK(s->x.ndim == s->g.nd + 2, "conv %s: backward without a forward", l->name);
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    conv_out_shape(l, s->x.ndim, s->x.shape, &ndim, shape);
    NG_CHECK(dy->ndim == ndim && !memcmp(dy->shape, shape, sizeof(int64_t) * (size_t)ndim) &&
                 dy->dtype == s->x.dtype && dy->device == s->x.device,
             "conv %s: output gradient %s does not fit the forward's output", l->name,
             ng_tensor_desc(dy));
    NG_CHECK(!dx || (ng_tensor_same_shape(dx, &s->x) && dx->dtype == s->x.dtype &&
                     dx->device == s->x.device),
             "conv %s: input gradient %s does not fit the input %s", l->name, ng_tensor_desc(dx),
             ng_tensor_desc(&s->x));
    if (ctx->observer) ctx->observer->output_grad(ctx->observer->self, l, dy);
    if (!dy->numel || !s->x.numel) {
        if (dx) ng_fill(dx, 0);
        return;
    }
    if (onednn_for(&s->x)) {
        ng_tensor *db = s->g.bias ? &l->params[1].grad : NULL;
        ng_conv_onednn_backward(&s->onednn, &s->g, &s->x, &l->params[0].compute, dy,
                                &l->params[0].grad, db, dx, ctx->grads);
        return;
    }
    int done = 0;
    if (dy->device == NG_CUDA && use_cudnn)
        NG_CUDA_ONLY(done = ng_conv_cudnn_backward(&s->cudnn, &s->g, &s->x, &l->params[0].compute,
                                                   dy, &l->params[0].grad, dx));
    if (!done && half_onednn(&s->x)) {
        half_backward(s, l, ctx, dy, dx);
        done = 1;
    }
    if (!done) gemm_backward(l, ctx, dy, dx);
    if (s->g.bias) {
        int64_t N = shape[0], O = shape[1], P = dy->numel / (N * O);
        ng_tensor *db = &l->params[1].grad;
        ng_arena_mark m = ng_arena_get_mark(ctx->grads);
        ng_tensor sums = ng_arena_tensor(ctx->grads, NG_F64, 1, (int64_t[]){2 * O}, "bias sums");
        (void)sums; /* CUDA scratch; unused by the CPU twin */
        NG_DISPATCH(dy, bias_grad_cpu(dy, db, N, O, P),
                    ng_conv_bias_grad_cuda(dy, db, N, O, P, &sums));
        ng_arena_release(ctx->grads, m);
    }
}

static void conv_destroy(ng_layer *l) {
    conv_state *s = l->impl;
    if (s->cudnn) NG_CUDA_ONLY(ng_conv_cudnn_free(s->cudnn));
    s->cudnn = NULL;
    ng_conv_onednn_free(s->onednn);
    ng_conv_onednn_free(s->onednn_half);
    ng_conv_onednn_free(s->onednn_bf16);
    s->onednn = s->onednn_half = s->onednn_bf16 = NULL;
}

/* The im2col chunks as gemm_forward and gemm_backward take them from an arena with room. */
static void plan_columns(ng_mem_sim *sim, const ng_win3 *w, int64_t N, int64_t K, int64_t O,
                         int bufs, ng_dtype dt) {
    ng_arena roomy = {.capacity = SIZE_MAX / 2};
    chunking c = plan_chunks(&roomy, w, N, K, O, bufs, ng_dtype_size(dt));
    size_t m = ng_sim_mark(&sim->grads);
    if (c.nb) {
        ng_sim_tensor(&sim->grads, dt, 1, (int64_t[]){c.nb * ng_win3_out_size(w) * K * bufs});
    } else {
        ng_sim_tensor(&sim->grads, dt, 1, (int64_t[]){c.np * K * bufs});
        ng_sim_tensor(&sim->grads, dt, 1, (int64_t[]){O * c.np});
    }
    ng_sim_release(&sim->grads, m);
}

int64_t ng_conv_cudnn_batch(int64_t N, int64_t per_x, int64_t per_y) {
    int64_t per = per_x > per_y ? per_x : per_y;
    if (per <= 0 || per > (int64_t)INT32_MAX) return 0;
    int64_t nb = (int64_t)INT32_MAX / per;
    return nb < N ? nb : N;
}

/* 1 when the CUDA pass takes cuDNN for this input, with its workspace request recorded: asked of
 * cuDNN where a GPU is present (the algorithms, so the bytes, are the run's), else the cap the
 * algorithm picker allows (plus the half weight gradient behind it), an upper bound. */
static int plan_cudnn(conv_state *s, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                      const int64_t *in, ng_dtype dt) {
    if (sim->device != NG_CUDA || !use_cudnn) return 0;
    if (dt != NG_F32 && dt != NG_F64 && dt != NG_F16 && dt != NG_BF16) return 0;
    int64_t ws = -1;
    (void)need_dx; /* read only by the CUDA build's cuDNN query */
    if (ng_cuda_available()) {
        NG_CUDA_ONLY(
            ws = ng_conv_cudnn_workspace(&s->cudnn, &s->g, ndim, in, dt, backward, need_dx));
        if (ws < 0) return 0;
    } else {
        int64_t out_sp[3], per_x = 1, per_y = s->g.out_ch;
        for (int i = 1; i < ndim; i++) per_x *= in[i];
        ng_conv_out_spatial(&s->g, in + 2, out_sp, "conv");
        for (int i = 0; i < s->g.nd; i++) per_y *= out_sp[i];
        if (!ng_conv_cudnn_batch(in[0], per_x, per_y)) return 0;
        size_t cap = NG_CUDNN_WORKSPACE_CAP;
        if (backward && (dt == NG_F16 || dt == NG_BF16)) {
            int64_t dw = s->g.out_ch * s->g.in_ch;
            for (int i = 0; i < s->g.nd; i++) dw *= s->g.kernel[i];
            cap = ng_cudnn_dw_offset(cap) + (size_t)dw * ng_dtype_size(dt);
        }
        ws = (int64_t)cap;
        sim->workspace_bounded = 1;
    }
    if ((size_t)ws > sim->workspace) sim->workspace = (size_t)ws;
    if ((size_t)ws > sim->cudnn_workspace) sim->cudnn_workspace = (size_t)ws;
    return 1;
}

static void conv_plan(ng_layer *l, ng_mem_sim *sim, int backward, int need_dx, int ndim,
                      const int64_t *in, ng_dtype dt) {
    conv_state *s = l->impl;
    int on;
    int64_t out[NG_MAX_DIMS];
    conv_out_shape(l, ndim, in, &on, out);
    int64_t ny = 1, nx = 1;
    for (int i = 0; i < on; i++) ny *= out[i];
    for (int i = 0; i < ndim; i++) nx *= in[i];
    if (!backward) {
        ng_sim_tensor(&sim->acts, dt, on, out);
        ng_sim_capture(sim, l, ndim, in, dt);
    }
    if (!ny || (backward && !nx)) return;
    if (use_onednn && sim->device == NG_CPU && dt == NG_F32) {
        ng_conv_onednn_plan(&s->onednn, &s->g, ndim, in, backward, need_dx, &sim->grads);
        return;
    }
    int cudnn = plan_cudnn(s, sim, backward, need_dx, ndim, in, dt);
    if (use_onednn && sim->device == NG_CPU && (dt == NG_F16 || dt == NG_BF16)) {
        /* half_forward's and half_backward's f32 copies (x, weights, y or dy, dx) and convolution
         */
        ng_conv_geom g = s->g;
        g.bias = 0;
        const ng_tensor *w = &l->params[0].value;
        int dx = backward && need_dx;
        if (!backward && hgemm_eval(dt, sim->training)) { /* one chunk of f16 columns */
            int64_t out_sp[3];
            ng_conv_out_spatial(&s->g, in + 2, out_sp, "conv");
            ng_win3 w3 = ng_win3_from_conv(&s->g, in + 2, out_sp);
            int64_t K = w3.C * ng_win3_k_size(&w3);
            size_t m = ng_sim_mark(&sim->grads);
            ng_sim_tensor(&sim->grads, NG_F16, 2,
                          (int64_t[]){K, ng_conv_hgemm_chunk(K, ng_win3_out_size(&w3))});
            ng_sim_release(&sim->grads, m);
            return;
        }
        if (half_native(s, &g, dt, ndim, in, backward)) { /* no copies: oneDNN's bf16 passes */
            ng_conv_onednn_plan_dt(&s->onednn_bf16, &g, ndim, in, dt, backward, dx, &sim->grads);
        } else {
            size_t m = ng_sim_mark(&sim->grads);
            ng_sim_tensor(&sim->grads, NG_F32, ndim, in);
            ng_sim_tensor(&sim->grads, NG_F32, w->ndim, w->shape);
            ng_sim_tensor(&sim->grads, NG_F32, on, out);
            if (dx) ng_sim_tensor(&sim->grads, NG_F32, ndim, in);
            ng_conv_onednn_plan(&s->onednn_half, &g, ndim, in, backward, dx, &sim->grads);
            ng_sim_release(&sim->grads, m);
        }
        if (!backward) return;
    } else if (!cudnn) {
        int64_t out_sp[3];
        ng_conv_out_spatial(&s->g, in + 2, out_sp, "conv");
        ng_win3 w = ng_win3_from_conv(&s->g, in + 2, out_sp);
        int64_t K = w.C * ng_win3_k_size(&w);
        plan_columns(sim, &w, in[0], K, s->g.out_ch, backward && need_dx ? 2 : 1, dt);
    }
    if (backward && s->g.bias) { /* the bias gradient's channel sums on CUDA */
        ng_sim_workspace(sim, ng_channel_sums_workspace(in[0], s->g.out_ch, ny / (in[0] * out[1])));
        size_t m = ng_sim_mark(&sim->grads);
        ng_sim_tensor(&sim->grads, NG_F64, 1, (int64_t[]){2 * s->g.out_ch});
        ng_sim_release(&sim->grads, m);
    }
}

/* prod(kernel) x in_ch multiply-adds per output element. */
static int64_t conv_flops(const ng_layer *l, int ndim, const int64_t *in) {
    const ng_conv_geom *g = &((const conv_state *)l->impl)->g;
    int64_t out[NG_MAX_DIMS], n = 1, k = g->in_ch;
    int on;
    conv_out_shape(l, ndim, in, &on, out);
    for (int i = 0; i < on; i++) n *= out[i];
    for (int i = 0; i < g->nd; i++) k *= g->kernel[i];
    return 2 * n * k;
}

static const ng_layer_ops conv_ops = {
    .kind = "conv",
    .flops = conv_flops,
    .out_shape = conv_out_shape,
    .forward = conv_forward,
    .backward = conv_backward,
    .destroy = conv_destroy,
    .plan = conv_plan,
    .out_unread = 1,
};

ng_layer *ng_conv(const char *name, int nd, int64_t in_ch, int64_t out_ch, const int64_t *kernel,
                  const int64_t *stride, const int64_t *padding, const int64_t *dilation,
                  int bias) {
    NG_CHECK(nd == 2 || nd == 3, "conv %s: nd is %d; 2 (images) or 3 (volumes)", name, nd);
    NG_CHECK(in_ch > 0 && out_ch > 0, "conv %s: channels in=%lld out=%lld must be > 0", name,
             (long long)in_ch, (long long)out_ch);
    NG_CHECK(kernel, "conv %s: no kernel size given", name);
    ng_conv_geom g = {.nd = nd, .in_ch = in_ch, .out_ch = out_ch, .bias = bias != 0};
    int64_t ksize = 1;
    for (int i = 0; i < 3; i++) {
        int real = i < nd;
        g.kernel[i] = real ? kernel[i] : 1;
        g.stride[i] = real && stride ? stride[i] : 1;
        g.padding[i] = real && padding ? padding[i] : 0;
        g.dilation[i] = real && dilation ? dilation[i] : 1;
        NG_CHECK(g.kernel[i] >= 1 && g.stride[i] >= 1 && g.padding[i] >= 0 && g.dilation[i] >= 1,
                 "conv %s: dim %d has kernel %lld, stride %lld, padding %lld, dilation %lld; "
                 "kernel, stride, dilation must be >= 1 and padding >= 0",
                 name, i, (long long)g.kernel[i], (long long)g.stride[i], (long long)g.padding[i],
                 (long long)g.dilation[i]);
        ksize *= g.kernel[i];
    }
    ng_layer *l = ng_layer_new(&conv_ops, name, sizeof(conv_state));
    ((conv_state *)l->impl)->g = g;
    l->capture = 1;
    ng_init ku = {.kind = NG_INIT_KAIMING_UNIFORM, .fan_in = in_ch * ksize};
    int64_t wshape[5] = {out_ch, in_ch, g.kernel[0], g.kernel[1], g.kernel[2]};
    ng_layer_add_param(l, "weight", nd + 2, wshape, ku, 1);
    if (bias) ng_layer_add_param(l, "bias", 1, (int64_t[]){out_ch}, ku, 0);
    return l;
}

/* ---- the reusable patch expansion ---------------------------------------------------------- */

void ng_im2col(const ng_tensor *x, int64_t n, const ng_conv_geom *g, int64_t p0, int64_t np,
               ng_tensor *cols) {
    NG_CHECK(g && (g->nd == 2 || g->nd == 3), "ng_im2col: geometry with nd %d; 2 or 3",
             g ? g->nd : -1);
    NG_CHECK(x->ndim == g->nd + 2 && x->shape[1] == g->in_ch,
             "ng_im2col: x '%s' is %s; a %dd conv with %lld input channels takes [N, %lld, %s]",
             ng_tensor_name(x), ng_tensor_desc(x), g->nd, (long long)g->in_ch, (long long)g->in_ch,
             g->nd == 2 ? "H, W" : "D, H, W");
    NG_CHECK(n >= 0 && n < x->shape[0], "ng_im2col: sample %lld of x '%s' %s does not exist",
             (long long)n, ng_tensor_name(x), ng_tensor_desc(x));
    int64_t out_sp[3];
    ng_conv_out_spatial(g, x->shape + 2, out_sp, "ng_im2col");
    ng_win3 w = ng_win3_from_conv(g, x->shape + 2, out_sp);
    int64_t P = ng_win3_out_size(&w), K = w.C * ng_win3_k_size(&w);
    NG_CHECK(p0 >= 0 && np >= 0 && p0 + np <= P,
             "ng_im2col: positions [%lld, %lld) are outside the %lld output positions",
             (long long)p0, (long long)(p0 + np), (long long)P);
    NG_CHECK(cols->ndim == 2 && cols->shape[0] == np && cols->shape[1] == K,
             "ng_im2col: cols '%s' is %s; expected [%lld, %lld]", ng_tensor_name(cols),
             ng_tensor_desc(cols), (long long)np, (long long)K);
    NG_CHECK(cols->dtype == x->dtype && cols->device == x->device,
             "ng_im2col: cols '%s' %s must have the dtype and device of x '%s' %s",
             ng_tensor_name(cols), ng_tensor_desc(cols), ng_tensor_name(x), ng_tensor_desc(x));
    NG_CHECK(ng_dtype_is_float(x->dtype), "ng_im2col: x '%s' is %s; a floating type is needed",
             ng_tensor_name(x), ng_tensor_desc(x));
    NG_CHECK(x->data && (cols->data || !np), "ng_im2col: x or cols has no data");
    if (np) im2col_any(x, n, &w, p0, np, cols);
}
