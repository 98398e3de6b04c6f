/* The CUDA context, library handles, scratch workspace and status strings. */
#include "cuda_context.h"
#include "memory.h"

#include <stdlib.h>

static ng_cuda_context ctx;
static int ready;

int ng_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no device: clear the sticky error, report none */
        return 0;
    }
    return n;
}

size_t ng_cuda_device_memory(void) {
    ng_cuda_ctx();
    size_t free_b = 0, total = 0;
    NG_CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
    return total;
}

ng_cuda_context *ng_cuda_ctx(void) {
    if (ready) return &ctx;
    NG_CHECK(ng_cuda_device_count() > 0, "a CUDA tensor was used but no CUDA device is visible");
    const char *dev = getenv("NG_CUDA_DEVICE");
    ctx.device = dev ? atoi(dev) : 0;
    NG_CUDA_CHECK(cudaSetDevice(ctx.device));
    NG_CUDA_CHECK(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
    NG_CUBLAS_CHECK(cublasCreate(&ctx.cublas));
    NG_CUBLAS_CHECK(cublasSetStream(ctx.cublas, ctx.stream));
    /* By default cuBLAS may reduce split-K partial sums in the output type: an f16/bf16 C would
     * then take extra half roundings, where the CPU twin accumulates in f32 and rounds once.
     * Default math (no TF32) with reductions kept in the compute type. */
    NG_CUBLAS_CHECK(cublasSetMathMode(
        ctx.cublas,
        (cublasMath_t)(CUBLAS_DEFAULT_MATH | CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    NG_CUSOLVER_CHECK(cusolverDnCreate(&ctx.cusolver));
    NG_CUSOLVER_CHECK(cusolverDnSetStream(ctx.cusolver, ctx.stream));
    NG_CUDNN_CHECK(cudnnCreate(&ctx.cudnn));
    NG_CUDNN_CHECK(cudnnSetStream(ctx.cudnn, ctx.stream));
    ready = 1;
    return &ctx;
}

void *ng_cuda_workspace(size_t bytes) {
    ng_cuda_context *c = ng_cuda_ctx();
    if (bytes > c->workspace_bytes) {
        /* Work queued on the stream may still read the old buffer. */
        NG_CUDA_CHECK(cudaStreamSynchronize(c->stream));
        if (c->workspace) ng_free(NG_CUDA, c->workspace, c->workspace_bytes);
        /* through the counting allocator, so a run's workspace peak includes cuDNN's */
        ng_mem_category was = ng_mem_set_category(NG_MEM_WORKSPACE);
        c->workspace = ng_alloc(NG_CUDA, bytes);
        ng_mem_set_category(was);
        c->workspace_bytes = bytes;
    }
    return c->workspace;
}

extern "C" void ng_cuda_workspace_release(void) {
    if (!ready || !ctx.workspace) return;
    NG_CUDA_CHECK(cudaStreamSynchronize(ctx.stream)); /* queued work may still read it */
    ng_free(NG_CUDA, ctx.workspace, ctx.workspace_bytes);
    ctx.workspace = NULL;
    ctx.workspace_bytes = 0;
}

const char *ng_cublas_status_string(cublasStatus_t s) {
    return cublasGetStatusString(s);
}

const char *ng_cusolver_status_string(cusolverStatus_t s) {
    switch (s) {
        case CUSOLVER_STATUS_SUCCESS:
            return "success";
        case CUSOLVER_STATUS_NOT_INITIALIZED:
            return "not initialized";
        case CUSOLVER_STATUS_ALLOC_FAILED:
            return "allocation failed";
        case CUSOLVER_STATUS_INVALID_VALUE:
            return "invalid value";
        case CUSOLVER_STATUS_ARCH_MISMATCH:
            return "architecture mismatch";
        case CUSOLVER_STATUS_EXECUTION_FAILED:
            return "execution failed";
        case CUSOLVER_STATUS_INTERNAL_ERROR:
            return "internal error";
        case CUSOLVER_STATUS_NOT_SUPPORTED:
            return "not supported";
        default:
            return "unknown cuSOLVER status";
    }
}
