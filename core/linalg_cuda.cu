/* The kernels of the CUDA linear algebra (its host code, the cuSOLVER calls, is
 * core/linalg_cusolver.c): layout fixes and screens on [b,n,n] f32/f64 row-major buffers. */
#include <limits>

#include "cuda_context.h"
#include "linalg_cuda.h"

static const int kThreads = 256;

/* bad[p] = 1 when the lower triangle of matrix p holds NaN or Inf (only that triangle is input). */
template <typename T>
__global__ void lower_nonfinite_kernel(const T *__restrict__ a, int64_t b, int64_t n, int *bad) {
    int64_t nn = n * n, total = b * nn;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = k % nn, i = r / n, j = r % n;
        if (j <= i && !isfinite(a[k])) bad[k / nn] = 1;
    }
}

/* dst_p = src_p^T for every n x n matrix p. 32x32 tiles staged through shared memory (one column
 * of padding against bank conflicts) keep both reads and writes coalesced. No overlap allowed. */
template <typename T>
__global__ void transpose_kernel(const T *__restrict__ src, T *__restrict__ dst, int64_t b,
                                 int64_t n) {
    __shared__ T tile[32][33];
    int64_t c0 = (int64_t)blockIdx.x * 32, r0 = (int64_t)blockIdx.y * 32;
    for (int64_t p = blockIdx.z; p < b; p += gridDim.z) {
        const T *s = src + p * n * n;
        T *d = dst + p * n * n;
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t r = r0 + k, c = c0 + threadIdx.x;
            if (r < n && c < n) tile[k][threadIdx.x] = s[r * n + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t r = c0 + k, c = r0 + threadIdx.x;
            if (r < n && c < n) d[r * n + c] = tile[threadIdx.x][k];
        }
        __syncthreads(); /* the tile is refilled for the next matrix */
    }
}

/* The row-major strict upper triangle of every matrix: zeroed, or (mirror) copied from the lower
 * one. Only lower elements are read, and only upper ones written, so there is no race. */
template <typename T>
__global__ void upper_kernel(T *x, int64_t b, int64_t n, int mirror) {
    int64_t nn = n * n, total = b * nn;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = k / nn, r = k % nn, i = r / n, j = r % n;
        if (j > i) x[k] = mirror ? x[p * nn + j * n + i] : T(0);
    }
}

template <typename T>
__global__ void nan_kernel(T *x, int64_t count) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < count;
         k += (int64_t)gridDim.x * blockDim.x)
        x[k] = std::numeric_limits<T>::quiet_NaN();
}

static cudaStream_t stream(void) {
    return ng_cuda_ctx()->stream;
}

extern "C" void ng_linalg_cuda_set_upper(void *x, ng_dtype dt, int64_t b, int64_t n, int mirror) {
    unsigned g = ng_cuda_blocks(b * n * n, kThreads);
    if (dt == NG_F64)
        upper_kernel<double><<<g, kThreads, 0, stream()>>>((double *)x, b, n, mirror);
    else
        upper_kernel<float><<<g, kThreads, 0, stream()>>>((float *)x, b, n, mirror);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_linalg_cuda_lower_nonfinite(const void *a, ng_dtype dt, int64_t b, int64_t n,
                                               int *bad) {
    unsigned g = ng_cuda_blocks(b * n * n, kThreads);
    if (dt == NG_F64)
        lower_nonfinite_kernel<double><<<g, kThreads, 0, stream()>>>((const double *)a, b, n, bad);
    else
        lower_nonfinite_kernel<float><<<g, kThreads, 0, stream()>>>((const float *)a, b, n, bad);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_linalg_cuda_transpose(const void *src, void *dst, ng_dtype dt, int64_t b,
                                         int64_t n) {
    dim3 block(32, 8), grid((unsigned)((n + 31) / 32), (unsigned)((n + 31) / 32),
                            (unsigned)(b < 65535 ? b : 65535));
    if (dt == NG_F64)
        transpose_kernel<double>
            <<<grid, block, 0, stream()>>>((const double *)src, (double *)dst, b, n);
    else
        transpose_kernel<float>
            <<<grid, block, 0, stream()>>>((const float *)src, (float *)dst, b, n);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_linalg_cuda_fill_nan(void *x, ng_dtype dt, int64_t count) {
    unsigned g = ng_cuda_blocks(count, kThreads);
    if (dt == NG_F64)
        nan_kernel<double><<<g, kThreads, 0, stream()>>>((double *)x, count);
    else
        nan_kernel<float><<<g, kThreads, 0, stream()>>>((float *)x, count);
    NG_CUDA_CHECK_LAUNCH();
}
