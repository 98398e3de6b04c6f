/* Kernels behind the transformer layers (layernorm, attention, patch embedding, class pooling):
 * checked entry points that dispatch by device, and the CUDA twins they call. Internal to nn/. */
#ifndef NG_VIT_KERNELS_H
#define NG_VIT_KERNELS_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enough dims for patchify: [B, C, H/P, P, W/P, P]. */
#define NG_VIT_PERMUTE_MAX_DIMS 6

/* y = x with its dims reordered: x holds a contiguous array of logical shape `shape` (ndim
 * dims; its own ndim is ignored, only the element count must match), y is written as the
 * contiguous array of shape {shape[perm[0]], ..., shape[perm[ndim-1]]}, i.e. output dim k is
 * input dim perm[k]. Any dtype; x and y must not overlap. (attention.c) */
void ng_vit_permute(const ng_tensor *x, ng_tensor *y, int ndim, const int64_t *shape,
                    const int *perm);

/* Copies `nblocks` runs of `len` contiguous elements: for b < nblocks, i < len,
 * dst[dst_off + b dst_stride + i] = src[src_off + b src_stride + i]. A src_stride of 0 repeats
 * one run into every block. Any dtype; the runs must not overlap. (patch_embed.c) */
void ng_vit_copy_blocks(ng_tensor *dst, int64_t dst_off, int64_t dst_stride, const ng_tensor *src,
                        int64_t src_off, int64_t src_stride, int64_t nblocks, int64_t len);

/* LayerNorm over the last dim of x viewed as [rows, dim]: y = (x - mean) rstd w + b with
 * rstd = 1 / sqrt(var + eps) (biased variance); mean and rstd [rows] are kept for backward.
 * All tensors share x's device; with x (and y, dy, dx) in f32 or f64 the rest share its dtype,
 * with x in f16 or bf16 (mixed precision) w, b, mean, rstd, dw, db are f32. (layernorm.c) */
void ng_vit_layernorm_forward(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b,
                              double eps, ng_tensor *y, ng_tensor *mean, ng_tensor *rstd);
/* The CUDA backward's dw/db partial sums: row chunks of at least 16 rows, at most 512 chunks; the
 * CUDA workspace then holds chunks x 2 x dim accumulators (double for f64, float otherwise),
 * which the plan counts. */
static inline int64_t ng_ln_partial_rows(int64_t rows) { /* rows per chunk */
    int64_t per = (rows + 511) / 512;
    return per < 16 ? 16 : per;
}
static inline int64_t ng_ln_partial_chunks(int64_t rows) {
    int64_t per = ng_ln_partial_rows(rows);
    return (rows + per - 1) / per;
}
/* From dy: dx is written (skipped when NULL), dw and db are accumulated (+=). */
void ng_vit_layernorm_backward(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean,
                               const ng_tensor *rstd, const ng_tensor *dy, ng_tensor *dx,
                               ng_tensor *dw, ng_tensor *db);

/* CUDA twins (CUDA builds only), same contracts, arguments already checked. */
void ng_vit_permute_cuda(const ng_tensor *x, ng_tensor *y, int ndim, const int64_t *shape,
                         const int *perm);
void ng_vit_copy_blocks_cuda(ng_tensor *dst, int64_t dst_off, int64_t dst_stride,
                             const ng_tensor *src, int64_t src_off, int64_t src_stride,
                             int64_t nblocks, int64_t len);
void ng_vit_layernorm_forward_cuda(const ng_tensor *x, const ng_tensor *w, const ng_tensor *b,
                                   double eps, ng_tensor *y, ng_tensor *mean, ng_tensor *rstd);
void ng_vit_layernorm_backward_cuda(const ng_tensor *x, const ng_tensor *w, const ng_tensor *mean,
                                    const ng_tensor *rstd, const ng_tensor *dy, ng_tensor *dx,
                                    ng_tensor *dw, ng_tensor *db);

#ifdef __cplusplus
}
#endif
#endif
