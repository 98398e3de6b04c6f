/* The CUDA side of comm_nccl.c in the emulation build (NG_CUDA_EMU with MPI): the runtime calls
 * it makes, core's context as far as it reads it (the stream), and reduce_cuda.cu's twins.
 * Streams and events are handles with nothing behind them: every emulated op has finished when
 * its call returns, so waiting on one is already done. Copies and reductions run with device
 * memory open (core/cuda_emu.h), so a host pointer handed to them as device memory still faults
 * where it would misbehave on a GPU. */
#include <stdlib.h>
#include <string.h>

#include "core/cuda_context.h"
#include "core/cuda_emu.h"
#include "comm_internal.h"
#include "core/error.h"
#include "reduce_cuda.h"

/* One byte each, so that handles are distinct and freeing them is checked by the allocator. */
static void *handle(void) {
    return malloc(1);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    (void)flags;
    *stream = handle();
    return *stream ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    free(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    (void)stream;
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags) {
    (void)flags;
    *event = handle();
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
    (void)stream;
    return event ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
    (void)stream, (void)flags;
    return event ? cudaSuccess : cudaErrorInvalidResourceHandle;
}

/* Device to device only, as the NCCL backend copies; both ends must be device memory. */
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    (void)stream;
    if (kind != cudaMemcpyDeviceToDevice || !ng_emu_is_device(dst, count) ||
        !ng_emu_is_device(src, count))
        return cudaErrorInvalidValue;
    ng_emu_enter();
    memmove(dst, src, count);
    ng_emu_leave();
    return cudaSuccess;
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
        case cudaSuccess:
            return "no error";
        case cudaErrorInvalidValue:
            return "invalid argument (emulated: a copy that is not device to device memory)";
        case cudaErrorMemoryAllocation:
            return "out of memory (emulated)";
        default:
            return "invalid resource handle (emulated)";
    }
}

/* The stream is the legacy default one (NULL), which the emulated calls above accept. */
ng_cuda_context *ng_cuda_ctx(void) {
    static ng_cuda_context ctx;
    return &ctx;
}

void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt, cudaStream_t stream) {
    (void)stream;
    size_t bytes = (size_t)n * ng_dtype_size(dt);
    NG_CHECK(ng_emu_is_device(dst, bytes) && ng_emu_is_device(src, bytes),
             "comm (emulated CUDA): an add of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    ng_emu_enter();
    ng_comm_cpu_add(NULL, dst, src, n, dt);
    ng_emu_leave();
}

void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by, cudaStream_t stream) {
    (void)stream;
    NG_CHECK(ng_emu_is_device(buf, (size_t)n * ng_dtype_size(dt)),
             "comm (emulated CUDA): a division of %lld %s elements on memory that is not the "
             "device's",
             (long long)n, ng_dtype_name(dt));
    ng_emu_enter();
    ng_comm_cpu_divide(NULL, buf, n, dt, by);
    ng_emu_leave();
}
