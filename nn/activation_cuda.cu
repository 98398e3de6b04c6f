/* CUDA twins of the activation kernels (nn/activation.c): grid-stride element-wise kernels,
 * dropout from Philox blocks, and row softmax with one warp per row. */
#include <math.h>
#include <stdint.h>

#include "core/cuda_context.h"
#include "core/error.h"
#include "nn/activation_kernels.h"

/* ---- ReLU and GELU ------------------------------------------------------------------------- */

template <typename A>
static __device__ __forceinline__ A act_f(int kind, A x) {
    if (kind == NG_ACT_RELU) return x > A(0) ? x : A(0);
    if (kind == NG_ACT_GELU_ERF) return A(0.5) * x * (A(1) + erf(x * A(M_SQRT1_2)));
    A u = A(NG_GELU_TANH_C) * x * (A(1) + A(NG_GELU_TANH_K) * x * x);
    return A(0.5) * x * (A(1) + tanh(u));
}

template <typename A>
static __device__ __forceinline__ A act_df(int kind, A x) {
    if (kind == NG_ACT_RELU) return x > A(0) ? A(1) : A(0);
    if (kind == NG_ACT_GELU_ERF) {
        A cdf = A(0.5) * (A(1) + erf(x * A(M_SQRT1_2)));
        A pdf = ng_exp(A(-0.5) * x * x) * A(0.3989422804014327); /* 1/sqrt(2 pi) */
        return cdf + x * pdf;
    }
    A x2 = x * x, t = tanh(A(NG_GELU_TANH_C) * x * (A(1) + A(NG_GELU_TANH_K) * x2));
    return A(0.5) * (A(1) + t) +
           A(0.5) * x * (A(1) - t * t) * A(NG_GELU_TANH_C) * (A(1) + A(3 * NG_GELU_TANH_K) * x2);
}

template <typename T>
__global__ void act_forward_kernel(int kind, const T *x, T *y, int64_t n) {
    typedef typename ng_acc<T>::type A;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        ng_st(y, i, act_f<A>(kind, ng_ld(x, i)));
}

/* dx may alias dy: each element is read before it is written, by the same thread. */
template <typename T>
__global__ void act_backward_kernel(int kind, const T *x, const T *dy, T *dx, int64_t n) {
    typedef typename ng_acc<T>::type A;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        ng_st(dx, i, ng_ld(dy, i) * act_df<A>(kind, ng_ld(x, i)));
}

extern "C" void ng_cuda_act_forward(ng_act_kind k, const ng_tensor *x, ng_tensor *y) {
    int64_t n = x->numel;
    NG_ACT_FLOAT_SWITCH(x->dtype, "activation forward", {
        act_forward_kernel<T>
            <<<ng_cuda_blocks(n, NG_ACT_THREADS), NG_ACT_THREADS, 0, ng_cuda_ctx()->stream>>>(
                (int)k, (const T *)x->data, (T *)y->data, n);
        NG_CUDA_CHECK_LAUNCH();
    });
}

extern "C" void ng_cuda_act_backward(ng_act_kind k, const ng_tensor *x, const ng_tensor *dy,
                                     ng_tensor *dx) {
    int64_t n = x->numel;
    NG_ACT_FLOAT_SWITCH(x->dtype, "activation backward", {
        act_backward_kernel<T>
            <<<ng_cuda_blocks(n, NG_ACT_THREADS), NG_ACT_THREADS, 0, ng_cuda_ctx()->stream>>>(
                (int)k, (const T *)x->data, (const T *)dy->data, (T *)dx->data, n);
        NG_CUDA_CHECK_LAUNCH();
    });
}

/* ---- dropout ------------------------------------------------------------------------------- */

/* One thread per Philox block (4 elements), the layout of core/rng.h; the product is taken in
 * double, as on the CPU, so both twins round the same value. */
template <typename T>
__global__ void dropout_kernel(const T *x, T *y, int64_t n, ng_rng_key key, double keep,
                               double scale) {
    int64_t nblk = (n + 3) / 4;
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblk;
         b += (int64_t)gridDim.x * blockDim.x) {
        uint32_t w[4];
        ng_rng_block(key, (uint64_t)b, w);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int64_t i = 4 * b + j;
            if (i < n) {
                double v = (double)ng_rng_u01(w[j]) <= keep ? (double)ng_ld(x, i) * scale : 0.0;
                ng_st_d(y, i, v);
            }
        }
    }
}

extern "C" void ng_cuda_dropout(const ng_tensor *x, ng_tensor *y, ng_rng_key key, double keep,
                                double scale) {
    int64_t n = x->numel, nblk = (n + 3) / 4;
    NG_ACT_FLOAT_SWITCH(x->dtype, "dropout", {
        dropout_kernel<T>
            <<<ng_cuda_blocks(nblk, NG_ACT_THREADS), NG_ACT_THREADS, 0, ng_cuda_ctx()->stream>>>(
                (const T *)x->data, (T *)y->data, n, key, keep, scale);
        NG_CUDA_CHECK_LAUNCH();
    });
}

/* ---- row softmax --------------------------------------------------------------------------- */

/* One warp per row, rows grid-strided by warp. The row index is the same for all 32 lanes, so
 * the loop condition is warp-uniform and the shuffles see a converged warp. y may alias x: a
 * lane rereads x[j] just before writing y[j], and every read of the max and sum passes is done
 * by then (the shuffles order them). */
template <typename T>
__global__ void softmax_rows_kernel(const T *x, T *y, int64_t rows, int64_t cols) {
    typedef typename ng_acc<T>::type A;
    const int lane = threadIdx.x & 31;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += nwarps) {
        const T *xr = x + r * cols;
        T *yr = y + r * cols;
        A m = -INFINITY;
        for (int64_t j = lane; j < cols; j += 32) m = fmax(m, (A)ng_ld(xr, j));
        m = ng_warp_max(m);
        A s = 0;
        for (int64_t j = lane; j < cols; j += 32) s += ng_exp((A)ng_ld(xr, j) - m);
        s = ng_warp_sum(s);
        A inv = A(1) / s;
        for (int64_t j = lane; j < cols; j += 32) ng_st(yr, j, ng_exp((A)ng_ld(xr, j) - m) * inv);
    }
}

template <typename T>
__global__ void softmax_rows_backward_kernel(const T *y, const T *dy, T *dx, int64_t rows,
                                             int64_t cols) {
    typedef typename ng_acc<T>::type A;
    const int lane = threadIdx.x & 31;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += nwarps) {
        const T *yr = y + r * cols, *gr = dy + r * cols;
        T *dr = dx + r * cols;
        A dot = 0;
        for (int64_t j = lane; j < cols; j += 32) dot += (A)ng_ld(gr, j) * (A)ng_ld(yr, j);
        dot = ng_warp_sum(dot);
        for (int64_t j = lane; j < cols; j += 32)
            ng_st(dr, j, (A)ng_ld(yr, j) * ((A)ng_ld(gr, j) - dot));
    }
}

/* Blocks for one warp per row. */
static unsigned row_blocks(int64_t rows) {
    return ng_cuda_blocks(rows * 32, NG_ACT_THREADS);
}

extern "C" void ng_cuda_softmax_rows(const ng_tensor *x, ng_tensor *y, int64_t cols) {
    int64_t rows = x->numel / cols;
    NG_ACT_FLOAT_SWITCH(x->dtype, "ng_softmax_rows", {
        softmax_rows_kernel<T><<<row_blocks(rows), NG_ACT_THREADS, 0, ng_cuda_ctx()->stream>>>(
            (const T *)x->data, (T *)y->data, rows, cols);
        NG_CUDA_CHECK_LAUNCH();
    });
}

extern "C" void ng_cuda_softmax_rows_backward(const ng_tensor *y, const ng_tensor *dy,
                                              ng_tensor *dx, int64_t cols) {
    int64_t rows = y->numel / cols;
    NG_ACT_FLOAT_SWITCH(y->dtype, "ng_softmax_rows_backward", {
        softmax_rows_backward_kernel<T>
            <<<row_blocks(rows), NG_ACT_THREADS, 0, ng_cuda_ctx()->stream>>>(
                (const T *)y->data, (const T *)dy->data, (T *)dx->data, rows, cols);
        NG_CUDA_CHECK_LAUNCH();
    });
}
