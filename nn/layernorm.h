/* LayerNorm over the last dim (timm/PyTorch semantics: biased variance, eps inside the root),
 * with a learnable per-feature weight and bias. */
#ifndef NG_LAYERNORM_H
#define NG_LAYERNORM_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Params "<name>.weight" (init 1) and "<name>.bias" (init 0), both [dim], no weight decay.
 * timm's ViT uses eps 1e-6; PyTorch's default is 1e-5. */
ng_layer *ng_layernorm(const char *name, int64_t dim, double eps);

#ifdef __cplusplus
}
#endif
#endif
