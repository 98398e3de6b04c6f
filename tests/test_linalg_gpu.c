/* CUDA eigh (Xsyevd, batched syevj), Cholesky, inverses and damped inverse against the CPU twin
 * on the same random inputs, plus failure statuses with NaN outputs. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "core/backend.h"
#include "core/dispatch.h"
#include "core/linalg.h"
#include "core/memory.h"
#include "core/ops.h"
#include "linalg_ref.h"
#include "testing.h"

static double *dalloc(int64_t count) {
    double *p = calloc((size_t)(count ? count : 1), sizeof(double));
    if (!p) abort();
    return p;
}

/* C = op(A) op(B) for n x n row-major doubles: the reference products, in f64 through BLAS so
 * that n = 1024 stays quick. */
static void mm(int64_t n, int ta, int tb, const double *A, const double *B, double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)n, (int)n, (int)n, 1.0, A, (int)n, B, (int)n, 0.0, C, (int)n);
}

/* A random orthogonal matrix: the Q factor of a random matrix. */
static void random_orthogonal(int64_t n, double *Q0) {
    double *tau = dalloc(n);
    for (int64_t i = 0; i < n * n; i++) Q0[i] = ng_test_uniform();
    int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)n, (int)n, Q0, (int)n, tau);
    if (!info) info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)n, (int)n, (int)n, Q0, (int)n, tau);
    if (info) ng_test_fail("test setup: QR of a random matrix failed (info %d)", info);
    free(tau);
}

/* A = Q0 diag(f) Q0^T. */
static void from_eigen(int64_t n, const double *Q0, const double *f, double *A) {
    double *QF = dalloc(n * n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) QF[i * n + j] = Q0[i * n + j] * f[j];
    mm(n, 0, 1, QF, Q0, A);
    free(QF);
}

/* Symmetric A with evenly spaced eigenvalues w0 (ascending) in [-1,1], gap 2/(n-1), so that each
 * eigenvector is determined up to sign and can be compared across the twins. */
static void spaced_spectrum(int64_t n, double *A, double *w0) {
    double *Q0 = dalloc(n * n);
    random_orthogonal(n, Q0);
    for (int64_t k = 0; k < n; k++) w0[k] = n > 1 ? -1.0 + 2.0 * (double)k / (double)(n - 1) : 0.5;
    from_eigen(n, Q0, w0, A);
    free(Q0);
}

/* SPD A = X X^T / n + shift I with X uniform in [-1,1]: eigenvalues >= shift. */
static void random_spd(int64_t n, double shift, double *A) {
    double *X = dalloc(n * n);
    for (int64_t i = 0; i < n * n; i++) X[i] = ng_test_uniform();
    mm(n, 0, 1, X, X, A);
    for (int64_t i = 0; i < n * n; i++) A[i] /= (double)n;
    for (int64_t i = 0; i < n; i++) A[i * n + i] += shift;
    free(X);
}

static ng_tensor rows(ng_dtype t, ng_device d, int64_t b, int64_t n, const char *name) {
    return b == 1 ? ng_tensor_1d(t, d, n, name) : ng_tensor_2d(t, d, b, n, name);
}

/* Device tensor equals host tensor bit for bit (the input was not written). */
static int same_bits(const ng_tensor *dev, const ng_tensor *host) {
    ng_tensor h = ng_tensor_to(dev, NG_CPU, "device copy");
    int same = !memcmp(h.data, host->data, ng_tensor_bytes(host));
    ng_tensor_free(&h);
    return same;
}

static void test_eigh(ng_dtype t, int64_t b, int64_t n) {
    char what[96];
    snprintf(what, sizeof what, "cuda eigh %s b=%lld n=%lld", ng_dtype_name(t), (long long)b,
             (long long)n);
    const int64_t nn = n * n;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    double *a = dalloc(b * nn), *w0 = dalloc(b * n);
    for (int64_t p = 0; p < b; p++) {
        spaced_spectrum(n, a + p * nn, w0 + p * n);
        store(&A, p, a + p * nn, 1);
    }
    ng_tensor dA = ng_tensor_to(&A, NG_CUDA, "A");
    ng_tensor w = rows(t, NG_CPU, b, n, "w"), Q = square(t, NG_CPU, b, n, "Q");
    ng_tensor dw = rows(t, NG_CUDA, b, n, "w"), dQ = square(t, NG_CUDA, b, n, "Q");
    ng_test_poison(&w);
    ng_test_poison(&Q);
    ng_test_poison(&dw);
    ng_test_poison(&dQ);
    ng_status sc = ng_eigh(&A, &w, &Q), sg = ng_eigh(&dA, &dw, &dQ);
    NG_TEST(sc == NG_OK && sg == NG_OK, "%s: status cpu %s, cuda %s", what, ng_status_name(sc),
            ng_status_name(sg));
    NG_TEST(same_bits(&dA, &A), "%s: input unchanged", what);
    double *cw = ng_test_to_f64(&w), *cq = ng_test_to_f64(&Q);
    double *gw = ng_test_to_f64(&dw), *gq = ng_test_to_f64(&dQ);
    double tol = tol_of(t, n), gap = n > 1 ? 2.0 / (double)(n - 1) : 1.0;
    char msg[256];
    for (int64_t p = 0; p < b; p++) {
        check_eigenpairs(what, t, n, a + p * nn, gw + p * n, gq + p * nn, mm);
        /* ||A||_2 = 1: each twin's eigenvalues are within tol of the exact ones. */
        snprintf(msg, sizeof msg, "%s: eigenvalues vs the built spectrum", what);
        ng_test_close(msg, w0 + p * n, gw + p * n, n, 0, tol);
        snprintf(msg, sizeof msg, "%s: eigenvalues vs cpu", what);
        ng_test_close(msg, cw + p * n, gw + p * n, n, 0, 2 * tol);
        /* Davis-Kahan: a backward error tol moves an eigenvector by at most tol / gap, for
         * either twin; columns are compared after matching their signs. */
        double worst = 0;
        for (int64_t j = 0; j < n; j++) {
            const double *c = cq + p * nn, *g = gq + p * nn;
            double dot = 0, err = 0;
            for (int64_t i = 0; i < n; i++) dot += c[i * n + j] * g[i * n + j];
            double sgn = dot < 0 ? -1.0 : 1.0;
            for (int64_t i = 0; i < n; i++) {
                double d = g[i * n + j] - sgn * c[i * n + j];
                err += d * d;
            }
            if (!(sqrt(err) <= worst)) worst = sqrt(err); /* NaN sticks */
        }
        NG_TEST(worst <= 2 * tol / gap, "%s: eigenvectors vs cpu up to sign: worst %g > %g", what,
                worst, 2 * tol / gap);
    }

    /* Q aliasing A on the device. */
    ng_tensor dQA = ng_tensor_to(&A, NG_CUDA, "QA");
    ng_test_poison(&dw);
    sg = ng_eigh(&dQA, &dw, &dQA);
    NG_TEST(sg == NG_OK, "%s aliased: status %s", what, ng_status_name(sg));
    double *aw = ng_test_to_f64(&dw), *aq = ng_test_to_f64(&dQA);
    snprintf(msg, sizeof msg, "%s aliased", what);
    for (int64_t p = 0; p < b; p++)
        check_eigenpairs(msg, t, n, a + p * nn, aw + p * n, aq + p * nn, mm);
    ng_test_close(msg, gw, aw, b * n, 0, 2 * tol);

    free(a);
    free(w0);
    free(cw);
    free(cq);
    free(gw);
    free(gq);
    free(aw);
    free(aq);
    ng_tensor *all[] = {&A, &dA, &w, &Q, &dw, &dQ, &dQA};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ng_tensor_free(all[i]);
}

static void test_cholesky(ng_dtype t, int64_t b, int64_t n) {
    char what[96];
    snprintf(what, sizeof what, "cuda cholesky %s b=%lld n=%lld", ng_dtype_name(t), (long long)b,
             (long long)n);
    const int64_t nn = n * n;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    double *a = dalloc(b * nn);
    for (int64_t p = 0; p < b; p++) {
        random_spd(n, 1.0, a + p * nn);
        store(&A, p, a + p * nn, 1);
    }
    ng_tensor dA = ng_tensor_to(&A, NG_CUDA, "A");
    ng_tensor L = square(t, NG_CPU, b, n, "L"), V = square(t, NG_CPU, b, n, "inverse");
    ng_tensor dL = square(t, NG_CUDA, b, n, "L"), dV = square(t, NG_CUDA, b, n, "inverse");
    ng_test_poison(&L);
    ng_test_poison(&V);
    ng_test_poison(&dL);
    ng_test_poison(&dV);
    ng_status s1 = ng_cholesky(&A, &L), s2 = ng_cholesky(&dA, &dL);
    ng_status s3 = ng_cholesky_inverse(&A, &V), s4 = ng_cholesky_inverse(&dA, &dV);
    NG_TEST(s1 == NG_OK && s2 == NG_OK && s3 == NG_OK && s4 == NG_OK,
            "%s: statuses cpu %s / %s, cuda %s / %s", what, ng_status_name(s1), ng_status_name(s3),
            ng_status_name(s2), ng_status_name(s4));
    NG_TEST(same_bits(&dA, &A), "%s: input unchanged", what);
    double *cl = ng_test_to_f64(&L), *cv = ng_test_to_f64(&V);
    double *gl = ng_test_to_f64(&dL), *gv = ng_test_to_f64(&dV);
    double *R = dalloc(nn), *eye = identity(n);
    double tol = tol_of(t, n);
    char msg[256];
    for (int64_t p = 0; p < b; p++) {
        const double *ap = a + p * nn, *l = gl + p * nn, *v = gv + p * nn;
        /* lambda_min(A) >= 1, so cond(A) <= ||A||_inf; forward errors are cond times backward. */
        double cond = norm_inf(n, ap);
        int64_t upper_nonzero = 0, asym = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) {
                upper_nonzero += l[i * n + j] != 0.0;
                asym += v[i * n + j] != v[j * n + i];
            }
        NG_TEST(upper_nonzero == 0, "%s: %lld upper elements of L not zero", what,
                (long long)upper_nonzero);
        NG_TEST(asym == 0, "%s: inverse not symmetric in %lld pairs", what, (long long)asym);
        mm(n, 0, 1, l, l, R);
        snprintf(msg, sizeof msg, "%s: L L^T = A", what);
        ng_test_rel_norm(msg, ap, R, nn, tol);
        snprintf(msg, sizeof msg, "%s: L vs cpu", what);
        ng_test_rel_norm(msg, cl + p * nn, l, nn, 2 * tol * cond);
        mm(n, 0, 0, ap, v, R);
        snprintf(msg, sizeof msg, "%s: A A^-1 = I", what);
        ng_test_rel_norm(msg, eye, R, nn, tol * cond);
        snprintf(msg, sizeof msg, "%s: inverse vs cpu", what);
        ng_test_rel_norm(msg, cv + p * nn, v, nn, 2 * tol * cond);
    }
    free(a);
    free(cl);
    free(cv);
    free(gl);
    free(gv);
    free(R);
    free(eye);
    ng_tensor *all[] = {&A, &dA, &L, &V, &dL, &dV};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ng_tensor_free(all[i]);
}

/* Runs the damped inverse on both twins; returns host copies of the cpu and cuda results. */
static void damped_both(const char *what, const ng_tensor *A, double lambda, int expect_fallback,
                        double **cpu, double **gpu) {
    ng_tensor dA = ng_tensor_to(A, NG_CUDA, "A");
    ng_tensor V = square(A->dtype, NG_CPU, A->ndim == 3 ? A->shape[0] : 1, A->shape[A->ndim - 1],
                         "damped inverse");
    ng_tensor dV = ng_tensor_to(&V, NG_CUDA, "damped inverse");
    ng_test_poison(&V);
    ng_test_poison(&dV);
    int fc = -1, fg = -1;
    ng_status sc = ng_damped_inverse(A, lambda, &V, &fc);
    ng_status sg = ng_damped_inverse(&dA, lambda, &dV, &fg);
    NG_TEST(sc == NG_OK && sg == NG_OK && fc == expect_fallback && fg == expect_fallback,
            "%s: status cpu %s (fallback %d), cuda %s (fallback %d), fallback %d expected", what,
            ng_status_name(sc), fc, ng_status_name(sg), fg, expect_fallback);
    *cpu = ng_test_to_f64(&V);
    *gpu = ng_test_to_f64(&dV);
    NG_TEST(all_finite(*gpu, V.numel), "%s: cuda result finite", what);
    ng_tensor_free(&dA);
    ng_tensor_free(&V);
    ng_tensor_free(&dV);
}

static void test_damped(ng_dtype t, int64_t b, int64_t n) {
    char what[96], msg[256];
    const int64_t nn = n * n;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    double *a = dalloc(b * nn), *R = dalloc(nn), *eye = identity(n);
    double *cv, *gv;

    /* PSD A: A + lambda I is PD and the Cholesky path answers. */
    snprintf(what, sizeof what, "cuda damped_inverse SPD %s b=%lld n=%lld", ng_dtype_name(t),
             (long long)b, (long long)n);
    double lambda = 0.3 + 0.2 * ng_test_uniform();
    for (int64_t p = 0; p < b; p++) {
        random_spd(n, 0.0, a + p * nn);
        store(&A, p, a + p * nn, 0);
    }
    damped_both(what, &A, lambda, 0, &cv, &gv);
    for (int64_t p = 0; p < b; p++) {
        double *ap = a + p * nn;
        for (int64_t i = 0; i < n; i++) ap[i * n + i] += lambda;
        double cond = norm_inf(n, ap) / lambda;
        mm(n, 0, 0, ap, gv + p * nn, R);
        snprintf(msg, sizeof msg, "%s: (A + lambda I) result = I", what);
        ng_test_rel_norm(msg, eye, R, nn, tol_of(t, n) * cond);
        snprintf(msg, sizeof msg, "%s: vs cpu", what);
        ng_test_rel_norm(msg, cv + p * nn, gv + p * nn, nn, 2 * tol_of(t, n) * cond);
    }
    free(cv);
    free(gv);

    /* Indefinite A (an eigenvalue -2.5 < -lambda): the clamped eigen path on both twins. */
    snprintf(what, sizeof what, "cuda damped_inverse indefinite %s b=%lld n=%lld", ng_dtype_name(t),
             (long long)b, (long long)n);
    lambda = 1.0 + 0.5 * ng_test_uniform();
    double *Q0 = dalloc(nn), *w0 = dalloc(n), *f = dalloc(n), *expect = dalloc(b * nn);
    double wmax = 2.5;
    for (int64_t p = 0; p < b; p++) {
        random_orthogonal(n, Q0);
        for (int64_t k = 0; k < n; k++) {
            w0[k] = k == 0 ? -2.5 : 2.5 * ng_test_uniform();
            f[k] = 1.0 / (fmax(w0[k], 0.0) + lambda);
        }
        from_eigen(n, Q0, w0, a + p * nn);
        from_eigen(n, Q0, f, expect + p * nn);
        store(&A, p, a + p * nn, 0);
    }
    damped_both(what, &A, lambda, 1, &cv, &gv);
    /* As in test_linalg.c: an eigen backward error d = tol ||A|| moves f(A) by about d / lambda^2
     * against ||f(A)|| >= 1 / (||A|| + lambda). */
    double rel = tol_of(t, n) * wmax * (wmax + lambda) / (lambda * lambda);
    snprintf(msg, sizeof msg, "%s: clamped eigen inverse", what);
    ng_test_rel_norm(msg, expect, gv, b * nn, rel);
    snprintf(msg, sizeof msg, "%s: vs cpu", what);
    ng_test_rel_norm(msg, cv, gv, b * nn, 2 * rel);
    free(cv);
    free(gv);
    free(Q0);
    free(w0);
    free(f);
    free(expect);
    free(a);
    free(R);
    free(eye);
    ng_tensor_free(&A);
}

/* Failed entries: the status, NaN outputs for them, good outputs for the others. */
static void test_failures(ng_dtype t) {
    const char *dt = ng_dtype_name(t);
    /* eigh on both cuda paths: b=3, n=6 is batched syevj; b=2, n=40 loops Xsyevd. */
    const int64_t cases[2][2] = {{3, 6}, {2, 40}};
    for (int c = 0; c < 2; c++) {
        int64_t b = cases[c][0], n = cases[c][1], nn = n * n;
        ng_tensor A = square(t, NG_CPU, b, n, "A");
        double *a = dalloc(b * nn), *w0 = dalloc(n);
        for (int64_t p = 0; p < b; p++) {
            spaced_spectrum(n, a + p * nn, w0);
            store(&A, p, a + p * nn, 0);
        }
        put(&A, 1 * nn + 3 * n + 1, NAN); /* lower triangle of entry 1 */
        if (b > 2) put(&A, 2 * nn + 4 * n + 4, INFINITY);
        ng_tensor dA = ng_tensor_to(&A, NG_CUDA, "A");
        ng_tensor dw = ng_tensor_2d(t, NG_CUDA, b, n, "w"), dQ = square(t, NG_CUDA, b, n, "Q");
        ng_test_poison(&dw);
        ng_test_poison(&dQ);
        ng_status st = ng_eigh(&dA, &dw, &dQ);
        NG_TEST(st == NG_ERR_NONFINITE, "cuda eigh %s b=%lld n=%lld with NaN: status %s", dt,
                (long long)b, (long long)n, ng_status_name(st));
        double *gw = ng_test_to_f64(&dw), *gq = ng_test_to_f64(&dQ);
        check_eigenpairs("cuda eigh good entry beside NaN", t, n, a, gw, gq, mm);
        NG_TEST(all_nan(gw + n, (b - 1) * n) && all_nan(gq + nn, (b - 1) * nn),
                "cuda eigh %s b=%lld: w and Q of non-finite entries all NaN", dt, (long long)b);
        free(gw);
        free(gq);
        free(a);
        free(w0);
        ng_tensor *all[] = {&A, &dA, &dw, &dQ};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ng_tensor_free(all[i]);
    }

    /* cholesky: entry 1 indefinite, entry 2 PSD with a zero last row and column (pivot 0). */
    const int64_t b = 3, n = 64, nn = n * n;
    ng_tensor A = square(t, NG_CPU, b, n, "A");
    double *a = dalloc(b * nn), *w0 = dalloc(n);
    random_spd(n, 1.0, a);
    store(&A, 0, a, 0);
    spaced_spectrum(n, a + nn, w0); /* eigenvalues down to -1 */
    store(&A, 1, a + nn, 0);
    random_spd(n, 1.0, a + 2 * nn);
    for (int64_t i = 0; i < n; i++) a[2 * nn + i * n + n - 1] = a[2 * nn + (n - 1) * n + i] = 0;
    store(&A, 2, a + 2 * nn, 0);
    ng_tensor dA = ng_tensor_to(&A, NG_CUDA, "A");
    ng_tensor L = square(t, NG_CPU, b, n, "L"), dL = square(t, NG_CUDA, b, n, "L");
    for (int inv = 0; inv < 2; inv++) {
        const char *op = inv ? "cholesky_inverse" : "cholesky";
        ng_test_poison(&L);
        ng_test_poison(&dL);
        ng_status sc = inv ? ng_cholesky_inverse(&A, &L) : ng_cholesky(&A, &L);
        ng_status sg = inv ? ng_cholesky_inverse(&dA, &dL) : ng_cholesky(&dA, &dL);
        NG_TEST(sc == NG_ERR_NOT_PD && sg == NG_ERR_NOT_PD, "cuda %s %s not PD: cpu %s, cuda %s",
                op, dt, ng_status_name(sc), ng_status_name(sg));
        double *cl = ng_test_to_f64(&L), *gl = ng_test_to_f64(&dL);
        char msg[128];
        snprintf(msg, sizeof msg, "cuda %s %s: PD entry beside failures vs cpu", op, dt);
        ng_test_rel_norm(msg, cl, gl, nn, 2 * tol_of(t, n) * norm_inf(n, a));
        NG_TEST(all_nan(gl + nn, 2 * nn), "cuda %s %s: non-PD entries all NaN", op, dt);
        free(cl);
        free(gl);
    }
    /* Non-finite input first in the batch: that status, every failed entry NaN. */
    put(&A, 2 * n, NAN);
    ng_tensor_copy(&dA, &A);
    ng_test_poison(&dL);
    ng_status st = ng_cholesky(&dA, &dL);
    NG_TEST(st == NG_ERR_NONFINITE, "cuda cholesky %s with NaN: status %s", dt, ng_status_name(st));
    double *gl = ng_test_to_f64(&dL);
    NG_TEST(all_nan(gl, b * nn), "cuda cholesky %s with NaN: all entries NaN", dt);
    free(gl);
    free(a);
    free(w0);
    ng_tensor *all[] = {&A, &dA, &L, &dL};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) ng_tensor_free(all[i]);
}

/* The workspace's peak over one call, freed before it: that call's request. */
static size_t request_of(ng_linalg_op op, const ng_tensor *dA, ng_tensor *dw, ng_tensor *dX,
                         double lambda) {
    NG_CUDA_ONLY(ng_cuda_workspace_release()); /* the CUDA build's: the CPU one does not get here */
    ng_mem_reset_peak(NG_CUDA);
    ng_status st = op == NG_LINALG_EIGH       ? ng_eigh(dA, dw, dX)
                   : op == NG_LINALG_CHOLESKY ? ng_cholesky(dA, dX)
                   : lambda > 0               ? ng_damped_inverse(dA, lambda, dX, NULL)
                                              : ng_cholesky_inverse(dA, dX);
    NG_TEST(st == NG_OK, "workspace case: status %s", ng_status_name(st));
    return ng_mem_stats_get(NG_CUDA).cat_peak[NG_MEM_WORKSPACE];
}

/* Each CUDA eigh and Cholesky (inverse) asks the shared CUDA workspace for exactly what the
 * memory plan counts (ng_linalg_cuda_workspace: cuSOLVER asked the twins' questions, not an
 * estimate, on a GPU machine), batched Jacobi included; K-FAC's damped inverse asks for the
 * larger of its finiteness check and the Cholesky inverse (ng_kfac_planner_cuda_workspace's
 * rule). Fresh random SPD inputs each time. */
static void workspace_as_planned(ng_dtype t) {
    static const struct {
        ng_linalg_op op;
        int64_t b, n;
    } cases[] = {{NG_LINALG_EIGH, 1, 7},
                 {NG_LINALG_EIGH, 5, 16},
                 {NG_LINALG_EIGH, 3, 32},
                 {NG_LINALG_EIGH, 2, 45},
                 {NG_LINALG_EIGH, 1, 300},
                 {NG_LINALG_CHOLESKY, 1, 64},
                 {NG_LINALG_CHOLESKY, 3, 40},
                 {NG_LINALG_CHOLESKY_INVERSE, 1, 200},
                 {NG_LINALG_CHOLESKY_INVERSE, 4, 20}};
    static const char *names[] = {"eigh", "cholesky", "cholesky inverse"};
    for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
        int64_t b = cases[k].b, n = cases[k].n;
        ng_tensor A = square(t, NG_CPU, b, n, "A");
        double *a = dalloc(n * n);
        for (int64_t p = 0; p < b; p++) {
            random_spd(n, 1.0, a);
            store(&A, p, a, 0); /* both triangles: the damped inverse checks them all */
        }
        ng_tensor dA = ng_tensor_to(&A, NG_CUDA, "A");
        ng_tensor dX = square(t, NG_CUDA, b, n, "out"), dw = rows(t, NG_CUDA, b, n, "w");
        int est = 0;
        size_t want = ng_linalg_cuda_workspace(cases[k].op, t, b, n, &est);
        size_t got = request_of(cases[k].op, &dA, &dw, &dX, 0);
        NG_TEST(got == want && !est,
                "cuda %s %s b=%lld n=%lld: workspace peak %zu bytes, planned %zu (estimated %d)",
                names[cases[k].op], ng_dtype_name(t), (long long)b, (long long)n, got, want, est);
        if (cases[k].op == NG_LINALG_CHOLESKY_INVERSE) {
            want = ng_linalg_cuda_workspace(cases[k].op, t, b, n, NULL);
            size_t check = ng_reduce_cuda_workspace(b * n * n);
            if (check > want) want = check;
            got = request_of(cases[k].op, &dA, &dw, &dX, 0.1 + ng_test_uniform() * 0.5);
            NG_TEST(got == want,
                    "cuda damped inverse %s b=%lld n=%lld: workspace peak %zu bytes, planned %zu",
                    ng_dtype_name(t), (long long)b, (long long)n, got, want);
        }
        free(a);
        ng_tensor_free(&A), ng_tensor_free(&dA), ng_tensor_free(&dX), ng_tensor_free(&dw);
    }
}

/* CUDA bytes in use outside the shared workspace: the solvers' scratch comes from
 * ng_cuda_workspace, which keeps its buffer for later calls (it is counted, in
 * NG_MEM_WORKSPACE, and never handed back), so it is no leak. */
static size_t tensor_bytes(void) {
    ng_mem_stats s = ng_mem_stats_get(NG_CUDA);
    return s.current - s.cat_current[NG_MEM_WORKSPACE];
}

int main(void) {
    ng_test_require_gpu("test_linalg_gpu");
    ng_test_seed();
    size_t mem0 = tensor_bytes();
    const ng_dtype types[] = {NG_F64, NG_F32};
    /* b = 1: Xsyevd; b = 8, n = 24: batched syevj; b = 3, n = 100: Xsyevd per entry. */
    const int64_t shapes[5][2] = {{1, 7}, {1, 64}, {1, 1024}, {8, 24}, {3, 100}};
    for (int ti = 0; ti < 2; ti++) {
        workspace_as_planned(types[ti]);
        for (int si = 0; si < 5; si++) {
            test_eigh(types[ti], shapes[si][0], shapes[si][1]);
            test_cholesky(types[ti], shapes[si][0], shapes[si][1]);
        }
        test_failures(types[ti]);
        test_damped(types[ti], 1, 64);
        test_damped(types[ti], 3, 100);
    }
    NG_TEST(tensor_bytes() == mem0, "every CUDA tensor freed (%zu bytes left)",
            tensor_bytes() - mem0);
    return ng_test_finish("test_linalg_gpu");
}
