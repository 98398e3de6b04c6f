/* The CUDA context of the emulation build (core/cuda_emu.h): core/cuda_context.cu's context as far
 * as the emulated libraries need it. Its stream is the legacy default one (NULL), on which every
 * emulated op of core runs synchronously; cuDNN is the emulated one (core/cudnn_emu.c), bound to
 * that stream as the real context binds it; the shared workspace is device memory from the
 * counting allocator, so a run's workspace peak includes cuDNN's and cuSOLVER's here too. The
 * libraries are the emulated ones (core/cublas_emu.c, cusolver_emu.c, cudnn_emu.c). */
#include "cuda_context.h"
#include "backend.h"
#include "memory.h"

static ng_cuda_context ctx;
static int ready;

ng_cuda_context *ng_cuda_ctx(void) {
    if (ready) return &ctx;
    NG_CHECK(ng_cuda_device_count() > 0, "a CUDA tensor was used but no CUDA device is visible");
    /* cuBLAS as core/cuda_context.cu sets it up (the emulation holds GEMMs to the math mode) */
    NG_CUBLAS_CHECK(cublasCreate(&ctx.cublas));
    NG_CUBLAS_CHECK(cublasSetStream(ctx.cublas, ctx.stream));
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
        /* the stream's work is done (synchronous ops); freeing waits for comm's streams */
        if (c->workspace) ng_free(NG_CUDA, c->workspace, c->workspace_bytes);
        ng_mem_category was = ng_mem_set_category(NG_MEM_WORKSPACE);
        c->workspace = ng_alloc(NG_CUDA, bytes);
        ng_mem_set_category(was);
        c->workspace_bytes = bytes;
    }
    return c->workspace;
}

void ng_cuda_workspace_release(void) {
    if (!ready || !ctx.workspace) return;
    ng_free(NG_CUDA, ctx.workspace, ctx.workspace_bytes);
    ctx.workspace = NULL;
    ctx.workspace_bytes = 0;
}

const char *ng_cublas_status_string(cublasStatus_t s) {
    return cublasGetStatusString(s);
}

const char *ng_cusolver_status_string(cusolverStatus_t s) {
    return s == CUSOLVER_STATUS_SUCCESS ? "success"
           : s == CUSOLVER_STATUS_INVALID_VALUE
               ? "invalid value (emulated: the reason is printed above)"
           : s == CUSOLVER_STATUS_NOT_SUPPORTED
               ? "not supported (emulated: the reason is printed above)"
           : s == CUSOLVER_STATUS_NOT_INITIALIZED ? "not initialized"
                                                  : "cuSOLVER error (emulated)";
}
