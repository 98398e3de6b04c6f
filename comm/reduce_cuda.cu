/* Device twins of comm/reduce_cpu.c: dst += src and buf /= n per dtype, fp16/bf16 through f32
 * with core/half.h, quotients in double rounded once, so CPU and GPU results agree. */
#include "comm/reduce_cuda.h"

#include "core/cuda_check.h"
#include "core/cuda_context.h"
#include "core/half.h"

namespace {

struct f16_t {
    ng_f16 bits;
};
struct bf16_t {
    ng_bf16 bits;
};

__device__ inline float to_float(float x) { return x; }
__device__ inline double to_float(double x) { return x; }
__device__ inline float to_float(f16_t x) { return ng_f16_to_f32(x.bits); }
__device__ inline float to_float(bf16_t x) { return ng_bf16_to_f32(x.bits); }

template <typename T>
__device__ inline T from_float(double v);
template <>
__device__ inline float from_float<float>(double v) { return (float)v; }
template <>
__device__ inline double from_float<double>(double v) { return v; }
template <>
__device__ inline f16_t from_float<f16_t>(double v) { return f16_t{ng_f32_to_f16((float)v)}; }
template <>
__device__ inline bf16_t from_float<bf16_t>(double v) { return bf16_t{ng_f32_to_bf16((float)v)}; }

/* float + float rounds once in float; for halves the f32 sum of two halves is exact, then
 * rounded once to the half type. */
template <typename T>
__global__ void add_kernel(T *dst, const T *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        auto s = to_float(dst[i]) + to_float(src[i]);
        dst[i] = from_float<T>((double)s);
    }
}

template <typename T>
__global__ void divide_kernel(T *buf, int64_t n, double by) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        buf[i] = from_float<T>((double)to_float(buf[i]) / by);
}

template <typename T>
void launch_add(void *dst, const void *src, int64_t n, cudaStream_t s) {
    add_kernel<T><<<ng_cuda_blocks(n, 256), 256, 0, s>>>((T *)dst, (const T *)src, n);
}

template <typename T>
void launch_divide(void *buf, int64_t n, int by, cudaStream_t s) {
    divide_kernel<T><<<ng_cuda_blocks(n, 256), 256, 0, s>>>((T *)buf, n, (double)by);
}

} // namespace

extern "C" void ng_comm_cuda_add(void *dst, const void *src, int64_t n, ng_dtype dt,
                                 cudaStream_t stream) {
    if (n <= 0) return;
    switch (dt) {
        case NG_F32: launch_add<float>(dst, src, n, stream); break;
        case NG_F64: launch_add<double>(dst, src, n, stream); break;
        case NG_F16: launch_add<f16_t>(dst, src, n, stream); break;
        case NG_BF16: launch_add<bf16_t>(dst, src, n, stream); break;
        default: ng_fail("comm: cannot reduce %s elements", ng_dtype_name(dt));
    }
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_comm_cuda_divide(void *buf, int64_t n, ng_dtype dt, int by,
                                    cudaStream_t stream) {
    if (n <= 0) return;
    switch (dt) {
        case NG_F32: launch_divide<float>(buf, n, by, stream); break;
        case NG_F64: launch_divide<double>(buf, n, by, stream); break;
        case NG_F16: launch_divide<f16_t>(buf, n, by, stream); break;
        case NG_BF16: launch_divide<bf16_t>(buf, n, by, stream); break;
        default: ng_fail("comm: cannot average %s elements", ng_dtype_name(dt));
    }
    NG_CUDA_CHECK_LAUNCH();
}
