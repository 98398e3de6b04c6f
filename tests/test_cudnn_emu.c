/* The emulated cuDNN of the emulation build (core/cudnn_emu.c), called directly: its three
 * convolutions under every algorithm its heuristics list, against a direct convolution summed
 * here in double (2 and 3 spatial dims, stride, padding, dilation, alpha and beta, every data type;
 * f32 under tensor-op math against operands rounded to TF32 here), the deterministic algorithms
 * bit-reproducible and the non-deterministic one not, the scratch clobbered after a call, and
 * each misuse cuDNN would refuse refused with its status. Skipped outside the emulation build. */
#include <stdio.h>

#include "testing.h"

#ifndef NG_CUDA_EMU
int main(void) {
    printf("test_cudnn_emu: skipped (only the CUDA emulation build emulates cuDNN)\n");
    return 77;
}
#else
#include <cudnn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cuda_context.h"
#include "core/memory.h"

typedef struct {
    int nd, N, C, K, in[3], k[3], pad[3], str[3], dil[3], out[3];
} shape;

static shape random_shape(int nd) {
    shape s = {.nd = nd, .N = ng_test_int(1, 3), .C = ng_test_int(1, 4), .K = ng_test_int(1, 4)};
    for (int i = 0; i < nd; i++) {
        s.k[i] = ng_test_int(1, 3), s.str[i] = ng_test_int(1, 2), s.pad[i] = ng_test_int(0, 2),
        s.dil[i] = ng_test_int(1, 2);
        s.in[i] = ng_test_int(s.dil[i] * (s.k[i] - 1) + 1, 9);
        s.out[i] = (s.in[i] + 2 * s.pad[i] - s.dil[i] * (s.k[i] - 1) - 1) / s.str[i] + 1;
    }
    return s;
}

static int64_t vol(int nd, const int *d) {
    int64_t v = 1;
    for (int i = 0; i < nd; i++) v *= d[i];
    return v;
}

/* The direct convolution of host doubles: y [N,K,out], x [N,C,in], w [K,C,k]. */
static void direct(const shape *s, const double *x, const double *w, double *y) {
    int64_t O = vol(s->nd, s->out), In = vol(s->nd, s->in), kk = vol(s->nd, s->k);
    memset(y, 0, sizeof(double) * (size_t)(s->N * s->K * O));
    for (int n = 0; n < s->N; n++)
        for (int k = 0; k < s->K; k++)
            for (int64_t o = 0; o < O; o++)
                for (int c = 0; c < s->C; c++)
                    for (int64_t q = 0; q < kk; q++) {
                        int64_t xi = 0, oo = o, qq = q, ok = 1;
                        int64_t stride_in = 1, pos[3];
                        for (int i = s->nd - 1; i >= 0; i--) {
                            int64_t od = oo % s->out[i], kd = qq % s->k[i];
                            oo /= s->out[i], qq /= s->k[i];
                            pos[i] = od * s->str[i] - s->pad[i] + kd * s->dil[i];
                            if (pos[i] < 0 || pos[i] >= s->in[i]) ok = 0;
                        }
                        if (!ok) continue;
                        for (int i = s->nd - 1; i >= 0; i--) {
                            xi += pos[i] * stride_in;
                            stride_in *= s->in[i];
                        }
                        y[(n * s->K + k) * O + o] +=
                            x[(n * s->C + c) * In + xi] * w[(k * s->C + c) * kk + q];
                    }
}

/* The adjoints of direct by linearity: dx = J^T dy and dw = J_w^T dy, from unit inputs. Slow but
 * plain: every x (or w) element's column of the forward map. */
static void adjoints(const shape *s, const double *x, const double *w, const double *dy, double *dx,
                     double *dw) {
    int64_t nx = s->N * s->C * vol(s->nd, s->in), nw = s->K * s->C * vol(s->nd, s->k);
    int64_t ny = s->N * s->K * vol(s->nd, s->out);
    double *e = calloc((size_t)(nx > nw ? nx : nw), sizeof(double)), *y = malloc(8 * (size_t)ny);
    for (int64_t i = 0; i < nx; i++) {
        e[i] = 1;
        direct(s, e, w, y);
        e[i] = 0;
        double a = 0;
        for (int64_t j = 0; j < ny; j++) a += y[j] * dy[j];
        dx[i] = a;
    }
    for (int64_t i = 0; i < nw; i++) {
        e[i] = 1;
        direct(s, x, e, y);
        e[i] = 0;
        double a = 0;
        for (int64_t j = 0; j < ny; j++) a += y[j] * dy[j];
        dw[i] = a;
    }
    free(e), free(y);
}

typedef struct {
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t c;
} descs;

static cudnnDataType_t cu_type(ng_dtype dt) {
    return dt == NG_F64   ? CUDNN_DATA_DOUBLE
           : dt == NG_F32 ? CUDNN_DATA_FLOAT
           : dt == NG_F16 ? CUDNN_DATA_HALF
                          : CUDNN_DATA_BFLOAT16;
}

static void packed_strides(int n, const int *d, int *st) {
    st[n - 1] = 1;
    for (int i = n - 2; i >= 0; i--) st[i] = st[i + 1] * d[i + 1];
}

static descs make_descs(const shape *s, ng_dtype dt) {
    descs d;
    int xd[5] = {s->N, s->C}, yd[5] = {s->N, s->K}, wd[5] = {s->K, s->C}, xs[5], ys[5];
    for (int i = 0; i < s->nd; i++)
        xd[2 + i] = s->in[i], yd[2 + i] = s->out[i], wd[2 + i] = s->k[i];
    packed_strides(s->nd + 2, xd, xs);
    packed_strides(s->nd + 2, yd, ys);
    cudnnDataType_t t = cu_type(dt);
    cudnnCreateTensorDescriptor(&d.x);
    cudnnCreateTensorDescriptor(&d.y);
    cudnnCreateFilterDescriptor(&d.w);
    cudnnCreateConvolutionDescriptor(&d.c);
    NG_TEST(cudnnSetTensorNdDescriptor(d.x, t, s->nd + 2, xd, xs) == CUDNN_STATUS_SUCCESS &&
                cudnnSetTensorNdDescriptor(d.y, t, s->nd + 2, yd, ys) == CUDNN_STATUS_SUCCESS &&
                cudnnSetFilterNdDescriptor(d.w, t, CUDNN_TENSOR_NCHW, s->nd + 2, wd) ==
                    CUDNN_STATUS_SUCCESS &&
                cudnnSetConvolutionNdDescriptor(
                    d.c, s->nd, s->pad, s->str, s->dil, CUDNN_CROSS_CORRELATION,
                    dt == NG_F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT) == CUDNN_STATUS_SUCCESS,
            "descriptors of a valid %dd %s convolution", s->nd, ng_dtype_name(dt));
    return d;
}

static void free_descs(descs *d) {
    cudnnDestroyTensorDescriptor(d->x);
    cudnnDestroyTensorDescriptor(d->y);
    cudnnDestroyFilterDescriptor(d->w);
    cudnnDestroyConvolutionDescriptor(d->c);
}

static ng_tensor dev_tensor(ng_dtype dt, int64_t n, const char *name) {
    ng_tensor t = ng_tensor_1d(dt, NG_CUDA, n, name);
    ng_test_fill_uniform(&t, -1, 1);
    return t;
}

/* Host doubles of t, each rounded to TF32 when `tf` is set. */
static double *host(const ng_tensor *t, int tf) {
    double *h = ng_test_to_f64(t);
    if (tf)
        for (int64_t i = 0; i < t->numel; i++) h[i] = ng_test_tf32(h[i]);
    return h;
}

/* Tolerance of one output element: the output's rounding (once), plus what f32 sums lose. */
static double tol(ng_dtype dt) {
    return dt == NG_F64 ? 1e-12 : dt == NG_F32 ? 2e-6 : dt == NG_F16 ? 1.0 / 1024 : 1.0 / 128;
}

/* expected = alpha ref + beta before, elementwise. */
static void blend(double *e, const double *ref, const double *before, int64_t n, double a,
                  double b) {
    for (int64_t i = 0; i < n; i++) e[i] = a * ref[i] + b * before[i];
}

static void *scal(ng_dtype dt, double v, double *d, float *f) {
    if (dt == NG_F64) return *d = v, (void *)d;
    return *f = (float)v, (void *)f;
}

enum { FWD, DATA, FILTER };

/* One pass with one algorithm under its math type; the result against alpha ref + beta before. */
static void one_pass(const char *what, int pass, int algo, cudnnMathType_t math, int det,
                     const shape *s, ng_dtype dt, const descs *d, ng_tensor *x, ng_tensor *w,
                     ng_tensor *y) {
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    int tf = dt == NG_F32 && math != CUDNN_FMA_MATH;
    NG_TEST(cudnnSetConvolutionMathType(d->c, math) == CUDNN_STATUS_SUCCESS, "set math");
    size_t ws_size = 0;
    cudnnStatus_t st =
        pass == FWD
            ? cudnnGetConvolutionForwardWorkspaceSize(h, d->x, d->w, d->c, d->y, algo, &ws_size)
        : pass == DATA ? cudnnGetConvolutionBackwardDataWorkspaceSize(h, d->w, d->y, d->c, d->x,
                                                                      algo, &ws_size)
                       : cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d->x, d->y, d->c, d->w,
                                                                        algo, &ws_size);
    NG_TEST(st == CUDNN_STATUS_SUCCESS, "%s: workspace query, status %d", what, (int)st);
    void *ws = ws_size ? ng_cuda_workspace(ws_size) : NULL;
    double a = ng_test_uniform() * 2, b = ng_test_int(0, 1) ? ng_test_uniform() : 0.0, ad, bd;
    float af, bf;
    /* the written tensor's values before, then the call twice (determinism) */
    ng_tensor *out = pass == FWD ? y : pass == DATA ? x : w;
    double *xh = host(x, tf), *wh = host(w, tf), *yh = host(y, tf), *before = host(out, 0);
    ng_tensor keep = ng_tensor_new(out->dtype, NG_CUDA, 1, &out->numel, "before");
    ng_tensor_copy(&keep, out);
    double *got[2];
    for (int rep = 0; rep < 2; rep++) {
        ng_tensor_copy(out, &keep);
        const void *ap = scal(dt, a, &ad, &af), *bp = scal(dt, b, &bd, &bf);
        st = pass == FWD ? cudnnConvolutionForward(h, ap, d->x, x->data, d->w, w->data, d->c, algo,
                                                   ws, ws_size, bp, d->y, y->data)
             : pass == DATA
                 ? cudnnConvolutionBackwardData(h, ap, d->w, w->data, d->y, y->data, d->c, algo, ws,
                                                ws_size, bp, d->x, x->data)
                 : cudnnConvolutionBackwardFilter(h, ap, d->x, x->data, d->y, y->data, d->c, algo,
                                                  ws, ws_size, bp, d->w, w->data);
        NG_TEST(st == CUDNN_STATUS_SUCCESS, "%s: status %d", what, (int)st);
        got[rep] = ng_test_to_f64(out);
    }
    int64_t n = out->numel;
    double *ref = malloc(8 * (size_t)n), *exp = malloc(8 * (size_t)n);
    if (pass == FWD) {
        direct(s, xh, wh, ref);
    } else { /* y holds dy for the backward passes */
        int64_t nx = x->numel, nw = w->numel;
        double *dx = malloc(8 * (size_t)nx), *dw = malloc(8 * (size_t)nw);
        adjoints(s, xh, wh, yh, dx, dw);
        memcpy(ref, pass == DATA ? dx : dw, 8 * (size_t)n);
        free(dx), free(dw);
    }
    blend(exp, ref, before, n, a, b);
    double scale = 0;
    for (int64_t i = 0; i < n; i++) scale = fmax(scale, fabs(exp[i]));
    ng_test_close(what, exp, got[0], n, tol(dt), tol(dt) * (scale + 1));
    if (det) {
        NG_TEST(!memcmp(got[0], got[1], 8 * (size_t)n),
                "%s: a deterministic algorithm gave other bits on a second call", what);
    }
    if (ws_size) { /* the scratch is garbage after the call */
        int64_t nf = (int64_t)(ws_size / 4);
        ng_tensor wt = ng_tensor_wrap(ws, NG_F32, NG_CUDA, 1, &nf, "workspace");
        double *wv = ng_test_to_f64(&wt);
        NG_TEST(nf == 0 || isnan(wv[0]), "%s: the workspace was left as it was", what);
        free(wv);
    }
    ng_tensor_free(&keep);
    free(xh), free(wh), free(yh), free(before), free(got[0]), free(got[1]), free(ref), free(exp);
}

/* Every algorithm of each pass's heuristics list, as listed (its own math type). */
static void every_algorithm(int nd, ng_dtype dt) {
    shape s = random_shape(nd);
    descs d = make_descs(&s, dt);
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    ng_tensor x = dev_tensor(dt, s.N * s.C * vol(nd, s.in), "x");
    ng_tensor w = dev_tensor(dt, s.K * s.C * vol(nd, s.k), "w");
    ng_tensor y = dev_tensor(dt, s.N * s.K * vol(nd, s.out), "y");
    int n = 0;
    char what[160];
    cudnnConvolutionFwdAlgoPerf_t fp[8];
    NG_TEST(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x, d.w, d.c, d.y, 8, &n, fp) ==
                    CUDNN_STATUS_SUCCESS &&
                n > 0,
            "forward heuristics");
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "%dd %s forward, algorithm %d math %d", nd, ng_dtype_name(dt),
                 (int)fp[i].algo, (int)fp[i].mathType);
        one_pass(what, FWD, fp[i].algo, fp[i].mathType, 1, &s, dt, &d, &x, &w, &y);
    }
    cudnnConvolutionBwdDataAlgoPerf_t dp[8];
    NG_TEST(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w, d.y, d.c, d.x, 8, &n, dp) ==
                    CUDNN_STATUS_SUCCESS &&
                n > 0,
            "backward data heuristics");
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "%dd %s backward data, algorithm %d math %d", nd,
                 ng_dtype_name(dt), (int)dp[i].algo, (int)dp[i].mathType);
        one_pass(what, DATA, dp[i].algo, dp[i].mathType, dp[i].determinism == CUDNN_DETERMINISTIC,
                 &s, dt, &d, &x, &w, &y);
    }
    cudnnConvolutionBwdFilterAlgoPerf_t wp[8];
    NG_TEST(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x, d.y, d.c, d.w, 8, &n, wp) ==
                    CUDNN_STATUS_SUCCESS &&
                n > 0,
            "backward filter heuristics");
    for (int i = 0; i < n; i++) {
        snprintf(what, sizeof what, "%dd %s backward filter, algorithm %d math %d", nd,
                 ng_dtype_name(dt), (int)wp[i].algo, (int)wp[i].mathType);
        one_pass(what, FILTER, wp[i].algo, wp[i].mathType, wp[i].determinism == CUDNN_DETERMINISTIC,
                 &s, dt, &d, &x, &w, &y);
    }
    ng_tensor_free(&x), ng_tensor_free(&w), ng_tensor_free(&y);
    free_descs(&d);
}

/* The non-deterministic weight gradient sums its samples in float in an order that turns from
 * call to call: over a few calls some element's bits change. */
static void nondeterministic_seen(void) {
    shape s = {.nd = 2,
               .N = 3,
               .C = 4,
               .K = 8,
               .in = {12, 12},
               .k = {3, 3},
               .pad = {1, 1},
               .str = {1, 1},
               .dil = {1, 1},
               .out = {12, 12}};
    descs d = make_descs(&s, NG_F32);
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    ng_tensor x = dev_tensor(NG_F32, 3 * 4 * 144, "x"), dy = dev_tensor(NG_F32, 3 * 8 * 144, "dy");
    ng_tensor dw = ng_tensor_1d(NG_F32, NG_CUDA, 8 * 4 * 9, "dw");
    float one = 1, zero = 0;
    double *first = NULL;
    int differs = 0;
    cudnnSetConvolutionMathType(d.c, CUDNN_FMA_MATH);
    for (int rep = 0; rep < 4; rep++) {
        NG_TEST(cudnnConvolutionBackwardFilter(h, &one, d.x, x.data, d.y, dy.data, d.c,
                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, NULL, 0, &zero,
                                               d.w, dw.data) == CUDNN_STATUS_SUCCESS,
                "non-deterministic weight gradient runs");
        double *v = ng_test_to_f64(&dw);
        if (!first)
            first = v;
        else {
            differs |= memcmp(first, v, 8 * (size_t)dw.numel) != 0;
            free(v);
        }
    }
    NG_TEST(differs, "backward filter algorithm 0 (non-deterministic) gave the same bits 4 times");
    free(first);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dw);
    free_descs(&d);
}

/* Misuse, each refused with cuDNN's status. */
static void refusals(void) {
    shape s = {.nd = 2,
               .N = 2,
               .C = 3,
               .K = 4,
               .in = {7, 6},
               .k = {3, 3},
               .pad = {1, 0},
               .str = {1, 2},
               .dil = {1, 1},
               .out = {7, 2}};
    descs d = make_descs(&s, NG_F32);
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    ng_tensor x = dev_tensor(NG_F32, 2 * 3 * 42, "x"), w = dev_tensor(NG_F32, 4 * 3 * 9, "w");
    ng_tensor y = dev_tensor(NG_F32, 2 * 4 * 14, "y");
    float one = 1, zero = 0;
    cudnnSetConvolutionMathType(d.c, CUDNN_FMA_MATH);
    int algo = CUDNN_CONVOLUTION_FWD_ALGO_GEMM;
    size_t need = 0;
    cudnnGetConvolutionForwardWorkspaceSize(h, d.x, d.w, d.c, d.y, algo, &need);
    NG_TEST(need > 0, "the GEMM forward takes a workspace");
    char *ws = ng_cuda_workspace(need + 4096);
    NG_TEST(cudnnConvolutionForward(h, &one, d.x, x.data, d.w, w.data, d.c, algo, ws, need - 1,
                                    &zero, d.y, y.data) == CUDNN_STATUS_BAD_PARAM,
            "a workspace one byte short is refused");
    float host_x[2 * 3 * 42] = {0};
    NG_TEST(cudnnConvolutionForward(h, &one, d.x, host_x, d.w, w.data, d.c, algo, ws, need, &zero,
                                    d.y, y.data) == CUDNN_STATUS_BAD_PARAM,
            "a host input is refused");
    NG_TEST(cudnnConvolutionForward(h, &one, d.x, x.data, d.w, w.data, d.c, algo, ws, need + 4096,
                                    &zero, d.y, ws + 64) == CUDNN_STATUS_BAD_PARAM,
            "an output inside the algorithm's scratch is refused");
    NG_TEST(cudnnConvolutionForward(h, &one, d.x, x.data, d.w, w.data, d.c, 99, ws, need, &zero,
                                    d.y, y.data) == CUDNN_STATUS_NOT_SUPPORTED,
            "an unknown algorithm is refused");
    /* a y descriptor of the wrong spatial size */
    int bad[4] = {2, 4, 7, 3}, bs[4];
    packed_strides(4, bad, bs);
    cudnnTensorDescriptor_t yb;
    cudnnCreateTensorDescriptor(&yb);
    cudnnSetTensorNdDescriptor(yb, CUDNN_DATA_FLOAT, 4, bad, bs);
    NG_TEST(cudnnConvolutionForward(h, &one, d.x, x.data, d.w, w.data, d.c, algo, ws, need, &zero,
                                    yb, y.data) == CUDNN_STATUS_BAD_PARAM,
            "a y descriptor of the wrong size is refused");
    /* beyond int: 2^31 elements in one tensor */
    int big[4] = {2, 1024, 1024, 1024}, bgs[4];
    packed_strides(4, big, bgs);
    NG_TEST(cudnnSetTensorNdDescriptor(yb, CUDNN_DATA_FLOAT, 4, big, bgs) ==
                CUDNN_STATUS_NOT_SUPPORTED,
            "a tensor of 2^31 elements is refused");
    cudnnDestroyTensorDescriptor(yb);
    /* double data with float arithmetic */
    cudnnConvolutionDescriptor_t cf;
    cudnnCreateConvolutionDescriptor(&cf);
    cudnnSetConvolutionNdDescriptor(cf, 2, s.pad, s.str, s.dil, CUDNN_CROSS_CORRELATION,
                                    CUDNN_DATA_FLOAT);
    descs d64 = make_descs(&s, NG_F64);
    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fp[8];
    NG_TEST(cudnnGetConvolutionForwardAlgorithm_v7(h, d64.x, d64.w, cf, d64.y, 8, &got, fp) ==
                CUDNN_STATUS_NOT_SUPPORTED,
            "f64 data with f32 arithmetic is refused");
    cudnnDestroyConvolutionDescriptor(cf);
    free_descs(&d64);
    ng_tensor_free(&x), ng_tensor_free(&w), ng_tensor_free(&y);
    free_descs(&d);
}

int main(void) {
    ng_test_seed();
    for (int nd = 2; nd <= 3; nd++)
        for (ng_dtype dt = NG_F32; dt <= NG_BF16; dt++) every_algorithm(nd, dt);
    nondeterministic_seen();
    refusals();
    ng_cuda_workspace_release();
    return ng_test_finish("test_cudnn_emu");
}
#endif
