/* One checking macro per CUDA library: file, line, the call and the library's own message.
 * Included only by the files that bind CUDA libraries. */
#ifndef NG_CUDA_CHECK_H
#define NG_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>
#include <cusolverDn.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif
const char *ng_cublas_status_string(cublasStatus_t s);
const char *ng_cusolver_status_string(cusolverStatus_t s);
#ifdef __cplusplus
}
#endif

#define NG_CUDA_CHECK(call)                                                                        \
    do {                                                                                           \
        cudaError_t ng_e_ = (call);                                                                \
        if (ng_e_ != cudaSuccess)                                                                  \
            ng_lib_fail("CUDA", __FILE__, __LINE__, #call, cudaGetErrorString(ng_e_));             \
    } while (0)

/* After a kernel launch: launch errors now, not at the next unrelated call. */
#define NG_CUDA_CHECK_LAUNCH() NG_CUDA_CHECK(cudaGetLastError())

#define NG_CUBLAS_CHECK(call)                                                                      \
    do {                                                                                           \
        cublasStatus_t ng_s_ = (call);                                                             \
        if (ng_s_ != CUBLAS_STATUS_SUCCESS)                                                        \
            ng_lib_fail("cuBLAS", __FILE__, __LINE__, #call, ng_cublas_status_string(ng_s_));      \
    } while (0)

#define NG_CUSOLVER_CHECK(call)                                                                    \
    do {                                                                                           \
        cusolverStatus_t ng_s_ = (call);                                                           \
        if (ng_s_ != CUSOLVER_STATUS_SUCCESS)                                                      \
            ng_lib_fail("cuSOLVER", __FILE__, __LINE__, #call, ng_cusolver_status_string(ng_s_));  \
    } while (0)

#define NG_CUDNN_CHECK(call)                                                                       \
    do {                                                                                           \
        cudnnStatus_t ng_s_ = (call);                                                              \
        if (ng_s_ != CUDNN_STATUS_SUCCESS)                                                         \
            ng_lib_fail("cuDNN", __FILE__, __LINE__, #call, cudnnGetErrorString(ng_s_));           \
    } while (0)

/* NCCL's macro lives with NCCL's binding (comm/) so core does not need nccl.h to compile. */

#endif
