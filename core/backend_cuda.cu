/* The CUDA backend table: device memory, copies on the context's stream, and the CUDA twins. */
#include "backend.h"
#include "cuda_context.h"

static void *cuda_alloc(size_t bytes) {
    ng_cuda_ctx();
    void *p = NULL;
    if (cudaMalloc(&p, bytes ? bytes : 1) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_free(void *p) {
    NG_CUDA_CHECK(cudaFree(p));
}

static void cuda_memcpy(void *dst, ng_device dd, const void *src, ng_device sd, size_t bytes) {
    cudaMemcpyKind kind = dd == NG_CUDA
                              ? (sd == NG_CUDA ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                              : cudaMemcpyDeviceToHost;
    cudaStream_t s = ng_cuda_ctx()->stream;
    NG_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, s));
    /* Host memory may be pageable and reused by the caller right after: finish the copy. */
    if (kind != cudaMemcpyDeviceToDevice) NG_CUDA_CHECK(cudaStreamSynchronize(s));
}

static void cuda_sync(void) {
    NG_CUDA_CHECK(cudaStreamSynchronize(ng_cuda_ctx()->stream));
}

extern "C" const ng_backend ng_cuda_backend_table = {
    "cuda",           cuda_alloc,   cuda_free,        cuda_memcpy,
    cuda_sync,        ng_cuda_gemm, ng_cuda_axpy,     ng_cuda_scale,
    ng_cuda_fill,     ng_cuda_cast, ng_cuda_binary,   ng_cuda_add_diagonal,
    ng_cuda_reduce,   ng_cuda_eigh, ng_cuda_cholesky, ng_cuda_cholesky_inverse,
    ng_cuda_rng_fill,
};
