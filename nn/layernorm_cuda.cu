/* CUDA twin of the LayerNorm kernels: one warp per row for the row statistics and the input
 * gradient; the weight and bias gradients are column sums done in two fixed-order stages
 * (partials per chunk of rows, then their sum), so results do not depend on scheduling. */
#include "core/cuda_context.h"
#include "nn/activation_kernels.h"
#include "nn/vit_kernels.h"

namespace {

/* Activations are T (f32, f64, or f16/bf16 under mixed precision); weights, statistics and
 * their gradients are P (T itself, or f32 for half activations). Accumulator type: float for
 * f32, double for f64. */
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

template <typename T, typename P>
__global__ void ln_fwd_kernel(const T *__restrict__ x, const P *__restrict__ w,
                              const P *__restrict__ b, double eps, T *__restrict__ y,
                              P *__restrict__ mean, P *__restrict__ rstd, int64_t rows, int64_t d) {
    typedef typename Acc<P>::type A;
    const int lane = threadIdx.x & 31;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    /* The row index is the same for all lanes of a warp, so the full-mask shuffles are safe. */
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *xr = x + r * d;
        A s = 0;
        for (int64_t i = lane; i < d; i += 32) s += (A)ng_ld(xr, i);
        const A mu = warp_sum(s) / (A)d;
        A v = 0;
        for (int64_t i = lane; i < d; i += 32) {
            const A t = (A)ng_ld(xr, i) - mu;
            v += t * t;
        }
        const A rs = (A)1 / sqrt(warp_sum(v) / (A)d + (A)eps);
        T *yr = y + r * d;
        for (int64_t i = lane; i < d; i += 32)
            ng_st(yr, i, ((A)ng_ld(xr, i) - mu) * rs * (A)w[i] + (A)b[i]);
        if (lane == 0) {
            mean[r] = (P)mu;
            rstd[r] = (P)rs;
        }
    }
}

template <typename T, typename P>
__global__ void ln_bwd_dx_kernel(const T *__restrict__ x, const P *__restrict__ w,
                                 const P *__restrict__ mean, const P *__restrict__ rstd,
                                 const T *__restrict__ dy, T *__restrict__ dx, int64_t rows,
                                 int64_t d) {
    typedef typename Acc<P>::type A;
    const int lane = threadIdx.x & 31;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += warps) {
        const T *xr = x + r * d, *gr = dy + r * d;
        const A mu = (A)mean[r], rs = (A)rstd[r];
        A sg = 0, sgx = 0;
        for (int64_t i = lane; i < d; i += 32) {
            const A g = (A)ng_ld(gr, i) * (A)w[i];
            sg += g;
            sgx += g * (((A)ng_ld(xr, i) - mu) * rs);
        }
        sg = warp_sum(sg) / (A)d;
        sgx = warp_sum(sgx) / (A)d;
        T *dr = dx + r * d;
        for (int64_t i = lane; i < d; i += 32) {
            const A xh = ((A)ng_ld(xr, i) - mu) * rs;
            ng_st(dr, i, rs * ((A)ng_ld(gr, i) * (A)w[i] - sg - xh * sgx));
        }
    }
}

/* Stage 1: block (column tile, row chunk); each thread sums one column over its chunk's rows.
 * part is [chunks, 2, d]: dy * xhat, then dy. */
template <typename T, typename P>
__global__ void ln_bwd_partial_kernel(const T *__restrict__ x, const P *__restrict__ mean,
                                      const P *__restrict__ rstd, const T *__restrict__ dy,
                                      typename Acc<P>::type *__restrict__ part, int64_t rows,
                                      int64_t d, int64_t rows_per_chunk) {
    typedef typename Acc<P>::type A;
    const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= d) return;
    const int64_t chunk = blockIdx.y, r0 = chunk * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    A sw = 0, sb = 0;
    for (int64_t r = r0; r < r1; r++) {
        const A g = (A)ng_ld(dy, r * d + col);
        sw += g * (((A)ng_ld(x, r * d + col) - (A)mean[r]) * (A)rstd[r]);
        sb += g;
    }
    part[(chunk * 2) * d + col] = sw;
    part[(chunk * 2 + 1) * d + col] = sb;
}

/* Stage 2: dw += sum of partials, db likewise, in chunk order. */
template <typename P>
__global__ void ln_bwd_reduce_kernel(const typename Acc<P>::type *__restrict__ part, int64_t chunks,
                                     int64_t d, P *__restrict__ dw, P *__restrict__ db) {
    typedef typename Acc<P>::type A;
    for (int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; col < d;
         col += (int64_t)gridDim.x * blockDim.x) {
        A sw = 0, sb = 0;
        for (int64_t c = 0; c < chunks; c++) {
            sw += part[(c * 2) * d + col];
            sb += part[(c * 2 + 1) * d + col];
        }
        dw[col] = (P)((A)dw[col] + sw);
        db[col] = (P)((A)db[col] + sb);
    }
}

template <typename T, typename P>
void ln_fwd(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b, double eps, ng_tensor *y,
            ng_tensor *mean, ng_tensor *rstd) {
    const int64_t d = w->numel, rows = x->numel / d;
    cudaStream_t st = ng_cuda_ctx()->stream;
    ln_fwd_kernel<T, P><<<ng_cuda_blocks(rows * 32, kThreads), kThreads, 0, st>>>(
        (const T *)x->data, (const P *)w->data, (const P *)b->data, eps, (T *)y->data,
        (P *)mean->data, (P *)rstd->data, rows, d);
    NG_CUDA_CHECK_LAUNCH();
}

template <typename T, typename P>
void ln_bwd(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean, const ng_tensor *rstd,
            const ng_tensor *dy, ng_tensor *dx, ng_tensor *dw, ng_tensor *db) {
    typedef typename Acc<P>::type A;
    const int64_t d = w->numel, rows = x->numel / d;
    cudaStream_t st = ng_cuda_ctx()->stream;
    if (dx) {
        ln_bwd_dx_kernel<T, P><<<ng_cuda_blocks(rows * 32, kThreads), kThreads, 0, st>>>(
            (const T *)x->data, (const P *)w->data, (const P *)mean->data, (const P *)rstd->data,
            (const T *)dy->data, (T *)dx->data, rows, d);
        NG_CUDA_CHECK_LAUNCH();
    }
    /* At most 512 chunks of at least 16 rows: enough blocks to fill the GPU, few partials. */
    const int64_t per = ng_ln_partial_rows(rows), chunks = ng_ln_partial_chunks(rows);
    A *part = (A *)ng_cuda_workspace(sizeof(A) * (size_t)(chunks * 2 * d));
    dim3 grid((unsigned)((d + kThreads - 1) / kThreads), (unsigned)chunks);
    ln_bwd_partial_kernel<T, P>
        <<<grid, kThreads, 0, st>>>((const T *)x->data, (const P *)mean->data,
                                    (const P *)rstd->data, (const T *)dy->data, part, rows, d, per);
    NG_CUDA_CHECK_LAUNCH();
    ln_bwd_reduce_kernel<P><<<ng_cuda_blocks(d, kThreads), kThreads, 0, st>>>(
        part, chunks, d, (P *)dw->data, (P *)db->data);
    NG_CUDA_CHECK_LAUNCH();
}

} // namespace

extern "C" void ng_vit_layernorm_forward_cuda(const ng_tensor *x, const ng_tensor *w,
                                              const ng_tensor *b, double eps, ng_tensor *y,
                                              ng_tensor *mean, ng_tensor *rstd) {
    switch (x->dtype) {
        case NG_F64:
            return ln_fwd<double, double>(x, w, b, eps, y, mean, rstd);
        case NG_F32:
            return ln_fwd<float, float>(x, w, b, eps, y, mean, rstd);
        case NG_F16:
            return ln_fwd<ng_half16, float>(x, w, b, eps, y, mean, rstd);
        case NG_BF16:
            return ln_fwd<ng_bhalf16, float>(x, w, b, eps, y, mean, rstd);
        default:
            ng_fail("layernorm on CUDA: %s is not supported", ng_dtype_name(x->dtype));
    }
}

extern "C" void ng_vit_layernorm_backward_cuda(const ng_tensor *x, const ng_tensor *w,
                                               const ng_tensor *mean, const ng_tensor *rstd,
                                               const ng_tensor *dy, ng_tensor *dx, ng_tensor *dw,
                                               ng_tensor *db) {
    switch (x->dtype) {
        case NG_F64:
            return ln_bwd<double, double>(x, w, mean, rstd, dy, dx, dw, db);
        case NG_F32:
            return ln_bwd<float, float>(x, w, mean, rstd, dy, dx, dw, db);
        case NG_F16:
            return ln_bwd<ng_half16, float>(x, w, mean, rstd, dy, dx, dw, db);
        case NG_BF16:
            return ln_bwd<ng_bhalf16, float>(x, w, mean, rstd, dy, dx, dw, db);
        default:
            ng_fail("layernorm on CUDA: %s is not supported", ng_dtype_name(x->dtype));
    }
}
