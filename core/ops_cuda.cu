/* CUDA twins of the dense ops: grid-stride element-wise kernels, casts and reductions (GEMM is
 * cuBLAS's: core/gemm_cublas.c). Element-wise results match the CPU twin (core/ops_cpu.c) bit for
 * bit. */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "cuda_context.h"
#include "convert.h"
#include "half.h"
#include "ops.h"

#define NG_THREADS 256 /* also the reductions' block, which ng_reduce_cuda_blocks counts */

/* ---- Element access by dtype ------------------------------------------------------------- */

/* Storage type S and compute type C of a floating dtype: halves compute in f32. */
template <int DT>
struct elem;
template <>
struct elem<NG_F32> {
    typedef float S;
    typedef float C;
    static __device__ __forceinline__ C ld(S v) { return v; }
    static __device__ __forceinline__ S st(C v) { return v; }
};
template <>
struct elem<NG_F64> {
    typedef double S;
    typedef double C;
    static __device__ __forceinline__ C ld(S v) { return v; }
    static __device__ __forceinline__ S st(C v) { return v; }
};
template <>
struct elem<NG_F16> {
    typedef ng_f16 S;
    typedef float C;
    static __device__ __forceinline__ C ld(S v) { return ng_f16_to_f32(v); }
    static __device__ __forceinline__ S st(C v) { return ng_f32_to_f16(v); }
};
template <>
struct elem<NG_BF16> {
    typedef ng_bf16 S;
    typedef float C;
    static __device__ __forceinline__ C ld(S v) { return ng_bf16_to_f32(v); }
    static __device__ __forceinline__ S st(C v) { return ng_f32_to_bf16(v); }
};

/* Separate roundings, never a fused multiply-add: the CPU twin rounds twice, and nvcc would
 * otherwise contract a*x+y. */
static __device__ __forceinline__ float add_rn(float a, float b) {
    return __fadd_rn(a, b);
}
static __device__ __forceinline__ double add_rn(double a, double b) {
    return __dadd_rn(a, b);
}
static __device__ __forceinline__ float mul_rn(float a, float b) {
    return __fmul_rn(a, b);
}
static __device__ __forceinline__ double mul_rn(double a, double b) {
    return __dmul_rn(a, b);
}

#define GRID_STRIDE(i, n)                                                                          \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)blockDim.x * gridDim.x)

static void bad_dtype(const char *op, const ng_tensor *t) {
    ng_fail("%s: '%s' is %s, which this op does not take", op, ng_tensor_name(t),
            ng_tensor_desc(t));
}

/* Runs F<DT>::run(args...) for the floating dtype dt. */
template <template <int> class F, typename... Args>
static void float_dispatch(const char *op, const ng_tensor *t, Args... args) {
    switch (t->dtype) {
        case NG_F32:
            F<NG_F32>::run(args...);
            break;
        case NG_F64:
            F<NG_F64>::run(args...);
            break;
        case NG_F16:
            F<NG_F16>::run(args...);
            break;
        case NG_BF16:
            F<NG_BF16>::run(args...);
            break;
        default:
            bad_dtype(op, t);
    }
}

static cudaStream_t stream(void) {
    return ng_cuda_ctx()->stream;
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

/* C = beta C over the m x n block of each batch entry (ldc, stride_c): the empty product (k = 0)
 * of core/gemm_cublas.c, done here rather than trusting every cuBLAS path with k = 0. beta == 0
 * writes zeros without reading C. */
template <int DT>
__global__ void gemm_beta_kernel(typename elem<DT>::C beta, typename elem<DT>::S *C, int64_t m,
                                 int64_t n, int64_t ldc, int64_t stride_c, int64_t total) {
    typedef elem<DT> E;
    GRID_STRIDE(i, total) {
        int64_t j = i % n, r = i / n % m, p = i / (n * m);
        typename E::S *c = C + p * stride_c + r * ldc + j;
        *c = beta == 0 ? E::st(0) : E::st(mul_rn(beta, E::ld(*c)));
    }
}

template <int DT>
struct gemm_beta_run {
    static void run(const ng_gemm_desc *d) {
        typedef elem<DT> E;
        int64_t total = d->batch * d->m * d->n;
        if (!total) return;
        gemm_beta_kernel<DT><<<ng_cuda_blocks(total, NG_THREADS), NG_THREADS, 0, stream()>>>(
            (typename E::C)d->beta, (typename E::S *)d->C, d->m, d->n, d->ldc, d->stride_c, total);
        NG_CUDA_CHECK_LAUNCH();
    }
};

extern "C" void ng_cuda_gemm_beta(const ng_gemm_desc *d) {
    switch (d->out_type) {
        case NG_F32:
            gemm_beta_run<NG_F32>::run(d);
            break;
        case NG_F64:
            gemm_beta_run<NG_F64>::run(d);
            break;
        case NG_F16:
            gemm_beta_run<NG_F16>::run(d);
            break;
        case NG_BF16:
            gemm_beta_run<NG_BF16>::run(d);
            break;
        default:
            ng_fail("ng_gemm: output type %s", ng_dtype_name(d->out_type));
    }
}

/* ---- Element-wise -------------------------------------------------------------------------- */

template <int DT>
__global__ void axpy_kernel(typename elem<DT>::C a, const typename elem<DT>::S *x,
                            typename elem<DT>::S *y, int64_t n) {
    typedef elem<DT> E;
    GRID_STRIDE(i, n) {
        y[i] = E::st(add_rn(E::ld(y[i]), mul_rn(a, E::ld(x[i]))));
    }
}

template <int DT>
struct axpy_run {
    static void run(double alpha, const ng_tensor *x, ng_tensor *y) {
        typedef elem<DT> E;
        int64_t n = y->numel;
        axpy_kernel<DT><<<ng_cuda_blocks(n, NG_THREADS), NG_THREADS, 0, stream()>>>(
            (typename E::C)alpha, (const typename E::S *)x->data, (typename E::S *)y->data, n);
        NG_CUDA_CHECK_LAUNCH();
    }
};

extern "C" void ng_cuda_axpy(double alpha, const ng_tensor *x, ng_tensor *y) {
    float_dispatch<axpy_run>("ng_axpy", y, alpha, x, y);
}

template <int DT>
__global__ void scale_kernel(typename elem<DT>::C a, typename elem<DT>::S *x, int64_t n) {
    typedef elem<DT> E;
    GRID_STRIDE(i, n) {
        x[i] = E::st(mul_rn(a, E::ld(x[i])));
    }
}

template <int DT>
struct scale_run {
    static void run(double alpha, ng_tensor *x) {
        typedef elem<DT> E;
        int64_t n = x->numel;
        scale_kernel<DT><<<ng_cuda_blocks(n, NG_THREADS), NG_THREADS, 0, stream()>>>(
            (typename E::C)alpha, (typename E::S *)x->data, n);
        NG_CUDA_CHECK_LAUNCH();
    }
};

extern "C" void ng_cuda_scale(double alpha, ng_tensor *x) {
    float_dispatch<scale_run>("ng_scale", x, alpha, x);
}

template <typename W>
__global__ void fill_kernel(W *x, W v, int64_t n) {
    GRID_STRIDE(i, n) {
        x[i] = v;
    }
}

template <typename W>
static void fill_words(void *x, uint64_t bits, int64_t n) {
    W v;
    memcpy(&v, &bits, sizeof(W)); /* little-endian: the element's bytes come first */
    fill_kernel<W><<<ng_cuda_blocks(n, NG_THREADS), NG_THREADS, 0, stream()>>>((W *)x, v, n);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_cuda_fill(ng_tensor *x, double value) {
    /* The element is converted on the host by the same code as the CPU twin's, then copied. */
    uint64_t bits = cv_bits(x->dtype, value);
    int64_t n = x->numel;
    switch (ng_dtype_size(x->dtype)) {
        case 1:
            NG_CUDA_CHECK(cudaMemsetAsync(x->data, (int)(bits & 0xffu), (size_t)n, stream()));
            break;
        case 2:
            fill_words<uint16_t>(x->data, bits, n);
            break;
        case 4:
            fill_words<uint32_t>(x->data, bits, n);
            break;
        default:
            fill_words<uint64_t>(x->data, bits, n);
            break;
    }
}

template <int SD, int DD>
__global__ void cast_kernel(const void *src, void *dst, int64_t n) {
    GRID_STRIDE(i, n) {
        /* The same two routes as the CPU twin: f32 among the f32 family, else through double. */
        if (cv_is_f32_family((ng_dtype)SD) && cv_is_f32_family((ng_dtype)DD))
            cv_store_f32(dst, (ng_dtype)DD, i, cv_load_f32(src, (ng_dtype)SD, i));
        else
            cv_store(dst, (ng_dtype)DD, i, cv_load(src, (ng_dtype)SD, i));
    }
}

template <int SD>
static void cast_from(ng_tensor *dst, const ng_tensor *src) {
    int64_t n = dst->numel;
    unsigned blocks = ng_cuda_blocks(n, NG_THREADS);
    cudaStream_t s = stream();
    switch (dst->dtype) {
        case NG_F32:
            cast_kernel<SD, NG_F32><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        case NG_F64:
            cast_kernel<SD, NG_F64><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        case NG_F16:
            cast_kernel<SD, NG_F16><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        case NG_BF16:
            cast_kernel<SD, NG_BF16><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        case NG_I32:
            cast_kernel<SD, NG_I32><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        case NG_U8:
            cast_kernel<SD, NG_U8><<<blocks, NG_THREADS, 0, s>>>(src->data, dst->data, n);
            break;
        default:
            bad_dtype("ng_cast", dst);
            return;
    }
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_cuda_cast(ng_tensor *dst, const ng_tensor *src) {
    if (dst->dtype == src->dtype) { /* bits kept as they are, NaN payloads included */
        if (dst->data != src->data)
            NG_CUDA_CHECK(cudaMemcpyAsync(dst->data, src->data, ng_tensor_bytes(dst),
                                          cudaMemcpyDeviceToDevice, stream()));
        return;
    }
    switch (src->dtype) {
        case NG_F32:
            cast_from<NG_F32>(dst, src);
            break;
        case NG_F64:
            cast_from<NG_F64>(dst, src);
            break;
        case NG_F16:
            cast_from<NG_F16>(dst, src);
            break;
        case NG_BF16:
            cast_from<NG_BF16>(dst, src);
            break;
        case NG_I32:
            cast_from<NG_I32>(dst, src);
            break;
        case NG_U8:
            cast_from<NG_U8>(dst, src);
            break;
        default:
            bad_dtype("ng_cast", src);
    }
}

template <int DT, int ADD>
__global__ void binary_kernel(const typename elem<DT>::S *a, const typename elem<DT>::S *b,
                              typename elem<DT>::S *c, int64_t n) {
    typedef elem<DT> E;
    GRID_STRIDE(i, n) {
        typename E::C x = E::ld(a[i]), y = E::ld(b[i]);
        c[i] = E::st(ADD ? add_rn(x, y) : mul_rn(x, y));
    }
}

template <int DT>
struct binary_run {
    static void run(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c) {
        typedef typename elem<DT>::S S;
        int64_t n = c->numel;
        unsigned blocks = ng_cuda_blocks(n, NG_THREADS);
        if (op == NG_BIN_ADD)
            binary_kernel<DT, 1><<<blocks, NG_THREADS, 0, stream()>>>(
                (const S *)a->data, (const S *)b->data, (S *)c->data, n);
        else
            binary_kernel<DT, 0><<<blocks, NG_THREADS, 0, stream()>>>(
                (const S *)a->data, (const S *)b->data, (S *)c->data, n);
        NG_CUDA_CHECK_LAUNCH();
    }
};

extern "C" void ng_cuda_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b,
                               ng_tensor *c) {
    float_dispatch<binary_run>("ng_add/ng_mul", c, op, a, b, c);
}

template <int DT>
__global__ void add_diagonal_kernel(typename elem<DT>::S *A, typename elem<DT>::C v, int64_t b,
                                    int64_t n) {
    typedef elem<DT> E;
    GRID_STRIDE(t, b * n) {
        int64_t p = t / n, i = t % n, j = p * n * n + i * n + i;
        A[j] = E::st(add_rn(E::ld(A[j]), v));
    }
}

template <int DT>
struct add_diagonal_run {
    static void run(ng_tensor *A, double value) {
        typedef elem<DT> E;
        int64_t n = A->shape[A->ndim - 1], b = A->ndim == 3 ? A->shape[0] : 1;
        add_diagonal_kernel<DT><<<ng_cuda_blocks(b * n, NG_THREADS), NG_THREADS, 0, stream()>>>(
            (typename E::S *)A->data, (typename E::C)value, b, n);
        NG_CUDA_CHECK_LAUNCH();
    }
};

extern "C" void ng_cuda_add_diagonal(ng_tensor *A, double value) {
    float_dispatch<add_diagonal_run>("ng_add_diagonal", A, A, value);
}

/* ---- Reductions: per-block partials in double, then one block combines them --------------- */

/* maxabs keeps a NaN once seen; all_finite is computed as "maxabs is finite". */
template <int OP>
static __device__ __forceinline__ double red_map(double v) {
    return OP == NG_RED_SUM ? v : OP == NG_RED_SUMSQ ? v * v : fabs(v);
}

template <int OP>
static __device__ __forceinline__ double red_combine(double a, double b) {
    if (OP == NG_RED_SUM || OP == NG_RED_SUMSQ) return a + b;
    if (a != a) return a;
    if (b != b) return b;
    return a > b ? a : b;
}

/* Tree reduction of one value per thread; the result is in sh[0] on return. */
template <int OP>
static __device__ void block_reduce(double *sh, double acc) {
    sh[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s)
            sh[threadIdx.x] = red_combine<OP>(sh[threadIdx.x], sh[threadIdx.x + s]);
        __syncthreads();
    }
}

template <int DT, int OP>
__global__ void reduce_partial_kernel(const typename elem<DT>::S *x, int64_t n, double *partial) {
    __shared__ double sh[NG_THREADS];
    double acc = 0.0;
    GRID_STRIDE(i, n) {
        acc = red_combine<OP>(acc, red_map<OP>((double)elem<DT>::ld(x[i])));
    }
    block_reduce<OP>(sh, acc);
    if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

template <int OP>
__global__ void reduce_final_kernel(const double *partial, int nb, double *out) {
    __shared__ double sh[NG_THREADS];
    double acc = 0.0;
    for (int i = threadIdx.x; i < nb; i += blockDim.x) acc = red_combine<OP>(acc, partial[i]);
    block_reduce<OP>(sh, acc);
    if (threadIdx.x == 0) *out = sh[0];
}

template <int DT>
struct reduce_run {
    template <int OP>
    static void launch(const ng_tensor *x, double *ws, unsigned nb, cudaStream_t s) {
        reduce_partial_kernel<DT, OP>
            <<<nb, NG_THREADS, 0, s>>>((const typename elem<DT>::S *)x->data, x->numel, ws);
        NG_CUDA_CHECK_LAUNCH();
        reduce_final_kernel<OP><<<1, NG_THREADS, 0, s>>>(ws, (int)nb, ws + nb);
        NG_CUDA_CHECK_LAUNCH();
    }
    static void run(ng_reduce_op op, const ng_tensor *x, double *result) {
        /* the sizes the memory plan counts (core/ops.h) */
        unsigned nb = (unsigned)ng_reduce_cuda_blocks(x->numel);
        double *ws = (double *)ng_cuda_workspace(ng_reduce_cuda_workspace(x->numel));
        cudaStream_t s = stream();
        if (op == NG_RED_SUM)
            launch<NG_RED_SUM>(x, ws, nb, s);
        else if (op == NG_RED_SUMSQ)
            launch<NG_RED_SUMSQ>(x, ws, nb, s);
        else
            launch<NG_RED_MAXABS>(x, ws, nb, s);
        NG_CUDA_CHECK(cudaMemcpyAsync(result, ws + nb, sizeof(double), cudaMemcpyDeviceToHost, s));
        NG_CUDA_CHECK(cudaStreamSynchronize(s)); /* the host reads result next */
    }
};

extern "C" double ng_cuda_reduce(ng_reduce_op op, const ng_tensor *x) {
    double r = 0.0;
    float_dispatch<reduce_run>("reduction", x, op, x, &r);
    if (op == NG_RED_ALL_FINITE) return isfinite(r) ? 1.0 : 0.0;
    return r;
}
