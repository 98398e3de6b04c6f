/* CUDA twin of the LayerNorm kernels: one warp per row for the row statistics and the input
 * gradient; the weight and bias gradients are column sums done in two fixed-order stages
 * (partials per chunk of rows, then their sum), so results do not depend on scheduling. */
#include "core/cuda_context.h"
#include "nn/vit_kernels.h"

namespace {

/* Accumulator type: float for f32 (and halves later), double for f64. */
template <typename T>
struct Acc {
    typedef float type;
};
template <>
struct Acc<double> {
    typedef double type;
};

template <typename A>
__device__ A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

const int kThreads = 256;

template <typename T>
__global__ void ln_fwd_kernel(const T *__restrict__ x, const T *__restrict__ w,
                              const T *__restrict__ b, double eps, T *__restrict__ y,
                              T *__restrict__ mean, T *__restrict__ rstd, int64_t rows, int64_t d) {
    typedef typename Acc<T>::type A;
    const int lane = threadIdx.x & 31;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    /* The row index is the same for all lanes of a warp, so the full-mask shuffles are safe. */
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *xr = x + r * d;
        A s = 0;
        for (int64_t i = lane; i < d; i += 32) s += (A)xr[i];
        const A mu = warp_sum(s) / (A)d;
        A v = 0;
        for (int64_t i = lane; i < d; i += 32) {
            const A t = (A)xr[i] - mu;
            v += t * t;
        }
        const A rs = (A)1 / sqrt(warp_sum(v) / (A)d + (A)eps);
        T *yr = y + r * d;
        for (int64_t i = lane; i < d; i += 32)
            yr[i] = (T)(((A)xr[i] - mu) * rs * (A)w[i] + (A)b[i]);
        if (lane == 0) {
            mean[r] = (T)mu;
            rstd[r] = (T)rs;
        }
    }
}

template <typename T>
__global__ void ln_bwd_dx_kernel(const T *__restrict__ x, const T *__restrict__ w,
                                 const T *__restrict__ mean, const T *__restrict__ rstd,
                                 const T *__restrict__ dy, T *__restrict__ dx, int64_t rows,
                                 int64_t d) {
    typedef typename Acc<T>::type A;
    const int lane = threadIdx.x & 31;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *xr = x + r * d, *gr = dy + r * d;
        const A mu = (A)mean[r], rs = (A)rstd[r];
        A sg = 0, sgx = 0;
        for (int64_t i = lane; i < d; i += 32) {
            const A g = (A)gr[i] * (A)w[i];
            sg += g;
            sgx += g * (((A)xr[i] - mu) * rs);
        }
        sg = warp_sum(sg) / (A)d;
        sgx = warp_sum(sgx) / (A)d;
        T *dr = dx + r * d;
        for (int64_t i = lane; i < d; i += 32) {
            const A xh = ((A)xr[i] - mu) * rs;
            dr[i] = (T)(rs * ((A)gr[i] * (A)w[i] - sg - xh * sgx));
        }
    }
}

/* Stage 1: block (column tile, row chunk); each thread sums one column over its chunk's rows.
 * part is [chunks, 2, d]: dy * xhat, then dy. */
template <typename T>
__global__ void ln_bwd_partial_kernel(const T *__restrict__ x, const T *__restrict__ mean,
                                      const T *__restrict__ rstd, const T *__restrict__ dy,
                                      typename Acc<T>::type *__restrict__ part, int64_t rows,
                                      int64_t d, int64_t rows_per_chunk) {
    typedef typename Acc<T>::type A;
    const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    const int64_t chunk = blockIdx.y, r0 = chunk * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    A sw = 0, sb = 0;
    for (int64_t r = r0; r < r1; r++) {
        const A g = (A)dy[r * d + col];
        sw += g * (((A)x[r * d + col] - (A)mean[r]) * (A)rstd[r]);
        sb += g;
    }
    part[(chunk * 2) * d + col] = sw;
    part[(chunk * 2 + 1) * d + col] = sb;
}

/* Stage 2: dw += sum of partials, db likewise, in chunk order. */
template <typename T>
__global__ void ln_bwd_reduce_kernel(const typename Acc<T>::type *__restrict__ part, int64_t chunks,
                                     int64_t d, T *__restrict__ dw, T *__restrict__ db) {
    typedef typename Acc<T>::type A;
    for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < d;
         col += (int64_t)gridDim.x * blockDim.x) {
        A sw = 0, sb = 0;
        for (int64_t c = 0; c < chunks; c++) {
            sw += part[(c * 2) * d + col];
            sb += part[(c * 2 + 1) * d + col];
        }
        dw[col] = (T)((A)dw[col] + sw);
        db[col] = (T)((A)db[col] + sb);
    }
}

template <typename T>
void ln_fwd(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b, double eps, ng_tensor *y,
            ng_tensor *mean, ng_tensor *rstd) {
    const int64_t d = w->numel, rows = x->numel / d;
    cudaStream_t st = ng_cuda_ctx()->stream;
    ln_fwd_kernel<T><<<ng_cuda_blocks(rows * 32, kThreads), kThreads, 0, st>>>(
        (const T *)x->data, (const T *)w->data, (const T *)b->data, eps, (T *)y->data,
        (T *)mean->data, (T *)rstd->data, rows, d);
    NG_CUDA_CHECK_LAUNCH();
}

template <typename T>
void ln_bwd(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean, const ng_tensor *rstd,
            const ng_tensor *dy, ng_tensor *dx, ng_tensor *dw, ng_tensor *db) {
    typedef typename Acc<T>::type A;
    const int64_t d = w->numel, rows = x->numel / d;
    cudaStream_t st = ng_cuda_ctx()->stream;
    if (dx) {
        ln_bwd_dx_kernel<T><<<ng_cuda_blocks(rows * 32, kThreads), kThreads, 0, st>>>(
            (const T *)x->data, (const T *)w->data, (const T *)mean->data, (const T *)rstd->data,
            (const T *)dy->data, (T *)dx->data, rows, d);
        NG_CUDA_CHECK_LAUNCH();
    }
    /* At most 512 chunks of at least 16 rows: enough blocks to fill the GPU, few partials. */
    int64_t per = (rows + 511) / 512;
    if (per < 16) per = 16;
    const int64_t chunks = (rows + per - 1) / per;
    A *part = (A *)ng_cuda_workspace(sizeof(A) * (size_t)(chunks * 2 * d));
    dim3 grid((unsigned)((d + kThreads - 1) / kThreads), (unsigned)chunks);
    ln_bwd_partial_kernel<T><<<grid, kThreads, 0, st>>>((const T *)x->data, (const T *)mean->data,
                                                        (const T *)rstd->data, (const T *)dy->data,
                                                        part, rows, d, per);
    NG_CUDA_CHECK_LAUNCH();
    ln_bwd_reduce_kernel<T><<<ng_cuda_blocks(d, kThreads), kThreads, 0, st>>>(
        part, chunks, d, (T *)dw->data, (T *)db->data);
    NG_CUDA_CHECK_LAUNCH();
}

} // namespace

extern "C" void ng_vit_layernorm_forward_cuda(const ng_tensor *x, const ng_tensor *w,
                                              const ng_tensor *b, double eps, ng_tensor *y,
                                              ng_tensor *mean, ng_tensor *rstd) {
    if (x->dtype == NG_F64)
        ln_fwd<double>(x, w, b, eps, y, mean, rstd);
    else if (x->dtype == NG_F32)
        ln_fwd<float>(x, w, b, eps, y, mean, rstd);
    else
        ng_fail("layernorm on CUDA: %s is not supported (f32, f64)", ng_dtype_name(x->dtype));
}

extern "C" void ng_vit_layernorm_backward_cuda(const ng_tensor *x, const ng_tensor *w,
                                               const ng_tensor *mean, const ng_tensor *rstd,
                                               const ng_tensor *dy, ng_tensor *dx, ng_tensor *dw,
                                               ng_tensor *db) {
    if (x->dtype == NG_F64)
        ln_bwd<double>(x, w, mean, rstd, dy, dx, dw, db);
    else if (x->dtype == NG_F32)
        ln_bwd<float>(x, w, mean, rstd, dy, dx, dw, db);
    else
        ng_fail("layernorm on CUDA: %s is not supported (f32, f64)", ng_dtype_name(x->dtype));
}
