/* CPU eigh, Cholesky, inverses and damped inverse against known spectra and f64 loops; failures
 * give a status and NaN outputs; bad shapes name the tensor. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#undef I /* complex.h's, which OpenBLAS's cblas.h includes; the tests name a matrix I */

#include "core/linalg.h"
#include "core/memory.h"
#include "linalg_ref.h"
#include "testing.h"

/* C = op(A) op(B) for n x n row-major doubles (C distinct from A and B), by plain loops. */
static void matmul(int64_t n, int ta, int tb, const double *A, const double *B, double *C) {
    memset(C, 0, sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < n; k++) {
            double a = ta ? A[k * n + i] : A[i * n + k];
            for (int64_t j = 0; j < n; j++) C[i * n + j] += a * (tb ? B[j * n + k] : B[k * n + j]);
        }
}

/* A random orthogonal matrix (Q0[i*n+j] = component i of column j): modified Gram-Schmidt, run
 * twice so that the columns are orthonormal to working precision. */
static void random_orthogonal(int64_t n, double *Q0) {
    for (int64_t i = 0; i < n * n; i++) Q0[i] = ng_test_uniform();
    for (int64_t j = 0; j < n; j++)
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t k = 0; k < j; k++) {
                double d = 0;
                for (int64_t i = 0; i < n; i++) d += Q0[i * n + k] * Q0[i * n + j];
                for (int64_t i = 0; i < n; i++) Q0[i * n + j] -= d * Q0[i * n + k];
            }
            double s = 0;
            for (int64_t i = 0; i < n; i++) s += Q0[i * n + j] * Q0[i * n + j];
            s = 1.0 / sqrt(s);
            for (int64_t i = 0; i < n; i++) Q0[i * n + j] *= s;
        }
}

/* A = Q0 diag(f) Q0^T. */
static void from_eigen(int64_t n, const double *Q0, const double *f, double *A) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += Q0[i * n + k] * f[k] * Q0[j * n + k];
            A[i * n + j] = s;
        }
}

/* Symmetric A with eigenvalues w0 uniform in [-2,2] (with neg set, w0[0] = -1 so A is
 * indefinite); w0 is returned sorted ascending. */
static void known_spectrum(int64_t n, double *A, double *w0, int neg) {
    double *Q0 = malloc(sizeof(double) * (size_t)(n * n));
    random_orthogonal(n, Q0);
    for (int64_t k = 0; k < n; k++) w0[k] = k == 0 && neg ? -1.0 : 2.0 * ng_test_uniform();
    from_eigen(n, Q0, w0, A);
    for (int64_t k = 1; k < n; k++) /* insertion sort: n is small */
        for (int64_t m = k; m > 0 && w0[m - 1] > w0[m]; m--) {
            double x = w0[m];
            w0[m] = w0[m - 1];
            w0[m - 1] = x;
        }
    free(Q0);
}

/* Well-conditioned SPD A = X X^T / n + shift I with X uniform in [-1,1]: eigenvalues >= shift. */
static void random_spd(int64_t n, double shift, double *A) {
    double *X = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) X[i] = ng_test_uniform();
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += X[i * n + k] * X[j * n + k];
            A[i * n + j] = A[j * n + i] = s / (double)n + (i == j ? shift : 0.0);
        }
    free(X);
}

static void test_eigh(ng_dtype t, int64_t b, int64_t n) {
    char what[96];
    snprintf(what, sizeof what, "eigh %s b=%lld n=%lld", ng_dtype_name(t), (long long)b,
             (long long)n);
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    ng_tensor w = b == 1 ? ng_tensor_1d(t, NG_CPU, n, "w") : ng_tensor_2d(t, NG_CPU, b, n, "w");
    ng_tensor Q = square(t, NG_CPU, b, n, "Q");
    double *a = malloc(sizeof(double) * (size_t)(b * n * n));
    double *w0 = malloc(sizeof(double) * (size_t)(b * n));
    for (int64_t p = 0; p < b; p++) {
        known_spectrum(n, a + p * n * n, w0 + p * n, 0);
        store(&A, p, a + p * n * n, 1);
    }
    ng_tensor A_before = ng_tensor_to(&A, NG_CPU, "A before");
    ng_test_poison(&w);
    ng_test_poison(&Q);
    ng_status st = ng_eigh(&A, &w, &Q);
    NG_TEST(st == NG_OK, "%s: status %s", what, ng_status_name(st));
    NG_TEST(!memcmp(A.data, A_before.data, ng_tensor_bytes(&A)), "%s: input unchanged", what);
    double *wh = ng_test_to_f64(&w), *qh = ng_test_to_f64(&Q);
    for (int64_t p = 0; p < b; p++) {
        check_eigenpairs(what, t, n, a + p * n * n, wh + p * n, qh + p * n * n, matmul);
        double scale = 0;
        for (int64_t k = 0; k < n; k++) scale = fmax(scale, fabs(w0[p * n + k]));
        char msg[256];
        snprintf(msg, sizeof msg, "%s: eigenvalues of the built spectrum", what);
        ng_test_close(msg, w0 + p * n, wh + p * n, n, 0, tol_of(t, n) * scale);
    }

    /* Q aliasing A: the routine must read each input entry before overwriting it. */
    ng_tensor QA = ng_tensor_to(&A, NG_CPU, "QA");
    ng_test_poison(&w);
    st = ng_eigh(&QA, &w, &QA);
    NG_TEST(st == NG_OK, "%s aliased: status %s", what, ng_status_name(st));
    double *wa = ng_test_to_f64(&w), *qa = ng_test_to_f64(&QA);
    char msg[256];
    snprintf(msg, sizeof msg, "%s aliased", what);
    for (int64_t p = 0; p < b; p++)
        check_eigenpairs(msg, t, n, a + p * n * n, wa + p * n, qa + p * n * n, matmul);
    ng_test_close(msg, wh, wa, b * n, 0, tol_of(t, n) * 2.0);

    free(a);
    free(w0);
    free(wh);
    free(qh);
    free(wa);
    free(qa);
    ng_tensor_free(&A);
    ng_tensor_free(&A_before);
    ng_tensor_free(&w);
    ng_tensor_free(&Q);
    ng_tensor_free(&QA);
}

/* C = op(A) op(B) through BLAS, for the large case below (the loops would take minutes). */
static void blas_matmul(int64_t n, int ta, int tb, const double *A, const double *B, double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)n, (int)n, (int)n, 1.0, A, (int)n, B, (int)n, 0.0, C, (int)n);
}

/* An f32 factor of n >= 2895 (K-FAC's 3072- and 4096-wide layers): LAPACK's f32 workspace query
 * rounds syevd's size below its minimum from there on, which LAPACKE_ssyevd took as it came and
 * failed with info -9; natgrad sizes the workspace itself. A random symmetric matrix, the
 * decomposition checked by its residual and orthogonality. */
static void test_eigh_large(void) {
    int64_t n = 2895 + (int64_t)((ng_test_uniform() + 1) * 100);
    char what[96];
    snprintf(what, sizeof what, "eigh f32 n=%lld (past f32's exact workspace size)", (long long)n);
    ng_tensor A = square(NG_F32, NG_CPU, 1, n, "A"), w = ng_tensor_1d(NG_F32, NG_CPU, n, "w");
    ng_tensor Q = square(NG_F32, NG_CPU, 1, n, "Q");
    double *a = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t i = 0; i < n * n; i++) a[i] = ng_test_uniform();
    store(&A, 0, a, 1);
    ng_status st = ng_eigh(&A, &w, &Q);
    NG_TEST(st == NG_OK, "%s: status %s", what, ng_status_name(st));
    double *wh = ng_test_to_f64(&w), *qh = ng_test_to_f64(&Q);
    check_eigenpairs(what, NG_F32, n, a, wh, qh, blas_matmul);
    free(a), free(wh), free(qh);
    ng_tensor_free(&A), ng_tensor_free(&w), ng_tensor_free(&Q);
}

static void test_cholesky(ng_dtype t, int64_t b, int64_t n) {
    char what[96];
    snprintf(what, sizeof what, "cholesky %s b=%lld n=%lld", ng_dtype_name(t), (long long)b,
             (long long)n);
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    ng_tensor L = square(t, NG_CPU, b, n, "L");
    ng_tensor V = square(t, NG_CPU, b, n, "inverse");
    double *a = malloc(sizeof(double) * (size_t)(b * n * n));
    for (int64_t p = 0; p < b; p++) {
        random_spd(n, 1.0, a + p * n * n);
        store(&A, p, a + p * n * n, 1);
    }
    ng_tensor A_before = ng_tensor_to(&A, NG_CPU, "A before");
    ng_test_poison(&L);
    ng_test_poison(&V);
    ng_status st = ng_cholesky(&A, &L);
    NG_TEST(st == NG_OK, "%s: status %s", what, ng_status_name(st));
    st = ng_cholesky_inverse(&A, &V);
    NG_TEST(st == NG_OK, "%s inverse: status %s", what, ng_status_name(st));
    NG_TEST(!memcmp(A.data, A_before.data, ng_tensor_bytes(&A)), "%s: input unchanged", what);

    double *lh = ng_test_to_f64(&L), *vh = ng_test_to_f64(&V);
    double *R = malloc(sizeof(double) * (size_t)(n * n));
    double *I = identity(n);
    char msg[256];
    for (int64_t p = 0; p < b; p++) {
        const double *ap = a + p * n * n, *l = lh + p * n * n, *v = vh + p * n * n;
        int64_t upper_nonzero = 0, bad_diag = 0, asym = 0;
        for (int64_t i = 0; i < n; i++) {
            bad_diag += !(l[i * n + i] > 0);
            for (int64_t j = i + 1; j < n; j++) {
                upper_nonzero += l[i * n + j] != 0.0; /* NaN counts too */
                asym += v[i * n + j] != v[j * n + i];
            }
        }
        NG_TEST(upper_nonzero == 0, "%s: %lld upper elements of L not zero", what,
                (long long)upper_nonzero);
        NG_TEST(bad_diag == 0, "%s: %lld diagonal elements of L not > 0", what,
                (long long)bad_diag);
        matmul(n, 0, 1, l, l, R);
        snprintf(msg, sizeof msg, "%s: L L^T = A", what);
        ng_test_rel_norm(msg, ap, R, n * n, tol_of(t, n));

        NG_TEST(asym == 0, "%s: inverse not symmetric in %lld pairs", what, (long long)asym);
        /* lambda_min(A) >= 1, so cond(A) <= ||A||_inf. */
        matmul(n, 0, 0, ap, v, R);
        snprintf(msg, sizeof msg, "%s: A A^-1 = I", what);
        ng_test_rel_norm(msg, I, R, n * n, tol_of(t, n) * norm_inf(n, ap));
    }
    free(a);
    free(lh);
    free(vh);
    free(R);
    free(I);
    ng_tensor_free(&A);
    ng_tensor_free(&A_before);
    ng_tensor_free(&L);
    ng_tensor_free(&V);
}

static void test_damped(ng_dtype t, int64_t n) {
    char what[96];
    snprintf(what, sizeof what, "damped_inverse %s n=%lld", ng_dtype_name(t), (long long)n);
    ng_tensor A = square(t, NG_CPU, 1, n, "A");
    ng_tensor V = square(t, NG_CPU, 1, n, "damped inverse");
    double *a = malloc(sizeof(double) * (size_t)(n * n));
    double *R = malloc(sizeof(double) * (size_t)(n * n));
    double *I = identity(n);
    char msg[256];

    /* PSD A: A + lambda I is PD, so the Cholesky path answers. */
    double lambda = 0.3 + 0.2 * ng_test_uniform();
    random_spd(n, 0.0, a);
    store(&A, 0, a, 0);
    ng_test_poison(&V);
    int fb = -1;
    ng_status st = ng_damped_inverse(&A, lambda, &V, &fb);
    NG_TEST(st == NG_OK && fb == 0, "%s SPD: status %s, used_fallback %d", what, ng_status_name(st),
            fb);
    double *v = ng_test_to_f64(&V);
    for (int64_t i = 0; i < n; i++) a[i * n + i] += lambda;
    matmul(n, 0, 0, a, v, R);
    snprintf(msg, sizeof msg, "%s SPD: (A + lambda I) result = I", what);
    /* cond(A + lambda I) <= (||A||_inf + lambda) / lambda */
    ng_test_rel_norm(msg, I, R, n * n, tol_of(t, n) * norm_inf(n, a) / lambda);
    free(v);

    /* Indefinite A with an eigenvalue below -lambda: Cholesky fails and the clamped
     * eigendecomposition answers Q diag(1 / (max(w,0) + lambda)) Q^T. */
    lambda = 1.0 + 0.5 * ng_test_uniform();
    double *Q0 = malloc(sizeof(double) * (size_t)(n * n));
    double *w0 = malloc(sizeof(double) * (size_t)n), *f = malloc(sizeof(double) * (size_t)n);
    double *expect = malloc(sizeof(double) * (size_t)(n * n));
    random_orthogonal(n, Q0);
    double wmax = 0;
    for (int64_t k = 0; k < n; k++) {
        w0[k] = k == 0 ? -2.5 : 3.0 * ng_test_uniform();
        f[k] = 1.0 / (fmax(w0[k], 0.0) + lambda);
        wmax = fmax(wmax, fabs(w0[k]));
    }
    from_eigen(n, Q0, w0, a);
    from_eigen(n, Q0, f, expect);
    store(&A, 0, a, 0);
    ng_test_poison(&V);
    fb = -1;
    st = ng_damped_inverse(&A, lambda, &V, &fb);
    NG_TEST(st == NG_OK && fb == 1, "%s indefinite: status %s, used_fallback %d", what,
            ng_status_name(st), fb);
    v = ng_test_to_f64(&V);
    NG_TEST(all_finite(v, n * n), "%s indefinite: result finite", what);
    snprintf(msg, sizeof msg, "%s indefinite: clamped eigen inverse", what);
    /* An eigen backward error d = 4 n eps ||A|| moves f(A) by about d / lambda^2 (f has slope
     * 1/lambda^2 at most), against ||f(A)|| >= 1 / (||A|| + lambda). */
    ng_test_rel_norm(msg, expect, v, n * n,
                     tol_of(t, n) * wmax * (wmax + lambda) / (lambda * lambda));
    free(v);
    free(Q0);
    free(w0);
    free(f);
    free(expect);
    free(a);
    free(R);
    free(I);
    ng_tensor_free(&A);
    ng_tensor_free(&V);
}

/* A failed entry of a batch gets NaN outputs and the status; the other entries are still good. */
static void test_failures(ng_dtype t) {
    const int64_t b = 3, n = 6;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    ng_tensor w = ng_tensor_2d(t, NG_CPU, b, n, "w");
    ng_tensor Q = square(t, NG_CPU, b, n, "Q");
    double *a = malloc(sizeof(double) * (size_t)(b * n * n));
    double *w0 = malloc(sizeof(double) * (size_t)n);
    const char *dt = ng_dtype_name(t);

    /* eigh: NaN in the lower triangle of entry 1, Inf in entry 2 (a diagonal element). */
    for (int64_t p = 0; p < b; p++) {
        known_spectrum(n, a + p * n * n, w0, 0);
        store(&A, p, a + p * n * n, 0);
    }
    put(&A, 1 * n * n + 3 * n + 1, NAN);
    put(&A, 2 * n * n + 4 * n + 4, INFINITY);
    ng_test_poison(&w);
    ng_test_poison(&Q);
    ng_status st = ng_eigh(&A, &w, &Q);
    NG_TEST(st == NG_ERR_NONFINITE, "eigh %s with NaN: status %s", dt, ng_status_name(st));
    double *wh = ng_test_to_f64(&w), *qh = ng_test_to_f64(&Q);
    check_eigenpairs("eigh good entry beside NaN", t, n, a, wh, qh, matmul);
    NG_TEST(all_nan(wh + n, 2 * n) && all_nan(qh + n * n, 2 * n * n),
            "eigh %s: w and Q of non-finite entries are all NaN", dt);
    free(wh);
    free(qh);

    /* cholesky: entry 1 indefinite, entry 2 PSD but singular (last row and column zero), so
     * its last pivot is exactly 0. */
    ng_tensor L = square(t, NG_CPU, b, n, "L");
    random_spd(n, 1.0, a);
    store(&A, 0, a, 0);
    known_spectrum(n, a + n * n, w0, 1);
    store(&A, 1, a + n * n, 0);
    random_spd(n, 1.0, a + 2 * n * n);
    for (int64_t i = 0; i < n; i++)
        a[2 * n * n + i * n + n - 1] = a[2 * n * n + (n - 1) * n + i] = 0;
    store(&A, 2, a + 2 * n * n, 0);
    ng_test_poison(&L);
    st = ng_cholesky(&A, &L);
    NG_TEST(st == NG_ERR_NOT_PD, "cholesky %s of indefinite: status %s", dt, ng_status_name(st));
    double *lh = ng_test_to_f64(&L);
    NG_TEST(all_finite(lh, n * n), "cholesky %s: the PD entry keeps its factor", dt);
    NG_TEST(all_nan(lh + n * n, 2 * n * n), "cholesky %s: L of non-PD entries all NaN", dt);
    free(lh);
    ng_test_poison(&L);
    st = ng_cholesky_inverse(&A, &L);
    NG_TEST(st == NG_ERR_NOT_PD, "cholesky_inverse %s of indefinite: status %s", dt,
            ng_status_name(st));
    lh = ng_test_to_f64(&L);
    NG_TEST(all_finite(lh, n * n), "cholesky_inverse %s: the PD entry keeps its inverse", dt);
    NG_TEST(all_nan(lh + n * n, 2 * n * n), "cholesky_inverse %s: non-PD entries all NaN", dt);
    free(lh);

    /* Non-finite input to the Cholesky routines and the damped inverse. */
    put(&A, 0 * n * n + 2 * n + 0, NAN);
    ng_test_poison(&L);
    st = ng_cholesky(&A, &L);
    NG_TEST(st == NG_ERR_NONFINITE, "cholesky %s with NaN first: status %s", dt,
            ng_status_name(st));
    lh = ng_test_to_f64(&L);
    NG_TEST(all_nan(lh, b * n * n), "cholesky %s: every failed entry NaN", dt);
    free(lh);
    free(a);
    free(w0);
    ng_tensor_free(&A);
    ng_tensor_free(&w);
    ng_tensor_free(&Q);
    ng_tensor_free(&L);
}

/* Non-finite input to the damped inverse: the status, and NaN rather than a plausible result. */
static void test_damped_nonfinite(ng_dtype t) {
    const int64_t b = 2, n = 5;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    ng_tensor V = square(t, NG_CPU, b, n, "damped inverse");
    double *a = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t p = 0; p < b; p++) {
        random_spd(n, 1.0, a);
        store(&A, p, a, 0);
    }
    put(&A, n * n + 3 * n + 2, NAN);
    ng_test_fill_uniform(&V, -1, 1);
    int fb = -1;
    ng_status st = ng_damped_inverse(&A, 0.1, &V, &fb);
    NG_TEST(st == NG_ERR_NONFINITE, "damped_inverse %s with NaN: status %s", ng_dtype_name(t),
            ng_status_name(st));
    double *v = ng_test_to_f64(&V);
    NG_TEST(all_nan(v, b * n * n), "damped_inverse %s with NaN: result all NaN", ng_dtype_name(t));
    free(v);
    free(a);
    ng_tensor_free(&A);
    ng_tensor_free(&V);
}

static void test_bad_shapes(void) {
    ng_tensor rect = ng_tensor_2d(NG_F64, NG_CPU, 3, 4, "rectangular factor");
    ng_tensor A = ng_tensor_2d(NG_F64, NG_CPU, 5, 5, "factor A");
    ng_tensor A3 = ng_tensor_3d(NG_F64, NG_CPU, 2, 5, 5, "batched A");
    ng_tensor Ah = ng_tensor_2d(NG_F16, NG_CPU, 5, 5, "half factor");
    ng_tensor w = ng_tensor_1d(NG_F64, NG_CPU, 5, "w");
    ng_tensor w4 = ng_tensor_1d(NG_F64, NG_CPU, 4, "short w");
    ng_tensor w2d = ng_tensor_2d(NG_F64, NG_CPU, 1, 5, "w as [1,5]");
    ng_tensor wf = ng_tensor_1d(NG_F32, NG_CPU, 5, "f32 w");
    ng_tensor Q = ng_tensor_2d(NG_F64, NG_CPU, 5, 5, "Q");
    ng_tensor Qf = ng_tensor_2d(NG_F32, NG_CPU, 5, 5, "f32 Q");
    ng_tensor Lb = ng_tensor_3d(NG_F64, NG_CPU, 2, 5, 5, "batched L");
    ng_tensor L4 = ng_tensor_2d(NG_F64, NG_CPU, 4, 4, "L 4x4");
    ng_test_fill_uniform(&A, -1, 1);
    NG_TEST_ERROR(ng_eigh(&rect, &w, &Q), "rectangular factor");
    NG_TEST_ERROR(ng_eigh(&Ah, &w, &Q), "half factor");
    NG_TEST_ERROR(ng_eigh(&A, &w4, &Q), "short w");
    NG_TEST_ERROR(ng_eigh(&A, &w2d, &Q), "w as [1,5]");
    NG_TEST_ERROR(ng_eigh(&A, &wf, &Q), "f32 w");
    NG_TEST_ERROR(ng_eigh(&A, &w, &Qf), "f32 Q");
    NG_TEST_ERROR(ng_eigh(&A3, &w, &Lb), "'w'");
    NG_TEST_ERROR(ng_cholesky(&A, &Lb), "batched L");
    NG_TEST_ERROR(ng_cholesky(&A, &L4), "L 4x4");
    NG_TEST_ERROR(ng_cholesky(&rect, &Q), "rectangular factor");
    NG_TEST_ERROR(ng_cholesky_inverse(&A, &Qf), "f32 Q");
    NG_TEST_ERROR(ng_damped_inverse(&A, 0.0, &Q, NULL), "damping");
    NG_TEST_ERROR(ng_damped_inverse(&A, 0.1, &Qf, NULL), "f32 Q");
    ng_tensor *all[] = {&rect, &A, &A3, &Ah, &w, &w4, &w2d, &wf, &Q, &Qf, &Lb, &L4};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ng_tensor_free(all[i]);
}

int main(void) {
    ng_test_seed();
    size_t mem0 = ng_mem_stats_get(NG_CPU).current;
    const int64_t sizes[] = {1, 2, 7, 64, 257};
    const ng_dtype types[] = {NG_F64, NG_F32};
    for (int ti = 0; ti < 2; ti++) {
        for (int si = 0; si < 5; si++) {
            test_eigh(types[ti], 1, sizes[si]);
            test_cholesky(types[ti], 1, sizes[si]);
        }
        test_eigh(types[ti], 5, 16);
        test_cholesky(types[ti], 5, 16);
        test_failures(types[ti]);
    }
    test_bad_shapes();
    test_eigh_large();
    /* The damped inverse also runs core ops (copy, add_diagonal, fill, gemm, all_finite). */
    for (int ti = 0; ti < 2; ti++) {
        for (int si = 0; si < 5; si++) test_damped(types[ti], sizes[si]);
        test_damped_nonfinite(types[ti]);
    }
    NG_TEST(ng_mem_stats_get(NG_CPU).current == mem0, "every CPU tensor freed (%zu bytes left)",
            ng_mem_stats_get(NG_CPU).current - mem0);
    return ng_test_finish("test_linalg");
}
