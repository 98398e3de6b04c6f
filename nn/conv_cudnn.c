/* cuDNN convolutions of the conv layer on CUDA (host code only): descriptors and algorithms chosen
 * once per input shape and cached in the layer, batches split where a call's tensors would pass
 * cuDNN's int sizes, and half weight gradients written into the workspace and added into the f32
 * master gradient (nn/conv_cuda.cu's one kernel). The emulation build runs this file against the
 * emulated cuDNN (core/cudnn_emu.c). */
#include <stdlib.h>
#include <string.h>

#include "core/cuda_context.h"
#include "nn/conv_kernels.h"

/* Descriptors and algorithms for one input shape (batch included: the batch may be split). */
typedef struct {
    int used, ndim;
    int64_t shape[5];
    ng_dtype dt;
    int fwd_ok, bwd_ok; /* 0 when cuDNN offered no usable algorithm: the im2col path runs */
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t fwd_ws, bwd_data_ws, bwd_filter_ws;
    /* the math type cuDNN judged each algorithm with; one descriptor serves all three, so a half
     * pass sets its algorithm's before the call (f32 keeps FMA math, f64 the default) */
    cudnnMathType_t fwd_math, bwd_data_math, bwd_filter_math;
} conv_plan;

#define PLANS 8 /* shapes remembered per layer; the oldest is replaced */

typedef struct {
    conv_plan p[PLANS];
    int next;
} plan_cache;

static void destroy_plan(conv_plan *p) {
    if (!p->used) return;
    NG_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->xd));
    NG_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->yd));
    NG_CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->wd));
    NG_CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->cd));
    p->used = 0;
}

/* One entry of a cuDNN heuristics list, whichever pass it is of. */
typedef struct {
    cudnnStatus_t status;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
} perf_row;

#define PERF_ROWS(perf, n, rows)                                                                   \
    for (int i_ = 0; i_ < (n); i_++)                                                               \
        (rows)[i_] = (perf_row){(perf)[i_].status, (perf)[i_].memory, (perf)[i_].determinism,      \
                                (perf)[i_].mathType};

/* The preferred usable algorithm of a heuristics list (best first): it must have run status
 * success, fit the workspace cap and, for f32, not use TF32 tensor cores; among those a
 * deterministic one is taken first, for reproducible gradients. -1 when none qualifies. Half
 * types take tensor-core algorithms: their products are exact in f32 and accumulate in f32. */
static int pick(const perf_row *perf, int n, ng_dtype dt) {
    int first = -1;
    for (int i = 0; i < n; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > NG_CUDNN_WORKSPACE_CAP)
            continue;
        if (dt == NG_F32 && (perf[i].math == CUDNN_TENSOR_OP_MATH ||
                             perf[i].math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
            continue;
        if (perf[i].determinism == CUDNN_DETERMINISTIC) return i;
        if (first < 0) first = i;
    }
    return first;
}

static int is_half(ng_dtype dt) {
    return dt == NG_F16 || dt == NG_BF16;
}

/* Before a half pass (or its workspace query): the math type its algorithm was chosen with. */
static void use_math(const conv_plan *p, cudnnMathType_t m) {
    if (is_half(p->dt)) NG_CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, m));
}

static int cudnn_takes(ng_dtype dt) {
    return dt == NG_F32 || dt == NG_F64 || dt == NG_F16 || dt == NG_BF16;
}

static void contiguous(int ndim, const int *dims, int *strides) {
    strides[ndim - 1] = 1;
    for (int i = ndim - 2; i >= 0; i--) strides[i] = strides[i + 1] * dims[i + 1];
}

static void build_plan(conv_plan *p, const ng_conv_geom *g, const int64_t *shape, ng_dtype dt) {
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    int nd = g->nd, ndim = nd + 2;
    int64_t out_sp[3];
    ng_conv_out_spatial(g, shape + 2, out_sp, "conv (cuDNN)");
    int xdims[5], ydims[5], wdims[5], xstr[5], ystr[5], pad[3], str[3], dil[3];
    xdims[0] = ydims[0] = (int)shape[0];
    xdims[1] = (int)g->in_ch, ydims[1] = (int)g->out_ch;
    wdims[0] = (int)g->out_ch, wdims[1] = (int)g->in_ch;
    for (int i = 0; i < nd; i++) {
        xdims[2 + i] = (int)shape[2 + i];
        ydims[2 + i] = (int)out_sp[i];
        wdims[2 + i] = (int)g->kernel[i];
        pad[i] = (int)g->padding[i], str[i] = (int)g->stride[i], dil[i] = (int)g->dilation[i];
    }
    contiguous(ndim, xdims, xstr);
    contiguous(ndim, ydims, ystr);
    /* Tensors in their own type; the arithmetic in double for f64 and float otherwise (cuDNN's
     * "pseudo half" configurations for f16 and bf16). */
    cudnnDataType_t cdt = dt == NG_F64    ? CUDNN_DATA_DOUBLE
                          : dt == NG_F16  ? CUDNN_DATA_HALF
                          : dt == NG_BF16 ? CUDNN_DATA_BFLOAT16
                                          : CUDNN_DATA_FLOAT;
    cudnnDataType_t acc = dt == NG_F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
    NG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->xd));
    NG_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->yd));
    NG_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->wd));
    NG_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->cd));
    p->used = 1;
    NG_CUDNN_CHECK(cudnnSetTensorNdDescriptor(p->xd, cdt, ndim, xdims, xstr));
    NG_CUDNN_CHECK(cudnnSetTensorNdDescriptor(p->yd, cdt, ndim, ydims, ystr));
    NG_CUDNN_CHECK(cudnnSetFilterNdDescriptor(p->wd, cdt, CUDNN_TENSOR_NCHW, ndim, wdims));
    NG_CUDNN_CHECK(
        cudnnSetConvolutionNdDescriptor(p->cd, nd, pad, str, dil, CUDNN_CROSS_CORRELATION, acc));
    /* CUDNN_DEFAULT_MATH lets Ampere and later GPUs run f32 as TF32; FMA math keeps f32 exact
     * so the CPU twin agrees. TF32 is to become a run setting. Half types: tensor cores. */
    NG_CUDNN_CHECK(cudnnSetConvolutionMathType(p->cd, dt == NG_F32   ? CUDNN_FMA_MATH
                                                      : dt == NG_F64 ? CUDNN_DEFAULT_MATH
                                                                     : CUDNN_TENSOR_OP_MATH));
    int got[5];
    NG_CUDNN_CHECK(cudnnGetConvolutionNdForwardOutputDim(p->cd, p->xd, p->wd, ndim, got));
    for (int i = 0; i < ndim; i++)
        NG_CHECK(got[i] == ydims[i],
                 "conv (cuDNN): output dim %d is %d by cuDNN but %d by natgrad's formula", i,
                 got[i], ydims[i]);

    /* The three heuristics queries under the descriptor's math type, then each workspace size
     * under its algorithm's (what the pass will set). */
    int n = 0;
    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    NG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
        h, p->xd, p->wd, p->cd, p->yd, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, fp));
    perf_row rows[CUDNN_CONVOLUTION_FWD_ALGO_COUNT + CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT +
                  CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    PERF_ROWS(fp, n, rows);
    int i = pick(rows, n, dt);
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    NG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, p->wd, p->yd, p->cd, p->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp));
    PERF_ROWS(dp, n, rows);
    int j = pick(rows, n, dt);
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    NG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, p->xd, p->yd, p->cd, p->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp));
    PERF_ROWS(wp, n, rows);
    int k = pick(rows, n, dt);
    p->fwd_ok = i >= 0;
    if (p->fwd_ok) {
        p->fwd = fp[i].algo;
        p->fwd_math = fp[i].mathType;
        use_math(p, p->fwd_math);
        NG_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, p->xd, p->wd, p->cd, p->yd,
                                                               p->fwd, &p->fwd_ws));
    }
    p->bwd_ok = j >= 0 && k >= 0;
    if (p->bwd_ok) {
        p->bwd_data = dp[j].algo;
        p->bwd_filter = wp[k].algo;
        p->bwd_data_math = dp[j].mathType;
        p->bwd_filter_math = wp[k].mathType;
        use_math(p, p->bwd_data_math);
        NG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->wd, p->yd, p->cd, p->xd,
                                                                    p->bwd_data, &p->bwd_data_ws));
        use_math(p, p->bwd_filter_math);
        NG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, p->xd, p->yd, p->cd, p->wd, p->bwd_filter, &p->bwd_filter_ws));
    }
}

/* The plan for an input of `shape` (ndim, dt) with batch nb, built when new; `keep` (a plan the
 * caller still holds) is never the one replaced. */
static conv_plan *get_plan(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                           ng_dtype dt, int64_t nb, const conv_plan *keep) {
    plan_cache *pc = *cache;
    if (!pc) {
        pc = calloc(1, sizeof *pc);
        NG_CHECK(pc, "out of host memory for cuDNN plans");
        *cache = pc;
    }
    int64_t shape[5];
    memcpy(shape, in, sizeof(int64_t) * (size_t)ndim);
    shape[0] = nb;
    for (int i = 0; i < PLANS; i++) {
        conv_plan *p = &pc->p[i];
        if (p->used && p->ndim == ndim && p->dt == dt &&
            !memcmp(p->shape, shape, sizeof(int64_t) * (size_t)ndim))
            return p;
    }
    if (&pc->p[pc->next] == keep) pc->next = (pc->next + 1) % PLANS;
    conv_plan *p = &pc->p[pc->next];
    pc->next = (pc->next + 1) % PLANS;
    destroy_plan(p);
    memset(p, 0, sizeof *p);
    p->ndim = ndim;
    p->dt = dt;
    memcpy(p->shape, shape, sizeof shape);
    build_plan(p, g, shape, dt);
    return p;
}

typedef union {
    float f;
    double d;
} scalar;

static const void *scal(ng_dtype dt, double v, scalar *s) {
    if (dt == NG_F64)
        s->d = v;
    else
        s->f = (float)v;
    return s;
}

/* The full-chunk and tail plans of an input of `shape` split into calls of nb samples; NULL when
 * cuDNN cannot take the dtype or one sample. */
static conv_plan *plans_for(void **cache, const ng_conv_geom *g, int ndim, const int64_t *shape,
                            ng_dtype dt, conv_plan **tail, int64_t *nb) {
    if (!cudnn_takes(dt)) return NULL;
    int64_t N = shape[0], per_x = 1, per_y = g->out_ch, out_sp[3];
    for (int i = 1; i < ndim; i++) per_x *= shape[i];
    ng_conv_out_spatial(g, shape + 2, out_sp, "conv (cuDNN)");
    for (int i = 0; i < g->nd; i++) per_y *= out_sp[i];
    *nb = N ? ng_conv_cudnn_batch(N, per_x, per_y) : 0;
    if (!*nb) return NULL;
    conv_plan *full = get_plan(cache, g, ndim, shape, dt, *nb, NULL);
    *tail = N % *nb ? get_plan(cache, g, ndim, shape, dt, N % *nb, full) : full;
    return full;
}

/* What a half backward asks of the workspace: the filter algorithm's scratch, then dw in the half
 * type. */
static size_t filter_ws(const conv_plan *p, int64_t dw_numel) {
    if (!is_half(p->dt)) return p->bwd_filter_ws;
    return ng_cudnn_dw_offset(p->bwd_filter_ws) + (size_t)dw_numel * ng_dtype_size(p->dt);
}

int64_t ng_conv_cudnn_workspace(void **cache, const ng_conv_geom *g, int ndim, const int64_t *shape,
                                ng_dtype dt, int backward, int need_dx) {
    conv_plan *tail;
    int64_t nb;
    conv_plan *full = plans_for(cache, g, ndim, shape, dt, &tail, &nb);
    if (!full) return -1;
    int64_t dw_numel = g->out_ch * g->in_ch;
    for (int i = 0; i < g->nd; i++) dw_numel *= g->kernel[i];
    size_t ws = 0;
    for (const conv_plan *p = full;; p = tail) {
        if (backward ? !p->bwd_ok : !p->fwd_ok) return -1;
        size_t w = backward ? filter_ws(p, dw_numel) : p->fwd_ws;
        if (backward && need_dx && p->bwd_data_ws > w) w = p->bwd_data_ws;
        if (w > ws) ws = w;
        if (p == tail) break;
    }
    return (int64_t)ws;
}

int ng_conv_cudnn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                          const ng_tensor *w, ng_tensor *y) {
    conv_plan *tail;
    int64_t nb;
    conv_plan *full = plans_for(cache, g, x->ndim, x->shape, x->dtype, &tail, &nb);
    if (!full || !full->fwd_ok || !tail->fwd_ok) return 0;
    int64_t N = x->shape[0], per_x = x->numel / N, per_y = y->numel / N;
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    size_t es = ng_dtype_size(x->dtype);
    scalar one, zero;
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        conv_plan *p = N - n0 >= nb ? full : tail;
        void *ws = p->fwd_ws ? ng_cuda_workspace(p->fwd_ws) : NULL;
        use_math(p, p->fwd_math);
        NG_CUDNN_CHECK(cudnnConvolutionForward(
            h, scal(x->dtype, 1, &one), p->xd, (const char *)x->data + (size_t)(n0 * per_x) * es,
            p->wd, w->data, p->cd, p->fwd, ws, p->fwd_ws, scal(x->dtype, 0, &zero), p->yd,
            (char *)y->data + (size_t)(n0 * per_y) * es));
    }
    return 1;
}

int ng_conv_cudnn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                           const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *dx) {
    conv_plan *tail;
    int64_t nb;
    conv_plan *full = plans_for(cache, g, x->ndim, x->shape, x->dtype, &tail, &nb);
    if (!full || !full->bwd_ok || !tail->bwd_ok) return 0;
    int half = is_half(x->dtype);
    NG_CHECK(!half || dw->dtype == NG_F32,
             "conv (cuDNN): a half-precision backward needs an f32 master gradient, not %s",
             ng_tensor_desc(dw));
    int64_t N = x->shape[0], per_x = x->numel / N, per_y = dy->numel / N;
    cudnnHandle_t h = ng_cuda_ctx()->cudnn;
    size_t es = ng_dtype_size(x->dtype);
    scalar one, zero;
    const void *a1 = scal(x->dtype, 1, &one), *b0 = scal(x->dtype, 0, &zero);
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        conv_plan *p = N - n0 >= nb ? full : tail;
        const void *xs = (const char *)x->data + (size_t)(n0 * per_x) * es;
        const void *dys = (const char *)dy->data + (size_t)(n0 * per_y) * es;
        /* One request for both passes, so the buffer never regrows between them (a regrow
         * syncs the stream); the data pass may reuse the half dw's bytes: the kernel that reads
         * them is queued before it on the same stream. */
        size_t fws = filter_ws(p, dw->numel), need = fws;
        if (dx && p->bwd_data_ws > need) need = p->bwd_data_ws;
        char *ws = need ? ng_cuda_workspace(need) : NULL;
        use_math(p, p->bwd_filter_math);
        if (half) { /* into the half dw after the algorithm's scratch, then added in f32 */
            void *dwh = ws + ng_cudnn_dw_offset(p->bwd_filter_ws);
            NG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, a1, p->xd, xs, p->yd, dys, p->cd,
                                                          p->bwd_filter, ws, p->bwd_filter_ws, b0,
                                                          p->wd, dwh));
            ng_conv_add_widened_cuda(dw, dwh, x->dtype);
        } else { /* beta 1: parameter gradients accumulate */
            NG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, a1, p->xd, xs, p->yd, dys, p->cd,
                                                          p->bwd_filter, ws, p->bwd_filter_ws, a1,
                                                          p->wd, dw->data));
        }
        if (!dx) continue;
        use_math(p, p->bwd_data_math);
        NG_CUDNN_CHECK(cudnnConvolutionBackwardData(
            h, a1, p->wd, w->data, p->yd, dys, p->cd, p->bwd_data, p->bwd_data_ws ? ws : NULL,
            p->bwd_data_ws, b0, p->xd, (char *)dx->data + (size_t)(n0 * per_x) * es));
    }
    return 1;
}

void ng_conv_cudnn_free(void *cache) {
    plan_cache *pc = cache;
    if (!pc) return;
    for (int i = 0; i < PLANS; i++) destroy_plan(&pc->p[i]);
    free(pc);
}
