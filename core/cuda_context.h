/* The process's CUDA context: one device, one stream, and the library handles bound to that
 * stream, created on first use. Included only by .cu files. */
#ifndef NG_CUDA_CONTEXT_H
#define NG_CUDA_CONTEXT_H

#include "cuda_check.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    cusolverDnHandle_t cusolver;
    cudnnHandle_t cudnn;
    void *workspace; /* scratch shared by library calls on the stream, grown on demand */
    size_t workspace_bytes;
} ng_cuda_context;

ng_cuda_context *ng_cuda_ctx(void);
/* Scratch of at least `bytes`; the pointer stays valid until the next call that grows it, so
 * use it within one op. */
void *ng_cuda_workspace(size_t bytes);
/* Number of visible devices; 0 (not an error) when there is no driver or no GPU. */
int ng_cuda_device_count(void);
/* The current device's memory in bytes. */
size_t ng_cuda_device_memory(void);

/* Grid size for n elements with `threads` per block, capped for grid-stride loops. */
static inline unsigned ng_cuda_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)(b < 1 ? 1 : b);
}

#ifdef __cplusplus
}
#endif
#endif
