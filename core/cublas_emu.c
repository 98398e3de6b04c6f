/* cuBLAS's GEMM as the CUDA emulation build runs it (core/cuda_emu.h): the calls the binding
 * (core/gemm_cublas.c) makes, column-major as cuBLAS defines them, with cuBLAS's argument checks
 * (sizes, leading dimensions against the transposes, types against the compute type, device
 * pointers over each operand's whole batched extent, scalars where the pointer mode says), so
 * that the binding's row-major to column-major turn runs here as it will on a GPU. The arithmetic
 * is OpenBLAS's, column-major, on the device buffers themselves (f32, f64) or on f32 copies
 * (halves), rounded once to the output type. It holds the binding to more than cuBLAS reports:
 * - f32 with the handle in CUBLAS_TF32_TENSOR_OP_MATH, or compute type 32F_FAST_TF32, is
 *   computed from operands rounded to TF32;
 * - half outputs without CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION take a split-K
 *   reduction in the output type (two partial products, each rounded, then added and rounded), as
 *   cuBLAS may;
 * so a binding that loses either setting fails the twin tests. A refusal prints its reason on
 * stderr and returns cuBLAS's status. */
#include <cblas.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"
#include "error.h"
#include "half.h"

struct cublasContext {
    cudaStream_t stream;
    cublasPointerMode_t pointer_mode;
    cublasMath_t math;
};

/* Prints why the emulated library refuses a call (ng_emu_say), then returns its status. */
#define refuse(status, ...) (ng_emu_say("cuBLAS", __VA_ARGS__), (status))

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
        case CUBLAS_STATUS_SUCCESS:
            return "CUBLAS_STATUS_SUCCESS";
        case CUBLAS_STATUS_INVALID_VALUE:
            return "CUBLAS_STATUS_INVALID_VALUE (emulated: the reason is printed above)";
        case CUBLAS_STATUS_NOT_SUPPORTED:
            return "CUBLAS_STATUS_NOT_SUPPORTED (emulated: the reason is printed above)";
        case CUBLAS_STATUS_ALLOC_FAILED:
            return "CUBLAS_STATUS_ALLOC_FAILED";
        default:
            return "CUBLAS_STATUS_INTERNAL_ERROR (emulated)";
    }
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
    if (!h) return refuse(CUBLAS_STATUS_INVALID_VALUE, "cublasCreate: NULL handle pointer");
    *h = calloc(1, sizeof **h);
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
    if (!h) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetStream: NULL handle");
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetPointerMode_v2(cublasHandle_t h, cublasPointerMode_t m) {
    if (!h) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetPointerMode: NULL handle");
    if (m != CUBLAS_POINTER_MODE_HOST && m != CUBLAS_POINTER_MODE_DEVICE)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "pointer mode %d", (int)m);
    h->pointer_mode = m;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m) {
    if (!h) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "cublasSetMathMode: NULL handle");
    h->math = m;
    return CUBLAS_STATUS_SUCCESS;
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

static size_t type_size(cudaDataType t) {
    return t == CUDA_R_64F ? 8 : t == CUDA_R_32F ? 4 : t == CUDA_R_16F || t == CUDA_R_16BF ? 2 : 0;
}

/* One call's operands, column-major. */
typedef struct {
    int ta, tb, m, n, k, lda, ldb, ldc, batch;
    long long sa, sb, sc;
    cudaDataType in, out;
    const void *A, *B;
    void *C;
    double alpha, beta;
    int tf32, split_k;
} call;

/* Elements of an operand of `rows` x `cols` (column-major, ld) over the batch. */
static int64_t extent(int rows, int cols, int ld, long long stride, int batch) {
    if (!rows || !cols || !batch) return 0;
    return (int64_t)(batch - 1) * (stride > 0 ? stride : 0) + (int64_t)(cols - 1) * ld + rows;
}

static double ld_elem(const void *p, cudaDataType t, int64_t i) {
    switch (t) {
        case CUDA_R_64F:
            return ((const double *)p)[i];
        case CUDA_R_32F:
            return ((const float *)p)[i];
        case CUDA_R_16F:
            return ng_f16_to_f32(((const ng_f16 *)p)[i]);
        default:
            return ng_bf16_to_f32(((const ng_bf16 *)p)[i]);
    }
}

static float round_to(cudaDataType t, float v) {
    return t == CUDA_R_16F    ? ng_f16_to_f32(ng_f32_to_f16(v))
           : t == CUDA_R_16BF ? ng_bf16_to_f32(ng_f32_to_bf16(v))
                              : v;
}

static void st_elem(void *p, cudaDataType t, int64_t i, float v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = v;
    else if (t == CUDA_R_16F)
        ((ng_f16 *)p)[i] = ng_f32_to_f16(v);
    else
        ((ng_bf16 *)p)[i] = ng_f32_to_bf16(v);
}

static float tf32(float v) {
    uint32_t b = ng_f32_bits(v);
    return ng_bits_f32((b + 0xFFFu + ((b >> 13) & 1u)) & ~0x1FFFu);
}

/* An f32 copy of n elements (rounded to TF32 when asked). */
static float *widened(const void *p, cudaDataType t, int64_t n, int tf) {
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!f) ng_fail("cuBLAS (emulated): out of host memory for %lld floats", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)ld_elem(p, t, i);
        f[i] = tf ? tf32(v) : v;
    }
    return f;
}

/* op(A)'s columns [k0, k0 + kn) of A at a (column-major, lda): along the stored columns for N,
 * the stored rows for T. */
static const float *a_part(const float *a, int ta, int lda, int k0) {
    return ta ? a + k0 : a + (int64_t)k0 * lda;
}

static const float *b_part(const float *b, int tb, int ldb, int k0) {
    return tb ? b + (int64_t)k0 * ldb : b + k0;
}

static void run_f32(const call *c) {
    enum CBLAS_TRANSPOSE ta = c->ta ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = c->tb ? CblasTrans : CblasNoTrans;
    int64_t na = extent(c->ta ? c->k : c->m, c->ta ? c->m : c->k, c->lda, c->sa, c->batch);
    int64_t nb = extent(c->tb ? c->n : c->k, c->tb ? c->k : c->n, c->ldb, c->sb, c->batch);
    int direct = c->in == CUDA_R_32F && !c->tf32;
    const float *A = direct ? c->A : widened(c->A, c->in, na, c->tf32);
    const float *B = direct ? c->B : widened(c->B, c->in, nb, c->tf32);
    float *Cf = malloc(sizeof(float) * (size_t)c->m * (size_t)c->n + 1);
    if (!Cf) ng_fail("cuBLAS (emulated): out of host memory");
    for (int p = 0; p < c->batch; p++) {
        const float *Ap = A + (int64_t)p * c->sa, *Bp = B + (int64_t)p * c->sb;
        if (c->out == CUDA_R_32F && !c->split_k) {
            cblas_sgemm(CblasColMajor, ta, tb, c->m, c->n, c->k, (float)c->alpha, Ap, c->lda, Bp,
                        c->ldb, (float)c->beta, (float *)c->C + (int64_t)p * c->sc, c->ldc);
            continue;
        }
        /* an f32 accumulator [m, n] from beta C (C not read when beta is 0) */
        int64_t c0 = (int64_t)p * c->sc;
        for (int j = 0; j < c->n; j++)
            for (int i = 0; i < c->m; i++)
                Cf[(int64_t)j * c->m + i] =
                    c->beta != 0 ? (float)ld_elem(c->C, c->out, c0 + (int64_t)j * c->ldc + i)
                                 : 0.0f;
        int k1 = c->split_k ? c->k / 2 : c->k;
        cblas_sgemm(CblasColMajor, ta, tb, c->m, c->n, k1, (float)c->alpha, Ap, c->lda, Bp, c->ldb,
                    (float)c->beta, Cf, c->m);
        if (c->split_k) { /* the second half's partial, each rounded to the output type */
            float *P = calloc((size_t)c->m * (size_t)c->n + 1, sizeof(float));
            if (!P) ng_fail("cuBLAS (emulated): out of host memory");
            cblas_sgemm(CblasColMajor, ta, tb, c->m, c->n, c->k - k1, (float)c->alpha,
                        a_part(Ap, c->ta, c->lda, k1), c->lda, b_part(Bp, c->tb, c->ldb, k1),
                        c->ldb, 0.0f, P, c->m);
            for (int64_t i = 0; i < (int64_t)c->m * c->n; i++)
                Cf[i] = round_to(c->out, round_to(c->out, Cf[i]) + round_to(c->out, P[i]));
            free(P);
        }
        for (int j = 0; j < c->n; j++)
            for (int i = 0; i < c->m; i++)
                st_elem(c->C, c->out, c0 + (int64_t)j * c->ldc + i, Cf[(int64_t)j * c->m + i]);
    }
    if (!direct) free((void *)A), free((void *)B);
    free(Cf);
}

static void run(const call *c) {
    if (c->in == CUDA_R_64F) {
        for (int p = 0; p < c->batch; p++)
            cblas_dgemm(CblasColMajor, c->ta ? CblasTrans : CblasNoTrans,
                        c->tb ? CblasTrans : CblasNoTrans, c->m, c->n, c->k, c->alpha,
                        (const double *)c->A + (int64_t)p * c->sa, c->lda,
                        (const double *)c->B + (int64_t)p * c->sb, c->ldb, c->beta,
                        (double *)c->C + (int64_t)p * c->sc, c->ldc);
        return;
    }
    run_f32(c);
}

static int operation(cublasOperation_t op, int *t) {
    if (op != CUBLAS_OP_N && op != CUBLAS_OP_T && op != CUBLAS_OP_C) return 0;
    *t = op != CUBLAS_OP_N; /* real types: C is T */
    return 1;
}

/* The checks cuBLAS makes, then the product. */
static cublasStatus_t gemm(const char *fn, cublasHandle_t h, cublasOperation_t opa,
                           cublasOperation_t opb, int m, int n, int k, const void *alpha,
                           const void *A, cudaDataType at, int lda, long long sa, const void *B,
                           cudaDataType bt, int ldb, long long sb, const void *beta, void *C,
                           cudaDataType ct, int ldc, long long sc, int batch,
                           cublasComputeType_t compute) {
    if (!h) return refuse(CUBLAS_STATUS_NOT_INITIALIZED, "%s: NULL handle", fn);
    call c = {.m = m,
              .n = n,
              .k = k,
              .lda = lda,
              .ldb = ldb,
              .ldc = ldc,
              .batch = batch,
              .sa = sa,
              .sb = sb,
              .sc = sc,
              .in = at,
              .out = ct,
              .A = A,
              .B = B,
              .C = C};
    if (!operation(opa, &c.ta) || !operation(opb, &c.tb))
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s: transpose flags %d, %d", fn, (int)opa,
                      (int)opb);
    if (m < 0 || n < 0 || k < 0 || batch < 0)
        return refuse(CUBLAS_STATUS_INVALID_VALUE, "%s: m %d n %d k %d batch %d", fn, m, n, k,
                      batch);
    int rows_a = c.ta ? k : m, rows_b = c.tb ? n : k;
    if (lda < (rows_a > 1 ? rows_a : 1) || ldb < (rows_b > 1 ? rows_b : 1) || ldc < (m > 1 ? m : 1))
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "%s: leading dimensions lda %d ldb %d ldc %d; op(A) is %d x %d stored with "
                      "%d rows, op(B) %d x %d with %d rows, C %d x %d",
                      fn, lda, ldb, ldc, m, k, rows_a, k, n, rows_b, m, n);
    int halves = at == CUDA_R_16F || at == CUDA_R_16BF;
    int ok = at == bt && type_size(at) && type_size(ct) &&
             (at == CUDA_R_64F ? ct == CUDA_R_64F && (compute == CUBLAS_COMPUTE_64F ||
                                                      compute == CUBLAS_COMPUTE_64F_PEDANTIC)
              : at == CUDA_R_32F
                  ? ct == CUDA_R_32F &&
                        (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC ||
                         compute == CUBLAS_COMPUTE_32F_FAST_TF32)
                  : halves && (ct == at || ct == CUDA_R_32F) &&
                        (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_PEDANTIC));
    if (!ok)
        return refuse(CUBLAS_STATUS_NOT_SUPPORTED,
                      "%s: A type %d, B type %d, C type %d with compute type %d", fn, (int)at,
                      (int)bt, (int)ct, (int)compute);
    if (!m || !n || !batch) return CUBLAS_STATUS_SUCCESS;
    size_t es = type_size(at), cs = type_size(ct);
    int64_t na = extent(rows_a, c.ta ? m : k, lda, sa, batch);
    int64_t nb = extent(rows_b, c.tb ? k : n, ldb, sb, batch);
    int64_t nc = extent(m, n, ldc, sc, batch);
    if ((na && !ng_emu_is_device(A, (size_t)na * es)) ||
        (nb && !ng_emu_is_device(B, (size_t)nb * es)) || !ng_emu_is_device(C, (size_t)nc * cs))
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "%s: an operand is not in one block of device memory over its extent (A %p "
                      "%lld elements, B %p %lld, C %p %lld)",
                      fn, A, (long long)na, B, (long long)nb, C, (long long)nc);
    int host = h->pointer_mode == CUBLAS_POINTER_MODE_HOST;
    if (!alpha || !beta || ng_emu_is_device(alpha, 1) == host || ng_emu_is_device(beta, 1) == host)
        return refuse(CUBLAS_STATUS_INVALID_VALUE,
                      "%s: alpha and beta must be %s memory in pointer mode %s", fn,
                      host ? "host" : "device", host ? "host" : "device");
    int scal64 = compute == CUBLAS_COMPUTE_64F || compute == CUBLAS_COMPUTE_64F_PEDANTIC;
    ng_emu_enter();
    c.alpha = scal64 ? *(const double *)alpha : *(const float *)alpha;
    c.beta = scal64 ? *(const double *)beta : *(const float *)beta;
    c.tf32 = at == CUDA_R_32F &&
             (compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
              (compute == CUBLAS_COMPUTE_32F && (h->math & 0xf) == CUBLAS_TF32_TENSOR_OP_MATH));
    c.split_k = halves && ct != CUDA_R_32F && k >= 2 &&
                !(h->math & CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
    run(&c); /* k = 0: C = beta C */
    ng_emu_leave();
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t opa, cublasOperation_t opb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType at,
                            int lda, const void *B, cudaDataType bt, int ldb, const void *beta,
                            void *C, cudaDataType ct, int ldc, cublasComputeType_t compute,
                            cublasGemmAlgo_t algo) {
    (void)algo;
    return gemm("cublasGemmEx", h, opa, opb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C,
                ct, ldc, 0, 1, compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t opa,
                                          cublasOperation_t opb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType at,
                                          int lda, long long sa, const void *B, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *C,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t algo) {
    (void)algo;
    return gemm("cublasGemmStridedBatchedEx", h, opa, opb, m, n, k, alpha, A, at, lda, sa, B, bt,
                ldb, sb, beta, C, ct, ldc, sc, batch, compute);
}
