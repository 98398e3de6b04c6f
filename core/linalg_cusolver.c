/* The CUDA twin of the symmetric linear algebra on [b,n,n] f32/f64 tensors, host code: cuSOLVER
 * Xsyevd (batched syevj for many small matrices), Xpotrf and potri, with the layout fixes done by
 * the kernels of core/linalg_cuda.cu. The emulation build runs this file against the emulated
 * cuSOLVER (core/cusolver_emu.c).
 *
 * Row-major versus cuSOLVER's column-major. A row-major n x n buffer read column-major with
 * lda = n is the transpose of the matrix. A symmetric matrix is its own transpose, so cuSOLVER
 * sees the same matrix; but the row-major lower triangle (element (i,j), i >= j, at offset i*n+j)
 * is column-major element (j,i) with j <= i, i.e. the UPPER triangle. Every call below therefore
 * passes CUBLAS_FILL_MODE_UPPER, which reads exactly the row-major lower triangle that linalg.h
 * promises to read, and writes its results there:
 * - syevd / syevj leave eigenvector j in column j, contiguous at offset j*n: row j in row-major,
 *   so the buffer holds Q^T and one transpose gives Q (eigenvectors in Q's columns).
 * - potrf(UPPER) gives A = U^T U with U in the column-major upper triangle, so row-major element
 *   (i,j), i >= j, is U(j,i) = U^T(i,j): the row-major lower triangle already holds L = U^T with
 *   A = L L^T. The other triangle is not part of L and is zeroed.
 * - potri(UPPER) leaves A^-1 in the same triangle (row-major lower); it is mirrored to the upper
 *   one for the full symmetric inverse. */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "cuda_context.h"
#include "linalg.h"
#include "linalg_cuda.h"

static const cublasFillMode_t kRowMajorLower = CUBLAS_FILL_MODE_UPPER;

static cudaDataType data_type(ng_dtype t) {
    return t == NG_F64 ? CUDA_R_64F : CUDA_R_32F;
}

/* Copies `count` ints from the device and waits for them (and so for all queued work). */
static int *to_host(const int *dev, int64_t count, cudaStream_t s) {
    int *h = malloc(sizeof(int) * (size_t)count);
    NG_CHECK(h, "out of host memory for %lld solver flags", (long long)count);
    NG_CUDA_CHECK(cudaMemcpyAsync(h, dev, sizeof(int) * (size_t)count, cudaMemcpyDeviceToHost, s));
    NG_CUDA_CHECK(cudaStreamSynchronize(s));
    return h;
}

/* Which matrices have non-finite input (host array of b flags; free() it). Solvers never see
 * those: LAPACK-style codes are not specified on NaN and could spin or return garbage. */
static int *find_nonfinite(const void *a, ng_dtype dt, int64_t b, int64_t n, int *bad_dev,
                           cudaStream_t s) {
    NG_CUDA_CHECK(cudaMemsetAsync(bad_dev, 0, sizeof(int) * (size_t)b, s));
    ng_linalg_cuda_lower_nonfinite(a, dt, b, n, bad_dev);
    return to_host(bad_dev, b, s);
}

static void check_info(const char *call, int info) {
    if (info >= 0) return;
    char msg[64];
    snprintf(msg, sizeof msg, "info = %d (illegal argument)", info);
    ng_lib_fail("cuSOLVER", __FILE__, __LINE__, call, msg);
}

static void *host_buffer(size_t bytes) {
    if (!bytes) return NULL;
    void *p = malloc(bytes);
    NG_CHECK(p, "out of host memory for %zu bytes of cuSOLVER workspace", bytes);
    return p;
}

/* The typed legacy entry points (batched syevj, potri) behind one name each. */
static cusolverStatus_t syevj_batched_size(cusolverDnHandle_t h, ng_dtype dt, int n, const void *A,
                                           const void *W, int *lwork, syevjInfo_t info, int batch) {
    return dt == NG_F64
               ? cusolverDnDsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n,
                                                    A, n, W, lwork, info, batch)
               : cusolverDnSsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n,
                                                    A, n, W, lwork, info, batch);
}
static cusolverStatus_t syevj_batched(cusolverDnHandle_t h, ng_dtype dt, int n, void *A, void *W,
                                      void *work, int lwork, int *info, syevjInfo_t params,
                                      int batch) {
    return dt == NG_F64 ? cusolverDnDsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A,
                                                  n, W, work, lwork, info, params, batch)
                        : cusolverDnSsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A,
                                                  n, W, work, lwork, info, params, batch);
}
static cusolverStatus_t potri_size(cusolverDnHandle_t h, ng_dtype dt, int n, void *A, int *lwork) {
    return dt == NG_F64 ? cusolverDnDpotri_bufferSize(h, kRowMajorLower, n, A, n, lwork)
                        : cusolverDnSpotri_bufferSize(h, kRowMajorLower, n, A, n, lwork);
}
static cusolverStatus_t potri(cusolverDnHandle_t h, ng_dtype dt, int n, void *A, void *work,
                              int lwork, int *info) {
    return dt == NG_F64 ? cusolverDnDpotri(h, kRowMajorLower, n, A, n, work, lwork, info)
                        : cusolverDnSpotri(h, kRowMajorLower, n, A, n, work, lwork, info);
}

/* The solver handles eigh's path needs: a syevj info (sorted eigenvalues) for batched Jacobi,
 * else Xsyevd's parameters. */
static void eigh_handles(int64_t b, int64_t n, cusolverDnParams_t *params, syevjInfo_t *jinfo) {
    *params = NULL, *jinfo = NULL;
    if (ng_linalg_cuda_batched(b, n)) {
        NG_CUSOLVER_CHECK(cusolverDnCreateSyevjInfo(jinfo));
        NG_CUSOLVER_CHECK(cusolverDnXsyevjSetSortEig(*jinfo, 1));
    } else {
        NG_CUSOLVER_CHECK(cusolverDnCreateParams(params));
    }
}

static void free_handles(cusolverDnParams_t params, syevjInfo_t jinfo) {
    if (params) NG_CUSOLVER_CHECK(cusolverDnDestroyParams(params));
    if (jinfo) NG_CUSOLVER_CHECK(cusolverDnDestroySyevjInfo(jinfo));
}

/* cuSOLVER's device scratch for eigh of b matrices n x n (and Xsyevd's host scratch, batched
 * syevj's lwork in elements). The sizes depend only on n, b and the types: a and w stand in for
 * the real buffers (the plan's are a small stand-in: ng_cuda_linalg_solver_bytes). */
static size_t eigh_solver_bytes(cusolverDnHandle_t h, ng_dtype t, int64_t b, int64_t n,
                                const void *a, const void *w, cusolverDnParams_t params,
                                syevjInfo_t jinfo, size_t *host_bytes, int *lwork) {
    size_t bytes = 0;
    *host_bytes = 0, *lwork = 0;
    if (jinfo) {
        NG_CUSOLVER_CHECK(syevj_batched_size(h, t, (int)n, a, w, lwork, jinfo, (int)b));
        return (size_t)*lwork * ng_dtype_size(t);
    }
    const cudaDataType dt = data_type(t);
    NG_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(h, params, CUSOLVER_EIG_MODE_VECTOR,
                                                  kRowMajorLower, n, dt, a, n, dt, w, dt, &bytes,
                                                  host_bytes));
    return bytes;
}

/* cuSOLVER's device scratch for a Cholesky factor (potrf) and, with invert, the inverse (potri)
 * after it: one buffer for both, as they run one after the other on the stream. x stands in for
 * the matrix (a small stand-in when planning); potri's lwork is in elements. */
static size_t cholesky_solver_bytes(cusolverDnHandle_t h, ng_dtype t, int64_t n, void *x,
                                    int invert, cusolverDnParams_t params, size_t *host_bytes,
                                    int *potri_lwork) {
    const cudaDataType dt = data_type(t);
    size_t potrf_bytes = 0;
    *host_bytes = 0, *potri_lwork = 0;
    NG_CUSOLVER_CHECK(cusolverDnXpotrf_bufferSize(h, params, kRowMajorLower, n, dt, x, n, dt,
                                                  &potrf_bytes, host_bytes));
    if (invert) NG_CUSOLVER_CHECK(potri_size(h, t, (int)n, x, potri_lwork));
    size_t potri_bytes = ng_dtype_size(t) * (size_t)*potri_lwork;
    return potrf_bytes > potri_bytes ? potrf_bytes : potri_bytes;
}

size_t ng_cuda_linalg_solver_bytes(int op, ng_dtype dt, int64_t b, int64_t n) {
    cusolverDnHandle_t h = ng_cuda_ctx()->cusolver;
    cusolverDnParams_t params = NULL;
    syevjInfo_t jinfo = NULL;
    size_t host = 0, bytes;
    int lwork = 0;
    /* The queries read no data, but cuSOLVER does not document that NULL is accepted for the
     * matrices: a real device address stands in for them (outside the counting allocator; the
     * plan runs once per run, so cudaFree's synchronisation costs nothing). */
    void *probe = NULL;
    NG_CUDA_CHECK(cudaMalloc(&probe, 256));
    if (op == NG_LINALG_EIGH) {
        eigh_handles(b, n, &params, &jinfo);
        bytes = eigh_solver_bytes(h, dt, b, n, probe, probe, params, jinfo, &host, &lwork);
    } else {
        NG_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
        bytes = cholesky_solver_bytes(h, dt, n, probe, op == NG_LINALG_CHOLESKY_INVERSE, params,
                                      &host, &lwork);
    }
    free_handles(params, jinfo);
    NG_CUDA_CHECK(cudaFree(probe));
    return bytes;
}

ng_status ng_cuda_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) {
    ng_cuda_context *c = ng_cuda_ctx();
    cudaStream_t s = c->stream;
    const ng_dtype t = A->dtype;
    const int64_t b = A->shape[0], n = A->shape[1], nn = n * n;
    const size_t es = ng_dtype_size(t);
    const cudaDataType dt = data_type(t);
    const char *a = A->data;
    char *wv = w->data, *q = Q->data;
    const int batched = ng_linalg_cuda_batched(b, n);

    cusolverDnParams_t params;
    syevjInfo_t jinfo;
    eigh_handles(b, n, &params, &jinfo);
    size_t host_bytes;
    int lwork;
    size_t solver_bytes =
        eigh_solver_bytes(c->cusolver, t, b, n, a, wv, params, jinfo, &host_bytes, &lwork);
    /* one request, laid out by ng_linalg_ws, the formula the memory plan shares */
    ng_linalg_ws_layout l = ng_linalg_ws(NG_LINALG_EIGH, t, b, n, solver_bytes);
    char *ws = ng_cuda_workspace(l.total);
    char *m = ws;
    void *solver = ws + l.solver;
    int *info = (int *)(ws + l.info), *bad = (int *)(ws + l.bad);
    void *host_ws = host_buffer(host_bytes);

    /* Solving a copy leaves A intact and lets Q alias A. The copy is made symmetric from its
     * lower triangle, so that the answer cannot depend on whether a solver also peeks at the
     * other triangle (the input's may hold anything). */
    NG_CUDA_CHECK(cudaMemcpyAsync(m, a, es * (size_t)(b * nn), cudaMemcpyDeviceToDevice, s));
    ng_linalg_cuda_set_upper(m, t, b, n, 1);
    int *bad_h = find_nonfinite(m, t, b, n, bad, s);
    NG_CUDA_CHECK(cudaMemsetAsync(info, 0, sizeof(int) * (size_t)b, s));
    if (batched) {
        /* One call solves every entry: give non-finite ones a harmless zero matrix. */
        for (int64_t p = 0; p < b; p++)
            if (bad_h[p]) NG_CUDA_CHECK(cudaMemsetAsync(m + p * nn * es, 0, es * (size_t)nn, s));
        NG_CUSOLVER_CHECK(
            syevj_batched(c->cusolver, t, (int)n, m, wv, solver, lwork, info, jinfo, (int)b));
    } else {
        for (int64_t p = 0; p < b; p++)
            if (!bad_h[p])
                NG_CUSOLVER_CHECK(cusolverDnXsyevd(c->cusolver, params, CUSOLVER_EIG_MODE_VECTOR,
                                                   kRowMajorLower, n, dt, m + p * nn * es, n, dt,
                                                   wv + p * n * es, dt, solver, solver_bytes,
                                                   host_ws, host_bytes, info + p));
    }
    ng_linalg_cuda_transpose(m, q, t, b, n);
    int *info_h = to_host(info, b, s);

    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        check_info(batched ? "cusolverDn?syevjBatched" : "cusolverDnXsyevd", info_h[p]);
        ng_status st = bad_h[p] ? NG_ERR_NONFINITE : info_h[p] > 0 ? NG_ERR_NO_CONVERGE : NG_OK;
        if (st == NG_OK) continue;
        ng_linalg_cuda_fill_nan(wv + p * n * es, t, n);
        ng_linalg_cuda_fill_nan(q + p * nn * es, t, nn);
        if (result == NG_OK) result = st;
    }
    free(bad_h);
    free(info_h);
    free(host_ws);
    free_handles(params, jinfo);
    return result;
}

/* Cholesky factor (invert = 0) or inverse (invert = 1) of every matrix of A, into out. */
static ng_status cholesky(const ng_tensor *A, ng_tensor *out, int invert) {
    ng_cuda_context *c = ng_cuda_ctx();
    cudaStream_t s = c->stream;
    const ng_dtype t = A->dtype;
    const int64_t b = A->shape[0], n = A->shape[1], nn = n * n;
    const size_t es = ng_dtype_size(t);
    const cudaDataType dt = data_type(t);
    char *x = out->data;

    cusolverDnParams_t params = NULL;
    NG_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
    size_t host_bytes;
    int potri_lwork;
    size_t solver_bytes =
        cholesky_solver_bytes(c->cusolver, t, n, x, invert, params, &host_bytes, &potri_lwork);
    ng_linalg_ws_layout l = ng_linalg_ws(invert ? NG_LINALG_CHOLESKY_INVERSE : NG_LINALG_CHOLESKY,
                                         t, b, n, solver_bytes);
    char *ws = ng_cuda_workspace(l.total);
    void *solver = ws + l.solver;
    int *info = (int *)(ws + l.info), *bad = (int *)(ws + l.bad);
    void *host_ws = host_buffer(host_bytes);

    /* Factor in the output buffer: A stays untouched unless it is the output itself. */
    if (out->data != A->data)
        NG_CUDA_CHECK(
            cudaMemcpyAsync(x, A->data, es * (size_t)(b * nn), cudaMemcpyDeviceToDevice, s));
    ng_linalg_cuda_set_upper(x, t, b, n, 1); /* symmetric from the lower triangle, as in eigh */
    int *bad_h = find_nonfinite(x, t, b, n, bad, s);
    NG_CUDA_CHECK(cudaMemsetAsync(info, 0, sizeof(int) * (size_t)b, s));
    for (int64_t p = 0; p < b; p++)
        if (!bad_h[p])
            NG_CUSOLVER_CHECK(cusolverDnXpotrf(c->cusolver, params, kRowMajorLower, n, dt,
                                               x + p * nn * es, n, dt, solver, solver_bytes,
                                               host_ws, host_bytes, info + p));
    int *info_h = to_host(info, b, s);
    ng_status *st = malloc(sizeof(ng_status) * (size_t)b);
    NG_CHECK(st, "out of host memory for %lld statuses", (long long)b);
    for (int64_t p = 0; p < b; p++) {
        check_info("cusolverDnXpotrf", info_h[p]);
        st[p] = bad_h[p] ? NG_ERR_NONFINITE : info_h[p] > 0 ? NG_ERR_NOT_PD : NG_OK;
    }
    if (invert) {
        /* Only entries whose factor exists go on to potri. */
        NG_CUDA_CHECK(cudaMemsetAsync(info, 0, sizeof(int) * (size_t)b, s));
        for (int64_t p = 0; p < b; p++)
            if (st[p] == NG_OK)
                NG_CUSOLVER_CHECK(
                    potri(c->cusolver, t, (int)n, x + p * nn * es, solver, potri_lwork, info + p));
        free(info_h);
        info_h = to_host(info, b, s);
        for (int64_t p = 0; p < b; p++) {
            check_info("cusolverDn?potri", info_h[p]);
            /* A zero pivot of L cannot follow a successful potrf; report it alike anyway. */
            if (st[p] == NG_OK && info_h[p] > 0) st[p] = NG_ERR_NOT_PD;
        }
    }
    ng_linalg_cuda_set_upper(x, t, b, n, invert);

    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        if (st[p] == NG_OK) continue;
        ng_linalg_cuda_fill_nan(x + p * nn * es, t, nn);
        if (result == NG_OK) result = st[p];
    }
    free(st);
    free(bad_h);
    free(info_h);
    free(host_ws);
    NG_CUSOLVER_CHECK(cusolverDnDestroyParams(params));
    return result;
}

ng_status ng_cuda_cholesky(const ng_tensor *A, ng_tensor *L) {
    return cholesky(A, L, 0);
}

ng_status ng_cuda_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) {
    return cholesky(A, inv, 1);
}
