/* Vision Transformer (timm's VisionTransformer with class-token pooling): pre-norm transformer
 * blocks, class pooling, and the whole model with timm's parameter names, order and init. */
#ifndef NG_TRANSFORMER_H
#define NG_TRANSFORMER_H

#include "nn/containers.h"
#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* x + attn(norm1(x)), then x + mlp(norm2(x)) on [B, T, dim], mlp = fc1 (dim -> dim*mlp_ratio)
 * -> GELU (erf) -> fc2, LayerNorms with eps 1e-6, qkv with bias. With drop > 0, dropout follows
 * the attention projection and each MLP Linear (timm's proj_drop, drop1, drop2). With
 * `checkpoint` the block is one checkpoint segment by itself (ng_checkpoint); the ViT instead
 * marks segments over its run of blocks (ng_vit_config.checkpoint). Parameters
 * "<name>.norm1.*", "<name>.attn.qkv.*", "<name>.attn.proj.*", "<name>.norm2.*",
 * "<name>.mlp.fc1.*", "<name>.mlp.fc2.*" in that order. */
ng_layer *ng_transformer_block(const char *name, int64_t dim, int64_t heads, double mlp_ratio,
                               double drop, int checkpoint);

/* [B, T, D] -> [B, D]: token 0 (timm's global_pool='token'). */
ng_layer *ng_cls_pool(const char *name);

typedef struct {
    int64_t img_size, patch, in_ch, dim, depth, heads, classes;
    double mlp_ratio, drop;
    ng_ckpt_spec checkpoint; /* which blocks run as checkpoint segments */
} ng_vit_config;

/* [B, in_ch, img, img] -> logits [B, classes]: patch_embed (with cls_token and pos_embed),
 * blocks.0 .. blocks.{depth-1}, norm, class-token pooling, head. Initialised as timm's default
 * ('' mode): every Linear (qkv, proj, fc1, fc2, head) trunc_normal std 0.02 with zero bias;
 * LayerNorms 1 and 0; cls_token normal std 1e-6, pos_embed trunc_normal 0.02; the patch
 * projection keeps the conv default (kaiming-uniform 1/sqrt(fan_in)) as timm does. The head is
 * trunc_normal too (timm's 'jax' mode would zero it). A bad config fails naming the field. */
ng_layer *ng_vit(const ng_vit_config *c);

/* Fills c for a preset name and returns 1, or returns 0 when the name is unknown:
 *   vit_tiny_patch16_224   224px, patch 16, 3 ch, dim 192, depth 12, heads 3, 1000 classes
 *   vit_small_patch16_224  224px, patch 16, 3 ch, dim 384, depth 12, heads 6, 1000 classes
 *   vit_base_patch16_224   224px, patch 16, 3 ch, dim 768, depth 12, heads 12, 1000 classes
 *   vit_tiny_patch4_32     32px (CIFAR), patch 4, 3 ch, ViT-Tiny dims, 10 classes
 *   vit_tiny_patch4_28     28px (MNIST), patch 4 (7x7 patches), 1 ch, ViT-Tiny dims, 10 classes
 * All with mlp_ratio 4, drop 0, no checkpointing; callers change classes etc. afterwards. */
int ng_vit_preset(const char *name, ng_vit_config *c);
/* The preset names, comma separated, for error messages. */
const char *ng_vit_preset_names(void);

#ifdef __cplusplus
}
#endif
#endif
