/* The emulated cuBLAS of the emulation build (core/cublas_emu.c), called directly: GemmEx and
 * GemmStridedBatchedEx, column-major, against products summed here in double (random sizes with
 * 0 among them, both transposes, padded leading dimensions, batches with shared operands, alpha
 * and beta, every type pair natgrad uses), TF32 against operands rounded here, the split-K
 * reduction in the output type where reduced-precision reductions are allowed, and the misuse
 * cuBLAS refuses. Skipped outside the emulation build. */
#include <stdio.h>

#include "testing.h"

#ifndef NG_CUDA_EMU
int main(void) {
    printf("test_cublas_emu: skipped (only the CUDA emulation build emulates cuBLAS)\n");
    return 77;
}
#else
#include <cublas_v2.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cuda_context.h"
#include "core/half.h"

static ng_dtype of(cudaDataType t) {
    return t == CUDA_R_64F ? NG_F64 : t == CUDA_R_32F ? NG_F32 : t == CUDA_R_16F ? NG_F16 : NG_BF16;
}

static double round_to(ng_dtype t, double v) {
    float f = (float)v;
    return t == NG_F16    ? ng_f16_to_f32(ng_f32_to_f16(f))
           : t == NG_BF16 ? ng_bf16_to_f32(ng_f32_to_bf16(f))
           : t == NG_F32  ? f
                          : v;
}

typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc, batch;
    long long sa, sb, sc;
} dims;

static int64_t extent(int rows, int cols, int ld, long long s, int batch) {
    return (int64_t)(batch - 1) * s + (int64_t)(cols > 0 ? cols - 1 : 0) * ld + rows + 1;
}

static dims random_dims(void) {
    dims d = {.ta = ng_test_int(0, 1),
              .tb = ng_test_int(0, 1),
              .m = ng_test_int(0, 9),
              .n = ng_test_int(0, 9),
              .k = ng_test_int(0, 9),
              .batch = ng_test_int(1, 3)};
    int ra = d.ta ? d.k : d.m, rb = d.tb ? d.n : d.k;
    d.lda = (ra > 1 ? ra : 1) + ng_test_int(0, 2), d.ldb = (rb > 1 ? rb : 1) + ng_test_int(0, 2);
    d.ldc = (d.m > 1 ? d.m : 1) + ng_test_int(0, 2);
    int ca = d.ta ? d.m : d.k, cb = d.tb ? d.k : d.n;
    d.sa = ng_test_int(0, 3) ? (long long)d.lda * (ca > 0 ? ca : 1) + ng_test_int(0, 2)
                             : 0; /* 0: shared */
    d.sb = ng_test_int(0, 3) ? (long long)d.ldb * (cb > 0 ? cb : 1) + ng_test_int(0, 2) : 0;
    d.sc = (long long)d.ldc * (d.n > 0 ? d.n : 1) + ng_test_int(0, 2);
    return d;
}

/* C = alpha op(A) op(B) + beta C in double, column-major; the split-K form rounds each half's
 * partial (and their sum) to the output type. */
static void reference(const dims *d, const double *A, const double *B, double *C, double alpha,
                      double beta, ng_dtype out, int split) {
    for (int p = 0; p < d->batch; p++)
        for (int j = 0; j < d->n; j++)
            for (int i = 0; i < d->m; i++) {
                double s[2] = {0, 0};
                int k1 = split ? d->k / 2 : d->k;
                for (int l = 0; l < d->k; l++) {
                    double a = d->ta ? A[p * d->sa + (int64_t)i * d->lda + l]
                                     : A[p * d->sa + (int64_t)l * d->lda + i];
                    double b = d->tb ? B[p * d->sb + (int64_t)l * d->ldb + j]
                                     : B[p * d->sb + (int64_t)j * d->ldb + l];
                    s[l >= k1] += a * b;
                }
                double *c = &C[p * d->sc + (int64_t)j * d->ldc + i];
                double first = alpha * s[0] + (beta != 0 ? beta * *c : 0);
                *c = split ? round_to(out, round_to(out, first) + round_to(out, alpha * s[1]))
                           : first;
            }
}

static ng_tensor dev(ng_dtype dt, int64_t n, const char *name) {
    ng_tensor t = ng_tensor_1d(dt, NG_CUDA, n, name);
    ng_test_fill_uniform(&t, -1, 1);
    return t;
}

/* One random product of type pair (in, out) under compute type `compute`; split asks for the
 * handle without the reduced-precision ban. */
static void one(cudaDataType in, cudaDataType out, cublasComputeType_t compute, int split) {
    dims d = random_dims();
    ng_dtype ti = of(in), to = of(out);
    int ra = d.ta ? d.k : d.m, ca = d.ta ? d.m : d.k, rb = d.tb ? d.n : d.k, cb = d.tb ? d.k : d.n;
    ng_tensor A = dev(ti, extent(ra, ca, d.lda, d.sa, d.batch), "A");
    ng_tensor B = dev(ti, extent(rb, cb, d.ldb, d.sb, d.batch), "B");
    ng_tensor C = dev(to, extent(d.m, d.n, d.ldc, d.sc, d.batch), "C");
    double *a = ng_test_to_f64(&A), *b = ng_test_to_f64(&B), *c = ng_test_to_f64(&C);
    int tf = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
    for (int64_t i = 0; tf && i < A.numel; i++) a[i] = ng_test_tf32(a[i]);
    for (int64_t i = 0; tf && i < B.numel; i++) b[i] = ng_test_tf32(b[i]);
    double alpha = ng_test_uniform() * 2, beta = ng_test_int(0, 1) ? ng_test_uniform() : 0;
    int f64 = compute == CUBLAS_COMPUTE_64F;
    float af = (float)alpha, bf = (float)beta;
    alpha = f64 ? alpha : af, beta = f64 ? beta : bf;
    cublasHandle_t h = ng_cuda_ctx()->cublas, own = NULL;
    if (split) {
        cublasCreate(&own);
        cublasSetMathMode(own, CUBLAS_DEFAULT_MATH);
        h = own;
    }
    cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
    const void *ap = f64 ? (const void *)&alpha : &af, *bp = f64 ? (const void *)&beta : &bf;
    cublasStatus_t st =
        d.batch == 1 && ng_test_int(0, 1)
            ? cublasGemmEx(h, d.ta ? CUBLAS_OP_T : CUBLAS_OP_N, d.tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                           d.m, d.n, d.k, ap, A.data, in, d.lda, B.data, in, d.ldb, bp, C.data, out,
                           d.ldc, compute, CUBLAS_GEMM_DEFAULT)
            : cublasGemmStridedBatchedEx(
                  h, d.ta ? CUBLAS_OP_T : CUBLAS_OP_N, d.tb ? CUBLAS_OP_T : CUBLAS_OP_N, d.m, d.n,
                  d.k, ap, A.data, in, d.lda, d.sa, B.data, in, d.ldb, d.sb, bp, C.data, out, d.ldc,
                  d.sc, d.batch, compute, CUBLAS_GEMM_DEFAULT);
    char what[200];
    snprintf(what, sizeof what,
             "%s -> %s compute %d%s: ta %d tb %d [%d, %d, %d] x %d, ld %d %d %d, strides %lld "
             "%lld %lld",
             ng_dtype_name(ti), ng_dtype_name(to), (int)compute, split ? " split-K" : "", d.ta,
             d.tb, d.m, d.n, d.k, d.batch, d.lda, d.ldb, d.ldc, d.sa, d.sb, d.sc);
    NG_TEST(st == CUBLAS_STATUS_SUCCESS, "%s: status %d", what, (int)st);
    double *got = ng_test_to_f64(&C);
    reference(&d, a, b, c, alpha, beta, to, split && d.k >= 2);
    /* the output's rounding (the split's three) plus f32 sums of k terms of magnitude < 1 */
    double u = to == NG_F64 ? 0x1p-52 : to == NG_F32 ? 0x1p-23 : to == NG_F16 ? 0x1p-10 : 0x1p-7;
    double us = f64 ? 0x1p-52 : 0x1p-23;
    double atol = (split ? 3 : 1) * u * (fabs(alpha) * d.k + fabs(beta) + 1) +
                  2 * us * d.k * (fabs(alpha) * d.k + 1);
    ng_test_close(what, c, got, C.numel, u * (split ? 3 : 1), atol);
    if (own) cublasDestroy(own);
    free(a), free(b), free(c), free(got);
    ng_tensor_free(&A), ng_tensor_free(&B), ng_tensor_free(&C);
}

/* A split-K product is seen to differ from the plain one (f16 out, k large enough). */
static void split_seen(void) {
    int m = 16, n = 16, k = 64;
    ng_tensor A = dev(NG_F16, m * k, "A"), B = dev(NG_F16, k * n, "B");
    ng_tensor C1 = ng_tensor_1d(NG_F16, NG_CUDA, m * n, "C1"),
              C2 = ng_tensor_1d(NG_F16, NG_CUDA, m * n, "C2");
    float one = 1, zero = 0;
    cublasHandle_t own;
    cublasCreate(&own);
    cublasSetMathMode(own, CUBLAS_DEFAULT_MATH);
    cublasHandle_t ban = ng_cuda_ctx()->cublas;
    cublasSetPointerMode(ban, CUBLAS_POINTER_MODE_HOST);
    cublasGemmEx(ban, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.data, CUDA_R_16F, m, B.data,
                 CUDA_R_16F, k, &zero, C1.data, CUDA_R_16F, m, CUBLAS_COMPUTE_32F,
                 CUBLAS_GEMM_DEFAULT);
    cublasGemmEx(own, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, A.data, CUDA_R_16F, m, B.data,
                 CUDA_R_16F, k, &zero, C2.data, CUDA_R_16F, m, CUBLAS_COMPUTE_32F,
                 CUBLAS_GEMM_DEFAULT);
    double *c1 = ng_test_to_f64(&C1), *c2 = ng_test_to_f64(&C2);
    NG_TEST(memcmp(c1, c2, sizeof(double) * (size_t)(m * n)) != 0,
            "a split-K f16 product gave the bits of the unsplit one");
    free(c1), free(c2);
    cublasDestroy(own);
    ng_tensor_free(&A), ng_tensor_free(&B), ng_tensor_free(&C1), ng_tensor_free(&C2);
}

static void refusals(void) {
    cublasHandle_t h = ng_cuda_ctx()->cublas;
    cublasSetPointerMode(h, CUBLAS_POINTER_MODE_HOST);
    ng_tensor A = dev(NG_F32, 64, "A"), B = dev(NG_F32, 64, "B"), C = dev(NG_F32, 64, "C");
    float one = 1, zero = 0, host[64] = {0};
    NG_TEST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, A.data, CUDA_R_32F, 4, B.data,
                         CUDA_R_32F, 4, &zero, C.data, CUDA_R_32F, 3, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
            "ldc below m is refused");
    NG_TEST(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 4, 5, &one, A.data, CUDA_R_32F, 4, B.data,
                         CUDA_R_32F, 5, &zero, C.data, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
            "lda below k for a transposed A is refused");
    NG_TEST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, host, CUDA_R_32F, 4, B.data,
                         CUDA_R_32F, 4, &zero, C.data, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
            "a host operand is refused");
    NG_TEST(cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, A.data,
                                       CUDA_R_32F, 4, 16, B.data, CUDA_R_32F, 4, 16, &zero, C.data,
                                       CUDA_R_32F, 4, 16, 5, CUBLAS_COMPUTE_32F,
                                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
            "a batch running past its operands is refused");
    NG_TEST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, A.data, A.data, CUDA_R_32F, 4,
                         B.data, CUDA_R_32F, 4, &zero, C.data, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE,
            "a device alpha in host pointer mode is refused");
    NG_TEST(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 4, 4, &one, A.data, CUDA_R_32F, 4, B.data,
                         CUDA_R_32F, 4, &zero, C.data, CUDA_R_32F, 4, CUBLAS_COMPUTE_64F,
                         CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED,
            "f32 operands with a 64F compute type are refused");
    ng_tensor_free(&A), ng_tensor_free(&B), ng_tensor_free(&C);
}

int main(void) {
    ng_test_seed();
    for (int rep = 0; rep < 40; rep++) {
        one(CUDA_R_64F, CUDA_R_64F, CUBLAS_COMPUTE_64F, 0);
        one(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F, 0);
        one(CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, 0);
        for (int split = 0; split <= 1; split++) {
            one(CUDA_R_16F, CUDA_R_16F, CUBLAS_COMPUTE_32F, split);
            one(CUDA_R_16BF, CUDA_R_16BF, CUBLAS_COMPUTE_32F, split);
        }
        one(CUDA_R_16F, CUDA_R_32F, CUBLAS_COMPUTE_32F, 0);
        one(CUDA_R_16BF, CUDA_R_32F, CUBLAS_COMPUTE_32F, 0);
    }
    split_seen();
    refusals();
    return ng_test_finish("test_cublas_emu");
}
#endif
