/* Linear-algebra test helpers used by both tests/test_linalg.c (CPU) and its CUDA twin
 * tests/test_linalg_gpu.c: solver tolerances, f64 matrix utilities and symmetric input storage. */
#ifndef NG_TESTS_LINALG_REF_H
#define NG_TESTS_LINALG_REF_H

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/tensor.h"
#include "testing.h"

/* Backward-error bounds of Householder tridiagonalisation, divide and conquer and Cholesky are
 * c(n) eps ||A|| with c(n) a modest multiple of n; we take 4 n. Rounding an f64-built input to f32
 * moves it by at most eps/2 sqrt(n) ||A||, which that bound covers. */
static inline double tol_of(ng_dtype t, int64_t n) {
    return 4.0 * (double)n * (t == NG_F64 ? DBL_EPSILON : FLT_EPSILON);
}

static inline double rounded(ng_dtype t, double v) {
    return t == NG_F32 ? (double)(float)v : v;
}

static inline void put(ng_tensor *t, int64_t i, double v) {
    if (t->dtype == NG_F64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

static inline double *identity(int64_t n) {
    double *eye = calloc((size_t)(n * n), sizeof(double)); /* not I: complex.h's macro */
    for (int64_t i = 0; i < n; i++) eye[i * n + i] = 1.0;
    return eye;
}

/* max row sum of |A|: bounds ||A||_2, hence the condition number when lambda_min >= 1. */
static inline double norm_inf(int64_t n, const double *A) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < n; j++) s += fabs(A[i * n + j]);
        if (s > m) m = s;
    }
    return m;
}

/* Stores matrix p of host tensor t from a, after making `a` exactly the symmetric matrix the
 * routines see (lower triangle mirrored, rounded to t's dtype). With upper_nan the strict upper
 * triangle of t becomes NaN, which only a routine that reads past the lower triangle would
 * notice. */
static inline void store(ng_tensor *t, int64_t p, double *a, int upper_nan) {
    int64_t n = t->shape[t->ndim - 1];
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            a[i * n + j] = a[j * n + i] = rounded(t->dtype, a[i * n + j]);
            put(t, p * n * n + i * n + j, a[i * n + j]);
            if (j < i) put(t, p * n * n + j * n + i, upper_nan ? NAN : a[i * n + j]);
        }
}

/* b n x n matrices on d: a 2-D tensor for b = 1, else 3-D. */
static inline ng_tensor square(ng_dtype t, ng_device d, int64_t b, int64_t n, const char *name) {
    return b == 1 ? ng_tensor_2d(t, d, n, n, name) : ng_tensor_3d(t, d, b, n, n, name);
}

static inline int all_nan(const double *x, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (!isnan(x[i])) return 0;
    return 1;
}

static inline int all_finite(const double *x, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* C = op(A) op(B) for n x n row-major doubles, C distinct from A and B: each test brings its own
 * (plain loops on the CPU side, BLAS where n reaches 1024). */
typedef void (*matmul_fn)(int64_t n, int ta, int tb, const double *A, const double *B, double *C);

/* Q diag(w) Q^T reproduces A, Q^T Q = I, w ascending. */
static inline void check_eigenpairs(const char *what, ng_dtype t, int64_t n, const double *A,
                                    const double *w, const double *Q, matmul_fn mm) {
    double *QD = calloc((size_t)(n * n), sizeof(double)),
           *R = calloc((size_t)(n * n), sizeof(double));
    double *eye = identity(n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) QD[i * n + j] = Q[i * n + j] * w[j];
    mm(n, 0, 1, QD, Q, R);
    char msg[320]; /* room for a caller's 256-byte label and the suffix */
    snprintf(msg, sizeof msg, "%s: Q diag(w) Q^T = A", what);
    ng_test_rel_norm(msg, A, R, n * n, tol_of(t, n));
    mm(n, 1, 0, Q, Q, R);
    snprintf(msg, sizeof msg, "%s: Q^T Q = I", what);
    ng_test_rel_norm(msg, eye, R, n * n, tol_of(t, n));
    int asc = 1;
    for (int64_t j = 1; j < n; j++) asc &= w[j - 1] <= w[j];
    NG_TEST(asc, "%s: eigenvalues ascending", what);
    free(QD);
    free(R);
    free(eye);
}

#endif
