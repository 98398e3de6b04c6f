/* Internal to the conv, pool and batch-norm layers: their window geometry in one 3-D form and
 * the prototypes of their CUDA twins (defined in the *_cuda.cu files, CUDA builds only). */
#ifndef NG_CONV_KERNELS_H
#define NG_CONV_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "nn/conv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A sliding window over 3 spatial dims (D, H, W). 2-D problems are depth 1 with a depth kernel
 * of 1, stride 1, padding 0 and dilation 1, so every kernel handles both. */
typedef struct {
    int64_t C;                      /* channels of x (conv) */
    int64_t in[3], out[3];          /* spatial sizes of x and of the output */
    int64_t k[3], s[3], p[3], d[3]; /* kernel, stride, padding, dilation */
} ng_win3;

static inline int64_t ng_win3_in_size(const ng_win3 *w) {
    return w->in[0] * w->in[1] * w->in[2];
}
static inline int64_t ng_win3_out_size(const ng_win3 *w) {
    return w->out[0] * w->out[1] * w->out[2];
}
static inline int64_t ng_win3_k_size(const ng_win3 *w) {
    return w->k[0] * w->k[1] * w->k[2];
}

/* The 3-D form of a conv geometry for an input with spatial sizes `in_sp` (g->nd of them) and
 * output sizes `out_sp`. */
static inline ng_win3 ng_win3_from_conv(const ng_conv_geom *g, const int64_t *in_sp,
                                        const int64_t *out_sp) {
    ng_win3 w;
    int o = 3 - g->nd;
    w.C = g->in_ch;
    for (int i = 0; i < 3; i++) {
        int j = i - o; /* index into the geometry, negative for the padded leading dim */
        w.in[i] = j < 0 ? 1 : in_sp[j];
        w.out[i] = j < 0 ? 1 : out_sp[j];
        w.k[i] = j < 0 ? 1 : g->kernel[j];
        w.s[i] = j < 0 ? 1 : g->stride[j];
        w.p[i] = j < 0 ? 0 : g->padding[j];
        w.d[i] = j < 0 ? 1 : g->dilation[j];
    }
    return w;
}

/* The f16 evaluation forward in fp16 arithmetic (nn/conv_hgemm.c; the CPU's, core/hgemm.h): y
 * without bias, its columns taken from `scratch`; ng_conv_hgemm_chunk is the positions per chunk
 * (the columns are K x that many fp16 values), for the plan. */
int64_t ng_conv_hgemm_chunk(int64_t K, int64_t P);
void ng_conv_hgemm_forward(const ng_win3 *w, const ng_tensor *x, const ng_tensor *W, ng_tensor *y,
                           ng_arena *scratch);

/* 0 disables the cuDNN path of conv layers on CUDA, so the im2col + GEMM path (used anyway
 * where cuDNN cannot take a tensor) runs and can be tested; 1 (the default) enables it. */
void ng_conv_use_cudnn(int enabled);

/* 0 sends f32 CPU convolutions to the im2col + GEMM path (the reference the tests hold oneDNN
 * to, and what K-FAC's patches share) instead of oneDNN; 1 (the default) uses oneDNN. */
void ng_conv_use_onednn(int enabled);

/* 0 sends bf16 CPU convolutions to oneDNN's f32 kernels on widened copies (conv.c's half_forward),
 * the path f16 always takes; 1 (the default) runs oneDNN's native bf16 kernels where the CPU has
 * AVX512_BF16 (ng_conv_bf16_native). Tests run both and compare. */
void ng_conv_use_native_bf16(int enabled);
/* Whether bf16 CPU convolutions can run natively here: the switch above and the CPU's ISA. */
int ng_conv_bf16_native(void);
/* How many bf16 convolution passes (forward, backward) ran natively so far, so a test can tell
 * which path ran. */
long ng_conv_native_passes(void);

/* ---- conv_onednn.c ----------------------------------------------------------------------- */
struct ng_arena;
struct ng_sim_arena;
/* Whether oneDNN takes x (f32 on the CPU) directly; f64 (gradient checks) runs the im2col path,
 * f16/bf16 conv.c's half_forward/half_backward (bf16 natively below, or f32 copies). */
int ng_conv_onednn_takes(const ng_tensor *x);
/* y = conv(x, w) (+ b when g->bias); *cache holds primitives per input shape; the scratchpad
 * comes from `scratch` and is released before returning. */
void ng_conv_onednn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                            const ng_tensor *w, const ng_tensor *b, ng_tensor *y,
                            struct ng_arena *scratch);
/* dw (and db when g->bias) += the gradients; dx, when not NULL, is written. */
void ng_conv_onednn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                             const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *db,
                             ng_tensor *dx, struct ng_arena *scratch);
/* The gradient-arena traffic of the forward (backward 0) or backward of input shape `in`. */
void ng_conv_onednn_plan(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                         int backward, int need_dx, struct ng_sim_arena *grads);
/* The forward and backward above also take bf16 x, w, dy (y and dx then bf16, rounded once by
 * oneDNN from its f32 accumulators; dw stays f32, added into), with a cache of their own; the
 * bias must be off (g->bias 0). This plans them, and ng_conv_onednn_native says whether oneDNN's
 * choice for that pass (forward, or both backward passes) is an optimised kernel, not a
 * reference loop. */
void ng_conv_onednn_plan_dt(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                            ng_dtype dt, int backward, int need_dx, struct ng_sim_arena *grads);
int ng_conv_onednn_native(void **cache, const ng_conv_geom *g, int ndim, const int64_t *in,
                          ng_dtype dt, int backward);
void ng_conv_onednn_free(void *cache);

/* ---- conv_cuda.cu ------------------------------------------------------------------------ */
/* cols [np, C k] of sample n, positions [p0, p0 + np). */
void ng_im2col_cuda(const ng_tensor *x, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                    ng_tensor *cols);
/* dx[n] += the transpose of im2col applied to dcols [np, C k]. */
void ng_col2im_add_cuda(const ng_tensor *dcols, int64_t n, const ng_win3 *w, int64_t p0, int64_t np,
                        ng_tensor *dx);
/* y [N, out, P] += b[o]. */
void ng_conv_bias_add_cuda(ng_tensor *y, const ng_tensor *b, int64_t N, int64_t out, int64_t P);
/* db[o] += sum over n, p of dy [N, out, P]; sums is f64 device scratch [2 out]. */
void ng_conv_bias_grad_cuda(const ng_tensor *dy, ng_tensor *db, int64_t N, int64_t out, int64_t P,
                            ng_tensor *sums);
/* rows x cols elements from src (row length src_ld) to dst (row length dst_ld). */
void ng_copy_rows_cuda(void *dst, int64_t dst_ld, const void *src, int64_t src_ld, int64_t rows,
                       int64_t cols, size_t elsize);
/* cuDNN convolution; *cache holds descriptors and chosen algorithms per input shape. They
 * return 0 without doing anything when cuDNN cannot take the shape (the caller then runs the
 * im2col path). Backward accumulates into dw and writes dx (when not NULL). f32 and f64 run in
 * their own type (f32 without TF32); f16 and bf16 on tensor cores with f32 accumulation, the
 * output and dx rounded once to the half type, the weight gradient rounded once to it per call
 * (cuDNN's half configurations keep dw in the data type) and added into the f32 master dw. */
int ng_conv_cudnn_forward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                          const ng_tensor *w, ng_tensor *y);
int ng_conv_cudnn_backward(void **cache, const ng_conv_geom *g, const ng_tensor *x,
                           const ng_tensor *w, const ng_tensor *dy, ng_tensor *dw, ng_tensor *dx);
/* The CUDA workspace bytes the forward (backward 0) or backward of an input of `shape` (ndim,
 * batch first) in dt asks for, or -1 when cuDNN cannot take it. Asks cuDNN's heuristics, so it
 * needs a GPU; the plan calls it when one is present. */
int64_t ng_conv_cudnn_workspace(void **cache, const ng_conv_geom *g, int ndim, const int64_t *shape,
                                ng_dtype dt, int backward, int need_dx);
void ng_conv_cudnn_free(void *cache);
/* dw (f32, device) += h, the weight gradient a half backward had cuDNN write in dt (f16/bf16). */
void ng_conv_add_widened_cuda(ng_tensor *dw, const void *h, ng_dtype dt);
/* Samples per cuDNN call: its descriptors take int sizes and strides, so each call's tensors
 * must stay below 2^31 elements. 0 when one sample is already too big (conv.c; host code). */
int64_t ng_conv_cudnn_batch(int64_t N, int64_t per_x, int64_t per_y);
/* Algorithms needing more scratch than this are passed over: the workspace is shared and stays
 * allocated, and a large-volume conv must not pin gigabytes of it. Without a GPU to ask, the
 * plan takes it as each cuDNN call's workspace. */
#define NG_CUDNN_WORKSPACE_CAP ((size_t)1 << 30)
/* Where a half backward puts the weight gradient cuDNN writes in the half type: after the
 * algorithm's own workspace, from this offset. */
static inline size_t ng_cudnn_dw_offset(size_t algo_ws) {
    return (algo_ws + 255) / 256 * 256;
}

/* ---- pool_cuda.cu ------------------------------------------------------------------------ */
/* x [planes, in...] -> y [planes, out...]; max pooling also writes argmax (i32, y's shape: the
 * index of the maximum within its input plane). */
void ng_pool_cuda_forward(int max, const ng_win3 *w, int64_t planes, const ng_tensor *x,
                          ng_tensor *y, ng_tensor *argmax);
/* dx (written, not accumulated) from dy. */
void ng_pool_cuda_backward(int max, const ng_win3 *w, int64_t planes, const ng_tensor *dy,
                           const ng_tensor *argmax, ng_tensor *dx);
/* y[r] = mean of x [R, S] over s; sums is f64 device scratch [2 R]. */
void ng_global_avgpool_cuda_forward(const ng_tensor *x, int64_t R, int64_t S, ng_tensor *y,
                                    ng_tensor *sums);
void ng_global_avgpool_cuda_backward(const ng_tensor *dy, int64_t R, int64_t S, ng_tensor *dx);

/* ---- batchnorm_cuda.cu ------------------------------------------------------------------- */
/* Per-row sums over a and s of tensors viewed as [A, R, S], accumulated in double, written to
 * out[2 r] and out[2 r + 1] (device memory):
 *   NG_SUMS_PLAIN:   sum x, 0
 *   NG_SUMS_SHIFTED: sum (x - k), sum (x - k)^2 with k = x[0, r, 0], for a stable variance
 *   NG_SUMS_GRAD:    sum dy, sum dy (x - center[r]) */
enum { NG_SUMS_PLAIN = 0, NG_SUMS_SHIFTED = 1, NG_SUMS_GRAD = 2 };
void ng_channel_sums_cuda(int mode, const ng_tensor *x, const ng_tensor *dy, int64_t A, int64_t R,
                          int64_t S, const double *center, double *out);
/* Its blocks per row (at least 4096 elements each, about 8192 blocks in all), and its request of
 * the shared CUDA workspace, two double partials per block: at most 128 KiB while R <= 8192, 16
 * bytes a row beyond. The memory plans of batch norm, conv bias and global pooling count it. */
int64_t ng_channel_sums_chunks(int64_t A, int64_t R, int64_t S);
size_t ng_channel_sums_workspace(int64_t A, int64_t R, int64_t S);

/* Batch norm on x [A, C, S]. mean and invstd are f64 [C] outputs (saved for backward); sums is
 * f64 [2 C] scratch. Training uses batch statistics and, when update is set, updates rm and rv;
 * eval uses rm and rv. y NULL: the statistics only. */
void ng_bn_cuda_forward(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                        ng_tensor *rm, ng_tensor *rv, ng_tensor *mean, ng_tensor *invstd,
                        ng_tensor *sums, ng_tensor *y, int64_t A, int64_t C, int64_t S,
                        int training, int update, double momentum, double eps);
/* dgamma and dbeta accumulate; dx is written when not NULL. */
void ng_bn_cuda_backward(const ng_tensor *x, const ng_tensor *dy, const ng_tensor *gamma,
                         const ng_tensor *mean, const ng_tensor *invstd, ng_tensor *sums,
                         ng_tensor *dgamma, ng_tensor *dbeta, ng_tensor *dx, int64_t A, int64_t C,
                         int64_t S, int training);
/* The fused batch norm + ReLU's gradient without its output: g = dy x (stored output > 0), the
 * output recomputed from x and rounded as the forward stored it (g may alias dy). */
void ng_bn_cuda_relu_grad(const ng_tensor *x, const ng_tensor *gamma, const ng_tensor *beta,
                          const ng_tensor *mean, const ng_tensor *invstd, const ng_tensor *dy,
                          ng_tensor *g, int64_t A, int64_t C, int64_t S);

#ifdef __cplusplus
}
#endif
#endif
