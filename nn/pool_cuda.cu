/* CUDA twins of the pooling layers. Backward is a gather (one thread per input element over the
 * windows that contain it, in increasing output order): deterministic, no atomics, and the same
 * additions in the same order as the CPU scatter. */
#include "core/cuda_context.h"
#include "nn/activation_kernels.h"
#include "nn/conv_kernels.h"

#define THREADS 256

/* v rounded to the storage type T and widened back: what storing and reloading gives. */
template <typename T>
__device__ __forceinline__ double round_to(double v) {
    T t[1];
    ng_st_d(t, 0, v);
    return (double)ng_ld(t, 0);
}

/* One thread per output element. Max: the first maximum in window order, a NaN wins; padded
 * positions are skipped. Avg: padded positions count as 0 and the divisor is prod(k). */
template <typename T>
__global__ void pool_fwd_kernel(const T *__restrict__ x, ng_win3 w, int64_t planes, int max,
                                T *__restrict__ y, int32_t *__restrict__ argmax) {
    int64_t in = w.in[0] * w.in[1] * w.in[2], out = w.out[0] * w.out[1] * w.out[2];
    double kk = (double)(w.k[0] * w.k[1] * w.k[2]);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < planes * out;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t pl = i / out, o = i - pl * out;
        int64_t ow = o % w.out[2], t = o / w.out[2], oh = t % w.out[1], od = t / w.out[1];
        const T *xs = x + pl * in;
        double best = 0, sum = 0;
        int64_t arg = -1;
        for (int64_t kd = 0; kd < w.k[0]; kd++) {
            int64_t id = od * w.s[0] - w.p[0] + kd;
            if (id < 0 || id >= w.in[0]) continue;
            for (int64_t kh = 0; kh < w.k[1]; kh++) {
                int64_t ih = oh * w.s[1] - w.p[1] + kh;
                if (ih < 0 || ih >= w.in[1]) continue;
                for (int64_t kw = 0; kw < w.k[2]; kw++) {
                    int64_t iw = ow * w.s[2] - w.p[2] + kw;
                    if (iw < 0 || iw >= w.in[2]) continue;
                    int64_t j = (id * w.in[1] + ih) * w.in[2] + iw;
                    double v = (double)ng_ld(xs, j);
                    if (arg < 0 || v > best || isnan(v)) best = v, arg = j;
                    sum += v;
                }
            }
        }
        ng_st_d(y, i, max ? best : sum / kk);
        if (max) argmax[i] = (int32_t)arg;
    }
}

/* The outputs o whose window [o s - p, o s - p + k) holds input position i, clipped to
 * [0, out): first and last (last < first when none). */
__device__ inline void windows_of(int64_t i, int64_t k, int64_t s, int64_t p, int64_t out,
                                  int64_t *first, int64_t *last) {
    int64_t num = i + p - k + 1;
    *first = num <= 0 ? 0 : (num + s - 1) / s;
    int64_t l = (i + p) / s;
    *last = l < out - 1 ? l : out - 1;
}

template <typename T>
__global__ void pool_bwd_kernel(const T *__restrict__ dy, const int32_t *__restrict__ argmax,
                                ng_win3 w, int64_t planes, int max, T *__restrict__ dx) {
    int64_t in = w.in[0] * w.in[1] * w.in[2], out = w.out[0] * w.out[1] * w.out[2];
    double kk = (double)(w.k[0] * w.k[1] * w.k[2]);
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < planes * in;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t pl = i / in, q = i - pl * in;
        int64_t iw = q % w.in[2], t = q / w.in[2], ih = t % w.in[1], id = t / w.in[1];
        int64_t d0, d1, h0, h1, w0, w1;
        windows_of(id, w.k[0], w.s[0], w.p[0], w.out[0], &d0, &d1);
        windows_of(ih, w.k[1], w.s[1], w.p[1], w.out[1], &h0, &h1);
        windows_of(iw, w.k[2], w.s[2], w.p[2], w.out[2], &w0, &w1);
        const T *g = dy + pl * out;
        const int32_t *am = max ? argmax + pl * out : NULL;
        double acc = 0; /* always a value of T: every addition is rounded to T */
        for (int64_t od = d0; od <= d1; od++)
            for (int64_t oh = h0; oh <= h1; oh++)
                for (int64_t ow = w0; ow <= w1; ow++) {
                    int64_t o = (od * w.out[1] + oh) * w.out[2] + ow;
                    if (max) {
                        if (am[o] == q) acc = round_to<T>(acc + (double)ng_ld(g, o));
                    } else {
                        /* dy / prod(k) rounded to T once, then added: as the CPU twin does. */
                        double v = round_to<T>((double)ng_ld(g, o) / kk);
                        acc = round_to<T>(acc + v);
                    }
                }
        ng_st_d(dx, i, acc); /* exact: acc is a value of T */
    }
}

template <typename T>
__global__ void global_fwd_finish(const double *__restrict__ sums, int64_t R, double S,
                                  T *__restrict__ y) {
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r < R) ng_st_d(y, r, sums[2 * r] / S);
}

template <typename T>
__global__ void global_bwd_kernel(const T *__restrict__ dy, int64_t R, int64_t S,
                                  T *__restrict__ dx) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < R * S;
         i += (int64_t)gridDim.x * blockDim.x)
        ng_st_d(dx, i, (double)ng_ld(dy, i / S) / (double)S);
}

static cudaStream_t stream() {
    return ng_cuda_ctx()->stream;
}

extern "C" void ng_pool_cuda_forward(int max, const ng_win3 *w, int64_t planes, const ng_tensor *x,
                                     ng_tensor *y, ng_tensor *argmax) {
    int64_t total = planes * ng_win3_out_size(w);
    if (!total) return;
    unsigned g = ng_cuda_blocks(total, THREADS);
    int32_t *am = max ? (int32_t *)argmax->data : NULL;
    NG_ACT_FLOAT_SWITCH(x->dtype, "pool",
                        pool_fwd_kernel<T><<<g, THREADS, 0, stream()>>>(
                            (const T *)x->data, *w, planes, max, (T *)y->data, am));
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_pool_cuda_backward(int max, const ng_win3 *w, int64_t planes,
                                      const ng_tensor *dy, const ng_tensor *argmax, ng_tensor *dx) {
    int64_t total = planes * ng_win3_in_size(w);
    if (!total) return;
    unsigned g = ng_cuda_blocks(total, THREADS);
    const int32_t *am = max ? (const int32_t *)argmax->data : NULL;
    NG_ACT_FLOAT_SWITCH(dx->dtype, "pool",
                        pool_bwd_kernel<T><<<g, THREADS, 0, stream()>>>(
                            (const T *)dy->data, am, *w, planes, max, (T *)dx->data));
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_global_avgpool_cuda_forward(const ng_tensor *x, int64_t R, int64_t S,
                                               ng_tensor *y, ng_tensor *sums) {
    ng_channel_sums_cuda(NG_SUMS_PLAIN, x, NULL, 1, R, S, NULL, (double *)sums->data);
    unsigned g = ng_cuda_blocks(R, THREADS);
    NG_ACT_FLOAT_SWITCH(y->dtype, "global_avgpool",
                        global_fwd_finish<T><<<g, THREADS, 0, stream()>>>(
                            (const double *)sums->data, R, (double)S, (T *)y->data));
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_global_avgpool_cuda_backward(const ng_tensor *dy, int64_t R, int64_t S,
                                                ng_tensor *dx) {
    unsigned g = ng_cuda_blocks(R * S, THREADS);
    NG_ACT_FLOAT_SWITCH(dx->dtype, "global_avgpool",
                        global_bwd_kernel<T>
                        <<<g, THREADS, 0, stream()>>>((const T *)dy->data, R, S, (T *)dx->data));
    NG_CUDA_CHECK_LAUNCH();
}
