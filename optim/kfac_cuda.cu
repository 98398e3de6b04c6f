/* CUDA twins of K-FAC's element-wise kernels (kfac_kernels.h): grid-stride loops that compute in
 * double with separate roundings, as the CPU twins in kfac_cpu.c do. */
#include <stdint.h>

#include "core/cuda_context.h"
#include "optim/kfac_kernels.h"

#define THREADS 256

template <typename T>
__global__ void fold_kernel(T *F, const T *S, const T *s, double corner, double keep, double w,
                            int first, int64_t K, int64_t d) {
    int64_t n = d * d;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e / d, j = e % d;
        double v = i < K && j < K ? (double)S[i * K + j]
                   : i < K        ? (double)s[i]
                   : j < K        ? (double)s[j]
                                  : corner;
        F[e] = first ? (T)v : (T)__dadd_rn(__dmul_rn(keep, (double)F[e]), __dmul_rn(w, v));
    }
}

template <typename T>
__global__ void eig_divide_kernel(T *X, const T *dG, const T *dA, int sum_mode, double gG,
                                  double gA, double gamma, int64_t m, int64_t n) {
    int64_t total = m * n;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        double g = (double)dG[e / n], a = (double)dA[e % n];
        g = g > 0 ? g : 0;
        a = a > 0 ? a : 0;
        double den = sum_mode ? __dadd_rn(__dmul_rn(g, a), gamma)
                              : __dmul_rn(__dadd_rn(g, gG), __dadd_rn(a, gA));
        X[e] = (T)__ddiv_rn((double)X[e], den);
    }
}

template <typename T>
__global__ void diag_kernel(const T *A, T *d, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        d[i] = A[i * n + i];
}

template <typename T>
__global__ void copy2d_kernel(T *dst, int64_t dst_ld, const T *src, int64_t src_ld, int64_t rows,
                              int64_t cols) {
    int64_t total = rows * cols;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / cols, c = e % cols;
        dst[r * dst_ld + c] = src[r * src_ld + c];
    }
}

extern "C" void ng_kfac_fold_cuda(ng_tensor *F, const ng_tensor *S, const ng_tensor *s,
                                  double corner, double keep, double w, int first) {
    int64_t K = S->shape[0], d = F->shape[0];
    if (!d) return;
    cudaStream_t st = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(d * d, THREADS);
    if (F->dtype == NG_F64)
        fold_kernel<double><<<blocks, THREADS, 0, st>>>((double *)F->data, (const double *)S->data,
                                                        s ? (const double *)s->data : NULL, corner,
                                                        keep, w, first, K, d);
    else
        fold_kernel<float><<<blocks, THREADS, 0, st>>>((float *)F->data, (const float *)S->data,
                                                       s ? (const float *)s->data : NULL, corner,
                                                       keep, w, first, K, d);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_kfac_eig_divide_cuda(ng_tensor *T, const ng_tensor *dG, const ng_tensor *dA,
                                        int sum_mode, double gG, double gA, double gamma) {
    int64_t m = T->shape[0], n = T->shape[1];
    if (!m || !n) return;
    cudaStream_t st = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(m * n, THREADS);
    if (T->dtype == NG_F64)
        eig_divide_kernel<double>
            <<<blocks, THREADS, 0, st>>>((double *)T->data, (const double *)dG->data,
                                         (const double *)dA->data, sum_mode, gG, gA, gamma, m, n);
    else
        eig_divide_kernel<float>
            <<<blocks, THREADS, 0, st>>>((float *)T->data, (const float *)dG->data,
                                         (const float *)dA->data, sum_mode, gG, gA, gamma, m, n);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_kfac_diag_cuda(const ng_tensor *A, ng_tensor *d) {
    int64_t n = A->shape[0];
    if (!n) return;
    cudaStream_t st = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(n, THREADS);
    if (A->dtype == NG_F64)
        diag_kernel<double>
            <<<blocks, THREADS, 0, st>>>((const double *)A->data, (double *)d->data, n);
    else
        diag_kernel<float><<<blocks, THREADS, 0, st>>>((const float *)A->data, (float *)d->data, n);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_kfac_copy2d_cuda(void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                                    int64_t rows, int64_t cols, size_t es) {
    if (!rows || !cols) return;
    cudaStream_t st = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(rows * cols, THREADS);
    switch (es) {
        case 8:
            copy2d_kernel<uint64_t><<<blocks, THREADS, 0, st>>>(
                (uint64_t *)dst, dst_ld, (const uint64_t *)src, src_ld, rows, cols);
            break;
        case 4:
            copy2d_kernel<uint32_t><<<blocks, THREADS, 0, st>>>(
                (uint32_t *)dst, dst_ld, (const uint32_t *)src, src_ld, rows, cols);
            break;
        case 2:
            copy2d_kernel<uint16_t><<<blocks, THREADS, 0, st>>>(
                (uint16_t *)dst, dst_ld, (const uint16_t *)src, src_ld, rows, cols);
            break;
        default:
            ng_fail("kfac: copy of %zu-byte elements", es);
    }
    NG_CUDA_CHECK_LAUNCH();
}
