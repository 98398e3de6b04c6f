/* Device twins of comm/reduce_cpu.c: dst += src and buf /= n, computed in double and rounded
 * once with core/convert.h, so CPU and GPU results agree bit for bit. */
#include "comm/reduce_cuda.h"

#include "core/convert.h"
#include "core/cuda_check.h"
#include "core/cuda_context.h"

__global__ static void add_kernel(void *dst, const void *src, int64_t n, ng_dtype dt) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cv_store(dst, dt, i, cv_load(dst, dt, i) + cv_load(src, dt, i));
}

__global__ static void divide_kernel(void *buf, int64_t n, ng_dtype dt, double by) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        cv_store(buf, dt, i, cv_load(buf, dt, i) / by);
}

extern "C" void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt,
                                 cudaStream_t stream) {
    if (n <= 0) return;
    add_kernel<<<ng_cuda_blocks(n, 256), 256, 0, stream>>>(dst, src, n, dt);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by,
                                    cudaStream_t stream) {
    if (n <= 0) return;
    divide_kernel<<<ng_cuda_blocks(n, 256), 256, 0, stream>>>(buf, n, dt, (double)by);
    NG_CUDA_CHECK_LAUNCH();
}
