/* CUDA twins of the fused optimizer updates: one grid-stride kernel per optimizer over the whole
 * flat buffer, reading the u8 decay mask, with the element formulas of update_kernels.h. */
#include <stdint.h>

#include "core/cuda_context.h"
#include "core/error.h"
#include "optim/update_kernels.h"

#define OPTIM_THREADS 256

/* buf is NULL when SGD keeps no momentum buffer. */
template <typename T>
__global__ void sgd_kernel(ng_sgd_args a, T *__restrict__ p, const T *__restrict__ g,
                           T *__restrict__ buf, const uint8_t *__restrict__ mask, int64_t n) {
    const int f32 = sizeof(T) == 4;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint8_t k = mask[i];
        if (k == NG_MASK_GAP) continue;
        double b = buf ? (double)buf[i] : 0.0;
        double w = ng_sgd_element(a, k == NG_MASK_DECAY, (double)p[i], (double)g[i], &b, f32);
        if (buf) buf[i] = (T)b;
        p[i] = (T)w;
    }
}

template <typename T>
__global__ void adamw_kernel(ng_adamw_args a, T *__restrict__ p, const T *__restrict__ g,
                             T *__restrict__ m, T *__restrict__ v, const uint8_t *__restrict__ mask,
                             int64_t n) {
    const int f32 = sizeof(T) == 4;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint8_t k = mask[i];
        if (k == NG_MASK_GAP) continue;
        double mi = (double)m[i], vi = (double)v[i];
        double w =
            ng_adamw_element(a, k == NG_MASK_DECAY, (double)p[i], (double)g[i], &mi, &vi, f32);
        m[i] = (T)mi;
        v[i] = (T)vi;
        p[i] = (T)w;
    }
}

extern "C" void ng_optim_sgd_cuda(ng_sgd_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *buf,
                                  const ng_tensor *mask) {
    int64_t n = p->numel;
    if (n == 0) return;
    unsigned blocks = ng_cuda_blocks(n, OPTIM_THREADS);
    cudaStream_t s = ng_cuda_ctx()->stream;
    const uint8_t *k = (const uint8_t *)mask->data;
    if (p->dtype == NG_F64) {
        sgd_kernel<double><<<blocks, OPTIM_THREADS, 0, s>>>(
            a, (double *)p->data, (const double *)g->data, buf ? (double *)buf->data : NULL, k, n);
        NG_CUDA_CHECK_LAUNCH();
    } else if (p->dtype == NG_F32) {
        sgd_kernel<float><<<blocks, OPTIM_THREADS, 0, s>>>(
            a, (float *)p->data, (const float *)g->data, buf ? (float *)buf->data : NULL, k, n);
        NG_CUDA_CHECK_LAUNCH();
    } else {
        ng_fail("sgd: parameters are %s, expected f32 or f64", ng_dtype_name(p->dtype));
    }
}

extern "C" void ng_optim_adamw_cuda(ng_adamw_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *m,
                                    ng_tensor *v, const ng_tensor *mask) {
    int64_t n = p->numel;
    if (n == 0) return;
    unsigned blocks = ng_cuda_blocks(n, OPTIM_THREADS);
    cudaStream_t s = ng_cuda_ctx()->stream;
    const uint8_t *k = (const uint8_t *)mask->data;
    if (p->dtype == NG_F64) {
        adamw_kernel<double>
            <<<blocks, OPTIM_THREADS, 0, s>>>(a, (double *)p->data, (const double *)g->data,
                                              (double *)m->data, (double *)v->data, k, n);
        NG_CUDA_CHECK_LAUNCH();
    } else if (p->dtype == NG_F32) {
        adamw_kernel<float><<<blocks, OPTIM_THREADS, 0, s>>>(
            a, (float *)p->data, (const float *)g->data, (float *)m->data, (float *)v->data, k, n);
        NG_CUDA_CHECK_LAUNCH();
    } else {
        ng_fail("adamw: parameters are %s, expected f32 or f64", ng_dtype_name(p->dtype));
    }
}
