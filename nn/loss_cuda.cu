/* CUDA twins of the losses (nn/loss.c). Row or block partial results go to the workspace and one
 * block sums them in a fixed order, so a loss is the same bits on every run (no atomics). */
#include <limits.h>
#include <math.h>
#include <stdint.h>

#include "core/cuda_context.h"
#include "core/error.h"
#include "nn/activation_kernels.h"
#include "nn/loss.h"

static const int kReduceThreads = 1024;
static const int kMaxPartials = 1024;

static size_t align_up(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}

struct sum_op {
    template <typename V>
    __device__ V operator()(V a, V b) const {
        return a + b;
    }
};
struct min_op {
    template <typename V>
    __device__ V operator()(V a, V b) const {
        return b < a ? b : a;
    }
};

/* Block-wide reduction; every thread must call it (blockDim a multiple of 32, at most 1024).
 * The result is valid in thread 0. The leading barrier lets one kernel call it repeatedly with
 * the same shared buffer. */
template <typename V, typename Op>
static __device__ V block_reduce(V v, Op op, V identity, V *smem) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? smem[lane] : identity;
        for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/* ---- softmax cross-entropy ----------------------------------------------------------------- */

/* One warp per row (rows grid-strided by warp, so the loop is warp-uniform). Writes the row's loss
 * and a flag: 1 when the first argmax is the label, 0 when not, -1 for a label outside [0, C).
 * The argmax reduction keeps the larger value and, on ties, the smaller index: the CPU's first
 * strict maximum. */
template <typename T>
__global__ void xent_rows_kernel(const T *z, const int32_t *labels, T *dz, int64_t rows,
                                 int64_t cols, double on, double off, double scale,
                                 double *row_loss, int *row_flag) {
    typedef typename ng_acc<T>::type A;
    const int lane = threadIdx.x & 31;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += nwarps) {
        const int64_t y = labels[r];
        if (y < 0 || y >= cols) {
            if (lane == 0) row_loss[r] = 0, row_flag[r] = -1;
            continue;
        }
        const T *zr = z + r * cols;
        A m = -INFINITY;
        long long arg = cols; /* "none yet": loses every tie */
        for (int64_t j = lane; j < cols; j += 32) {
            A v = ng_ld(zr, j);
            if (v > m) m = v, arg = j;
        }
        for (int o = 16; o > 0; o >>= 1) {
            A om = __shfl_xor_sync(0xffffffffu, m, o);
            long long oa = __shfl_xor_sync(0xffffffffu, arg, o);
            if (om > m || (om == m && oa < arg)) m = om, arg = oa;
        }
        if (arg == cols) arg = 0; /* no value above -inf (all -inf or NaN): the CPU says 0 */
        A s = 0, shifted = 0;
        for (int64_t j = lane; j < cols; j += 32) {
            A v = (A)ng_ld(zr, j) - m;
            s += ng_exp(v);
            shifted += v;
        }
        s = ng_warp_sum(s);
        shifted = ng_warp_sum(shifted);
        if (lane == 0) {
            A zy = (A)ng_ld(zr, y) - m;
            row_loss[r] = (double)(ng_log(s) - A(on) * zy - A(off) * shifted);
            row_flag[r] = arg == y ? 1 : 0;
        }
        if (dz) {
            T *dr = dz + r * cols;
            A inv = A(1) / s;
            for (int64_t j = lane; j < cols; j += 32) {
                A p = ng_exp((A)ng_ld(zr, j) - m) * inv;
                A t = A(off) + (j == y ? A(on) : A(0));
                ng_st(dr, j, (p - t) * A(scale));
            }
        }
    }
}

__global__ void xent_reduce_kernel(const double *row_loss, const int *row_flag,
                                   const int32_t *labels, int64_t rows, ng_xent_result *out) {
    __shared__ double sd[32];
    __shared__ long long sl[32];
    double s = 0;
    long long c = 0, bad = LLONG_MAX;
    for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
        s += row_loss[i];
        int f = row_flag[i];
        if (f > 0) c++;
        if (f < 0 && i < bad) bad = i;
    }
    s = block_reduce(s, sum_op(), 0.0, sd);
    c = block_reduce(c, sum_op(), 0LL, sl);
    bad = block_reduce(bad, min_op(), LLONG_MAX, sl);
    if (threadIdx.x == 0) {
        out->loss_sum = s;
        out->correct = c;
        out->bad_row = bad == LLONG_MAX ? -1 : bad;
        out->bad_label = bad == LLONG_MAX ? 0 : labels[bad];
    }
}

extern "C" ng_xent_result ng_cuda_softmax_xent(const ng_tensor *logits, const ng_tensor *labels,
                                               double eps, ng_tensor *dlogits, double grad_scale) {
    int64_t rows = logits->shape[0], cols = logits->shape[1];
    cudaStream_t st = ng_cuda_ctx()->stream;
    size_t loss_off, flag_off; /* the layout the memory plan counts */
    char *ws = (char *)ng_cuda_workspace(ng_xent_cuda_workspace(rows, &loss_off, &flag_off));
    ng_xent_result *out = (ng_xent_result *)ws;
    double *row_loss = (double *)(ws + loss_off);
    int *row_flag = (int *)(ws + flag_off);
    double on = 1.0 - eps, off = eps / (double)cols;
    NG_ACT_FLOAT_SWITCH(logits->dtype, "ng_softmax_xent", {
        xent_rows_kernel<T><<<ng_cuda_blocks(rows * 32, NG_ACT_THREADS), NG_ACT_THREADS, 0, st>>>(
            (const T *)logits->data, (const int32_t *)labels->data,
            dlogits ? (T *)dlogits->data : (T *)NULL, rows, cols, on, off, grad_scale, row_loss,
            row_flag);
        NG_CUDA_CHECK_LAUNCH();
    });
    xent_reduce_kernel<<<1, kReduceThreads, 0, st>>>(row_loss, row_flag,
                                                     (const int32_t *)labels->data, rows, out);
    NG_CUDA_CHECK_LAUNCH();
    ng_xent_result r;
    NG_CUDA_CHECK(cudaMemcpyAsync(&r, out, sizeof r, cudaMemcpyDeviceToHost, st));
    NG_CUDA_CHECK(cudaStreamSynchronize(st));
    return r;
}

/* ---- mean squared error -------------------------------------------------------------------- */

/* Differences in double, as on the CPU, so dy is the same bits on both twins. One partial sum per
 * block; the grid size depends on n alone, so the summation order is fixed. */
template <typename T>
__global__ void mse_kernel(const T *y, const T *t, T *dy, int64_t n, double scale,
                           double *partial) {
    __shared__ double sd[32];
    double s = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        double d = (double)ng_ld(y, i) - (double)ng_ld(t, i);
        s += d * d;
        if (dy) ng_st_d(dy, i, 2.0 * d * scale);
    }
    s = block_reduce(s, sum_op(), 0.0, sd);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(const double *partial, int n, double *out) {
    __shared__ double sd[32];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_reduce(s, sum_op(), 0.0, sd);
    if (threadIdx.x == 0) *out = s;
}

extern "C" double ng_cuda_mse(const ng_tensor *y, const ng_tensor *t, ng_tensor *dy,
                              double grad_scale) {
    int64_t n = y->numel;
    cudaStream_t st = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(n, NG_ACT_THREADS);
    if (blocks > (unsigned)kMaxPartials) blocks = kMaxPartials;
    size_t part_off = align_up(sizeof(double));
    char *ws = (char *)ng_cuda_workspace(part_off + sizeof(double) * blocks);
    double *out = (double *)ws, *partial = (double *)(ws + part_off);
    NG_ACT_FLOAT_SWITCH(y->dtype, "ng_mse", {
        mse_kernel<T><<<blocks, NG_ACT_THREADS, 0, st>>>((const T *)y->data, (const T *)t->data,
                                                         dy ? (T *)dy->data : (T *)NULL, n,
                                                         grad_scale, partial);
        NG_CUDA_CHECK_LAUNCH();
    });
    sum_partials_kernel<<<1, kReduceThreads, 0, st>>>(partial, (int)blocks, out);
    NG_CUDA_CHECK_LAUNCH();
    double r;
    NG_CUDA_CHECK(cudaMemcpyAsync(&r, out, sizeof r, cudaMemcpyDeviceToHost, st));
    NG_CUDA_CHECK(cudaStreamSynchronize(st));
    return r;
}
