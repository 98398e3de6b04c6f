/* CUDA twin of batch norm, and the per-channel sums it shares with the conv bias gradient and
 * global average pooling. Sums are accumulated in double in two deterministic stages (partial
 * sums per block of a channel, then one ordered pass over the partials), so a 512^3 volume
 * spreads over the whole GPU and the result does not depend on thread timing. */
#include "core/cuda_context.h"
#include "nn/activation_kernels.h"
#include "nn/conv_kernels.h"

#define THREADS 256

/* The sum over the block, valid in thread 0; blockDim.x is a multiple of 32. */
__device__ double block_sum(double v, double *shared) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < (unsigned)warps ? shared[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    __syncthreads(); /* shared is reused by the next call */
    return v;
}

/* Block b handles chunk b % chunks of row r = b / chunks: elements e in [chunk per, ...) of the
 * flattened (a, s) range, element (a, r, s) at (a R + r) S + s. */
template <typename T, int MODE>
__global__ void sums_kernel(const T *__restrict__ x, const T *__restrict__ dy, int64_t A, int64_t R,
                            int64_t S, int64_t chunks, int64_t per,
                            const double *__restrict__ center, double *__restrict__ partial) {
    __shared__ double shared[32];
    int64_t r = blockIdx.x / chunks, ch = blockIdx.x % chunks;
    int64_t end = (ch + 1) * per < A * S ? (ch + 1) * per : A * S;
    double k = 0, s0 = 0, s1 = 0;
    if (MODE == NG_SUMS_SHIFTED) k = (double)ng_ld(x, r * S);
    if (MODE == NG_SUMS_GRAD) k = center[r];
    int64_t e = ch * per + threadIdx.x;
    if (e < end) {
        int64_t a = e / S, s = e - a * S;
        for (; e < end; e += blockDim.x) {
            int64_t i = (a * R + r) * S + s;
            double v = (double)ng_ld(x, i);
            if (MODE == NG_SUMS_PLAIN) {
                s0 += v;
            } else if (MODE == NG_SUMS_SHIFTED) {
                v -= k;
                s0 += v;
                s1 += v * v;
            } else {
                double g = (double)ng_ld(dy, i);
                s0 += g;
                s1 += g * (v - k);
            }
            s += blockDim.x;
            if (s >= S) a += s / S, s %= S;
        }
    }
    s0 = block_sum(s0, shared);
    s1 = block_sum(s1, shared);
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = s0;
        partial[2 * blockIdx.x + 1] = s1;
    }
}

__global__ void sums_combine(const double *__restrict__ partial, int64_t R, int64_t chunks,
                             double *__restrict__ out) {
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= R) return;
    double s0 = 0, s1 = 0;
    for (int64_t c = 0; c < chunks; c++) {
        s0 += partial[2 * (r * chunks + c)];
        s1 += partial[2 * (r * chunks + c) + 1];
    }
    out[2 * r] = s0;
    out[2 * r + 1] = s1;
}

static cudaStream_t stream() {
    return ng_cuda_ctx()->stream;
}

template <typename T>
static void sums_launch(int mode, const ng_tensor *x, const ng_tensor *dy, int64_t A, int64_t R,
                        int64_t S, const double *center, double *out) {
    int64_t total = A * S;
    int64_t chunks = ng_channel_sums_chunks(A, R, S); /* the sizes the memory plan counts */
    int64_t per = (total + chunks - 1) / chunks;
    NG_CHECK(R * chunks <= INT32_MAX, "channel sums: %lld rows are too many for one grid",
             (long long)R);
    double *partial = (double *)ng_cuda_workspace(ng_channel_sums_workspace(A, R, S));
    const T *xp = (const T *)x->data, *dp = dy ? (const T *)dy->data : NULL;
    unsigned blocks = (unsigned)(R * chunks);
    switch (mode) {
        case NG_SUMS_PLAIN:
            sums_kernel<T, NG_SUMS_PLAIN>
                <<<blocks, THREADS, 0, stream()>>>(xp, dp, A, R, S, chunks, per, center, partial);
            break;
        case NG_SUMS_SHIFTED:
            sums_kernel<T, NG_SUMS_SHIFTED>
                <<<blocks, THREADS, 0, stream()>>>(xp, dp, A, R, S, chunks, per, center, partial);
            break;
        default:
            sums_kernel<T, NG_SUMS_GRAD>
                <<<blocks, THREADS, 0, stream()>>>(xp, dp, A, R, S, chunks, per, center, partial);
            break;
    }
    NG_CUDA_CHECK_LAUNCH();
    sums_combine<<<ng_cuda_blocks(R, THREADS), THREADS, 0, stream()>>>(partial, R, chunks, out);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_channel_sums_cuda(int mode, const ng_tensor *x, const ng_tensor *dy, int64_t A,
                                     int64_t R, int64_t S, const double *center, double *out) {
    if (R <= 0) return;
    NG_CHECK(A * S > 0, "channel sums: no elements per row");
    switch (x->dtype) {
        case NG_F32:
            sums_launch<float>(mode, x, dy, A, R, S, center, out);
            break;
        case NG_F64:
            sums_launch<double>(mode, x, dy, A, R, S, center, out);
            break;
        case NG_F16:
            sums_launch<ng_half16>(mode, x, dy, A, R, S, center, out);
            break;
        case NG_BF16:
            sums_launch<ng_bhalf16>(mode, x, dy, A, R, S, center, out);
            break;
        default:
            ng_fail("channel sums: CUDA twin takes a floating type, not %s",
                    ng_dtype_name(x->dtype));
    }
}

/* ---- batch norm ---------------------------------------------------------------------------- */

/* Activations are T; gamma, beta, running statistics and their gradients are P (T itself, or f32
 * for f16/bf16 activations under mixed precision). */

/* Per channel: the statistics to normalise with (batch or running), and the running update. */
template <typename T, typename P>
__global__ void bn_stats(const T *__restrict__ x, const double *__restrict__ sums, int64_t C,
                         int64_t S, double M, int training, int update, double momentum, double eps,
                         P *__restrict__ rm, P *__restrict__ rv, double *__restrict__ mean,
                         double *__restrict__ invstd) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double mu, is;
    if (training) {
        double m1 = sums[2 * c] / M, var = sums[2 * c + 1] / M - m1 * m1;
        if (var < 0) var = 0;
        mu = (double)ng_ld(x, c * S) + m1; /* the shift: element (0, c, 0) */
        is = 1.0 / sqrt(var + eps);
        if (update) {
            rm[c] = (P)((1 - momentum) * (double)rm[c] + momentum * mu);
            rv[c] = (P)((1 - momentum) * (double)rv[c] + momentum * var * M / (M - 1));
        }
    } else {
        mu = (double)rm[c];
        is = 1.0 / sqrt((double)rv[c] + eps);
    }
    mean[c] = mu;
    invstd[c] = is;
}

/* The normalised value, with each operation rounded as the CPU twin rounds it (nvcc would
 * otherwise fuse the product and the sum): the twins agree bit for bit, and the fused ReLU's
 * backward recomputes exactly what the forward stored. */
static __device__ __forceinline__ double bn_value(double x, double mu, double scale, double shift) {
    return __dadd_rn(__dmul_rn(x - mu, scale), shift);
}

template <typename T, typename P>
__global__ void bn_apply(const T *x, const P *__restrict__ gamma, const P *__restrict__ beta,
                         const double *__restrict__ mean, const double *__restrict__ invstd,
                         int64_t C, int64_t S, int64_t n, T *y) { /* y may be x */
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = (i / S) % C;
        double scale = invstd[c] * (double)gamma[c];
        ng_st_d(y, i, bn_value((double)ng_ld(x, i), mean[c], scale, (double)beta[c]));
    }
}

/* g = dy x (stored output > 0), ReLU's backward with the output recomputed and rounded to T as
 * bn_apply stores it; g may be dy. */
template <typename T, typename P>
__global__ void bn_relu_grad(const T *__restrict__ x, const T *dy, const P *__restrict__ gamma,
                             const P *__restrict__ beta, const double *__restrict__ mean,
                             const double *__restrict__ invstd, int64_t C, int64_t S, int64_t n,
                             T *g) {
    typedef typename ng_acc<T>::type A;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = (i / S) % C;
        double scale = invstd[c] * (double)gamma[c];
        T stored[1];
        ng_st_d(stored, 0, bn_value((double)ng_ld(x, i), mean[c], scale, (double)beta[c]));
        ng_st(g, i, ng_ld(dy, i) * (ng_ld(stored, 0) > A(0) ? A(1) : A(0)));
    }
}

/* Parameter gradients, and in place of the sums the two coefficients of the input gradient:
 * mean(dy) and mean(dy xhat) over the channel (0 in eval mode, where the statistics are
 * constants). */
template <typename P>
__global__ void bn_grad_stats(double *__restrict__ sums, const double *__restrict__ invstd,
                              int64_t C, double M, int training, P *__restrict__ dgamma,
                              P *__restrict__ dbeta) {
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double s0 = sums[2 * c], s1 = sums[2 * c + 1], is = invstd[c];
    dgamma[c] = (P)((double)dgamma[c] + s1 * is);
    dbeta[c] = (P)((double)dbeta[c] + s0);
    sums[2 * c] = training ? s0 / M : 0.0;
    sums[2 * c + 1] = training ? s1 * is / M : 0.0;
}

/* dx may be dy: each element is read before it is written, by the same thread. */
template <typename T, typename P>
__global__ void bn_dx(const T *__restrict__ x, const T *dy, const P *__restrict__ gamma,
                      const double *__restrict__ mean, const double *__restrict__ invstd,
                      const double *__restrict__ coef, int64_t C, int64_t S, int64_t n, T *dx) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = (i / S) % C;
        double is = invstd[c], xhat = ((double)ng_ld(x, i) - mean[c]) * is;
        ng_st_d(dx, i,
                (double)gamma[c] * is *
                    ((double)ng_ld(dy, i) - coef[2 * c] - xhat * coef[2 * c + 1]));
    }
}

template <typename T, typename P>
static void bn_forward_t(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                         ng_tensor *rm, ng_tensor *rv, ng_tensor *mean, ng_tensor *invstd,
                         ng_tensor *sums, ng_tensor *y, int64_t A, int64_t C, int64_t S,
                         int training, int update, double momentum, double eps) {
    if (training)
        ng_channel_sums_cuda(NG_SUMS_SHIFTED, x, NULL, A, C, S, NULL, (double *)sums->data);
    bn_stats<T, P><<<ng_cuda_blocks(C, THREADS), THREADS, 0, stream()>>>(
        (const T *)x->data, (const double *)sums->data, C, S, (double)(A * S), training, update,
        momentum, eps, (P *)rm->data, (P *)rv->data, (double *)mean->data, (double *)invstd->data);
    NG_CUDA_CHECK_LAUNCH();
    if (!y) return;
    int64_t n = A * C * S;
    bn_apply<T, P><<<ng_cuda_blocks(n, THREADS), THREADS, 0, stream()>>>(
        (const T *)x->data, (const P *)gamma->data, (const P *)beta->data,
        (const double *)mean->data, (const double *)invstd->data, C, S, n, (T *)y->data);
    NG_CUDA_CHECK_LAUNCH();
}

template <typename T, typename P>
static void bn_backward_t(const ng_tensor *x, const ng_tensor *dy, const ng_tensor *gamma,
                          const ng_tensor *mean, const ng_tensor *invstd, ng_tensor *sums,
                          ng_tensor *dgamma, ng_tensor *dbeta, ng_tensor *dx, int64_t A, int64_t C,
                          int64_t S, int training) {
    double *s = (double *)sums->data;
    ng_channel_sums_cuda(NG_SUMS_GRAD, x, dy, A, C, S, (const double *)mean->data, s);
    bn_grad_stats<P><<<ng_cuda_blocks(C, THREADS), THREADS, 0, stream()>>>(
        s, (const double *)invstd->data, C, (double)(A * S), training, (P *)dgamma->data,
        (P *)dbeta->data);
    NG_CUDA_CHECK_LAUNCH();
    if (!dx) return;
    int64_t n = A * C * S;
    bn_dx<T, P><<<ng_cuda_blocks(n, THREADS), THREADS, 0, stream()>>>(
        (const T *)x->data, (const T *)dy->data, (const P *)gamma->data, (const double *)mean->data,
        (const double *)invstd->data, s, C, S, n, (T *)dx->data);
    NG_CUDA_CHECK_LAUNCH();
}

/* Runs CALL(T, P) for x's dtype: T the activations' type, P the parameters' (f32 under mixed
 * precision). */
#define BN_TYPES(dtype, CALL)                                                                      \
    do {                                                                                           \
        switch (dtype) {                                                                           \
            case NG_F32:                                                                           \
                CALL(float, float);                                                                \
                break;                                                                             \
            case NG_F64:                                                                           \
                CALL(double, double);                                                              \
                break;                                                                             \
            case NG_F16:                                                                           \
                CALL(ng_half16, float);                                                            \
                break;                                                                             \
            case NG_BF16:                                                                          \
                CALL(ng_bhalf16, float);                                                           \
                break;                                                                             \
            default:                                                                               \
                ng_fail("batchnorm: CUDA twin takes a floating type, not %s",                      \
                        ng_dtype_name(dtype));                                                     \
        }                                                                                          \
    } while (0)

extern "C" void ng_bn_cuda_forward(const ng_tensor *x, const ng_tensor *gamma,
                                   const ng_tensor *beta, ng_tensor *rm, ng_tensor *rv,
                                   ng_tensor *mean, ng_tensor *invstd, ng_tensor *sums,
                                   ng_tensor *y, int64_t A, int64_t C, int64_t S, int training,
                                   int update, double momentum, double eps) {
#define BN_FWD(T, P)                                                                               \
    bn_forward_t<T, P>(x, gamma, beta, rm, rv, mean, invstd, sums, y, A, C, S, training, update,   \
                       momentum, eps)
    BN_TYPES(x->dtype, BN_FWD);
#undef BN_FWD
}

extern "C" void ng_bn_cuda_backward(const ng_tensor *x, const ng_tensor *dy, const ng_tensor *gamma,
                                    const ng_tensor *mean, const ng_tensor *invstd, ng_tensor *sums,
                                    ng_tensor *dgamma, ng_tensor *dbeta, ng_tensor *dx, int64_t A,
                                    int64_t C, int64_t S, int training) {
#define BN_BWD(T, P)                                                                               \
    bn_backward_t<T, P>(x, dy, gamma, mean, invstd, sums, dgamma, dbeta, dx, A, C, S, training)
    BN_TYPES(x->dtype, BN_BWD);
#undef BN_BWD
}

template <typename T, typename P>
static void bn_relu_grad_t(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                           const ng_tensor *mean, const ng_tensor *invstd, const ng_tensor *dy,
                           ng_tensor *g, int64_t A, int64_t C, int64_t S) {
    int64_t n = A * C * S;
    bn_relu_grad<T, P><<<ng_cuda_blocks(n, THREADS), THREADS, 0, stream()>>>(
        (const T *)x->data, (const T *)dy->data, (const P *)gamma->data, (const P *)beta->data,
        (const double *)mean->data, (const double *)invstd->data, C, S, n, (T *)g->data);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_bn_cuda_relu_grad(const ng_tensor *x, const ng_tensor *gamma,
                                     const ng_tensor *beta, const ng_tensor *mean,
                                     const ng_tensor *invstd, const ng_tensor *dy, ng_tensor *g,
                                     int64_t A, int64_t C, int64_t S) {
#define BN_RELU(T, P) bn_relu_grad_t<T, P>(x, gamma, beta, mean, invstd, dy, g, A, C, S)
    BN_TYPES(x->dtype, BN_RELU);
#undef BN_RELU
}
