/* GEMM on CUDA through cuBLAS (host code only): natgrad's row-major descriptor (core/backend.h)
 * turned into cuBLAS's column-major call. The emulation build runs this file against the
 * emulated cuBLAS (core/cublas_emu.c). */
#include <limits.h>

#include "backend.h"
#include "cuda_context.h"

static cudaDataType cuda_type(ng_dtype t) {
    switch (t) {
        case NG_F64:
            return CUDA_R_64F;
        case NG_F16:
            return CUDA_R_16F;
        case NG_BF16:
            return CUDA_R_16BF;
        default:
            return CUDA_R_32F;
    }
}

void ng_cuda_gemm(const ng_gemm_desc *d) {
    ng_cuda_context *c = ng_cuda_ctx();
    NG_CHECK(d->m <= INT_MAX && d->n <= INT_MAX && d->k <= INT_MAX && d->lda <= INT_MAX &&
                 d->ldb <= INT_MAX && d->ldc <= INT_MAX && d->batch <= INT_MAX,
             "ng_gemm: [%lld,%lld,%lld] x %lld exceeds the 32-bit sizes of cuBLAS", (long long)d->m,
             (long long)d->n, (long long)d->k, (long long)d->batch);
    if (d->k == 0) { /* C = beta C, by a kernel of ours (ops_cuda.cu) */
        ng_cuda_gemm_beta(d);
        return;
    }
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the row-major buffers
     * read column-major are the transposes, so B goes first with the same transpose flags. */
    cublasOperation_t opa = d->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opb = d->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int m = (int)d->m, n = (int)d->n, k = (int)d->k;
    int lda = d->lda > 1 ? (int)d->lda : 1, ldb = d->ldb > 1 ? (int)d->ldb : 1;
    int ldc = d->ldc > 1 ? (int)d->ldc : 1;
    cudaDataType in = cuda_type(d->in_type), out = cuda_type(d->out_type);
    /* True fp32 (CUBLAS_COMPUTE_32F, not the _FAST_TF32 mode) so that f32 GEMMs match the CPU
     * twin to fp32 accuracy; TF32 could later become a run setting for speed. The scalars'
     * type follows the compute type: float for 32F, double for 64F. */
    int f64 = d->in_type == NG_F64;
    cublasComputeType_t compute = f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
    float alpha_f = (float)d->alpha, beta_f = (float)d->beta;
    double alpha_d = d->alpha, beta_d = d->beta;
    const void *alpha = f64 ? (const void *)&alpha_d : (const void *)&alpha_f;
    const void *beta = f64 ? (const void *)&beta_d : (const void *)&beta_f;
    /* alpha and beta live on the host; another op may have left the handle in device mode. */
    NG_CUBLAS_CHECK(cublasSetPointerMode(c->cublas, CUBLAS_POINTER_MODE_HOST));
    /* cuBLAS does not read C when beta == 0, so NaN there does not leak. */
    if (d->batch == 1) {
        NG_CUBLAS_CHECK(cublasGemmEx(c->cublas, opb, opa, n, m, k, alpha, d->B, in, ldb, d->A, in,
                                     lda, beta, d->C, out, ldc, compute, CUBLAS_GEMM_DEFAULT));
    } else {
        /* A stride of 0 shares that operand across the batch. */
        NG_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            c->cublas, opb, opa, n, m, k, alpha, d->B, in, ldb, (long long)d->stride_b, d->A, in,
            lda, (long long)d->stride_a, beta, d->C, out, ldc, (long long)d->stride_c,
            (int)d->batch, compute, CUBLAS_GEMM_DEFAULT));
    }
}
