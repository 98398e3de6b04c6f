/* Linear layer y = x W^T + b over the last dim of x (PyTorch layout: W [out, in]). Offers the
 * observer interface (K-FAC): its input x and output gradient dy, flattened to rows. */
#ifndef NG_LINEAR_H
#define NG_LINEAR_H

#include "nn/layer.h"

ng_layer *ng_linear(const char *name, int64_t in, int64_t out, int bias);
/* Shape facts for observers: in and out features, whether there is a bias. */
void ng_linear_dims(const ng_layer *l, int64_t *in, int64_t *out, int *bias);

/* bf16 on the CPU runs its GEMMs on oneDNN's native bf16 matmul where the CPU has AVX512_BF16
 * (linear.c); 0 forces ng_gemm's widened f32 path instead (tests and the plan's test compare the
 * two). Default 1. */
void ng_linear_use_native_bf16(int enabled);
/* Forward and backward passes of Linear layers that ran on the native bf16 matmul so far. */
long ng_linear_native_passes(void);

#endif
