/* The device backends behind core's public functions: one table per device. The CPU table is
 * always there; the CUDA table exists only in builds with CUDA, and that choice is made in
 * backend.c alone. Functions here receive tensors already checked by the public function
 * (same device, matching shapes and dtypes), so they only compute. Internal to core. */
#ifndef NG_BACKEND_H
#define NG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A checked GEMM, row-major, in elements: for p in [0,batch):
 * C_p[m,n] = alpha op(A_p) op(B_p) + beta C_p, X_p = X + p * stride_x (stride 0 broadcasts),
 * lda/ldb/ldc = row lengths of A, B, C as stored. */
typedef struct {
    int trans_a, trans_b;
    int64_t m, n, k, batch;
    int64_t lda, ldb, ldc;
    int64_t stride_a, stride_b, stride_c;
    double alpha, beta;
    ng_dtype in_type, out_type;
    const void *A, *B;
    void *C;
} ng_gemm_desc;

typedef enum { NG_BIN_ADD, NG_BIN_MUL } ng_binary_op;
typedef enum { NG_RED_SUM, NG_RED_SUMSQ, NG_RED_MAXABS, NG_RED_ALL_FINITE } ng_reduce_op;
typedef enum { NG_DIST_UNIFORM, NG_DIST_NORMAL, NG_DIST_BERNOULLI } ng_rng_dist;

typedef struct ng_backend {
    const char *name;
    void *(*alloc)(size_t bytes);
    void (*free)(void *p);
    /* Copy between any two devices where one of them is this backend's device. */
    void (*memcpy)(void *dst, ng_device dst_dev, const void *src, ng_device src_dev, size_t bytes);
    void (*sync)(void);

    void (*gemm)(const ng_gemm_desc *d);
    void (*axpy)(double alpha, const ng_tensor *x, ng_tensor *y);
    void (*scale)(double alpha, ng_tensor *x);
    void (*fill)(ng_tensor *x, double value);
    void (*cast)(ng_tensor *dst, const ng_tensor *src);
    void (*binary)(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c);
    void (*add_diagonal)(ng_tensor *A, double value);
    double (*reduce)(ng_reduce_op op, const ng_tensor *x);

    /* Linear algebra on [b,n,n] (b >= 1) f32/f64 tensors; see linalg.h for the contracts.
     * Each returns the first failing status of the batch and fills failed outputs with NaN. */
    ng_status (*eigh)(const ng_tensor *A, ng_tensor *w, ng_tensor *Q);
    ng_status (*cholesky)(const ng_tensor *A, ng_tensor *L);
    ng_status (*cholesky_inverse)(const ng_tensor *A, ng_tensor *inv);

    void (*rng_fill)(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1);
} ng_backend;

/* The backend for a device; fails with a clear message when the build lacks it. */
const ng_backend *ng_backend_for(ng_device dev, const char *what);
/* NULL when built without CUDA. */
const ng_backend *ng_backend_cuda(void);
/* 1 when the build has CUDA and a device is visible. */
int ng_cuda_available(void);
/* The current CUDA device's memory in bytes; 0 without one. */
size_t ng_cuda_total_memory(void);

/* The CPU table is assembled in backend_cpu.c from these. */
void ng_cpu_gemm(const ng_gemm_desc *d);
void ng_cpu_axpy(double alpha, const ng_tensor *x, ng_tensor *y);
void ng_cpu_scale(double alpha, ng_tensor *x);
void ng_cpu_fill(ng_tensor *x, double value);
void ng_cpu_cast(ng_tensor *dst, const ng_tensor *src);
void ng_cpu_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c);
void ng_cpu_add_diagonal(ng_tensor *A, double value);
double ng_cpu_reduce(ng_reduce_op op, const ng_tensor *x);
ng_status ng_cpu_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q);
ng_status ng_cpu_cholesky(const ng_tensor *A, ng_tensor *L);
ng_status ng_cpu_cholesky_inverse(const ng_tensor *A, ng_tensor *inv);
void ng_cpu_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1);

/* The CUDA table is assembled in backend_cuda.cu from these (CUDA builds only). */
void ng_cuda_gemm(const ng_gemm_desc *d);
/* C = beta C over each batch entry's m x n block: the empty product (k = 0), a kernel of
 * core/ops_cuda.cu that ng_cuda_gemm (core/gemm_cublas.c) calls. */
void ng_cuda_gemm_beta(const ng_gemm_desc *d);
void ng_cuda_axpy(double alpha, const ng_tensor *x, ng_tensor *y);
void ng_cuda_scale(double alpha, ng_tensor *x);
void ng_cuda_fill(ng_tensor *x, double value);
void ng_cuda_cast(ng_tensor *dst, const ng_tensor *src);
void ng_cuda_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c);
void ng_cuda_add_diagonal(ng_tensor *A, double value);
double ng_cuda_reduce(ng_reduce_op op, const ng_tensor *x);
ng_status ng_cuda_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q);
ng_status ng_cuda_cholesky(const ng_tensor *A, ng_tensor *L);
ng_status ng_cuda_cholesky_inverse(const ng_tensor *A, ng_tensor *inv);
/* Frees the shared CUDA workspace (the next request allocates it anew), so that a test can
 * measure one call's request as the workspace's peak. */
void ng_cuda_workspace_release(void);
/* cuSOLVER's scratch bytes for op (a core/linalg.h ng_linalg_op) on b matrices n x n of dt: the
 * query the twins make, asked with no buffers (the sizes depend on n, b and the types only). */
size_t ng_cuda_linalg_solver_bytes(int op, ng_dtype dt, int64_t b, int64_t n);
void ng_cuda_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1);

#ifdef __cplusplus
}
#endif
#endif
