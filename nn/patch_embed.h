/* ViT's patch embedding: non-overlapping P x P patches through a Linear (timm's stride-P conv),
 * a class token in front, and a learned position embedding added. */
#ifndef NG_PATCH_EMBED_H
#define NG_PATCH_EMBED_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* [B, in_ch, img, img] -> [B, 1 + (img/patch)^2, dim]. Token 1 + i*(img/patch) + j holds the
 * patch at row i, column j, as timm's conv output flattened; token 0 is the class token.
 *
 * The Linear child "<name>.proj" reads a patch as columns ordered (c, py, px); its weight is
 * declared [dim, in_ch, patch, patch] like timm's conv weight (the same memory as the Linear's
 * [dim, in_ch*patch*patch]; the layer views it as a matrix while the child runs, so observers
 * see an ordinary Linear) with PyTorch's conv default init (kaiming-uniform bound
 * 1/sqrt(fan_in)), which timm keeps for the patch embedding.
 *
 * Parameters "cls_token" [1,1,dim] (normal, std 1e-6) and "pos_embed" [1, 1 + N, dim]
 * (truncated normal, std 0.02), no weight decay, are named in the scope that holds the layer,
 * as timm's VisionTransformer holds them: for name "patch_embed" they are "cls_token" and
 * "pos_embed", for "enc.patch_embed" they are "enc.cls_token" and "enc.pos_embed". They come
 * first in the model's order, then "<name>.proj.weight" and "<name>.proj.bias". */
ng_layer *ng_patch_embed(const char *name, int64_t img_size, int64_t patch, int64_t in_ch,
                         int64_t dim);

#ifdef __cplusplus
}
#endif
#endif
