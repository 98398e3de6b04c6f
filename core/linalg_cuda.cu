/* CUDA twin of the symmetric linear algebra on [b,n,n] f32/f64 tensors: cuSOLVER Xsyevd (batched
 * syevj for many small matrices), Xpotrf and potri, with layout fixes done by small kernels. */
#include <stdio.h>
#include <stdlib.h>

#include <limits>

#include "backend.h"
#include "cuda_context.h"
#include "linalg.h"

/* Row-major versus cuSOLVER's column-major. A row-major n x n buffer read column-major with
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
static const cublasFillMode_t kRowMajorLower = CUBLAS_FILL_MODE_UPPER;

static const int kThreads = 256;

static cudaDataType data_type(ng_dtype t) {
    return t == NG_F64 ? CUDA_R_64F : CUDA_R_32F;
}

/* bad[p] = 1 when the lower triangle of matrix p holds NaN or Inf (only that triangle is input). */
template <typename T>
__global__ void lower_nonfinite_kernel(const T *__restrict__ a, int64_t b, int64_t n, int *bad) {
    int64_t nn = n * n, total = b * nn;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = k % nn, i = r / n, j = r % n;
        if (j <= i && !isfinite(a[k])) bad[k / nn] = 1;
    }
}

/* dst_p = src_p^T for every n x n matrix p. 32x32 tiles staged through shared memory (one column
 * of padding against bank conflicts) keep both reads and writes coalesced. No overlap allowed. */
template <typename T>
__global__ void transpose_kernel(const T *__restrict__ src, T *__restrict__ dst, int64_t b,
                                 int64_t n) {
    __shared__ T tile[32][33];
    int64_t c0 = (int64_t)blockIdx.x * 32, r0 = (int64_t)blockIdx.y * 32;
    for (int64_t p = blockIdx.z; p < b; p += gridDim.z) {
        const T *s = src + p * n * n;
        T *d = dst + p * n * n;
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t r = r0 + k, c = c0 + threadIdx.x;
            if (r < n && c < n) tile[k][threadIdx.x] = s[r * n + c];
        }
        __syncthreads();
        for (int k = threadIdx.y; k < 32; k += blockDim.y) {
            int64_t r = c0 + k, c = r0 + threadIdx.x;
            if (r < n && c < n) d[r * n + c] = tile[threadIdx.x][k];
        }
        __syncthreads(); /* the tile is refilled for the next matrix */
    }
}

/* The row-major strict upper triangle of every matrix: zeroed, or (mirror) copied from the lower
 * one. Only lower elements are read, and only upper ones written, so there is no race. */
template <typename T>
__global__ void upper_kernel(T *x, int64_t b, int64_t n, int mirror) {
    int64_t nn = n * n, total = b * nn;
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < total;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t p = k / nn, r = k % nn, i = r / n, j = r % n;
        if (j > i) x[k] = mirror ? x[p * nn + j * n + i] : T(0);
    }
}

template <typename T>
__global__ void nan_kernel(T *x, int64_t count) {
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < count;
         k += (int64_t)gridDim.x * blockDim.x)
        x[k] = std::numeric_limits<T>::quiet_NaN();
}

template <typename T>
static void set_upper(T *x, int64_t b, int64_t n, int mirror, cudaStream_t s) {
    upper_kernel<T><<<ng_cuda_blocks(b * n * n, kThreads), kThreads, 0, s>>>(x, b, n, mirror);
    NG_CUDA_CHECK_LAUNCH();
}

template <typename T>
static void fill_nan(T *x, int64_t count, cudaStream_t s) {
    nan_kernel<T><<<ng_cuda_blocks(count, kThreads), kThreads, 0, s>>>(x, count);
    NG_CUDA_CHECK_LAUNCH();
}

/* Copies `count` ints from the device and waits for them (and so for all queued work). */
static int *to_host(const int *dev, int64_t count, cudaStream_t s) {
    int *h = (int *)malloc(sizeof(int) * (size_t)count);
    NG_CHECK(h, "out of host memory for %lld solver flags", (long long)count);
    NG_CUDA_CHECK(cudaMemcpyAsync(h, dev, sizeof(int) * (size_t)count, cudaMemcpyDeviceToHost, s));
    NG_CUDA_CHECK(cudaStreamSynchronize(s));
    return h;
}

/* Which matrices have non-finite input (host array of b flags; free() it). Solvers never see
 * those: LAPACK-style codes are not specified on NaN and could spin or return garbage. */
template <typename T>
static int *find_nonfinite(const T *a, int64_t b, int64_t n, int *bad_dev, cudaStream_t s) {
    NG_CUDA_CHECK(cudaMemsetAsync(bad_dev, 0, sizeof(int) * (size_t)b, s));
    lower_nonfinite_kernel<T>
        <<<ng_cuda_blocks(b * n * n, kThreads), kThreads, 0, s>>>(a, b, n, bad_dev);
    NG_CUDA_CHECK_LAUNCH();
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
static cusolverStatus_t syevj_batched_size(cusolverDnHandle_t h, int n, const float *A,
                                           const float *W, int *lwork, syevjInfo_t info,
                                           int batch) {
    return cusolverDnSsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A, n,
                                              W, lwork, info, batch);
}
static cusolverStatus_t syevj_batched_size(cusolverDnHandle_t h, int n, const double *A,
                                           const double *W, int *lwork, syevjInfo_t info,
                                           int batch) {
    return cusolverDnDsyevjBatched_bufferSize(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A, n,
                                              W, lwork, info, batch);
}
static cusolverStatus_t syevj_batched(cusolverDnHandle_t h, int n, float *A, float *W, float *work,
                                      int lwork, int *info, syevjInfo_t params, int batch) {
    return cusolverDnSsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A, n, W, work,
                                   lwork, info, params, batch);
}
static cusolverStatus_t syevj_batched(cusolverDnHandle_t h, int n, double *A, double *W,
                                      double *work, int lwork, int *info, syevjInfo_t params,
                                      int batch) {
    return cusolverDnDsyevjBatched(h, CUSOLVER_EIG_MODE_VECTOR, kRowMajorLower, n, A, n, W, work,
                                   lwork, info, params, batch);
}
static cusolverStatus_t potri_size(cusolverDnHandle_t h, int n, float *A, int *lwork) {
    return cusolverDnSpotri_bufferSize(h, kRowMajorLower, n, A, n, lwork);
}
static cusolverStatus_t potri_size(cusolverDnHandle_t h, int n, double *A, int *lwork) {
    return cusolverDnDpotri_bufferSize(h, kRowMajorLower, n, A, n, lwork);
}
static cusolverStatus_t potri(cusolverDnHandle_t h, int n, float *A, float *work, int lwork,
                              int *info) {
    return cusolverDnSpotri(h, kRowMajorLower, n, A, n, work, lwork, info);
}
static cusolverStatus_t potri(cusolverDnHandle_t h, int n, double *A, double *work, int lwork,
                              int *info) {
    return cusolverDnDpotri(h, kRowMajorLower, n, A, n, work, lwork, info);
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
template <typename T>
static size_t eigh_solver_bytes(cusolverDnHandle_t h, int64_t b, int64_t n, const T *a, const T *w,
                                cusolverDnParams_t params, syevjInfo_t jinfo, size_t *host_bytes,
                                int *lwork) {
    size_t bytes = 0;
    *host_bytes = 0, *lwork = 0;
    if (jinfo) {
        NG_CUSOLVER_CHECK(syevj_batched_size(h, (int)n, a, w, lwork, jinfo, (int)b));
        return (size_t)*lwork * sizeof(T);
    }
    const cudaDataType dt = data_type(sizeof(T) == 8 ? NG_F64 : NG_F32);
    NG_CUSOLVER_CHECK(cusolverDnXsyevd_bufferSize(h, params, CUSOLVER_EIG_MODE_VECTOR,
                                                  kRowMajorLower, n, dt, a, n, dt, w, dt, &bytes,
                                                  host_bytes));
    return bytes;
}

/* cuSOLVER's device scratch for a Cholesky factor (potrf) and, with invert, the inverse (potri)
 * after it: one buffer for both, as they run one after the other on the stream. x stands in for
 * the matrix (a small stand-in when planning); potri's lwork is in elements. */
template <typename T>
static size_t cholesky_solver_bytes(cusolverDnHandle_t h, int64_t n, T *x, int invert,
                                    cusolverDnParams_t params, size_t *host_bytes,
                                    int *potri_lwork) {
    const cudaDataType dt = data_type(sizeof(T) == 8 ? NG_F64 : NG_F32);
    size_t potrf_bytes = 0;
    *host_bytes = 0, *potri_lwork = 0;
    NG_CUSOLVER_CHECK(cusolverDnXpotrf_bufferSize(h, params, kRowMajorLower, n, dt, x, n, dt,
                                                  &potrf_bytes, host_bytes));
    if (invert) NG_CUSOLVER_CHECK(potri_size(h, (int)n, x, potri_lwork));
    size_t potri_bytes = sizeof(T) * (size_t)*potri_lwork;
    return potrf_bytes > potri_bytes ? potrf_bytes : potri_bytes;
}

template <typename T>
static size_t solver_bytes_of(ng_linalg_op op, int64_t b, int64_t n) {
    cusolverDnHandle_t h = ng_cuda_ctx()->cusolver;
    cusolverDnParams_t params = NULL;
    syevjInfo_t jinfo = NULL;
    size_t host = 0, bytes;
    int lwork = 0;
    /* The queries read no data, but cuSOLVER does not document that NULL is accepted for the
     * matrices: a real device address stands in for them (outside the counting allocator; the
     * plan runs once per run, so cudaFree's synchronisation costs nothing). */
    T *probe = NULL;
    NG_CUDA_CHECK(cudaMalloc((void **)&probe, 256));
    if (op == NG_LINALG_EIGH) {
        eigh_handles(b, n, &params, &jinfo);
        bytes = eigh_solver_bytes<T>(h, b, n, probe, probe, params, jinfo, &host, &lwork);
    } else {
        NG_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
        bytes = cholesky_solver_bytes<T>(h, n, probe, op == NG_LINALG_CHOLESKY_INVERSE, params,
                                         &host, &lwork);
    }
    free_handles(params, jinfo);
    NG_CUDA_CHECK(cudaFree(probe));
    return bytes;
}

extern "C" size_t ng_cuda_linalg_solver_bytes(int op, ng_dtype dt, int64_t b, int64_t n) {
    return dt == NG_F64 ? solver_bytes_of<double>((ng_linalg_op)op, b, n)
                        : solver_bytes_of<float>((ng_linalg_op)op, b, n);
}

template <typename T>
static ng_status eigh_impl(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) {
    ng_cuda_context *c = ng_cuda_ctx();
    cudaStream_t s = c->stream;
    const int64_t b = A->shape[0], n = A->shape[1], nn = n * n;
    const cudaDataType dt = data_type(A->dtype);
    const T *a = (const T *)A->data;
    T *wv = (T *)w->data, *q = (T *)Q->data;
    const bool batched = ng_linalg_cuda_batched(b, n);

    cusolverDnParams_t params;
    syevjInfo_t jinfo;
    eigh_handles(b, n, &params, &jinfo);
    size_t host_bytes;
    int lwork;
    size_t solver_bytes =
        eigh_solver_bytes<T>(c->cusolver, b, n, a, wv, params, jinfo, &host_bytes, &lwork);
    /* one request, laid out by ng_linalg_ws, the formula the memory plan shares */
    ng_linalg_ws_layout l = ng_linalg_ws(NG_LINALG_EIGH, A->dtype, b, n, solver_bytes);
    char *ws = (char *)ng_cuda_workspace(l.total);
    T *m = (T *)ws;
    void *solver = ws + l.solver;
    int *info = (int *)(ws + l.info), *bad = (int *)(ws + l.bad);
    void *host_ws = host_buffer(host_bytes);

    /* Solving a copy leaves A intact and lets Q alias A. The copy is made symmetric from its
     * lower triangle, so that the answer cannot depend on whether a solver also peeks at the
     * other triangle (the input's may hold anything). */
    NG_CUDA_CHECK(cudaMemcpyAsync(m, a, sizeof(T) * (size_t)(b * nn), cudaMemcpyDeviceToDevice, s));
    set_upper<T>(m, b, n, 1, s);
    int *bad_h = find_nonfinite<T>(m, b, n, bad, s);
    NG_CUDA_CHECK(cudaMemsetAsync(info, 0, sizeof(int) * (size_t)b, s));
    if (batched) {
        /* One call solves every entry: give non-finite ones a harmless zero matrix. */
        for (int64_t p = 0; p < b; p++)
            if (bad_h[p]) NG_CUDA_CHECK(cudaMemsetAsync(m + p * nn, 0, sizeof(T) * (size_t)nn, s));
        NG_CUSOLVER_CHECK(
            syevj_batched(c->cusolver, (int)n, m, wv, (T *)solver, lwork, info, jinfo, (int)b));
    } else {
        for (int64_t p = 0; p < b; p++)
            if (!bad_h[p])
                NG_CUSOLVER_CHECK(cusolverDnXsyevd(c->cusolver, params, CUSOLVER_EIG_MODE_VECTOR,
                                                   kRowMajorLower, n, dt, m + p * nn, n, dt,
                                                   wv + p * n, dt, solver, solver_bytes, host_ws,
                                                   host_bytes, info + p));
    }
    dim3 block(32, 8), grid((unsigned)((n + 31) / 32), (unsigned)((n + 31) / 32),
                            (unsigned)(b < 65535 ? b : 65535));
    transpose_kernel<T><<<grid, block, 0, s>>>(m, q, b, n);
    NG_CUDA_CHECK_LAUNCH();
    int *info_h = to_host(info, b, s);

    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        check_info(batched ? "cusolverDn?syevjBatched" : "cusolverDnXsyevd", info_h[p]);
        ng_status st = bad_h[p] ? NG_ERR_NONFINITE : info_h[p] > 0 ? NG_ERR_NO_CONVERGE : NG_OK;
        if (st == NG_OK) continue;
        fill_nan<T>(wv + p * n, n, s);
        fill_nan<T>(q + p * nn, nn, s);
        if (result == NG_OK) result = st;
    }
    free(bad_h);
    free(info_h);
    free(host_ws);
    free_handles(params, jinfo);
    return result;
}

/* Cholesky factor (invert = 0) or inverse (invert = 1) of every matrix of A, into out. */
template <typename T>
static ng_status cholesky_impl(const ng_tensor *A, ng_tensor *out, int invert) {
    ng_cuda_context *c = ng_cuda_ctx();
    cudaStream_t s = c->stream;
    const int64_t b = A->shape[0], n = A->shape[1], nn = n * n;
    const cudaDataType dt = data_type(A->dtype);
    T *x = (T *)out->data;

    cusolverDnParams_t params = NULL;
    NG_CUSOLVER_CHECK(cusolverDnCreateParams(&params));
    size_t host_bytes;
    int potri_lwork;
    size_t solver_bytes =
        cholesky_solver_bytes<T>(c->cusolver, n, x, invert, params, &host_bytes, &potri_lwork);
    ng_linalg_ws_layout l = ng_linalg_ws(invert ? NG_LINALG_CHOLESKY_INVERSE : NG_LINALG_CHOLESKY,
                                         A->dtype, b, n, solver_bytes);
    char *ws = (char *)ng_cuda_workspace(l.total);
    void *solver = ws + l.solver;
    int *info = (int *)(ws + l.info), *bad = (int *)(ws + l.bad);
    void *host_ws = host_buffer(host_bytes);

    /* Factor in the output buffer: A stays untouched unless it is the output itself. */
    if (out->data != A->data)
        NG_CUDA_CHECK(
            cudaMemcpyAsync(x, A->data, sizeof(T) * (size_t)(b * nn), cudaMemcpyDeviceToDevice, s));
    set_upper<T>(x, b, n, 1, s); /* symmetric from the lower triangle, as in eigh_impl */
    int *bad_h = find_nonfinite<T>(x, b, n, bad, s);
    NG_CUDA_CHECK(cudaMemsetAsync(info, 0, sizeof(int) * (size_t)b, s));
    for (int64_t p = 0; p < b; p++)
        if (!bad_h[p])
            NG_CUSOLVER_CHECK(cusolverDnXpotrf(c->cusolver, params, kRowMajorLower, n, dt,
                                               x + p * nn, n, dt, solver, solver_bytes, host_ws,
                                               host_bytes, info + p));
    int *info_h = to_host(info, b, s);
    ng_status *st = (ng_status *)malloc(sizeof(ng_status) * (size_t)b);
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
                    potri(c->cusolver, (int)n, x + p * nn, (T *)solver, potri_lwork, info + p));
        free(info_h);
        info_h = to_host(info, b, s);
        for (int64_t p = 0; p < b; p++) {
            check_info("cusolverDn?potri", info_h[p]);
            /* A zero pivot of L cannot follow a successful potrf; report it alike anyway. */
            if (st[p] == NG_OK && info_h[p] > 0) st[p] = NG_ERR_NOT_PD;
        }
    }
    set_upper<T>(x, b, n, invert, s);

    ng_status result = NG_OK;
    for (int64_t p = 0; p < b; p++) {
        if (st[p] == NG_OK) continue;
        fill_nan<T>(x + p * nn, nn, s);
        if (result == NG_OK) result = st[p];
    }
    free(st);
    free(bad_h);
    free(info_h);
    free(host_ws);
    NG_CUSOLVER_CHECK(cusolverDnDestroyParams(params));
    return result;
}

ng_status ng_cuda_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) {
    return A->dtype == NG_F64 ? eigh_impl<double>(A, w, Q) : eigh_impl<float>(A, w, Q);
}

ng_status ng_cuda_cholesky(const ng_tensor *A, ng_tensor *L) {
    return A->dtype == NG_F64 ? cholesky_impl<double>(A, L, 0) : cholesky_impl<float>(A, L, 0);
}

ng_status ng_cuda_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) {
    return A->dtype == NG_F64 ? cholesky_impl<double>(A, inv, 1) : cholesky_impl<float>(A, inv, 1);
}
