/* Multi-head self-attention as in timm's ViT: one Linear makes q, k and v for all heads, scaled
 * dot-product attention runs per (batch, head), and a Linear projects the heads back. */
#ifndef NG_ATTENTION_H
#define NG_ATTENTION_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* On x [B, T, dim] -> [B, T, dim]. Children: Linear "<name>.qkv" (dim -> 3 dim, bias when
 * qkv_bias) whose outputs are ordered (qkv, head, head_dim) as in timm, and Linear
 * "<name>.proj" (dim -> dim, bias). Both keep ng_linear's default init (ng_vit overrides it)
 * and are seen by observers (K-FAC) like any Linear. dim must be a multiple of heads. */
ng_layer *ng_attention(const char *name, int64_t dim, int64_t heads, int qkv_bias);

#ifdef __cplusplus
}
#endif
#endif
