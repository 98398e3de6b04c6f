/* CUDA twins of the conv layer: the patch kernels of the im2col path, the bias kernels, and the
 * one kernel the cuDNN binding (nn/conv_cudnn.c, host code only) launches. */
#include "core/cuda_context.h"
#include "nn/activation_kernels.h"
#include "nn/conv_kernels.h"

#define THREADS 256

/* ---- patch kernels ------------------------------------------------------------------------- */

/* One thread per element of cols [np, K]; xs is sample n of x. Consecutive threads take
 * consecutive columns, so writes coalesce and reads walk along kw. */
template <typename T>
__global__ void im2col_kernel(const T *__restrict__ xs, ng_win3 w, int64_t p0, int64_t np,
                              int64_t K, T *__restrict__ cols) {
    int64_t kk = w.k[0] * w.k[1] * w.k[2], total = np * K;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / K, j = i - r * K, p = p0 + r;
        int64_t ow = p % w.out[2], t = p / w.out[2], oh = t % w.out[1], od = t / w.out[1];
        int64_t c = j / kk, q = j - c * kk;
        int64_t kw = q % w.k[2], t2 = q / w.k[2], kh = t2 % w.k[1], kd = t2 / w.k[1];
        int64_t id = od * w.s[0] - w.p[0] + kd * w.d[0];
        int64_t ih = oh * w.s[1] - w.p[1] + kh * w.d[1];
        int64_t iw = ow * w.s[2] - w.p[2] + kw * w.d[2];
        T v = T(0);
        if (id >= 0 && id < w.in[0] && ih >= 0 && ih < w.in[1] && iw >= 0 && iw < w.in[2])
            v = xs[((c * w.in[0] + id) * w.in[1] + ih) * w.in[2] + iw];
        cols[i] = v;
    }
}

/* The input box [lo, lo + n) per dim that output positions [p0, p0 + np) read. */
struct box3 {
    int64_t lo[3], n[3];
};

/* col2im as a gather, one thread per input element of the box: it sums the column entries that
 * came from it, in kernel order, so the result does not depend on thread timing (no atomics). */
template <typename T>
__global__ void col2im_kernel(const T *__restrict__ dcols, ng_win3 w, int64_t p0, int64_t np,
                              int64_t K, box3 b, T *__restrict__ dxs) {
    int64_t total = w.C * b.n[0] * b.n[1] * b.n[2];
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t iw = b.lo[2] + i % b.n[2], t = i / b.n[2];
        int64_t ih = b.lo[1] + t % b.n[1];
        t /= b.n[1];
        int64_t id = b.lo[0] + t % b.n[0], c = t / b.n[0];
        double acc = 0;
        for (int64_t kd = 0; kd < w.k[0]; kd++) {
            int64_t nd_ = id + w.p[0] - kd * w.d[0];
            if (nd_ < 0 || nd_ % w.s[0]) continue;
            int64_t od = nd_ / w.s[0];
            if (od >= w.out[0]) continue;
            for (int64_t kh = 0; kh < w.k[1]; kh++) {
                int64_t nh = ih + w.p[1] - kh * w.d[1];
                if (nh < 0 || nh % w.s[1]) continue;
                int64_t oh = nh / w.s[1];
                if (oh >= w.out[1]) continue;
                for (int64_t kw = 0; kw < w.k[2]; kw++) {
                    int64_t nw = iw + w.p[2] - kw * w.d[2];
                    if (nw < 0 || nw % w.s[2]) continue;
                    int64_t ow = nw / w.s[2];
                    if (ow >= w.out[2]) continue;
                    int64_t p = (od * w.out[1] + oh) * w.out[2] + ow;
                    if (p < p0 || p >= p0 + np) continue;
                    acc += (double)ng_ld(
                        dcols, (p - p0) * K + ((c * w.k[0] + kd) * w.k[1] + kh) * w.k[2] + kw);
                }
            }
        }
        int64_t xi = ((c * w.in[0] + id) * w.in[1] + ih) * w.in[2] + iw;
        ng_st_d(dxs, xi, (double)ng_ld(dxs, xi) + acc); /* one rounding, halves too */
    }
}

template <typename T>
__global__ void bias_add_kernel(T *__restrict__ y, const T *__restrict__ b, int64_t O, int64_t P,
                                int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x)
        ng_st(y, i, ng_ld(y, i) + ng_ld(b, (i / P) % O));
}

template <typename T>
__global__ void bias_grad_finish(const double *__restrict__ sums, T *__restrict__ db, int64_t O) {
    int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (o < O) db[o] = (T)((double)db[o] + sums[2 * o]);
}

static cudaStream_t stream() {
    return ng_cuda_ctx()->stream;
}

template <typename T>
static void im2col_launch(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                          ng_tensor *cols) {
    int64_t K = w->C * ng_win3_k_size(w), total = np * K;
    const T *xs = (const T *)x->data + n * w->C * ng_win3_in_size(w);
    im2col_kernel<T><<<ng_cuda_blocks(total, THREADS), THREADS, 0, stream()>>>(xs, *w, p0, np, K,
                                                                               (T *)cols->data);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_im2col_cuda(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0,
                               int64_t np, ng_tensor *cols) {
    if (np <= 0) return;
    switch (x->dtype) {
        case NG_F32:
            im2col_launch<float>(x, n, w, p0, np, cols);
            break;
        case NG_F64:
            im2col_launch<double>(x, n, w, p0, np, cols);
            break;
        case NG_F16:
        case NG_BF16: /* a copy of the bits: 16-bit words will do */
            im2col_launch<unsigned short>(x, n, w, p0, np, cols);
            break;
        default:
            ng_fail("ng_im2col: CUDA twin takes a floating type, not %s", ng_dtype_name(x->dtype));
    }
}

/* The input box read by output positions [p0, p0 + np); 0 when it is empty. */
static int input_box(const ng_win3 *w, int64_t p0, int64_t np, box3 *b) {
    int64_t a = p0, z = p0 + np - 1, lo[3], hi[3];
    int64_t ao[3] = {a / (w->out[1] * w->out[2]), a / w->out[2] % w->out[1], a % w->out[2]};
    int64_t zo[3] = {z / (w->out[1] * w->out[2]), z / w->out[2] % w->out[1], z % w->out[2]};
    /* Whole rows (or planes) below the first dim in which the two ends differ. */
    int split = ao[0] != zo[0] ? 0 : ao[1] != zo[1] ? 1 : 2;
    for (int i = 0; i < 3; i++) {
        lo[i] = i <= split ? ao[i] : 0;
        hi[i] = i <= split ? zo[i] : w->out[i] - 1;
    }
    for (int i = 0; i < 3; i++) {
        int64_t l = lo[i] * w->s[i] - w->p[i],
                h = hi[i] * w->s[i] - w->p[i] + w->d[i] * (w->k[i] - 1);
        if (l < 0) l = 0;
        if (h > w->in[i] - 1) h = w->in[i] - 1;
        if (l > h) return 0;
        b->lo[i] = l;
        b->n[i] = h - l + 1;
    }
    return 1;
}

template <typename T>
static void col2im_launch(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                          int64_t np, ng_tensor *dx) {
    box3 b;
    if (!input_box(w, p0, np, &b)) return;
    int64_t K = w->C * ng_win3_k_size(w), total = w->C * b.n[0] * b.n[1] * b.n[2];
    T *dxs = (T *)dx->data + n * w->C * ng_win3_in_size(w);
    col2im_kernel<T><<<ng_cuda_blocks(total, THREADS), THREADS, 0, stream()>>>(
        (const T *)dcols->data, *w, p0, np, K, b, dxs);
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_col2im_add_cuda(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0,
                                   int64_t np, ng_tensor *dx) {
    if (np <= 0) return;
    NG_ACT_FLOAT_SWITCH(dx->dtype, "conv col2im", col2im_launch<T>(dcols, n, w, p0, np, dx));
}

extern "C" void ng_conv_bias_add_cuda(ng_tensor *y, const ng_tensor *b, int64_t N, int64_t O,
                                      int64_t P) {
    int64_t total = N * O * P;
    if (!total) return;
    unsigned g = ng_cuda_blocks(total, THREADS);
    NG_ACT_FLOAT_SWITCH(y->dtype, "conv bias",
                        bias_add_kernel<T><<<g, THREADS, 0, stream()>>>(
                            (T *)y->data, (const T *)b->data, O, P, total));
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_conv_bias_grad_cuda(const ng_tensor *dy, ng_tensor *db, int64_t N, int64_t O,
                                       int64_t P, ng_tensor *sums) {
    ng_channel_sums_cuda(NG_SUMS_PLAIN, dy, NULL, N, O, P, NULL, (double *)sums->data);
    unsigned g = ng_cuda_blocks(O, THREADS);
    switch (db->dtype) {
        case NG_F32:
            bias_grad_finish<float>
                <<<g, THREADS, 0, stream()>>>((const double *)sums->data, (float *)db->data, O);
            break;
        case NG_F64:
            bias_grad_finish<double>
                <<<g, THREADS, 0, stream()>>>((const double *)sums->data, (double *)db->data, O);
            break;
        default:
            ng_fail("conv: bias CUDA twin takes f32 or f64, not %s", ng_dtype_name(db->dtype));
    }
    NG_CUDA_CHECK_LAUNCH();
}

extern "C" void ng_copy_rows_cuda(void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                                  int64_t rows, int64_t cols, size_t es) {
    if (!rows || !cols) return;
    NG_CUDA_CHECK(cudaMemcpy2DAsync(dst, (size_t)dst_ld * es, src, (size_t)src_ld * es,
                                    (size_t)cols * es, (size_t)rows, cudaMemcpyDeviceToDevice,
                                    stream()));
}

/* dw (f32) += the half weight gradient cuDNN wrote (nn/conv_cudnn.c's half backward). */
template <typename T>
__global__ void add_widened_kernel(float *__restrict__ dw, const T *__restrict__ h, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dw[i] += ng_ld(h, i);
}

extern "C" void ng_conv_add_widened_cuda(ng_tensor *dw, const void *h, ng_dtype dt) {
    int64_t n = dw->numel;
    if (!n) return;
    unsigned blocks = ng_cuda_blocks(n, THREADS);
    if (dt == NG_F16)
        add_widened_kernel<<<blocks, THREADS, 0, stream()>>>((float *)dw->data,
                                                             (const ng_half16 *)h, n);
    else
        add_widened_kernel<<<blocks, THREADS, 0, stream()>>>((float *)dw->data,
                                                             (const ng_bhalf16 *)h, n);
    NG_CUDA_CHECK_LAUNCH();
}
