/* Local reductions of device buffers on a stream, for the NCCL backend's rings and averages:
 * the CUDA twins of reduce_cpu.c, rounding the same way. */
#ifndef NG_COMM_REDUCE_CUDA_H
#define NG_COMM_REDUCE_CUDA_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "core/dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt, cudaStream_t stream);
void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif
