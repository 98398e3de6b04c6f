/* CPU twins of the dense ops: GEMM through OpenBLAS, element-wise loops, casts and reductions.
 * This is the reference the CUDA twin is checked against, so it rounds exactly as that does. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "convert.h"
#include "half.h"
#include "half_vec.h"
#include "threads.h"

/* y + a*x must be two roundings, as in the CUDA twin (__fmul_rn, __fadd_rn), never one fused
 * multiply-add: GNU C contracts by default wherever the target has FMA. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

/* ---- Half-precision helpers: halves are computed in f32 a chunk at a time ------------------ */

#define CHUNK 1024

static void chunk_to_f32(const void *p, ng_dtype t, int64_t i0, int64_t n, float *out) {
    if (t == NG_F16 || t == NG_BF16)
        ng_half_to_f32((const uint16_t *)p + i0, t, out, n);
    else
        memcpy(out, (const float *)p + i0, (size_t)n * sizeof(float));
}

static void chunk_from_f32(void *p, ng_dtype t, int64_t i0, int64_t n, const float *in) {
    if (t == NG_F16 || t == NG_BF16)
        ng_half_from_f32(in, t, (uint16_t *)p + i0, n);
    else
        memcpy((float *)p + i0, in, (size_t)n * sizeof(float));
}

static int64_t min64(int64_t a, int64_t b) {
    return a < b ? a : b;
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

/* The f32 copies of a half GEMM (A, B and the accumulator C) are kept between calls, per thread,
 * up to KEEP_MAX bytes each. A fresh malloc of a few MiB is a fresh mmap whose every page faults
 * on first touch; glibc avoids that by raising its mmap threshold after large frees (up to
 * 32 MiB), which it does only while some GEMM frees blocks that large. Where the big GEMMs (the
 * bf16 Linear layers on oneDNN) no longer come here, the ViT's per-head copies (2-3 MiB) were
 * mmapped and faulted in at every call: a third of a bf16 ViT step. Larger copies are allocated
 * and freed per call as before, so at most 3 x 32 MiB per thread stays held. */
#define KEEP_MAX ((size_t)32 << 20)

static _Thread_local struct {
    float *p;
    size_t cap;
} kept[3];

/* An f32 buffer of count elements for slot (0: A, 1: B, 2: C); *to_free is what the caller
 * frees afterwards (NULL for a kept buffer). */
static float *f32_buf(int slot, int64_t count, float **to_free) {
    size_t bytes = (size_t)(count ? count : 1) * sizeof(float);
    float *f;
    if (bytes > KEEP_MAX) {
        f = *to_free = malloc(bytes);
    } else {
        if (kept[slot].cap < bytes) {
            free(kept[slot].p);
            kept[slot].p = malloc(bytes);
            kept[slot].cap = kept[slot].p ? bytes : 0;
        }
        f = kept[slot].p;
        *to_free = NULL;
    }
    NG_CHECK(f, "ng_gemm: out of host memory for a %lld-element f32 copy", (long long)count);
    return f;
}

/* A buffer of count elements of a half type widened to f32 (exact). */
static float *widen(const void *p, ng_dtype t, int64_t count, int slot, float **to_free) {
    float *f = f32_buf(slot, count, to_free);
    for (int64_t i0 = 0; i0 < count; i0 += CHUNK)
        chunk_to_f32(p, t, i0, min64(CHUNK, count - i0), f + i0);
    return f;
}

/* Elements spanned by a strided operand of `rows` x `ld` per batch entry. */
static int64_t span(int64_t batch, int64_t stride, int64_t rows, int64_t ld) {
    return (stride ? (batch - 1) * stride : 0) + rows * ld;
}

static int ld_of(int64_t ld) {
    return ld > 1 ? (int)ld : 1;
} /* BLAS wants ld >= 1 even if k = 0 */

/* OpenBLAS runs a GEMM of at most 4 x 65536 multiply-adds (its GEMM_MULTITHREAD_THRESHOLD times
 * SMP_THRESHOLD_MIN) on the calling thread alone, so a batch of such small entries (attention's
 * per-head [T, hd] products) would keep one core busy and leave the rest idle. Such a batch is
 * split over NG_THREADS instead, whole entries per thread: each entry is still one single-threaded
 * call, so its bits do not depend on which thread runs it or on the thread count. Batches of
 * larger entries keep OpenBLAS's own threading inside each call. */
#define GEMM_SMALL_MNK (4.0 * 65536.0)
#define GEMM_SPLIT_MIN_MNK 65536.0 /* the whole batch's work that pays for a fork */

static int batch_split(const ng_gemm_desc *d) {
    double mnk = (double)d->m * (double)d->n * (double)d->k;
    return d->batch > 1 && mnk <= GEMM_SMALL_MNK && mnk * (double)d->batch >= GEMM_SPLIT_MIN_MNK &&
           ng_threads() > 1;
}

void ng_cpu_gemm(const ng_gemm_desc *d) {
    NG_CHECK(d->m <= INT_MAX && d->n <= INT_MAX && d->k <= INT_MAX && d->lda <= INT_MAX &&
                 d->ldb <= INT_MAX && d->ldc <= INT_MAX,
             "ng_gemm: [%lld,%lld,%lld] exceeds the 32-bit sizes of BLAS", (long long)d->m,
             (long long)d->n, (long long)d->k);
    enum CBLAS_TRANSPOSE ta = d->trans_a ? CblasTrans : CblasNoTrans;
    enum CBLAS_TRANSPOSE tb = d->trans_b ? CblasTrans : CblasNoTrans;
    int m = (int)d->m, n = (int)d->n, k = (int)d->k;
    int lda = ld_of(d->lda), ldb = ld_of(d->ldb), ldc = ld_of(d->ldc);

    if (d->in_type == NG_F64) {
        int split = batch_split(d);
#pragma omp parallel for schedule(static) if (split)
        for (int64_t p = 0; p < d->batch; p++)
            cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, d->alpha,
                        (const double *)d->A + p * d->stride_a, lda,
                        (const double *)d->B + p * d->stride_b, ldb, d->beta,
                        (double *)d->C + p * d->stride_c, ldc);
        return;
    }

    /* f16/bf16 operands are widened once (broadcast operands once in all), then sgemm. */
    const float *A = d->A, *B = d->B;
    float *Aw = NULL, *Bw = NULL, *Cw = NULL, *C = d->C;
    if (d->in_type != NG_F32) {
        A = widen(d->A, d->in_type, span(d->batch, d->stride_a, d->trans_a ? d->k : d->m, d->lda),
                  0, &Aw);
        B = widen(d->B, d->in_type, span(d->batch, d->stride_b, d->trans_b ? d->n : d->k, d->ldb),
                  1, &Bw);
    }
    int64_t c_count = span(d->batch, d->stride_c, d->m, d->ldc);
    float *Cf = NULL;
    if (d->out_type != NG_F32) {
        /* An f32 accumulator rounded back at the end. With beta == 0, C is not read (its NaN
         * must not leak), so the accumulator starts from zeros instead. */
        if (d->beta != 0) {
            Cf = widen(d->C, d->out_type, c_count, 2, &Cw);
        } else {
            Cf = f32_buf(2, c_count, &Cw);
            memset(Cf, 0, (size_t)c_count * sizeof(float));
        }
        C = Cf;
    }
    int split = batch_split(d);
#pragma omp parallel for schedule(static) if (split)
    for (int64_t p = 0; p < d->batch; p++)
        cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, (float)d->alpha, A + p * d->stride_a, lda,
                    B + p * d->stride_b, ldb, (float)d->beta, C + p * d->stride_c, ldc);
    if (Cf) {
        for (int64_t i0 = 0; i0 < c_count; i0 += CHUNK)
            chunk_from_f32(d->C, d->out_type, i0, min64(CHUNK, c_count - i0), Cf + i0);
    }
    free(Aw);
    free(Bw);
    free(Cw);
}

/* ---- Element-wise -------------------------------------------------------------------------- */

/* The f32/f64 loops split over NG_THREADS (OpenMP, as the layers' loops): every element is its own
 * result, so the split changes no bits. */

void ng_cpu_axpy(double alpha, const ng_tensor *x, ng_tensor *y) {
    int64_t n = y->numel;
    if (y->dtype == NG_F64) {
        const double *X = x->data;
        double *Y = y->data;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
        for (int64_t i = 0; i < n; i++) Y[i] = Y[i] + alpha * X[i];
        return;
    }
    float a = (float)alpha;
    if (y->dtype == NG_F32) {
        const float *X = x->data;
        float *Y = y->data;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
        for (int64_t i = 0; i < n; i++) Y[i] = Y[i] + a * X[i];
        return;
    }
    float xs[CHUNK], ys[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t c = min64(CHUNK, n - i0);
        chunk_to_f32(x->data, x->dtype, i0, c, xs);
        chunk_to_f32(y->data, y->dtype, i0, c, ys);
        for (int64_t i = 0; i < c; i++) ys[i] = ys[i] + a * xs[i];
        chunk_from_f32(y->data, y->dtype, i0, c, ys);
    }
}

void ng_cpu_scale(double alpha, ng_tensor *x) {
    int64_t n = x->numel;
    if (x->dtype == NG_F64) {
        double *X = x->data;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
        for (int64_t i = 0; i < n; i++) X[i] = alpha * X[i];
        return;
    }
    float a = (float)alpha, xs[CHUNK];
    if (x->dtype == NG_F32) {
        float *X = x->data;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
        for (int64_t i = 0; i < n; i++) X[i] = a * X[i];
        return;
    }
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t c = min64(CHUNK, n - i0);
        chunk_to_f32(x->data, x->dtype, i0, c, xs);
        for (int64_t i = 0; i < c; i++) xs[i] = a * xs[i];
        chunk_from_f32(x->data, x->dtype, i0, c, xs);
    }
}

void ng_cpu_fill(ng_tensor *x, double value) {
    /* One element converted once, then repeated: the CUDA twin fills with the same bits. */
    uint64_t bits = cv_bits(x->dtype, value);
    int64_t n = x->numel;
    switch (x->dtype) {
        case NG_F32: {
            float v, *X = x->data;
            memcpy(&v, &bits, sizeof v);
            for (int64_t i = 0; i < n; i++) X[i] = v;
        } break;
        case NG_F64: {
            double v, *X = x->data;
            memcpy(&v, &bits, sizeof v);
            for (int64_t i = 0; i < n; i++) X[i] = v;
        } break;
        case NG_F16:
        case NG_BF16: {
            uint16_t v, *X = x->data;
            memcpy(&v, &bits, sizeof v);
            for (int64_t i = 0; i < n; i++) X[i] = v;
        } break;
        case NG_I32: {
            int32_t v, *X = x->data;
            memcpy(&v, &bits, sizeof v);
            for (int64_t i = 0; i < n; i++) X[i] = v;
        } break;
        default:
            memset(x->data, (int)(bits & 0xffu), (size_t)n);
            break;
    }
}

void ng_cpu_cast(ng_tensor *dst, const ng_tensor *src) {
    int64_t n = dst->numel;
    ng_dtype st = src->dtype, dt = dst->dtype;
    if (st == dt) { /* bits kept as they are, NaN payloads included */
        memmove(dst->data, src->data, ng_tensor_bytes(dst));
        return;
    }
    if (cv_is_f32_family(st) && cv_is_f32_family(dt)) {
        float buf[CHUNK];
        for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
            int64_t c = min64(CHUNK, n - i0);
            chunk_to_f32(src->data, st, i0, c, buf);
            chunk_from_f32(dst->data, dt, i0, c, buf);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) cv_store(dst->data, dt, i, cv_load(src->data, st, i));
}

void ng_cpu_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c) {
    int64_t n = c->numel;
    int add = op == NG_BIN_ADD;
    if (c->dtype == NG_F64) {
        const double *A = a->data, *B = b->data;
        double *C = c->data;
        if (add) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
            for (int64_t i = 0; i < n; i++) C[i] = A[i] + B[i];
        } else {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
            for (int64_t i = 0; i < n; i++) C[i] = A[i] * B[i];
        }
        return;
    }
    if (c->dtype == NG_F32) {
        const float *A = a->data, *B = b->data;
        float *C = c->data;
        if (add) {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
            for (int64_t i = 0; i < n; i++) C[i] = A[i] + B[i];
        } else {
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
            for (int64_t i = 0; i < n; i++) C[i] = A[i] * B[i];
        }
        return;
    }
    float as[CHUNK], bs[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t cn = min64(CHUNK, n - i0);
        chunk_to_f32(a->data, a->dtype, i0, cn, as);
        chunk_to_f32(b->data, b->dtype, i0, cn, bs);
        if (add)
            for (int64_t i = 0; i < cn; i++) as[i] = as[i] + bs[i];
        else
            for (int64_t i = 0; i < cn; i++) as[i] = as[i] * bs[i];
        chunk_from_f32(c->data, c->dtype, i0, cn, as);
    }
}

void ng_cpu_add_diagonal(ng_tensor *A, double value) {
    int64_t n = A->shape[A->ndim - 1], b = A->ndim == 3 ? A->shape[0] : 1;
    float v = (float)value;
    for (int64_t p = 0; p < b; p++)
        for (int64_t i = 0; i < n; i++) {
            int64_t j = p * n * n + i * n + i;
            if (A->dtype == NG_F64)
                ((double *)A->data)[j] = ((double *)A->data)[j] + value;
            else
                cv_store_f32(A->data, A->dtype, j, cv_load_f32(A->data, A->dtype, j) + v);
        }
}

/* ---- Reductions, accumulated in double ----------------------------------------------------- */

double ng_cpu_reduce(ng_reduce_op op, const ng_tensor *x) {
    int64_t n = x->numel;
    double acc = 0.0, buf[CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += CHUNK) {
        int64_t c = min64(CHUNK, n - i0);
        if (x->dtype == NG_F64)
            memcpy(buf, (const double *)x->data + i0, (size_t)c * sizeof(double));
        else if (x->dtype == NG_F32)
            for (int64_t i = 0; i < c; i++) buf[i] = ((const float *)x->data)[i0 + i];
        else
            for (int64_t i = 0; i < c; i++) buf[i] = cv_load_f32(x->data, x->dtype, i0 + i);
        switch (op) {
            case NG_RED_SUM:
                for (int64_t i = 0; i < c; i++) acc += buf[i];
                break;
            case NG_RED_SUMSQ:
                for (int64_t i = 0; i < c; i++) acc += buf[i] * buf[i];
                break;
            default: /* maxabs, and all_finite, which is "maxabs is finite" */
                for (int64_t i = 0; i < c; i++) {
                    double v = fabs(buf[i]);
                    if (v != v) return op == NG_RED_MAXABS ? v : 0.0;
                    if (v > acc) acc = v;
                }
                break;
        }
    }
    if (op == NG_RED_ALL_FINITE) return isinf(acc) ? 0.0 : 1.0;
    return acc;
}
