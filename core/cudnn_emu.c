/* cuDNN's convolution API as the CUDA emulation build runs it (core/cuda_emu.h): the calls the
 * binding (nn/conv_cudnn.c) makes, with the checks cuDNN makes of them, so that the binding's
 * host code (descriptors, algorithm choice, workspace sizes and pointers, batch chunks, math
 * types) runs here as it will on a GPU. The arithmetic is the emulation's own: im2col in double,
 * OpenBLAS's dgemm, one rounding to the output type.
 *
 * What it holds the binding to, beyond cuDNN's argument checks:
 * - Each algorithm of the heuristics lists has its workspace, which depends on the math type the
 *   descriptor has when asked and when run (tensor-op math adds layout copies of x and w); a call
 *   given less than its algorithm needs under the descriptor's math type now is refused, and the
 *   algorithm's scratch is overwritten, so a result placed inside it is lost.
 * - f32 under a math type that allows tensor cores (anything but CUDNN_FMA_MATH) is computed from
 *   operands rounded to TF32, as Ampere and later GPUs run it: a binding that loses FMA math
 *   fails the f32 twin tests.
 * - The non-deterministic algorithms (listed first where cuDNN lists them first) sum in float (in
 *   double for double data) in an order that changes from call to call: gradients from one of
 *   them are not reproducible.
 * - Tensors are limited to 2^31 - 1 elements, as cuDNN's int descriptors are.
 * A refusal prints its reason on stderr and returns cuDNN's status; the binding then fails with
 * the call and the status. */
#include <cblas.h>
#include <cudnn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"
#include "error.h"
#include "half.h"

#define MAXD 8

struct cudnnContext {
    cudaStream_t stream;
};

struct cudnnTensorStruct {
    int set, nd;
    cudnnDataType_t dt;
    int dim[MAXD], str[MAXD];
};

struct cudnnFilterStruct {
    int set, nd;
    cudnnDataType_t dt;
    int dim[MAXD];
};

struct cudnnConvolutionStruct {
    int set, n;
    int pad[3], str[3], dil[3];
    cudnnDataType_t compute;
    cudnnMathType_t math;
};

/* Prints why the emulated library refuses a call (ng_emu_say), then returns its status. */
#define refuse(status, ...) (ng_emu_say("cuDNN", __VA_ARGS__), (status))

const char *cudnnGetErrorString(cudnnStatus_t s) {
    switch (s) {
        case CUDNN_STATUS_SUCCESS:
            return "CUDNN_STATUS_SUCCESS";
        case CUDNN_STATUS_BAD_PARAM:
            return "CUDNN_STATUS_BAD_PARAM (emulated: the reason is printed above)";
        case CUDNN_STATUS_NOT_SUPPORTED:
            return "CUDNN_STATUS_NOT_SUPPORTED (emulated: the reason is printed above)";
        case CUDNN_STATUS_ALLOC_FAILED:
            return "CUDNN_STATUS_ALLOC_FAILED";
        default:
            return "CUDNN_STATUS_INTERNAL_ERROR (emulated)";
    }
}

/* ---- handle and descriptors ----------------------------------------------------------------- */

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
    if (!h) return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnCreate: NULL handle pointer");
    *h = calloc(1, sizeof **h);
    return *h ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;
}

cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
    free(h);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
    if (!h) return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetStream: NULL handle");
    h->stream = s;
    return CUDNN_STATUS_SUCCESS;
}

#define CREATE_DESTROY(Create, Destroy, T)                                                         \
    cudnnStatus_t Create(T *d) {                                                                   \
        if (!d) return refuse(CUDNN_STATUS_BAD_PARAM, #Create ": NULL pointer");                   \
        *d = calloc(1, sizeof **d);                                                                \
        return *d ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_ALLOC_FAILED;                              \
    }                                                                                              \
    cudnnStatus_t Destroy(T d) {                                                                   \
        free(d);                                                                                   \
        return CUDNN_STATUS_SUCCESS;                                                               \
    }
CREATE_DESTROY(cudnnCreateTensorDescriptor, cudnnDestroyTensorDescriptor, cudnnTensorDescriptor_t)
CREATE_DESTROY(cudnnCreateFilterDescriptor, cudnnDestroyFilterDescriptor, cudnnFilterDescriptor_t)
CREATE_DESTROY(cudnnCreateConvolutionDescriptor, cudnnDestroyConvolutionDescriptor,
               cudnnConvolutionDescriptor_t)

static size_t type_size(cudnnDataType_t t) {
    switch (t) {
        case CUDNN_DATA_DOUBLE:
            return 8;
        case CUDNN_DATA_FLOAT:
            return 4;
        case CUDNN_DATA_HALF:
        case CUDNN_DATA_BFLOAT16:
            return 2;
        default:
            return 0;
    }
}

static int64_t count(int nd, const int *dim) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= dim[i];
    return n;
}

cudnnStatus_t cudnnSetTensorNdDescriptor(cudnnTensorDescriptor_t d, cudnnDataType_t dt, int nd,
                                         const int dim[], const int str[]) {
    if (!d || !dim || !str) return refuse(CUDNN_STATUS_BAD_PARAM, "tensor descriptor: NULL");
    if (nd < 3 || nd > MAXD)
        return refuse(CUDNN_STATUS_BAD_PARAM, "tensor descriptor: %d dims (3 to %d)", nd, MAXD);
    if (!type_size(dt))
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "tensor descriptor: data type %d", (int)dt);
    for (int i = 0; i < nd; i++)
        if (dim[i] <= 0 || str[i] <= 0)
            return refuse(CUDNN_STATUS_BAD_PARAM, "tensor descriptor: dim %d is %d, stride %d", i,
                          dim[i], str[i]);
    if (count(nd, dim) > INT32_MAX)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                      "tensor descriptor: %lld elements, beyond cuDNN's 2^31 - 1",
                      (long long)count(nd, dim));
    d->set = 1, d->nd = nd, d->dt = dt;
    memcpy(d->dim, dim, sizeof(int) * (size_t)nd);
    memcpy(d->str, str, sizeof(int) * (size_t)nd);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilterNdDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t dt,
                                         cudnnTensorFormat_t fmt, int nd, const int dim[]) {
    if (!d || !dim) return refuse(CUDNN_STATUS_BAD_PARAM, "filter descriptor: NULL");
    if (nd < 3 || nd > MAXD)
        return refuse(CUDNN_STATUS_BAD_PARAM, "filter descriptor: %d dims (3 to %d)", nd, MAXD);
    if (fmt != CUDNN_TENSOR_NCHW)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "filter descriptor: only NCHW is emulated");
    if (!type_size(dt))
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "filter descriptor: data type %d", (int)dt);
    for (int i = 0; i < nd; i++)
        if (dim[i] <= 0)
            return refuse(CUDNN_STATUS_BAD_PARAM, "filter descriptor: dim %d is %d", i, dim[i]);
    if (count(nd, dim) > INT32_MAX)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "filter descriptor: beyond 2^31 - 1 elements");
    d->set = 1, d->nd = nd, d->dt = dt;
    memcpy(d->dim, dim, sizeof(int) * (size_t)nd);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionNdDescriptor(cudnnConvolutionDescriptor_t d, int n,
                                              const int pad[], const int str[], const int dil[],
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (!d || !pad || !str || !dil)
        return refuse(CUDNN_STATUS_BAD_PARAM, "convolution descriptor: NULL");
    if (n < 2 || n > 3) /* cuDNN's convolutions: 2-D and 3-D (a 1-D one is 2-D of height 1) */
        return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                      "convolution descriptor: %d spatial dims (2 or 3 emulated)", n);
    if (mode != CUDNN_CROSS_CORRELATION)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                      "convolution descriptor: only cross-correlation is emulated");
    for (int i = 0; i < n; i++)
        if (pad[i] < 0 || str[i] <= 0 || dil[i] <= 0)
            return refuse(CUDNN_STATUS_BAD_PARAM,
                          "convolution descriptor: dim %d pad %d stride %d dilation %d", i, pad[i],
                          str[i], dil[i]);
    d->set = 1, d->n = n, d->compute = compute;
    for (int i = 0; i < n; i++) d->pad[i] = pad[i], d->str[i] = str[i], d->dil[i] = dil[i];
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
    if (!d) return refuse(CUDNN_STATUS_BAD_PARAM, "cudnnSetConvolutionMathType: NULL");
    if (m != CUDNN_DEFAULT_MATH && m != CUDNN_TENSOR_OP_MATH &&
        m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && m != CUDNN_FMA_MATH)
        return refuse(CUDNN_STATUS_BAD_PARAM, "math type %d", (int)m);
    d->math = m;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- geometry ------------------------------------------------------------------------------ */

/* One convolution, its 2 or 3 spatial dims carried as three (a leading one of size 1). */
typedef struct {
    int64_t N, C, K, in[3], out[3], k[3], pad[3], str[3], dil[3];
    cudnnDataType_t dt;
    cudnnMathType_t math;
    size_t es;
} geo;

static int64_t out_dim(int64_t in, int64_t k, int64_t pad, int64_t str, int64_t dil) {
    return (in + 2 * pad - dil * (k - 1) - 1) / str + 1;
}

static cudnnStatus_t packed(const char *what, cudnnTensorDescriptor_t t) {
    int64_t s = 1;
    for (int i = t->nd - 1; i >= 0; i--) {
        if (t->str[i] != s)
            return refuse(CUDNN_STATUS_NOT_SUPPORTED,
                          "%s: stride %d of dim %d is not packed NCHW (only packed is emulated)",
                          what, t->str[i], i);
        s *= t->dim[i];
    }
    return CUDNN_STATUS_SUCCESS;
}

/* The geometry of x * w -> y, checked as cuDNN checks it; y may be NULL (the output-dim query).
 */
static cudnnStatus_t geometry(const char *fn, cudnnTensorDescriptor_t x, cudnnFilterDescriptor_t w,
                              cudnnConvolutionDescriptor_t c, cudnnTensorDescriptor_t y, geo *g) {
    if (!x || !w || !c || !x->set || !w->set || !c->set || (y && !y->set))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: a descriptor is NULL or was never set", fn);
    int n = c->n;
    if (x->nd != n + 2 || w->nd != n + 2 || (y && y->nd != n + 2))
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: x has %d dims, w %d, y %d; the convolution has %d spatial dims", fn,
                      x->nd, w->nd, y ? y->nd : -1, n);
    if (w->dt != x->dt || (y && y->dt != x->dt))
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: x, w and y differ in data type", fn);
    int ok = x->dt == CUDNN_DATA_DOUBLE ? c->compute == CUDNN_DATA_DOUBLE
             : x->dt == CUDNN_DATA_HALF
                 ? c->compute == CUDNN_DATA_FLOAT || c->compute == CUDNN_DATA_HALF
                 : c->compute == CUDNN_DATA_FLOAT;
    if (!ok)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: data type %d with compute type %d", fn,
                      (int)x->dt, (int)c->compute);
    if (w->dim[1] != x->dim[1])
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: x has %d channels, w takes %d", fn, x->dim[1],
                      w->dim[1]);
    memset(g, 0, sizeof *g);
    g->N = x->dim[0], g->C = x->dim[1], g->K = w->dim[0];
    g->dt = x->dt, g->math = c->math, g->es = type_size(x->dt);
    for (int i = 0; i < 3; i++) {
        int j = i - (3 - n); /* the descriptor's spatial dim, or < 0 for a leading one */
        g->in[i] = j < 0 ? 1 : x->dim[2 + j];
        g->k[i] = j < 0 ? 1 : w->dim[2 + j];
        g->pad[i] = j < 0 ? 0 : c->pad[j];
        g->str[i] = j < 0 ? 1 : c->str[j];
        g->dil[i] = j < 0 ? 1 : c->dil[j];
        g->out[i] = out_dim(g->in[i], g->k[i], g->pad[i], g->str[i], g->dil[i]);
        if (g->out[i] <= 0)
            return refuse(CUDNN_STATUS_BAD_PARAM, "%s: spatial dim %d has no output", fn, j);
    }
    cudnnStatus_t s = packed(fn, x);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!y) return CUDNN_STATUS_SUCCESS;
    if (y->dim[0] != g->N || y->dim[1] != g->K)
        return refuse(CUDNN_STATUS_BAD_PARAM, "%s: y is [%d, %d, ...], want [%lld, %lld, ...]", fn,
                      y->dim[0], y->dim[1], (long long)g->N, (long long)g->K);
    for (int j = 0; j < n; j++)
        if (y->dim[2 + j] != g->out[3 - n + j])
            return refuse(CUDNN_STATUS_BAD_PARAM, "%s: y's spatial dim %d is %d, want %lld", fn, j,
                          y->dim[2 + j], (long long)g->out[3 - n + j]);
    return packed(fn, y);
}

cudnnStatus_t cudnnGetConvolutionNdForwardOutputDim(const cudnnConvolutionDescriptor_t c,
                                                    const cudnnTensorDescriptor_t x,
                                                    const cudnnFilterDescriptor_t w, int nd,
                                                    int out[]) {
    geo g;
    cudnnStatus_t s = geometry("cudnnGetConvolutionNdForwardOutputDim", x, w, c, NULL, &g);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (nd != c->n + 2 || !out)
        return refuse(CUDNN_STATUS_BAD_PARAM, "output dim query for %d dims, the tensors have %d",
                      nd, c->n + 2);
    out[0] = (int)g.N, out[1] = (int)g.K;
    for (int j = 0; j < c->n; j++) out[2 + j] = (int)g.out[3 - c->n + j];
    return CUDNN_STATUS_SUCCESS;
}

/* ---- algorithms and their workspaces --------------------------------------------------------- */

enum { FWD, BWD_DATA, BWD_FILTER };
enum { WS_NONE, WS_INDEX, WS_COLUMNS };

typedef struct {
    int algo, det;
    cudnnMathType_t math; /* the math type the heuristics judged it under */
    int ws;
} algo_row;

/* Best first, as the heuristics list them, per direction and data type (f32, f64, halves). */
static const algo_row fwd_f32[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 1, CUDNN_TENSOR_OP_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 1, CUDNN_FMA_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, 1, CUDNN_FMA_MATH, WS_COLUMNS},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 1, CUDNN_FMA_MATH, WS_NONE}};
static const algo_row fwd_f64[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, 1, CUDNN_DEFAULT_MATH, WS_COLUMNS},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 1, CUDNN_DEFAULT_MATH, WS_NONE}};
static const algo_row fwd_half[] = {
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 1, CUDNN_TENSOR_OP_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 1, CUDNN_DEFAULT_MATH, WS_NONE}};
static const algo_row data_f32[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0, CUDNN_FMA_MATH, WS_NONE},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1, CUDNN_TENSOR_OP_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1, CUDNN_FMA_MATH, WS_COLUMNS}};
static const algo_row data_f64[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1, CUDNN_DEFAULT_MATH, WS_COLUMNS},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0, CUDNN_DEFAULT_MATH, WS_NONE}};
static const algo_row data_half[] = {
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1, CUDNN_TENSOR_OP_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0, CUDNN_DEFAULT_MATH, WS_NONE}};
static const algo_row filter_f32[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0, CUDNN_FMA_MATH, WS_NONE},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 1, CUDNN_FMA_MATH, WS_COLUMNS},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, 1, CUDNN_FMA_MATH, WS_INDEX}};
static const algo_row filter_f64[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0, CUDNN_DEFAULT_MATH, WS_NONE},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 1, CUDNN_DEFAULT_MATH, WS_COLUMNS}};
static const algo_row filter_half[] = {
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0, CUDNN_TENSOR_OP_MATH, WS_INDEX},
    {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 1, CUDNN_DEFAULT_MATH, WS_COLUMNS}};

#define ROWS(a) a, (int)(sizeof a / sizeof a[0])

typedef struct {
    const algo_row *r;
    int n;
} algo_list;

static const algo_row *rows_of(int dir, cudnnDataType_t dt, int *n) {
    static const algo_list lists[3][3] = {
        {{ROWS(fwd_f32)}, {ROWS(fwd_f64)}, {ROWS(fwd_half)}},
        {{ROWS(data_f32)}, {ROWS(data_f64)}, {ROWS(data_half)}},
        {{ROWS(filter_f32)}, {ROWS(filter_f64)}, {ROWS(filter_half)}}};
    const algo_list *l = &lists[dir][dt == CUDNN_DATA_FLOAT ? 0 : dt == CUDNN_DATA_DOUBLE ? 1 : 2];
    *n = l->n;
    return l->r;
}

static const algo_row *find_algo(int dir, cudnnDataType_t dt, int algo) {
    int n;
    const algo_row *r = rows_of(dir, dt, &n);
    for (int i = 0; i < n; i++)
        if (r[i].algo == algo) return &r[i];
    return NULL;
}

static int64_t k_size(const geo *g) {
    return g->C * g->k[0] * g->k[1] * g->k[2];
}

static int64_t out_size(const geo *g) {
    return g->out[0] * g->out[1] * g->out[2];
}

static int64_t in_size(const geo *g) {
    return g->in[0] * g->in[1] * g->in[2];
}

static int tensor_math(cudnnMathType_t m) {
    return m == CUDNN_TENSOR_OP_MATH || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
}

/* The scratch an algorithm of kind `ws` needs under math type `m`: an index table, or the whole
 * call's columns, plus layout copies of x and w where tensor cores run it. */
static size_t ws_bytes(const geo *g, int ws, cudnnMathType_t m) {
    size_t b = ws == WS_INDEX     ? 8 * (size_t)(k_size(g) + out_size(g))
               : ws == WS_COLUMNS ? (size_t)(g->N * k_size(g) * out_size(g)) * g->es
                                  : 0;
    if (tensor_math(m) && g->dt != CUDNN_DATA_DOUBLE)
        b += (size_t)(g->N * g->C * in_size(g) + g->K * k_size(g)) * g->es;
    return b;
}

static cudnnStatus_t heuristics(const char *fn, int dir, const geo *g, int want, int *got,
                                algo_row *rows, size_t *mem) {
    if (!got || want < 1) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: no room for results", fn);
    int n;
    const algo_row *r = rows_of(dir, g->dt, &n);
    *got = n < want ? n : want;
    for (int i = 0; i < *got; i++) rows[i] = r[i], mem[i] = ws_bytes(g, r[i].ws, r[i].math);
    return CUDNN_STATUS_SUCCESS;
}

#define FILL_PERF(perf, rows, mem, got, Algo)                                                      \
    for (int i = 0; i < got; i++) {                                                                \
        memset(&perf[i], 0, sizeof perf[i]);                                                       \
        perf[i].algo = (Algo)rows[i].algo;                                                         \
        perf[i].status = CUDNN_STATUS_SUCCESS;                                                     \
        perf[i].time = 0.1f * (float)(i + 1);                                                      \
        perf[i].memory = mem[i];                                                                   \
        perf[i].determinism = rows[i].det ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;         \
        perf[i].mathType = rows[i].math;                                                           \
    }

#define MAXROWS 4

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t y, const int want, int *got,
    cudnnConvolutionFwdAlgoPerf_t *perf) {
    const char *fn = "cudnnGetConvolutionForwardAlgorithm_v7";
    geo g;
    algo_row rows[MAXROWS];
    size_t mem[MAXROWS];
    cudnnStatus_t s =
        !h ? refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL handle", fn) : geometry(fn, x, w, c, y, &g);
    if (s == CUDNN_STATUS_SUCCESS) s = heuristics(fn, FWD, &g, want, got, rows, mem);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    FILL_PERF(perf, rows, mem, *got, cudnnConvolutionFwdAlgo_t)
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t dx, const int want,
    int *got, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    const char *fn = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
    geo g;
    algo_row rows[MAXROWS];
    size_t mem[MAXROWS];
    cudnnStatus_t s =
        !h ? refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL handle", fn) : geometry(fn, dx, w, c, dy, &g);
    if (s == CUDNN_STATUS_SUCCESS) s = heuristics(fn, BWD_DATA, &g, want, got, rows, mem);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    FILL_PERF(perf, rows, mem, *got, cudnnConvolutionBwdDataAlgo_t)
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t c, const cudnnFilterDescriptor_t dw, const int want,
    int *got, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    const char *fn = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
    geo g;
    algo_row rows[MAXROWS];
    size_t mem[MAXROWS];
    cudnnStatus_t s =
        !h ? refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL handle", fn) : geometry(fn, x, dw, c, dy, &g);
    if (s == CUDNN_STATUS_SUCCESS) s = heuristics(fn, BWD_FILTER, &g, want, got, rows, mem);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    FILL_PERF(perf, rows, mem, *got, cudnnConvolutionBwdFilterAlgo_t)
    return CUDNN_STATUS_SUCCESS;
}

/* The workspace of `algo` under the descriptor's math type now. */
static cudnnStatus_t ws_query(const char *fn, cudnnHandle_t h, int dir, int algo, const geo *g,
                              size_t *size) {
    if (!h || !size) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL handle or size", fn);
    const algo_row *r = find_algo(dir, g->dt, algo);
    if (!r)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: algorithm %d does not take data type %d", fn,
                      algo, (int)g->dt);
    *size = ws_bytes(g, r->ws, g->math);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t y,
    cudnnConvolutionFwdAlgo_t algo, size_t *size) {
    const char *fn = "cudnnGetConvolutionForwardWorkspaceSize";
    geo g;
    cudnnStatus_t s = geometry(fn, x, w, c, y, &g);
    return s != CUDNN_STATUS_SUCCESS ? s : ws_query(fn, h, FWD, (int)algo, &g, size);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t h, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t c, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *size) {
    const char *fn = "cudnnGetConvolutionBackwardDataWorkspaceSize";
    geo g;
    cudnnStatus_t s = geometry(fn, dx, w, c, dy, &g);
    return s != CUDNN_STATUS_SUCCESS ? s : ws_query(fn, h, BWD_DATA, (int)algo, &g, size);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t h, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t c, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *size) {
    const char *fn = "cudnnGetConvolutionBackwardFilterWorkspaceSize";
    geo g;
    cudnnStatus_t s = geometry(fn, x, dw, c, dy, &g);
    return s != CUDNN_STATUS_SUCCESS ? s : ws_query(fn, h, BWD_FILTER, (int)algo, &g, size);
}

/* ---- the convolutions ------------------------------------------------------------------------ */

static double ld(const void *p, cudnnDataType_t t, int64_t i) {
    switch (t) {
        case CUDNN_DATA_DOUBLE:
            return ((const double *)p)[i];
        case CUDNN_DATA_FLOAT:
            return ((const float *)p)[i];
        case CUDNN_DATA_HALF:
            return ng_f16_to_f32(((const ng_f16 *)p)[i]);
        default:
            return ng_bf16_to_f32(((const ng_bf16 *)p)[i]);
    }
}

static void st(void *p, cudnnDataType_t t, int64_t i, double v) {
    switch (t) {
        case CUDNN_DATA_DOUBLE:
            ((double *)p)[i] = v;
            break;
        case CUDNN_DATA_FLOAT:
            ((float *)p)[i] = (float)v;
            break;
        case CUDNN_DATA_HALF:
            ((ng_f16 *)p)[i] = ng_f32_to_f16((float)v);
            break;
        default:
            ((ng_bf16 *)p)[i] = ng_f32_to_bf16((float)v);
    }
}

/* TF32: float's exponent, 10 mantissa bits, rounded to nearest even. */
static double tf32(double v) {
    uint32_t b = ng_f32_bits((float)v);
    b = (b + 0xFFFu + ((b >> 13) & 1u)) & ~0x1FFFu;
    return ng_bits_f32(b);
}

/* An operand as the arithmetic sees it: f32 under a math type that allows tensor cores is TF32. */
static double operand(const geo *g, const void *p, int64_t i) {
    double v = ld(p, g->dt, i);
    return g->dt == CUDNN_DATA_FLOAT && g->math != CUDNN_FMA_MATH ? tf32(v) : v;
}

static double *widen(const geo *g, const void *p, int64_t n) {
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!d) ng_fail("cuDNN (emulated): out of host memory for %lld doubles", (long long)n);
    for (int64_t i = 0; i < n; i++) d[i] = operand(g, p, i);
    return d;
}

/* The input index (within one sample's channel c plane set) under column row q at output
 * position p, or -1 in the padding. */
static int64_t source(const geo *g, int64_t q, int64_t p) {
    int64_t kk = g->k[0] * g->k[1] * g->k[2], c = q / kk, r = q % kk;
    int64_t kw = r % g->k[2], kh = r / g->k[2] % g->k[1], kd = r / (g->k[2] * g->k[1]);
    int64_t ow = p % g->out[2], oh = p / g->out[2] % g->out[1], od = p / (g->out[2] * g->out[1]);
    int64_t id = od * g->str[0] - g->pad[0] + kd * g->dil[0];
    int64_t ih = oh * g->str[1] - g->pad[1] + kh * g->dil[1];
    int64_t iw = ow * g->str[2] - g->pad[2] + kw * g->dil[2];
    if (id < 0 || id >= g->in[0] || ih < 0 || ih >= g->in[1] || iw < 0 || iw >= g->in[2]) return -1;
    return ((c * g->in[0] + id) * g->in[1] + ih) * g->in[2] + iw;
}

/* cols [Kc, np] of sample n for output positions [p0, p0 + np). */
static void columns(const geo *g, const void *x, int64_t n, int64_t p0, int64_t np, double *cols) {
    int64_t Kc = k_size(g), base = n * g->C * in_size(g);
    for (int64_t q = 0; q < Kc; q++)
        for (int64_t r = 0; r < np; r++) {
            int64_t s = source(g, q, p0 + r);
            cols[q * np + r] = s < 0 ? 0.0 : operand(g, x, base + s);
        }
}

/* Rows [K, np] of sample n of a [N, K, P] tensor. */
static void out_rows(const geo *g, const void *y, int64_t n, int64_t p0, int64_t np, double *o) {
    int64_t P = out_size(g);
    for (int64_t k = 0; k < g->K; k++)
        for (int64_t r = 0; r < np; r++) o[k * np + r] = operand(g, y, (n * g->K + k) * P + p0 + r);
}

/* Output positions per pass: columns of at most 2^24 doubles. */
static int64_t chunk(const geo *g) {
    int64_t w = k_size(g) > g->K ? k_size(g) : g->K, np = ((int64_t)1 << 24) / w;
    int64_t P = out_size(g);
    return np < 1 ? 1 : np > P ? P : np;
}

static void *scratch(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) ng_fail("cuDNN (emulated): out of host memory (%zu bytes)", bytes);
    return p;
}

/* out[i] = alpha acc[i] + beta out[i], one rounding; beta 0 does not read out (cuDNN's rule). */
static void blend(const geo *g, void *out, int64_t off, const double *acc, int64_t n, double alpha,
                  double beta) {
    for (int64_t i = 0; i < n; i++)
        st(out, g->dt, off + i, alpha * acc[i] + (beta != 0 ? beta * ld(out, g->dt, off + i) : 0));
}

static unsigned long calls; /* turns the non-deterministic algorithms' summation order */

static void forward(const geo *g, const void *x, const void *w, void *y, double alpha,
                    double beta) {
    int64_t Kc = k_size(g), P = out_size(g), step = chunk(g);
    double *wd = widen(g, w, g->K * Kc), *cols = scratch(sizeof(double) * (size_t)(Kc * step));
    double *acc = scratch(sizeof(double) * (size_t)(g->K * P));
    for (int64_t n = 0; n < g->N; n++) {
        for (int64_t p0 = 0; p0 < P; p0 += step) {
            int64_t np = P - p0 < step ? P - p0 : step;
            columns(g, x, n, p0, np, cols);
            /* acc[:, p0:p0+np] = W cols */
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->K, (int)np, (int)Kc, 1.0,
                        wd, (int)Kc, cols, (int)np, 0.0, acc + p0, (int)P);
        }
        blend(g, y, n * g->K * P, acc, g->K * P, alpha, beta);
    }
    free(wd), free(cols), free(acc);
}

static void backward_data(const geo *g, const void *w, const void *dy, void *dx, int det,
                          double alpha, double beta) {
    int64_t Kc = k_size(g), P = out_size(g), nin = g->C * in_size(g), step = chunk(g);
    double *wd = widen(g, w, g->K * Kc), *dys = scratch(sizeof(double) * (size_t)(g->K * step));
    double *dcols = scratch(sizeof(double) * (size_t)(Kc * step));
    double *acc = scratch(sizeof(double) * (size_t)nin);
    int64_t rot = det ? 0 : (int64_t)(__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED) % Kc);
    for (int64_t n = 0; n < g->N; n++) {
        memset(acc, 0, sizeof(double) * (size_t)nin);
        for (int64_t p0 = 0; p0 < P; p0 += step) {
            int64_t np = P - p0 < step ? P - p0 : step;
            out_rows(g, dy, n, p0, np, dys);
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Kc, (int)np, (int)g->K, 1.0,
                        wd, (int)Kc, dys, (int)np, 0.0, dcols, (int)np);
            /* col2im; the non-deterministic algorithm adds in float, from a row that turns */
            for (int64_t qq = 0; qq < Kc; qq++) {
                int64_t q = (qq + rot) % Kc;
                for (int64_t r = 0; r < np; r++) {
                    int64_t s = source(g, q, p0 + r);
                    if (s < 0) continue;
                    double v = acc[s] + dcols[q * np + r];
                    acc[s] = det || g->dt == CUDNN_DATA_DOUBLE ? v : (double)(float)v;
                }
            }
        }
        blend(g, dx, n * nin, acc, nin, alpha, beta);
    }
    free(wd), free(dys), free(dcols), free(acc);
}

static void backward_filter(const geo *g, const void *x, const void *dy, void *dw, int det,
                            double alpha, double beta) {
    int64_t Kc = k_size(g), P = out_size(g), step = chunk(g);
    double *cols = scratch(sizeof(double) * (size_t)(Kc * step));
    double *dys = scratch(sizeof(double) * (size_t)(g->K * step));
    double *acc = calloc((size_t)(g->K * Kc), sizeof(double));
    double *part = scratch(sizeof(double) * (size_t)(g->K * Kc));
    if (!acc) ng_fail("cuDNN (emulated): out of host memory");
    int64_t rot = det ? 0 : (int64_t)(__atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED) % g->N);
    for (int64_t nn = 0; nn < g->N; nn++) {
        int64_t n = (nn + rot) % g->N; /* the non-deterministic algorithm's samples, turned */
        for (int64_t p0 = 0; p0 < P; p0 += step) {
            int64_t np = P - p0 < step ? P - p0 : step;
            columns(g, x, n, p0, np, cols);
            out_rows(g, dy, n, p0, np, dys);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->K, (int)Kc, (int)np, 1.0,
                        dys, (int)np, cols, (int)np, det ? 1.0 : 0.0, det ? acc : part, (int)Kc);
            if (!det) /* partial sums added in float (in double for double data) */
                for (int64_t i = 0; i < g->K * Kc; i++)
                    acc[i] = g->dt == CUDNN_DATA_DOUBLE ? acc[i] + part[i]
                                                        : (double)(float)(acc[i] + part[i]);
        }
    }
    blend(g, dw, 0, acc, g->K * Kc, alpha, beta);
    free(cols), free(dys), free(acc), free(part);
}

static int overlap(const void *a, size_t na, const void *b, size_t nb) {
    const char *x = a, *y = b;
    return a && b && na && nb && x < y + nb && y < x + na;
}

/* The checks of one call before it runs: handle, algorithm, workspace, device pointers. `out` is
 * the written tensor, in[0..1] the read ones. */
static cudnnStatus_t check_call(const char *fn, cudnnHandle_t h, int dir, int algo, const geo *g,
                                const void *const in[2], const size_t in_bytes[2], const void *out,
                                size_t out_bytes, const void *ws, size_t ws_size,
                                const algo_row **row) {
    if (!h) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL handle", fn);
    *row = find_algo(dir, g->dt, algo);
    if (!*row)
        return refuse(CUDNN_STATUS_NOT_SUPPORTED, "%s: algorithm %d does not take data type %d", fn,
                      algo, (int)g->dt);
    size_t need = ws_bytes(g, (*row)->ws, g->math);
    if (ws_size < need)
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: algorithm %d under math type %d needs %zu bytes of workspace, was given "
                      "%zu",
                      fn, algo, (int)g->math, need, ws_size);
    if (ws_size && (!ws || !ng_emu_is_device(ws, ws_size)))
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: the workspace (%p, %zu bytes) is not one block of device memory", fn, ws,
                      ws_size);
    for (int i = 0; i < 2; i++)
        if (!in[i] || !ng_emu_is_device(in[i], in_bytes[i]))
            return refuse(CUDNN_STATUS_BAD_PARAM,
                          "%s: input %d (%p, %zu bytes) is not in one block of device memory", fn,
                          i, in[i], in_bytes[i]);
    if (!out || !ng_emu_is_device(out, out_bytes))
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: the output (%p, %zu bytes) is not in one block of device memory", fn,
                      out, out_bytes);
    if (overlap(out, out_bytes, ws, need))
        return refuse(CUDNN_STATUS_BAD_PARAM,
                      "%s: the output lies in the algorithm's scratch (workspace bytes 0 to %zu)",
                      fn, need);
    for (int i = 0; i < 2; i++)
        if (overlap(out, out_bytes, in[i], in_bytes[i]))
            return refuse(CUDNN_STATUS_BAD_PARAM, "%s: the output overlaps input %d", fn, i);
    return CUDNN_STATUS_SUCCESS;
}

static void scalars(const geo *g, const void *alpha, const void *beta, double *a, double *b) {
    int d = g->dt == CUDNN_DATA_DOUBLE; /* double scalars for double data, float otherwise */
    *a = d ? *(const double *)alpha : *(const float *)alpha;
    *b = d ? *(const double *)beta : *(const float *)beta;
}

/* After the arithmetic: the algorithm's scratch holds garbage, as it would after a GPU run. */
static void clobber(const geo *g, const algo_row *r, void *ws) {
    size_t need = ws_bytes(g, r->ws, g->math);
    if (need) memset(ws, 0xff, need); /* NaN in every float type */
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_size,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
    const char *fn = "cudnnConvolutionForward";
    geo g;
    const algo_row *r;
    cudnnStatus_t s = geometry(fn, xd, wd, cd, yd, &g);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL alpha or beta", fn);
    const void *in[2] = {x, w};
    size_t in_b[2] = {(size_t)(g.N * g.C * in_size(&g)) * g.es, (size_t)(g.K * k_size(&g)) * g.es};
    s = check_call(fn, h, FWD, (int)algo, &g, in, in_b, y,
                   (size_t)(g.N * g.K * out_size(&g)) * g.es, ws, ws_size, &r);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    double a, b;
    scalars(&g, alpha, beta, &a, &b);
    ng_emu_enter();
    forward(&g, x, w, y, a, b);
    clobber(&g, r, ws);
    ng_emu_leave();
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           const cudnnFilterDescriptor_t wd, const void *w,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t ws_size, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    const char *fn = "cudnnConvolutionBackwardData";
    geo g;
    const algo_row *r;
    cudnnStatus_t s = geometry(fn, dxd, wd, cd, dyd, &g);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL alpha or beta", fn);
    const void *in[2] = {w, dy};
    size_t in_b[2] = {(size_t)(g.K * k_size(&g)) * g.es, (size_t)(g.N * g.K * out_size(&g)) * g.es};
    s = check_call(fn, h, BWD_DATA, (int)algo, &g, in, in_b, dx,
                   (size_t)(g.N * g.C * in_size(&g)) * g.es, ws, ws_size, &r);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    double a, b;
    scalars(&g, alpha, beta, &a, &b);
    ng_emu_enter();
    backward_data(&g, w, dy, dx, r->det, a, b);
    clobber(&g, r, ws);
    ng_emu_leave();
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x,
                                             const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t ws_size, const void *beta,
                                             const cudnnFilterDescriptor_t dwd, void *dw) {
    const char *fn = "cudnnConvolutionBackwardFilter";
    geo g;
    const algo_row *r;
    cudnnStatus_t s = geometry(fn, xd, dwd, cd, dyd, &g);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return refuse(CUDNN_STATUS_BAD_PARAM, "%s: NULL alpha or beta", fn);
    const void *in[2] = {x, dy};
    size_t in_b[2] = {(size_t)(g.N * g.C * in_size(&g)) * g.es,
                      (size_t)(g.N * g.K * out_size(&g)) * g.es};
    s = check_call(fn, h, BWD_FILTER, (int)algo, &g, in, in_b, dw,
                   (size_t)(g.K * k_size(&g)) * g.es, ws, ws_size, &r);
    if (s != CUDNN_STATUS_SUCCESS) return s;
    double a, b;
    scalars(&g, alpha, beta, &a, &b);
    ng_emu_enter();
    backward_filter(&g, x, dy, dw, r->det, a, b);
    clobber(&g, r, ws);
    ng_emu_leave();
    return CUDNN_STATUS_SUCCESS;
}
