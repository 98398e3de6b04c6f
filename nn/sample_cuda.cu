/* CUDA twin of categorical label sampling: one thread per row running the shared rule of
 * sample.h, so every label equals the CPU twin's. */
#include "core/cuda_context.h"
#include "nn/sample.h"

__global__ void sample_kernel(const void *logits, int is_f64, int64_t N, int64_t C, ng_rng_key key,
                              int32_t *labels) {
    size_t es = is_f64 ? sizeof(double) : sizeof(float);
    for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N;
         n += (int64_t)gridDim.x * blockDim.x)
        labels[n] = ng_sample_row((const char *)logits + (size_t)(n * C) * es, is_f64, C,
                                  ng_sample_u01(key, n));
}

extern "C" void ng_sample_categorical_cuda(const ng_tensor *logits, ng_rng_key key,
                                           ng_tensor *labels) {
    int64_t N = logits->shape[0], C = logits->shape[1];
    sample_kernel<<<ng_cuda_blocks(N, 128), 128, 0, ng_cuda_ctx()->stream>>>(
        logits->data, logits->dtype == NG_F64, N, C, key, (int32_t *)labels->data);
    NG_CUDA_CHECK_LAUNCH();
}
