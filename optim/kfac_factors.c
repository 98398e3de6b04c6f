/* K-FAC's Kronecker factors: what the observer does with a layer's inputs and output gradients
 * (Linear expand/reduce, conv patches in chunks), and the fold into running averages. The
 * scaling conventions are written out in kfac.h. */
#include <stdio.h>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/ops.h"
#include "optim/kfac_kernels.h"

static void check_dtype(const ng_kfac *k, const ng_kfac_layer *L, const ng_tensor *t) {
    ng_dtype md = k->m->dtype, d = t->dtype;
    NG_CHECK(t->device == k->m->device &&
                 (d == md || (md == NG_F32 && (d == NG_F16 || d == NG_BF16))),
             "kfac: layer %s handed over %s, but the model is %s %s", L->layer->name,
             ng_tensor_desc(t), ng_dtype_name(md), ng_device_name(k->m->device));
}

/* Rows of a Linear's input or output gradient, checked against the batch size. */
static int64_t linear_rows(const ng_kfac *k, const ng_kfac_layer *L, const ng_tensor *t,
                           int64_t width) {
    int64_t rows = t->numel / width;
    NG_CHECK(rows * width == t->numel && rows % k->N == 0,
             "kfac: layer %s saw %s: not rows of %lld features in a multiple of the %lld examples "
             "given to ng_kfac_begin",
             L->layer->name, ng_tensor_desc(t), (long long)width, (long long)k->N);
    return rows;
}

/* S (+)= alpha X^T X and s (+)= alpha X^T 1 for rows X [r, in]. */
static void gram(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *X, double alpha, int first) {
    double beta = first ? 0.0 : 1.0;
    ng_gemm(1, 0, alpha, X, X, beta, &L->S);
    if (L->bias) {
        ng_tensor one = ng_kfac_ones(k, X->dtype, X->shape[0]);
        ng_gemm(1, 0, alpha, X, &one, beta, &L->s);
    }
}

/* Row means (or sums) over groups of R rows: out [N, width] = scale * sum_r t[n, r, :]. A
 * batched GEMM against a shared ones row. out lives in the model's dtype. */
static ng_tensor group_sum(ng_kfac *k, const ng_tensor *t, int64_t N, int64_t R, int64_t width,
                           double scale) {
    ng_tensor one = ng_kfac_ones(k, t->dtype, R);
    ng_tensor one3 = ng_tensor_reshape(&one, 3, (int64_t[]){1, 1, R});
    ng_tensor t3 = ng_tensor_reshape(t, 3, (int64_t[]){N, R, width});
    void *buf = ng_kfac_scratch(k, (size_t)(N * width) * ng_dtype_size(k->m->dtype));
    ng_tensor out3 = ng_tensor_wrap(buf, k->m->dtype, k->m->device, 3, (int64_t[]){N, 1, width},
                                    "kfac group sums");
    ng_gemm(0, 0, scale, &one3, &t3, 0.0, &out3);
    return ng_tensor_reshape(&out3, 2, (int64_t[]){N, width});
}

static void capture_a_linear(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *x) {
    int64_t rows = linear_rows(k, L, x, L->in), N = k->N, R = rows / N;
    int first = L->na == 0;
    if (k->c.tokens == NG_KFAC_REDUCE && R > 1) {
        ng_tensor abar = group_sum(k, x, N, R, L->in, 1.0 / (double)R);
        gram(k, L, &abar, 1.0 / (double)N, first);
    } else {
        ng_tensor x2 = ng_tensor_reshape(x, 2, (int64_t[]){rows, L->in});
        gram(k, L, &x2, 1.0 / (double)rows, first);
    }
}

/* Patch rows of the conv input in chunks of at most chunk_bytes: whole samples per chunk when
 * one sample's P rows fit, else runs of output positions of one sample. */
static void capture_a_conv(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *x) {
    const ng_conv_geom *g = &L->geom;
    NG_CHECK(x->ndim == g->nd + 2 && x->shape[1] == g->in_ch && x->shape[0] == k->N,
             "kfac: conv layer %s saw input %s; expected [%lld, %lld, ...] (the batch of "
             "ng_kfac_begin)",
             L->layer->name, ng_tensor_desc(x), (long long)k->N, (long long)g->in_ch);
    int64_t out_sp[3] = {1, 1, 1};
    ng_conv_out_spatial(g, x->shape + 2, out_sp, L->layer->name);
    int64_t N = k->N, K = L->in, P = out_sp[0] * out_sp[1] * out_sp[2];
    size_t es = ng_dtype_size(x->dtype);
    int64_t max_rows = (int64_t)(k->chunk_bytes / ((size_t)K * es));
    if (max_rows < 1) max_rows = 1;
    int64_t nb = P <= max_rows ? max_rows / P : 0; /* samples per chunk, or 0: positions */
    if (nb > N) nb = N;
    int64_t np = nb ? P : max_rows, chunk_rows = nb ? nb * P : np;
    (void)ng_kfac_ones(k, x->dtype, chunk_rows); /* grown once, before any chunk uses it */
    void *buf = ng_kfac_scratch(k, (size_t)(chunk_rows * K) * es);
    ng_tensor all =
        ng_tensor_wrap(buf, x->dtype, x->device, 1, (int64_t[]){chunk_rows * K}, "kfac patches");
    double alpha = 1.0 / ((double)N * (double)P);
    int first = L->na == 0;
    if (nb) {
        for (int64_t n0 = 0; n0 < N; n0 += nb) {
            int64_t b = N - n0 < nb ? N - n0 : nb;
            for (int64_t i = 0; i < b; i++) {
                ng_tensor ci = ng_tensor_view(&all, i * P * K, 2, (int64_t[]){P, K}, "patches");
                ng_im2col(x, n0 + i, g, 0, P, &ci);
            }
            ng_tensor cols = ng_tensor_view(&all, 0, 2, (int64_t[]){b * P, K}, "kfac patches");
            gram(k, L, &cols, alpha, first);
            first = 0;
        }
    } else {
        for (int64_t n = 0; n < N; n++)
            for (int64_t p0 = 0; p0 < P; p0 += np) {
                int64_t r = P - p0 < np ? P - p0 : np;
                ng_tensor cols = ng_tensor_view(&all, 0, 2, (int64_t[]){r, K}, "kfac patches");
                ng_im2col(x, n, g, p0, r, &cols);
                gram(k, L, &cols, alpha, first);
                first = 0;
            }
    }
}

void ng_kfac_capture_a(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *x) {
    check_dtype(k, L, x);
    if (!x->numel) return;
    if (L->kind == NG_KFAC_CONV)
        capture_a_conv(k, L, x);
    else
        capture_a_linear(k, L, x);
    L->corner += 1.0; /* the bias entry: 1/(N R) times N R rows of 1, in every form */
    L->na++;
}

void ng_kfac_capture_g(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *dy) {
    check_dtype(k, L, dy);
    if (!dy->numel) return;
    /* g = N dy, so 1/N sum g g^T = N sum dy dy^T; a loss-scaled dy is s dy, hence N / s^2. */
    double N = (double)k->N / (k->loss_scale * k->loss_scale), beta = L->ng ? 1.0 : 0.0;
    if (L->kind == NG_KFAC_CONV) {
        NG_CHECK(dy->ndim == L->geom.nd + 2 && dy->shape[0] == k->N && dy->shape[1] == L->out,
                 "kfac: conv layer %s saw output gradient %s; expected [%lld, %lld, ...]",
                 L->layer->name, ng_tensor_desc(dy), (long long)k->N, (long long)L->out);
        int64_t P = dy->numel / (k->N * L->out);
        /* Per sample dy_n [out, P]: sum_p g g^T is dy_n dy_n^T, no transpose needed. */
        for (int64_t n = 0; n < k->N; n++) {
            ng_tensor dn = ng_tensor_view(dy, n * L->out * P, 2, (int64_t[]){L->out, P}, "dy");
            ng_gemm(0, 1, N, &dn, &dn, beta, &L->B);
            beta = 1.0;
        }
    } else {
        int64_t rows = linear_rows(k, L, dy, L->out), R = rows / k->N;
        if (k->c.tokens == NG_KFAC_REDUCE && R > 1) {
            ng_tensor dsum = group_sum(k, dy, k->N, R, L->out, 1.0);
            ng_gemm(1, 0, N, &dsum, &dsum, beta, &L->B);
        } else {
            ng_tensor d2 = ng_tensor_reshape(dy, 2, (int64_t[]){rows, L->out});
            ng_gemm(1, 0, N, &d2, &d2, beta, &L->B);
        }
    }
    L->ng++;
}

void ng_kfac_fold_layer(ng_kfac *k, ng_kfac_layer *L) {
    double *meta = L->meta.data, keep = k->c.factor_decay, w = 1.0 - keep;
    const char *name = L->layer->name;
    if (L->na) {
        if (!ng_all_finite(&L->S) || (L->bias && !ng_all_finite(&L->s)))
            NG_WARN("kfac: layer %s: this step's A factor is not finite; it is left out of the "
                    "running average",
                    name);
        else {
            ng_kfac_fold(&L->A, &L->S, L->bias ? &L->s : NULL, L->corner, keep, w,
                         !meta[NG_KFAC_META_A]);
            meta[NG_KFAC_META_A] = 1;
        }
    }
    if (L->ng) {
        if (!ng_all_finite(&L->B))
            NG_WARN("kfac: layer %s: this step's G factor is not finite; it is left out of the "
                    "running average",
                    name);
        else {
            ng_kfac_fold(&L->G, &L->B, NULL, 0.0, keep, w, !meta[NG_KFAC_META_G]);
            meta[NG_KFAC_META_G] = 1;
        }
    }
    L->na = L->ng = 0;
    L->corner = 0;
}
