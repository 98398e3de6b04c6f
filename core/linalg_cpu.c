/* CPU twin of the symmetric linear algebra (eigh, Cholesky, Cholesky inverse) on [b,n,n] f32/f64
 * tensors, through LAPACKE's row-major syevd / potrf / potri. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lapacke.h>

#include "backend.h"

/* The p-th block of `per` elements: matrix p of a [b,n,n] tensor or row p of a [b,n] one. */
static void *entry(const ng_tensor *t, int64_t p, int64_t per) {
    return (char *)t->data + (size_t)(p * per) * ng_dtype_size(t->dtype);
}

/* Only the lower triangle is part of the input, so only it decides finiteness. */
static int lower_finite(ng_dtype t, const void *a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            double x = t == NG_F64 ? ((const double *)a)[i * n + j] : ((const float *)a)[i * n + j];
            if (!isfinite(x)) return 0;
        }
    return 1;
}

static void fill_nan(ng_dtype t, void *x, int64_t count) {
    for (int64_t i = 0; i < count; i++) {
        if (t == NG_F64)
            ((double *)x)[i] = NAN;
        else
            ((float *)x)[i] = NAN;
    }
}

/* LAPACK left the strict upper triangle as it was (the input's values): zero it for L, or mirror
 * the lower triangle into it for a full symmetric inverse. */
static void finish_upper(ng_dtype t, void *x, int64_t n, int mirror) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i + 1; j < n; j++) {
            if (t == NG_F64) {
                double *d = x;
                d[i * n + j] = mirror ? d[j * n + i] : 0.0;
            } else {
                float *f = x;
                f[i * n + j] = mirror ? f[j * n + i] : 0.0f;
            }
        }
}

/* info < 0 is an illegal argument or LAPACKE's own allocation failure: a bug, not a numerical
 * outcome, so it stops the program like any failing library call. */
static void check_info(const char *call, lapack_int info) {
    if (info >= 0) return;
    char msg[96];
    snprintf(msg, sizeof msg, "info = %lld (%s)", (long long)info,
             info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR
                 ? "out of memory"
                 : "illegal argument");
    ng_lib_fail("LAPACKE", __FILE__, __LINE__, call, msg);
}

/* Copies matrix p of A into dst (they may be the same buffer) and reports finiteness; dst is
 * where LAPACK then works, so A itself is never written unless it is also the output. */
static int load_entry(const ng_tensor *A, int64_t p, void *dst) {
    int64_t n = A->shape[1];
    const void *src = entry(A, p, n * n);
    if (!lower_finite(A->dtype, src, n)) return 0;
    if (dst != src) memmove(dst, src, (size_t)(n * n) * ng_dtype_size(A->dtype));
    return 1;
}

static ng_status first_failure(ng_status so_far, ng_status st) {
    return so_far != NG_OK ? so_far : st;
}

/* syevd's workspace for an n x n problem with eigenvectors. LAPACKE_?syevd would take the sizes
 * from LAPACK's query, which returns them in the matrix's type: in f32 the size 1 + 6n + 2n^2 is
 * odd and above 2^24 from n = 2895 on, so it comes back rounded, mostly down, and syevd then
 * refuses its workspace (info -9 in row-major LAPACKE; every n from 2895 to 5999 but a few, K-FAC's
 * 3072- and 4096-wide factors among them). The query is made here and raised to the documented
 * minimum, so the workspace, and with it the result, is what LAPACK asked for wherever it was
 * exact. */
typedef struct {
    void *work;
    lapack_int *iwork;
    lapack_int lwork, liwork;
} syevd_space;

static syevd_space syevd_space_for(ng_dtype dt, int64_t n, void *a, void *w) {
    syevd_space s = {0};
    double q = 0;
    lapack_int iq = 0, info;
    if (dt == NG_F64) {
        info = LAPACKE_dsyevd_work(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, a, (lapack_int)n, w,
                                   &q, -1, &iq, -1);
    } else {
        float qf = 0;
        info = LAPACKE_ssyevd_work(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, a, (lapack_int)n, w,
                                   &qf, -1, &iq, -1);
        q = qf;
    }
    check_info("LAPACKE_?syevd_work (workspace query)", info);
    int64_t lw = 1 + 6 * n + 2 * n * n, liw = 3 + 5 * n; /* the minimum with eigenvectors */
    if ((int64_t)q > lw) lw = (int64_t)q;
    if ((int64_t)iq > liw) liw = (int64_t)iq;
    NG_CHECK(lw <= INT32_MAX,
             "ng_eigh: a %lld x %lld matrix needs more workspace than LAPACK "
             "can index",
             (long long)n, (long long)n);
    s.lwork = (lapack_int)lw, s.liwork = (lapack_int)liw;
    s.work = malloc((size_t)lw * ng_dtype_size(dt));
    s.iwork = malloc(sizeof(lapack_int) * (size_t)liw);
    NG_CHECK(s.work && s.iwork, "ng_eigh: out of host memory for LAPACK's workspace (%lld x %lld)",
             (long long)n, (long long)n);
    return s;
}

ng_status ng_cpu_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) {
    int64_t b = A->shape[0], n = A->shape[1];
    ng_status result = NG_OK;
    syevd_space ws = {0};
    for (int64_t p = 0; p < b; p++) {
        void *q = entry(Q, p, n * n), *wp = entry(w, p, n);
        ng_status st = NG_OK;
        /* syevd works in place on Q's entry: when Q aliases A it reads A's entry first. */
        if (!load_entry(A, p, q)) {
            st = NG_ERR_NONFINITE;
        } else {
            if (!ws.work) ws = syevd_space_for(A->dtype, n, q, wp);
            lapack_int info =
                A->dtype == NG_F64
                    ? LAPACKE_dsyevd_work(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, q,
                                          (lapack_int)n, wp, ws.work, ws.lwork, ws.iwork, ws.liwork)
                    : LAPACKE_ssyevd_work(LAPACK_ROW_MAJOR, 'V', 'L', (lapack_int)n, q,
                                          (lapack_int)n, wp, ws.work, ws.lwork, ws.iwork,
                                          ws.liwork);
            check_info("LAPACKE_?syevd_work", info);
            if (info > 0) st = NG_ERR_NO_CONVERGE;
        }
        if (st != NG_OK) {
            fill_nan(A->dtype, wp, n);
            fill_nan(A->dtype, q, n * n);
        }
        result = first_failure(result, st);
    }
    free(ws.work);
    free(ws.iwork);
    return result;
}

/* Factors entry p into out's entry p (lower L, strict upper untouched); NG_OK or the failure. */
static ng_status factor_entry(const ng_tensor *A, int64_t p, void *out) {
    int64_t n = A->shape[1];
    if (!load_entry(A, p, out)) return NG_ERR_NONFINITE;
    lapack_int info =
        A->dtype == NG_F64
            ? LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, out, (lapack_int)n)
            : LAPACKE_spotrf(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, out, (lapack_int)n);
    check_info("LAPACKE_?potrf", info);
    return info > 0 ? NG_ERR_NOT_PD : NG_OK;
}

ng_status ng_cpu_cholesky(const ng_tensor *A, ng_tensor *L) {
    int64_t b = A->shape[0], n = A->shape[1];
    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        void *l = entry(L, p, n * n);
        ng_status st = factor_entry(A, p, l);
        if (st == NG_OK)
            finish_upper(A->dtype, l, n, 0);
        else
            fill_nan(A->dtype, l, n * n);
        result = first_failure(result, st);
    }
    return result;
}

ng_status ng_cpu_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) {
    int64_t b = A->shape[0], n = A->shape[1];
    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        void *v = entry(inv, p, n * n);
        ng_status st = factor_entry(A, p, v);
        if (st == NG_OK) {
            lapack_int info =
                A->dtype == NG_F64
                    ? LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, v, (lapack_int)n)
                    : LAPACKE_spotri(LAPACK_ROW_MAJOR, 'L', (lapack_int)n, v, (lapack_int)n);
            check_info("LAPACKE_?potri", info);
            /* A zero diagonal in L cannot follow a successful potrf; treat it alike anyway. */
            if (info > 0) st = NG_ERR_NOT_PD;
        }
        if (st == NG_OK)
            finish_upper(A->dtype, v, n, 1);
        else
            fill_nan(A->dtype, v, n * n);
        result = first_failure(result, st);
    }
    return result;
}
