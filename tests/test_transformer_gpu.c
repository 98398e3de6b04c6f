/* Transformer layers on CUDA against the CPU twin, at awkward sizes: 17 tokens, dim 48, 3 heads
 * (head_dim 16), and a LayerNorm with enough rows for several column-reduction chunks.
 * Tolerances (relative norm, f32 on both sides): each GEMM or reduction differs by summation
 * order, about sqrt(k) * 6e-8 relative for k <= 192 terms (~1e-6); one layer stays below 1e-5,
 * a block chains ~10 such ops forward and ~20 backward (2e-5), the whole ViT 5e-5. */
#include "gradcheck.h"
#include "nn/attention.h"
#include "nn/layernorm.h"
#include "nn/patch_embed.h"
#include "nn/transformer.h"
#include "testing.h"

static ng_layer *make_ln(void) {
    return ng_layernorm("norm", 48, 1e-6);
}
static ng_layer *make_attn(void) {
    return ng_attention("attn", 48, 3, 1);
}
static ng_layer *make_attn_nobias(void) {
    return ng_attention("attn", 48, 3, 0);
}
static ng_layer *make_pe(void) {
    return ng_patch_embed("patch_embed", 16, 4, 3, 48);
}
static ng_layer *make_pool(void) {
    return ng_cls_pool("pool");
}
static ng_layer *make_block(void) {
    return ng_transformer_block("blocks.0", 48, 3, 4.0, 0, 0);
}
static ng_layer *make_block_ck(void) {
    return ng_transformer_block("blocks.0", 48, 3, 4.0, 0, 1);
}
static ng_layer *make_block_drop(void) {
    return ng_transformer_block("blocks.0", 48, 3, 4.0, 0.1, 1);
}
static ng_layer *make_vit(void) {
    ng_vit_config c = {.img_size = 16,
                       .patch = 4,
                       .in_ch = 3,
                       .dim = 48,
                       .depth = 2,
                       .heads = 3,
                       .classes = 10,
                       .mlp_ratio = 4.0,
                       .drop = 0,
                       .checkpoint = {.every = 1}};
    return ng_vit(&c);
}

int main(void) {
    ng_test_require_gpu("test_transformer_gpu");
    int64_t tok[3] = {3, 17, 48}, img[4] = {3, 3, 16, 16};
    ng_twincheck("layernorm", make_ln, 3, tok, 1, 1e-5);
    /* 10200 rows: the weight gradient sums 510 partials of 20 rows each. */
    ng_twincheck("layernorm, many rows", make_ln, 3, (int64_t[]){600, 17, 48}, 1, 1e-5);
    ng_twincheck("attention", make_attn, 3, tok, 1, 1e-5);
    ng_twincheck("attention without qkv bias", make_attn_nobias, 3, tok, 1, 1e-5);
    ng_twincheck("patch_embed", make_pe, 4, img, 1, 1e-5);
    ng_twincheck("cls_pool", make_pool, 3, tok, 1, 0); /* pure copies: exact */
    ng_twincheck("transformer block", make_block, 3, tok, 1, 2e-5);
    ng_twincheck("transformer block, checkpointed", make_block_ck, 3, tok, 1, 2e-5);
    /* Philox gives the same dropout masks on both devices. */
    ng_twincheck("transformer block, dropout", make_block_drop, 3, tok, 1, 2e-5);
    ng_twincheck("vit", make_vit, 4, img, 1, 5e-5);
    for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
        ng_twincheck_mixed("layernorm, mixed", make_ln, 3, tok, 1, dt, ng_mixed_tol(dt, 2, 48));
        ng_twincheck_mixed("attention, mixed", make_attn, 3, tok, 1, dt, ng_mixed_tol(dt, 12, 48));
        ng_twincheck_mixed("patch_embed, mixed", make_pe, 4, img, 1, dt, ng_mixed_tol(dt, 4, 48));
        ng_twincheck_mixed("transformer block, mixed", make_block, 3, tok, 1, dt,
                           ng_mixed_tol(dt, 34, 192));
    }
    return ng_test_finish("test_transformer_gpu");
}
