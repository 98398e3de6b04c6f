/* CUDA RNG fills: one thread per Philox block of 4 elements, values by the shared rule in
 * rng_dist.h so they match the CPU fills bit for bit. */
#include "backend.h"
#include "cuda_context.h"
#include "half.h"
#include "rng_dist.h"

/* Stores v by the rounding rule of rng_dist.h: f16/bf16 round the float, not the double. */
template <typename T>
__device__ void put(T *out, int64_t i, double v);
template <>
__device__ void put<double>(double *out, int64_t i, double v) {
    out[i] = v;
}
template <>
__device__ void put<float>(float *out, int64_t i, double v) {
    out[i] = (float)v;
}

/* f16 and bf16 are both uint16_t, so an empty tag type picks the conversion; the pointer is
 * only ever cast back to uint16_t. */
struct f16_tag {};
struct bf16_tag {};
template <>
__device__ void put<f16_tag>(f16_tag *out, int64_t i, double v) {
    ((ng_f16 *)out)[i] = ng_f32_to_f16((float)v);
}
template <>
__device__ void put<bf16_tag>(bf16_tag *out, int64_t i, double v) {
    ((ng_bf16 *)out)[i] = ng_f32_to_bf16((float)v);
}

/* Grid-stride over blocks b of 4 elements; the last block may be partial. */
template <typename T>
__global__ void rng_kernel(T *out, int64_t n, ng_rng_dist dist, ng_rng_key key, double p0,
                           double p1) {
    int64_t nblk = (n + 3) / 4;
    for (int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; b < nblk;
         b += (int64_t)gridDim.x * blockDim.x) {
        uint32_t w[4];
        double v[4];
        ng_rng_block(key, (uint64_t)b, w);
        ng_rng_block_values(dist, w, p0, p1, v);
        int64_t i0 = 4 * b;
        /* Unrolled with a guard rather than a loop to n, so v stays in registers. */
#pragma unroll
        for (int j = 0; j < 4; j++)
            if (i0 + j < n) put<T>(out, i0 + j, v[j]);
    }
}

template <typename T>
static void launch(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1) {
    const int threads = 256;
    int64_t nblk = (t->numel + 3) / 4;
    rng_kernel<T><<<ng_cuda_blocks(nblk, threads), threads, 0, ng_cuda_ctx()->stream>>>(
        (T *)t->data, t->numel, dist, key, p0, p1);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_cuda_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0,
                                 double p1) {
    switch (t->dtype) {
        case NG_F64:
            launch<double>(t, dist, key, p0, p1);
            break;
        case NG_F32:
            launch<float>(t, dist, key, p0, p1);
            break;
        case NG_F16:
            launch<f16_tag>(t, dist, key, p0, p1);
            break;
        case NG_BF16:
            launch<bf16_tag>(t, dist, key, p0, p1);
            break;
        default:
            ng_fail("ng_cuda_rng_fill: %s is not a floating type", ng_dtype_name(t->dtype));
    }
}
