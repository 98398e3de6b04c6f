/* The emulated cuSOLVER of the emulation build (core/cusolver_emu.c), called directly,
 * column-major: Xsyevd and batched syevj read only the triangle the fill mode names (the other
 * holds garbage) and return A's eigenpairs, ascending, or descending for syevj unsorted; Xpotrf
 * gives the factor of the named triangle and potri the inverse in it; a singular matrix sets info;
 * and the misuse cuSOLVER refuses (n > 32 for batched Jacobi, a short workspace, a host info) is
 * refused. Skipped outside the emulation build. */
#include <stdio.h>

#include "testing.h"

#ifndef NG_CUDA_EMU
int main(void) {
    printf("test_cusolver_emu: skipped (only the CUDA emulation build emulates cuSOLVER)\n");
    return 77;
}
#else
#include <cusolverDn.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/cuda_context.h"
#include "core/ops.h"

/* A random SPD matrix M M^T + n I, column-major with leading dimension lda, its `uplo` triangle
 * kept and the other one (and the padding rows) set to garbage. Also returns the full matrix. */
static double *spd(int n, int lda, cublasFillMode_t uplo, double *full) {
    double *m = malloc(sizeof(double) * (size_t)(n * n)), *a = malloc(8 * (size_t)(lda * n));
    for (int i = 0; i < n * n; i++) m[i] = ng_test_uniform();
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = i == j ? n : 0;
            for (int k = 0; k < n; k++) s += m[i * n + k] * m[j * n + k];
            full[j * n + i] = s;
        }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < lda; i++) {
            int kept = i < n && (uplo == CUBLAS_FILL_MODE_UPPER ? i <= j : i >= j);
            a[j * lda + i] = kept ? full[j * n + i] : 1e3 * ng_test_uniform();
        }
    free(m);
    return a;
}

static ng_tensor dev_copy(const double *h, int64_t n, ng_dtype dt, const char *name) {
    ng_tensor t = ng_tensor_1d(dt, NG_CUDA, n, name);
    ng_tensor c = ng_tensor_1d(NG_F64, NG_CPU, n, "host");
    memcpy(c.data, h, 8 * (size_t)n);
    ng_tensor tc = ng_tensor_1d(dt, NG_CPU, n, "host_dt");
    ng_cast(&tc, &c);
    ng_tensor_copy(&t, &tc);
    ng_tensor_free(&c), ng_tensor_free(&tc);
    return t;
}

static int dev_int(const ng_tensor *info) {
    double *v = ng_test_to_f64(info);
    int r = (int)v[0];
    free(v);
    return r;
}

/* Xsyevd: A v = w v for each returned pair, ascending, from the named triangle only. */
static void syevd_case(ng_dtype dt, cublasFillMode_t uplo) {
    cusolverDnHandle_t h = ng_cuda_ctx()->cusolver;
    int n = 2 + (int)(ng_test_seed() % 9), lda = n + (int)(ng_test_seed() / 9 % 3);
    double *full = malloc(8 * (size_t)(n * n)), *a = spd(n, lda, uplo, full);
    cudaDataType t = dt == NG_F64 ? CUDA_R_64F : CUDA_R_32F;
    ng_tensor A = dev_copy(a, (int64_t)lda * n, dt, "A"), W = ng_tensor_1d(dt, NG_CUDA, n, "W");
    ng_tensor info = ng_tensor_1d(NG_I32, NG_CUDA, 1, "info");
    cusolverDnParams_t p;
    cusolverDnCreateParams(&p);
    size_t dev = 0, host = 0;
    NG_TEST(cusolverDnXsyevd_bufferSize(h, p, CUSOLVER_EIG_MODE_VECTOR, uplo, n, t, A.data, lda, t,
                                        W.data, t, &dev, &host) == CUSOLVER_STATUS_SUCCESS,
            "syevd size query");
    void *ws = ng_cuda_workspace(dev);
    void *hws = host ? malloc(host) : NULL;
    NG_TEST(cusolverDnXsyevd(h, p, CUSOLVER_EIG_MODE_VECTOR, uplo, n, t, A.data, lda, t, W.data, t,
                             ws, dev - 1, hws, host, info.data) == CUSOLVER_STATUS_INVALID_VALUE,
            "syevd with a workspace one byte short is refused");
    NG_TEST(cusolverDnXsyevd(h, p, CUSOLVER_EIG_MODE_VECTOR, uplo, n, t, A.data, lda, t, W.data, t,
                             ws, dev, hws, host, info.data) == CUSOLVER_STATUS_SUCCESS,
            "syevd runs");
    NG_TEST(dev_int(&info) == 0, "syevd info 0");
    double *q = ng_test_to_f64(&A), *w = ng_test_to_f64(&W), worst = 0;
    double tol = dt == NG_F64 ? 1e-12 : 2e-5;
    for (int k = 0; k < n; k++) {
        if (k) NG_TEST(w[k] >= w[k - 1], "syevd eigenvalues ascending");
        for (int i = 0; i < n; i++) { /* (A v - w v)_i for column k of the result */
            double s = -w[k] * q[k * lda + i];
            for (int j = 0; j < n; j++) s += full[j * n + i] * q[k * lda + j];
            worst = fmax(worst, fabs(s) / (w[n - 1] + 1));
        }
    }
    NG_TEST(worst < tol, "syevd %s %s: |A v - w v| / |A| = %g (tolerance %g)", ng_dtype_name(dt),
            uplo == CUBLAS_FILL_MODE_UPPER ? "upper" : "lower", worst, tol);
    cusolverDnDestroyParams(p);
    free(full), free(a), free(q), free(w), free(hws);
    ng_tensor_free(&A), ng_tensor_free(&W), ng_tensor_free(&info);
}

/* Batched Jacobi: n <= 32 only; unsorted comes back descending. */
static void syevj_case(void) {
    cusolverDnHandle_t h = ng_cuda_ctx()->cusolver;
    int n = 5, batch = 3, lwork = 0;
    syevjInfo_t ji;
    cusolverDnCreateSyevjInfo(&ji);
    double *full = malloc(8 * 25), *a = malloc(8 * 75);
    for (int b = 0; b < batch; b++) {
        double *ab = spd(n, n, CUBLAS_FILL_MODE_LOWER, full);
        memcpy(a + b * 25, ab, 8 * 25);
        free(ab);
    }
    ng_tensor A = dev_copy(a, 75, NG_F64, "A"), W = ng_tensor_1d(NG_F64, NG_CUDA, 15, "W");
    ng_tensor info = ng_tensor_1d(NG_I32, NG_CUDA, batch, "info");
    NG_TEST(cusolverDnDsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                               33, A.data, 33, W.data, &lwork, ji,
                                               batch) == CUSOLVER_STATUS_INVALID_VALUE,
            "batched Jacobi refuses n = 33");
    NG_TEST(cusolverDnDsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER,
                                               n, A.data, n, W.data, &lwork, ji,
                                               batch) == CUSOLVER_STATUS_SUCCESS,
            "batched Jacobi size query");
    double *work = ng_cuda_workspace(8 * (size_t)lwork);
    int host_info[3];
    NG_TEST(cusolverDnDsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, A.data,
                                    n, W.data, work, lwork, host_info, ji,
                                    batch) == CUSOLVER_STATUS_INVALID_VALUE,
            "batched Jacobi with a host info array is refused");
    NG_TEST(cusolverDnDsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, A.data,
                                    n, W.data, work, lwork, info.data, ji,
                                    batch) == CUSOLVER_STATUS_SUCCESS,
            "batched Jacobi runs (unsorted)");
    double *w = ng_test_to_f64(&W);
    for (int b = 0; b < batch; b++)
        for (int k = 1; k < n; k++)
            NG_TEST(w[b * n + k] <= w[b * n + k - 1], "unsorted batched Jacobi: descending");
    free(w), free(full), free(a);
    cusolverDnDestroySyevjInfo(ji);
    ng_tensor_free(&A), ng_tensor_free(&W), ng_tensor_free(&info);
}

/* potrf then potri on the named triangle: L L^T = A (or U^T U), then A A^-1 = I; a singular
 * matrix sets info > 0. */
static void cholesky_case(ng_dtype dt, cublasFillMode_t uplo) {
    cusolverDnHandle_t h = ng_cuda_ctx()->cusolver;
    int n = 3 + (int)(ng_test_seed() % 7), lda = n;
    int up = uplo == CUBLAS_FILL_MODE_UPPER;
    double *full = malloc(8 * (size_t)(n * n)), *a = spd(n, lda, uplo, full);
    cudaDataType t = dt == NG_F64 ? CUDA_R_64F : CUDA_R_32F;
    ng_tensor A = dev_copy(a, (int64_t)n * n, dt, "A");
    ng_tensor info = ng_tensor_1d(NG_I32, NG_CUDA, 1, "info");
    cusolverDnParams_t p;
    cusolverDnCreateParams(&p);
    size_t dev = 0, host = 0;
    cusolverDnXpotrf_bufferSize(h, p, uplo, n, t, A.data, lda, t, &dev, &host);
    void *ws = ng_cuda_workspace(dev + 1);
    NG_TEST(cusolverDnXpotrf(h, p, uplo, n, t, A.data, lda, t, ws, dev, NULL, 0, info.data) ==
                    CUSOLVER_STATUS_SUCCESS &&
                dev_int(&info) == 0,
            "potrf runs, info 0");
    double *f = ng_test_to_f64(&A), worst = 0, tol = dt == NG_F64 ? 1e-12 : 1e-5;
    for (int i = 0; i < n; i++) /* L(i,k) = f[k*lda+i] for i >= k (lower); U(k,j) for upper */
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) {
                double x = up ? (k <= i ? f[i * lda + k] : 0) : (k <= i ? f[k * lda + i] : 0);
                double y = up ? (k <= j ? f[j * lda + k] : 0) : (k <= j ? f[k * lda + j] : 0);
                s += x * y;
            }
            worst = fmax(worst, fabs(s - full[j * n + i]) / n);
        }
    NG_TEST(worst < tol, "potrf %s %s: factor's product against A: %g", ng_dtype_name(dt),
            up ? "upper" : "lower", worst);
    int lwork = 0;
    if (dt == NG_F64)
        cusolverDnDpotri_bufferSize(h, uplo, n, A.data, lda, &lwork);
    else
        cusolverDnSpotri_bufferSize(h, uplo, n, A.data, lda, &lwork);
    void *work = ng_cuda_workspace(ng_dtype_size(dt) * (size_t)lwork);
    cusolverStatus_t st = dt == NG_F64
                              ? cusolverDnDpotri(h, uplo, n, A.data, lda, work, lwork, info.data)
                              : cusolverDnSpotri(h, uplo, n, A.data, lda, work, lwork, info.data);
    NG_TEST(st == CUSOLVER_STATUS_SUCCESS && dev_int(&info) == 0, "potri runs, info 0");
    double *inv = ng_test_to_f64(&A);
    worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) {
                int r = up ? (k <= j ? k : j) : (k >= j ? k : j),
                    c = up ? (k <= j ? j : k) : (k >= j ? j : k);
                s += full[k * n + i] * inv[c * lda + r]; /* the named triangle of A^-1 */
            }
            worst = fmax(worst, fabs(s - (i == j)));
        }
    NG_TEST(worst < tol * 10, "potri %s %s: A A^-1 - I: %g", ng_dtype_name(dt),
            up ? "upper" : "lower", worst);
    /* a singular matrix: the zero matrix */
    double *zero = calloc((size_t)(n * n), 8);
    ng_tensor Z = dev_copy(zero, (int64_t)n * n, dt, "Z");
    cusolverDnXpotrf(h, p, uplo, n, t, Z.data, lda, t, ws, dev, NULL, 0, info.data);
    NG_TEST(dev_int(&info) > 0, "potrf of a singular matrix sets info > 0");
    cusolverDnDestroyParams(p);
    free(full), free(a), free(f), free(inv), free(zero);
    ng_tensor_free(&A), ng_tensor_free(&Z), ng_tensor_free(&info);
}

int main(void) {
    ng_test_seed();
    for (ng_dtype dt = NG_F32; dt <= NG_F64; dt++)
        for (int u = 0; u <= 1; u++) {
            cublasFillMode_t uplo = u ? CUBLAS_FILL_MODE_UPPER : CUBLAS_FILL_MODE_LOWER;
            syevd_case(dt, uplo);
            cholesky_case(dt, uplo);
        }
    syevj_case();
    ng_cuda_workspace_release();
    return ng_test_finish("test_cusolver_emu");
}
#endif
