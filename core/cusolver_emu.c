/* cuSOLVER's dense symmetric solvers as the CUDA emulation build runs them (core/cuda_emu.h): the
 * calls the binding (core/linalg_cusolver.c) makes, column-major as cuSOLVER defines them, with
 * cuSOLVER's argument checks (sizes, leading dimensions, fill mode, types, batched Jacobi's
 * n <= 32) and device pointers over each operand, so that the binding's row-major turn (the
 * row-major lower triangle passed as the column-major upper one), its workspace layout and its
 * info handling run here as on a GPU. The arithmetic is LAPACK's (?syevd, ?potrf, ?potri) on
 * the device buffers themselves. It holds the binding to more than cuSOLVER reports:
 * - a scratch buffer smaller than the query said, or not device memory, is refused, and the
 *   scratch is overwritten with NaN after each call;
 * - a non-finite entry in the triangle a solver reads is refused (cuSOLVER's answer to one is
 *   unspecified: the binding screens them out);
 * - batched Jacobi without sorted eigenvalues returns them in descending order.
 * A refusal prints its reason on stderr and returns cuSOLVER's status. */
#include <cusolverDn.h>
#include <lapacke.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"
#include "error.h"

struct cusolverDnContext {
    cudaStream_t stream;
};
struct cusolverDnParams {
    int unused;
};
struct syevjInfo {
    int sort;
};

/* Prints why the emulated library refuses a call (ng_emu_say), then returns its status. */
#define refuse(status, ...) (ng_emu_say("cuSOLVER", __VA_ARGS__), (status))

#define NEW(T, p)                                                                                  \
    do {                                                                                           \
        if (!(p)) return refuse(CUSOLVER_STATUS_INVALID_VALUE, "NULL pointer for a new handle");   \
        *(p) = calloc(1, sizeof(T));                                                               \
        if (!*(p)) return CUSOLVER_STATUS_ALLOC_FAILED;                                            \
        return CUSOLVER_STATUS_SUCCESS;                                                            \
    } while (0)

cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h) {
    NEW(struct cusolverDnContext, h);
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h) {
    free(h);
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s) {
    if (!h) return refuse(CUSOLVER_STATUS_NOT_INITIALIZED, "cusolverDnSetStream: NULL handle");
    h->stream = s;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p) {
    NEW(struct cusolverDnParams, p);
}
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p) {
    free(p);
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateSyevjInfo(syevjInfo_t *i) {
    NEW(struct syevjInfo, i);
}
cusolverStatus_t cusolverDnDestroySyevjInfo(syevjInfo_t i) {
    free(i);
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXsyevjSetSortEig(syevjInfo_t i, int sort) {
    if (!i) return refuse(CUSOLVER_STATUS_INVALID_VALUE, "cusolverDnXsyevjSetSortEig: NULL info");
    i->sort = sort;
    return CUSOLVER_STATUS_SUCCESS;
}

/* ---- checks and sizes ------------------------------------------------------------------------ */

static size_t type_size(cudaDataType t) {
    return t == CUDA_R_64F ? 8 : t == CUDA_R_32F ? 4 : 0;
}

static cusolverStatus_t check_common(const char *fn, cusolverDnHandle_t h, cublasFillMode_t uplo,
                                     int64_t n, int64_t lda, cudaDataType at, cudaDataType ct) {
    if (!h) return refuse(CUSOLVER_STATUS_NOT_INITIALIZED, "%s: NULL handle", fn);
    if (uplo != CUBLAS_FILL_MODE_UPPER && uplo != CUBLAS_FILL_MODE_LOWER)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: fill mode %d", fn, (int)uplo);
    if (n < 0 || lda < (n > 1 ? n : 1))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: n %lld, lda %lld", fn, (long long)n,
                      (long long)lda);
    if (!type_size(at) || ct != at)
        return refuse(CUSOLVER_STATUS_NOT_SUPPORTED, "%s: data type %d with compute type %d", fn,
                      (int)at, (int)ct);
    return CUSOLVER_STATUS_SUCCESS;
}

/* Device scratch the emulated solvers ask for (LAPACK's own needs for the same job). */
static size_t syevd_bytes(int64_t n, size_t es) {
    return es * (size_t)(1 + 6 * n + 2 * n * n) + sizeof(int) * (size_t)(3 + 5 * n);
}
static size_t potrf_bytes(int64_t n, size_t es) {
    return es * (size_t)(32 * (n > 0 ? n : 1));
}
static int potri_lwork(int n) {
    return n * n > 1 ? n * n : 1;
}
static int syevj_lwork(int n, int batch) {
    return batch * (n * n + 2 * n) + 1;
}

/* A device operand of `bytes`, checked inside one block of device memory. */
static int device(const void *p, size_t bytes) {
    return p && ng_emu_is_device(p, bytes ? bytes : 1);
}

static cusolverStatus_t check_buffers(const char *fn, const void *a, size_t a_bytes, const void *ws,
                                      size_t ws_given, size_t ws_need, const void *host_ws,
                                      size_t host_given, const int *info, int64_t n_info) {
    if (!device(a, a_bytes))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE,
                      "%s: the matrix (%p, %zu bytes) is not in one block of device memory", fn, a,
                      a_bytes);
    if (ws_given < ws_need)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE,
                      "%s: %zu bytes of device workspace given, the query said %zu", fn, ws_given,
                      ws_need);
    if (ws_given && !device(ws, ws_given))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE,
                      "%s: the workspace (%p, %zu bytes) is not one block of device memory", fn, ws,
                      ws_given);
    if (host_given && (!host_ws || ng_emu_is_device(host_ws, 1)))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: the host workspace is not host memory",
                      fn);
    if (!device(info, sizeof(int) * (size_t)n_info))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: info is not device memory", fn);
    return CUSOLVER_STATUS_SUCCESS;
}

/* 1 when the triangle `uplo` of the column-major n x n matrix holds a non-finite entry. */
static int nonfinite(const void *a, size_t es, int64_t n, int64_t lda, cublasFillMode_t uplo) {
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = uplo == CUBLAS_FILL_MODE_UPPER ? 0 : j;
             i < (uplo == CUBLAS_FILL_MODE_UPPER ? j + 1 : n); i++) {
            double v = es == 8 ? ((const double *)a)[j * lda + i] : ((const float *)a)[j * lda + i];
            if (!isfinite(v)) return 1;
        }
    return 0;
}

static char lapack_uplo(cublasFillMode_t u) {
    return u == CUBLAS_FILL_MODE_UPPER ? 'U' : 'L';
}

static void clobber(void *ws, size_t bytes) {
    if (ws && bytes) memset(ws, 0xff, bytes);
}

/* ---- eigh ------------------------------------------------------------------------------------ */

cusolverStatus_t cusolverDnXsyevd_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t params,
                                             cusolverEigMode_t jobz, cublasFillMode_t uplo,
                                             int64_t n, cudaDataType at, const void *A, int64_t lda,
                                             cudaDataType wt, const void *W, cudaDataType ct,
                                             size_t *dev_bytes, size_t *host_bytes) {
    (void)A, (void)W;
    const char *fn = "cusolverDnXsyevd_bufferSize";
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, at, ct);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!params || wt != at ||
        (jobz != CUSOLVER_EIG_MODE_VECTOR && jobz != CUSOLVER_EIG_MODE_NOVECTOR) || !dev_bytes ||
        !host_bytes)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: params, W's type, jobz or sizes", fn);
    *dev_bytes = syevd_bytes(n, type_size(at));
    *host_bytes = 0;
    return CUSOLVER_STATUS_SUCCESS;
}

/* Eigenvalues ascending into w, eigenvectors into a's columns (LAPACK ?syevd, column-major),
 * with LAPACK's documented workspace (its f32 size query rounds below it for n >= 2895). */
static int syevd(void *a, void *w, size_t es, int64_t n, int64_t lda, cublasFillMode_t uplo) {
    if (!n) return 0;
    lapack_int lwork = (lapack_int)(1 + 6 * n + 2 * n * n), liwork = (lapack_int)(3 + 5 * n);
    void *work = malloc(es * (size_t)lwork);
    lapack_int *iwork = malloc(sizeof(lapack_int) * (size_t)liwork);
    if (!work || !iwork)
        ng_fail("cuSOLVER (emulated): out of host memory for syevd, n %lld", (long long)n);
    int info = es == 8
                   ? LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', lapack_uplo(uplo), (lapack_int)n, a,
                                         (lapack_int)lda, w, work, lwork, iwork, liwork)
                   : LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', lapack_uplo(uplo), (lapack_int)n, a,
                                         (lapack_int)lda, w, work, lwork, iwork, liwork);
    free(work), free(iwork);
    return info;
}

cusolverStatus_t cusolverDnXsyevd(cusolverDnHandle_t h, cusolverDnParams_t params,
                                  cusolverEigMode_t jobz, cublasFillMode_t uplo, int64_t n,
                                  cudaDataType at, void *A, int64_t lda, cudaDataType wt, void *W,
                                  cudaDataType ct, void *ws, size_t ws_bytes, void *host_ws,
                                  size_t host_bytes, int *info) {
    const char *fn = "cusolverDnXsyevd";
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, at, ct);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!params || wt != at || jobz != CUSOLVER_EIG_MODE_VECTOR)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: params, W's type or jobz", fn);
    size_t es = type_size(at);
    s = check_buffers(fn, A, es * (size_t)(n ? (n - 1) * lda + n : 0), ws, ws_bytes,
                      syevd_bytes(n, es), host_ws, host_bytes, info, 1);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!device(W, es * (size_t)n))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: W is not device memory", fn);
    ng_emu_enter();
    int bad = nonfinite(A, es, n, lda, uplo);
    if (!bad) {
        *info = syevd(A, W, es, n, lda, uplo);
        clobber(ws, ws_bytes);
    }
    ng_emu_leave();
    return bad ? refuse(CUSOLVER_STATUS_INVALID_VALUE,
                        "%s: a non-finite entry in the triangle read", fn)
               : CUSOLVER_STATUS_SUCCESS;
}

static cusolverStatus_t syevj_size(const char *fn, cusolverDnHandle_t h, cusolverEigMode_t jobz,
                                   cublasFillMode_t uplo, int n, int lda, cudaDataType t,
                                   int *lwork, syevjInfo_t p, int batch) {
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, t, t);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (n > 32 || batch < 0 || !p || !lwork || jobz != CUSOLVER_EIG_MODE_VECTOR)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE,
                      "%s: n %d (batched Jacobi takes n <= 32), batch %d, info, lwork or jobz", fn,
                      n, batch);
    *lwork = syevj_lwork(n, batch);
    return CUSOLVER_STATUS_SUCCESS;
}

static cusolverStatus_t syevj(const char *fn, cusolverDnHandle_t h, cusolverEigMode_t jobz,
                              cublasFillMode_t uplo, int n, void *A, int lda, void *W, void *work,
                              int lwork, int *info, syevjInfo_t p, int batch, cudaDataType t) {
    int need = 0;
    cusolverStatus_t s = syevj_size(fn, h, jobz, uplo, n, lda, t, &need, p, batch);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    size_t es = type_size(t), per = (size_t)lda * (size_t)n;
    s = check_buffers(fn, A, es * per * (size_t)batch, work, es * (size_t)(lwork > 0 ? lwork : 0),
                      es * (size_t)need, NULL, 0, info, batch);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!device(W, es * (size_t)n * (size_t)batch))
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: W is not device memory", fn);
    ng_emu_enter();
    int bad = 0;
    for (int q = 0; q < batch && !bad; q++)
        bad = nonfinite((char *)A + q * per * es, es, n, lda, uplo);
    for (int q = 0; q < batch && !bad; q++) {
        char *a = (char *)A + q * per * es, *w = (char *)W + (size_t)q * n * es;
        info[q] = syevd(a, w, es, n, lda, uplo);
        if (!p->sort) /* descending: eigenpairs j and n-1-j swapped */
            for (int j = 0; j < n / 2; j++) {
                int k = n - 1 - j;
                char tmp[8];
                memcpy(tmp, w + j * es, es), memcpy(w + j * es, w + k * es, es);
                memcpy(w + k * es, tmp, es);
                for (int i = 0; i < n; i++) {
                    char *x = a + ((size_t)j * lda + i) * es, *y = a + ((size_t)k * lda + i) * es;
                    memcpy(tmp, x, es), memcpy(x, y, es), memcpy(y, tmp, es);
                }
            }
    }
    if (!bad) clobber(work, es * (size_t)lwork);
    ng_emu_leave();
    return bad ? refuse(CUSOLVER_STATUS_INVALID_VALUE,
                        "%s: a non-finite entry in the triangle read", fn)
               : CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSsyevjBatched_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz,
                                                    cublasFillMode_t uplo, int n, const float *A,
                                                    int lda, const float *W, int *lwork,
                                                    syevjInfo_t p, int batch) {
    (void)A, (void)W;
    return syevj_size("cusolverDnSsyevjBatched_bufferSize", h, jobz, uplo, n, lda, CUDA_R_32F,
                      lwork, p, batch);
}
cusolverStatus_t cusolverDnDsyevjBatched_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz,
                                                    cublasFillMode_t uplo, int n, const double *A,
                                                    int lda, const double *W, int *lwork,
                                                    syevjInfo_t p, int batch) {
    (void)A, (void)W;
    return syevj_size("cusolverDnDsyevjBatched_bufferSize", h, jobz, uplo, n, lda, CUDA_R_64F,
                      lwork, p, batch);
}
cusolverStatus_t cusolverDnSsyevjBatched(cusolverDnHandle_t h, cusolverEigMode_t jobz,
                                         cublasFillMode_t uplo, int n, float *A, int lda, float *W,
                                         float *work, int lwork, int *info, syevjInfo_t p,
                                         int batch) {
    return syevj("cusolverDnSsyevjBatched", h, jobz, uplo, n, A, lda, W, work, lwork, info, p,
                 batch, CUDA_R_32F);
}
cusolverStatus_t cusolverDnDsyevjBatched(cusolverDnHandle_t h, cusolverEigMode_t jobz,
                                         cublasFillMode_t uplo, int n, double *A, int lda,
                                         double *W, double *work, int lwork, int *info,
                                         syevjInfo_t p, int batch) {
    return syevj("cusolverDnDsyevjBatched", h, jobz, uplo, n, A, lda, W, work, lwork, info, p,
                 batch, CUDA_R_64F);
}

/* ---- Cholesky -------------------------------------------------------------------------------- */

cusolverStatus_t cusolverDnXpotrf_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t params,
                                             cublasFillMode_t uplo, int64_t n, cudaDataType at,
                                             const void *A, int64_t lda, cudaDataType ct,
                                             size_t *dev_bytes, size_t *host_bytes) {
    (void)A;
    const char *fn = "cusolverDnXpotrf_bufferSize";
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, at, ct);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!params || !dev_bytes || !host_bytes)
        return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: params or sizes", fn);
    *dev_bytes = potrf_bytes(n, type_size(at));
    *host_bytes = 0;
    return CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnXpotrf(cusolverDnHandle_t h, cusolverDnParams_t params,
                                  cublasFillMode_t uplo, int64_t n, cudaDataType at, void *A,
                                  int64_t lda, cudaDataType ct, void *ws, size_t ws_bytes,
                                  void *host_ws, size_t host_bytes, int *info) {
    const char *fn = "cusolverDnXpotrf";
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, at, ct);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!params) return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: NULL params", fn);
    size_t es = type_size(at);
    s = check_buffers(fn, A, es * (size_t)(n ? (n - 1) * lda + n : 0), ws, ws_bytes,
                      potrf_bytes(n, es), host_ws, host_bytes, info, 1);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    ng_emu_enter();
    int bad = nonfinite(A, es, n, lda, uplo);
    if (!bad) {
        *info = !n        ? 0
                : es == 8 ? LAPACKE_dpotrf(LAPACK_COL_MAJOR, lapack_uplo(uplo), (lapack_int)n, A,
                                           (lapack_int)lda)
                          : LAPACKE_spotrf(LAPACK_COL_MAJOR, lapack_uplo(uplo), (lapack_int)n, A,
                                           (lapack_int)lda);
        clobber(ws, ws_bytes);
    }
    ng_emu_leave();
    return bad ? refuse(CUSOLVER_STATUS_INVALID_VALUE,
                        "%s: a non-finite entry in the triangle read", fn)
               : CUSOLVER_STATUS_SUCCESS;
}

static cusolverStatus_t potri_size(const char *fn, cusolverDnHandle_t h, cublasFillMode_t uplo,
                                   int n, int lda, cudaDataType t, int *lwork) {
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, t, t);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    if (!lwork) return refuse(CUSOLVER_STATUS_INVALID_VALUE, "%s: NULL lwork", fn);
    *lwork = potri_lwork(n);
    return CUSOLVER_STATUS_SUCCESS;
}

static cusolverStatus_t potri(const char *fn, cusolverDnHandle_t h, cublasFillMode_t uplo, int n,
                              void *A, int lda, void *work, int lwork, int *info, cudaDataType t) {
    cusolverStatus_t s = check_common(fn, h, uplo, n, lda, t, t);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    size_t es = type_size(t);
    s = check_buffers(fn, A, es * (size_t)(n ? (n - 1) * lda + n : 0), work,
                      es * (size_t)(lwork > 0 ? lwork : 0), es * (size_t)potri_lwork(n), NULL, 0,
                      info, 1);
    if (s != CUSOLVER_STATUS_SUCCESS) return s;
    ng_emu_enter();
    int bad = nonfinite(A, es, n, lda, uplo);
    if (!bad) {
        *info = !n        ? 0
                : es == 8 ? LAPACKE_dpotri(LAPACK_COL_MAJOR, lapack_uplo(uplo), n, A, lda)
                          : LAPACKE_spotri(LAPACK_COL_MAJOR, lapack_uplo(uplo), n, A, lda);
        clobber(work, es * (size_t)lwork);
    }
    ng_emu_leave();
    return bad ? refuse(CUSOLVER_STATUS_INVALID_VALUE,
                        "%s: a non-finite entry in the triangle read", fn)
               : CUSOLVER_STATUS_SUCCESS;
}

cusolverStatus_t cusolverDnSpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n,
                                             float *A, int lda, int *lwork) {
    (void)A;
    return potri_size("cusolverDnSpotri_bufferSize", h, uplo, n, lda, CUDA_R_32F, lwork);
}
cusolverStatus_t cusolverDnDpotri_bufferSize(cusolverDnHandle_t h, cublasFillMode_t uplo, int n,
                                             double *A, int lda, int *lwork) {
    (void)A;
    return potri_size("cusolverDnDpotri_bufferSize", h, uplo, n, lda, CUDA_R_64F, lwork);
}
cusolverStatus_t cusolverDnSpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, float *A,
                                  int lda, float *work, int lwork, int *info) {
    return potri("cusolverDnSpotri", h, uplo, n, A, lda, work, lwork, info, CUDA_R_32F);
}
cusolverStatus_t cusolverDnDpotri(cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *A,
                                  int lda, double *work, int lwork, int *info) {
    return potri("cusolverDnDpotri", h, uplo, n, A, lda, work, lwork, info, CUDA_R_64F);
}
