/* CUDA twins of the conv layer: cuDNN convolutions (descriptors and algorithms chosen once per
 * input shape and cached in the layer), and the patch kernels of the im2col path. */
#include <stdlib.h>
#include <string.h>

#include "core/cuda_context.h"
#include "nn/activation_kernels.h"
#include "nn/conv_kernels.h"

#define THREADS 256

/* ---- patch kernels ------------------------------------------------------------------------- */

/* One thread per element of cols [np, K]; xs is sample n of x. Consecutive threads take
 * consecutive columns, so writes coalesce and reads walk along kw. */
template <typename T>
__global__ void im2col_kernel(const T *__restrict__ xs, ng_win3 w, int64_t p0, int64_t np,
                              int64_t K, T *__restrict__ cols) {
    int64_t kk = w.k[0] * w.k[1] * w.k[2], total = np * K;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / K, j = i - r * K, p = p0 + r;
        int64_t ow = p % w.out[2], t = p / w.out[2], oh = t % w.out[1], od = t / w.out[1];
        int64_t c = j / kk, q = j - c * kk;
        int64_t kw = q % w.k[2], t2 = q / w.k[2], kh = t2 % w.k[1], kd = t2 / w.k[1];
        int64_t id = od * w.s[0] - w.p[0] + kd * w.d[0];
        int64_t ih = oh * w.s[1] - w.p[1] + kh * w.d[1];
        int64_t iw = ow * w.s[2] - w.p[2] + kw * w.d[2];
        T v = T(0);
        if (id >= 0 && id < w.in[0] && ih >= 0 && ih < w.in[1] && iw >= 0 && iw < w.in[2])
            v = xs[((c * w.in[0] + id) * w.in[1] + ih) * w.in[2] + iw];
        cols[i] = v;
    }
}

/* The input box [lo, lo + n) per dim that output positions [p0, p0 + np) read. */
struct box3 {
    int64_t lo[3], n[3];
};

/* col2im as a gather, one thread per input element of the box: it sums the column entries that
 * came from it, in kernel order, so the result does not depend on thread timing (no atomics). */
template <typename T>
__global__ void col2im_kernel(const T *__restrict__ dcols, ng_win3 w, int64_t p0, int64_t np,
                              int64_t K, box3 b, T *__restrict__ dxs) {
    int64_t total = w.C * b.n[0] * b.n[1] * b.n[2];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t iw = b.lo[2] + i % b.n[2], t = i / b.n[2];
        int64_t ih = b.lo[1] + t % b.n[1];
        t /= b.n[1];
        int64_t id = b.lo[0] + t % b.n[0], c = t / b.n[0];
        double acc = 0;
        for (int64_t kd = 0; kd < w.k[0]; kd++) {
            int64_t nd_ = id + w.p[0] - kd * w.d[0];
            if (nd_ < 0 || nd_ % w.s[0]) continue;
            int64_t od = nd_ / w.s[0];
            if (od >= w.out[0]) continue;
            for (int64_t kh = 0; kh < w.k[1]; kh++) {
                int64_t nh = ih + w.p[1] - kh * w.d[1];
                if (nh < 0 || nh % w.s[1]) continue;
                int64_t oh = nh / w.s[1];
                if (oh >= w.out[1]) continue;
                for (int64_t kw = 0; kw < w.k[2]; kw++) {
                    int64_t nw = iw + w.p[2] - kw * w.d[2];
                    if (nw < 0 || nw % w.s[2]) continue;
                    int64_t ow = nw / w.s[2];
                    if (ow >= w.out[2]) continue;
                    int64_t p = (od * w.out[1] + oh) * w.out[2] + ow;
                    if (p < p0 || p >= p0 + np) continue;
                    acc += (double)ng_ld(
                        dcols, (p - p0) * K + ((c * w.k[0] + kd) * w.k[1] + kh) * w.k[2] + kw);
                }
            }
        }
        int64_t xi = ((c * w.in[0] + id) * w.in[1] + ih) * w.in[2] + iw;
        ng_st_d(dxs, xi, (double)ng_ld(dxs, xi) + acc); /* one rounding, halves too */
    }
}

template <typename T>
__global__ void bias_add_kernel(T *__restrict__ y, const T *__restrict__ b, int64_t O, int64_t P,
                                int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        ng_st(y, i, ng_ld(y, i) + ng_ld(b, (i / P) % O));
}

template <typename T>
__global__ void bias_grad_finish(const double *__restrict__ sums, T *__restrict__ db, int64_t O) {
    int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (o < O) db[o] = (T)((double)db[o] + sums[2 * o]);
}

static cudaStream_t stream() {
    return ng_cuda_ctx()->stream;
}

template <typename T>
static void im2col_launch(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                          ng_tensor *cols) {
    int64_t K = w->C * ng_win3_k_size(w), total = np * K;
    const T *xs = (const T *)x->data + n * w->C * ng_win3_in_size(w);
    im2col_kernel<T><<<ng_cuda_blocks(total, THREADS), THREADS, 0, stream()>>>(xs, *w, p0, np, K,
                                                                               (T *)cols->data);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_im2col_cuda(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0,
                               int64_t np, ng_tensor *cols) {
    if (np <= 0) return;
    switch (x->dtype) {
        case NG_F32:
            im2col_launch<float>(x, n, w, p0, np, cols);
            break;
        case NG_F64:
            im2col_launch<double>(x, n, w, p0, np, cols);
            break;
        case NG_F16:
        case NG_BF16: /* a copy of the bits: 16-bit words will do */
            im2col_launch<unsigned short>(x, n, w, p0, np, cols);
            break;
        default:
            ng_fail("ng_im2col: CUDA twin takes a floating type, not %s", ng_dtype_name(x->dtype));
    }
}

/* The input box read by output positions [p0, p0 + np); 0 when it is empty. */
static int input_box(const ng_win3 *w, int64_t p0, int64_t np, box3 *b) {
    int64_t a = p0, z = p0 + np - 1, lo[3], hi[3];
    int64_t ao[3] = {a / (w->out[1] * w->out[2]), a / w->out[2] % w->out[1], a % w->out[2]};
    int64_t zo[3] = {z / (w->out[1] * w->out[2]), z / w->out[2] % w->out[1], z % w->out[2]};
    /* Whole rows (or planes) below the first dim in which the two ends differ. */
    int split = ao[0] != zo[0] ? 0 : ao[1] != zo[1] ? 1 : 2;
    for (int i = 0; i < 3; i++) {
        lo[i] = i <= split ? ao[i] : 0;
        hi[i] = i <= split ? zo[i] : w->out[i] - 1;
    }
    for (int i = 0; i < 3; i++) {
        int64_t l = lo[i] * w->s[i] - w->p[i],
                h = hi[i] * w->s[i] - w->p[i] + w->d[i] * (w->k[i] - 1);
        if (l < 0) l = 0;
        if (h > w->in[i] - 1) h = w->in[i] - 1;
        if (l > h) return 0;
        b->lo[i] = l;
        b->n[i] = h - l + 1;
    }
    return 1;
}

template <typename T>
static void col2im_launch(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                          int64_t np, ng_tensor *dx) {
    box3 b;
    if (!input_box(w, p0, np, &b)) return;
    int64_t K = w->C * ng_win3_k_size(w), total = w->C * b.n[0] * b.n[1] * b.n[2];
    T *dxs = (T *)dx->data + n * w->C * ng_win3_in_size(w);
    col2im_kernel<T><<<ng_cuda_blocks(total, THREADS), THREADS, 0, stream()>>>(
        (const T *)dcols->data, *w, p0, np, K, b, dxs);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_col2im_add_cuda(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                                   int64_t np, ng_tensor *dx) {
    if (np <= 0) return;
    NG_ACT_FLOAT_SWITCH(dx->dtype, "conv col2im", col2im_launch<T>(dcols, n, w, p0, np, dx));
}

extern "C" void ng_conv_bias_add_cuda(ng_tensor *y, const ng_tensor *b, int64_t N, int64_t O,
                                      int64_t P) {
    int64_t total = N * O * P;
    if (!total) return;
    unsigned g = ng_cuda_blocks(total, THREADS);
    NG_ACT_FLOAT_SWITCH(y->dtype, "conv bias",
                        bias_add_kernel<T><<<g, THREADS, 0, stream()>>>(
                            (T *)y->data, (const T *)b->data, O, P, total));
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_conv_bias_grad_cuda(const ng_tensor *dy, ng_tensor *db, int64_t N, int64_t O,
                                       int64_t P, ng_tensor *sums) {
    ng_channel_sums_cuda(NG_SUMS_PLAIN, dy, NULL, N, O, P, NULL, (double *)sums->data);
    unsigned g = ng_cuda_blocks(O, THREADS);
    switch (db->dtype) {
        case NG_F32:
            bias_grad_finish<float>
                <<<g, THREADS, 0, stream()>>>((const double *)sums->data, (float *)db->data, O);
            break;
        case NG_F64:
            bias_grad_finish<double>
                <<<g, THREADS, 0, stream()>>>((const double *)sums->data, (double *)db->data, O);
            break;
        default:
            ng_fail("conv: bias CUDA twin takes f32 or f64, not %s", ng_dtype_name(db->dtype));
    }
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_copy_rows_cuda(void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                                  int64_t rows, int64_t cols, size_t es) {
    if (!rows || !cols) return;
    NG_CUDA_CHECK(cudaMemcpy2DAsync(dst, (size_t)dst_ld * es, src, (size_t)src_ld * es,
                                    (size_t)cols * es, (size_t)rows, cudaMemcpyDeviceToDevice,
                                    stream()));
}

/* ---- cuDNN --------------------------------------------------------------------------------- */

/* Descriptors and algorithms for one input shape (batch included: the batch may be split). */
struct conv_plan {
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
};

#define PLANS 8 /* shapes remembered per layer; the oldest is replaced */

struct plan_cache {
    conv_plan p[PLANS];
    int next;
};

static void destroy_plan(conv_plan *p) {
    if (!p->used) return;
    NG_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->xd));
    NG_CUDNN_CHECK(cudnnDestroyTensorDescriptor(p->yd));
    NG_CUDNN_CHECK(cudnnDestroyFilterDescriptor(p->wd));
    NG_CUDNN_CHECK(cudnnDestroyConvolutionDescriptor(p->cd));
    p->used = 0;
}

/* The preferred usable algorithm of a heuristics list (best first): it must have run status
 * success, fit the workspace cap and, for f32, not use TF32 tensor cores; among those a
 * deterministic one is taken first, for reproducible gradients. -1 when none qualifies. Half
 * types take tensor-core algorithms: their products are exact in f32 and accumulate in f32. */
template <typename Perf>
static int pick(const Perf *perf, int n, ng_dtype dt) {
    int first = -1;
    for (int i = 0; i < n; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].memory > NG_CUDNN_WORKSPACE_CAP)
            continue;
        if (dt == NG_F32 && (perf[i].mathType == CUDNN_TENSOR_OP_MATH ||
                             perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION))
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
    int i = pick(fp, n, dt);
    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    NG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
        h, p->wd, p->yd, p->cd, p->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, dp));
    int j = pick(dp, n, dt);
    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    NG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
        h, p->xd, p->yd, p->cd, p->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, wp));
    int k = pick(wp, n, dt);
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
    plan_cache *pc = (plan_cache *)*cache;
    if (!pc) {
        pc = (plan_cache *)calloc(1, sizeof *pc);
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

union scalar {
    float f;
    double d;
};

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

/* dw (f32) += the half weight gradient cuDNN wrote. */
template <typename T>
__global__ void add_widened_kernel(float *__restrict__ dw, const T *__restrict__ h, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dw[i] += ng_ld(h, i);
}

static void add_widened(ng_tensor *dw, const void *h, ng_dtype dt) {
    int64_t n = dw->numel;
    unsigned blocks =
        (unsigned)((n + THREADS - 1) / THREADS < 4096 ? (n + THREADS - 1) / THREADS : 4096);
    if (dt == NG_F16)
        add_widened_kernel<<<blocks, THREADS, 0, stream()>>>((float *)dw->data,
                                                             (const ng_half16 *)h, n);
    else
        add_widened_kernel<<<blocks, THREADS, 0, stream()>>>((float *)dw->data,
                                                             (const ng_bhalf16 *)h, n);
    NG_CUDA_CHECK_LAUNCH();
}

/* What a half backward asks of the workspace: the filter algorithm's scratch, then dw in the half
 * type. */
static size_t filter_ws(const conv_plan *p, int64_t dw_numel) {
    if (!is_half(p->dt)) return p->bwd_filter_ws;
    return ng_cudnn_dw_offset(p->bwd_filter_ws) + (size_t)dw_numel * ng_dtype_size(p->dt);
}

extern "C" int64_t ng_conv_cudnn_workspace(void **cache, const ng_conv_geom *g, int ndim,
                                           const int64_t *shape, ng_dtype dt, int backward,
                                           int need_dx) {
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

extern "C" int ng_conv_cudnn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
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

extern "C" int ng_conv_cudnn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                                      const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw,
                                      ng_tensor *dx) {
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
        char *ws = need ? (char *)ng_cuda_workspace(need) : NULL;
        use_math(p, p->bwd_filter_math);
        if (half) { /* into the half dw after the algorithm's scratch, then added in f32 */
            void *dwh = ws + ng_cudnn_dw_offset(p->bwd_filter_ws);
            NG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(h, a1, p->xd, xs, p->yd, dys, p->cd,
                                                          p->bwd_filter, ws, p->bwd_filter_ws, b0,
                                                          p->wd, dwh));
            add_widened(dw, dwh, x->dtype);
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

extern "C" void ng_conv_cudnn_free(void *cache) {
    plan_cache *pc = (plan_cache *)cache;
    if (!pc) return;
    for (int i = 0; i < PLANS; i++) destroy_plan(&pc->p[i]);
    free(pc);
}
