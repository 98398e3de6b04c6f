/* CUDA twins of the fused optimizer updates: one grid-stride kernel over the flat buffer. */
#include "core/cuda_context.h"
#include "optim/update_kernels.h"

template <typename T>
__global__ void sgd_kernel(T *P, const T *G, T *B, const uint8_t *mask, int64_t n, ng_sgd_args a) {
    T dummy = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        T *b = B ? &B[i] : &dummy;
        NG_SGD_ELEMENT(T, P[i], G[i], *b, mask[i], a);
    }
}

template <typename T>
__device__ T dsqrt(T x);
template <>
__device__ float dsqrt<float>(float x) {
    return sqrtf(x);
}
template <>
__device__ double dsqrt<double>(double x) {
    return sqrt(x);
}

template <typename T>
__global__ void adamw_kernel(T *P, const T *G, T *M, T *V, const uint8_t *mask, int64_t n,
                             ng_adamw_args a) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        NG_ADAMW_ELEMENT(T, dsqrt<T>, P[i], G[i], M[i], V[i], mask[i], a);
}

extern "C" void ng_cuda_sgd(ng_tensor *p, const ng_tensor *g, ng_tensor *buf, const uint8_t *mask,
                            ng_sgd_args a) {
    cudaStream_t s = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(p->numel, 256);
    if (p->dtype == NG_F64)
        sgd_kernel<double><<<blocks, 256, 0, s>>>((double *)p->data, (const double *)g->data,
                                                  buf ? (double *)buf->data : NULL, mask, p->numel,
                                                  a);
    else
        sgd_kernel<float><<<blocks, 256, 0, s>>>((float *)p->data, (const float *)g->data,
                                                 buf ? (float *)buf->data : NULL, mask, p->numel,
                                                 a);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_cuda_adamw(ng_tensor *p, const ng_tensor *g, ng_tensor *m, ng_tensor *v,
                              const uint8_t *mask, ng_adamw_args a) {
    cudaStream_t s = ng_cuda_ctx()->stream;
    unsigned blocks = ng_cuda_blocks(p->numel, 256);
    if (p->dtype == NG_F64)
        adamw_kernel<double><<<blocks, 256, 0, s>>>((double *)p->data, (const double *)g->data,
                                                    (double *)m->data, (double *)v->data, mask,
                                                    p->numel, a);
    else
        adamw_kernel<float><<<blocks, 256, 0, s>>>((float *)p->data, (const float *)g->data,
                                                   (float *)m->data, (float *)v->data, mask,
                                                   p->numel, a);
    NG_CUDA_CHECK_LAUNCH();
}
