/* Linear layer y = x W^T + b over the last dim of x (PyTorch layout: W [out, in]). Offers the
 * observer interface (K-FAC): its input x and output gradient dy, flattened to rows. */
#ifndef NG_LINEAR_H
#define NG_LINEAR_H

#include "nn/layer.h"

ng_layer *ng_linear(const char *name, int64_t in, int64_t out, int bias);
/* Shape facts for observers: in and out features, whether there is a bias. */
void ng_linear_dims(const ng_layer *l, int64_t *in, int64_t *out, int *bias);

/* f32, and bf16 where the CPU has AVX512_BF16, run their GEMMs on oneDNN's matmul on the CPU
 * (linear.c); 0 forces ng_gemm (OpenBLAS; for bf16 on f32 copies) instead, the path the tests and
 * the plan's test compare with. Default 1. */
void ng_linear_use_onednn(int enabled);
/* Forward and backward passes of Linear layers that ran on oneDNN's matmul so far. */
long ng_linear_native_passes(void);

#endif
