/* Transformer blocks, class pooling and the ViT model, composed from containers, Linear,
 * LayerNorm, attention, activations and the patch embedding. */
#include "nn/transformer.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/patch_embed.h"
#include "nn/vit_kernels.h"

#define VIT_LN_EPS 1e-6

/* ---- class-token pooling ------------------------------------------------------------------ */

typedef struct {
    int64_t B, T, D; /* of the last forward */
} pool_state;

static void pool_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out) {
    NG_CHECK(ndim == 3 && in[1] >= 1,
             "cls_pool %s: input must be [batch, tokens, dim] with tokens >= 1; got %d dims",
             l->name, ndim);
    *out_ndim = 2;
    out[0] = in[0], out[1] = in[2];
}

static ng_tensor pool_forward(ng_layer *l, ng_ctx *ctx, const ng_tensor *x) {
    pool_state *s = l->impl;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    ng_layer_out_shape(l, x->ndim, x->shape, &ndim, shape);
    s->B = x->shape[0], s->T = x->shape[1], s->D = x->shape[2];
    ng_tensor y = ng_arena_tensor(ctx->acts, x->dtype, 2, shape, l->name);
    ng_vit_copy_blocks(&y, 0, s->D, x, 0, s->T * s->D, s->B, s->D);
    return y;
}

static void pool_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx) {
    (void)ctx;
    pool_state *s = l->impl;
    NG_CHECK(s->T && dy->numel == s->B * s->D,
             "cls_pool %s: output gradient %s does not fit the last forward", l->name,
             ng_tensor_desc(dy));
    if (!dx) return;
    ng_fill(dx, 0.0);
    ng_vit_copy_blocks(dx, 0, s->T * s->D, dy, 0, s->D, s->B, s->D);
}

static const ng_layer_ops pool_ops = {
    .kind = "cls_pool",
    .out_shape = pool_out_shape,
    .forward = pool_forward,
    .backward = pool_backward,
};

ng_layer *ng_cls_pool(const char *name) {
    return ng_layer_new(&pool_ops, name, sizeof(pool_state));
}

/* ---- transformer block ------------------------------------------------------------------- */

/* A child name "<prefix>.<suffix>"; fails naming both when too long for a layer name. */
static const char *sub(char *buf, size_t n, const char *prefix, const char *suffix) {
    int len = snprintf(buf, n, "%s%s%s", prefix, prefix[0] ? "." : "", suffix);
    NG_CHECK(len < (int)n && len < (int)sizeof(((ng_layer *)0)->name),
             "layer name %s.%s is too long", prefix, suffix);
    return buf;
}

ng_layer *ng_transformer_block(const char *name, int64_t dim, int64_t heads, double mlp_ratio,
                               double drop, int checkpoint) {
    NG_CHECK(mlp_ratio > 0, "transformer block %s: mlp_ratio %g must be > 0", name, mlp_ratio);
    NG_CHECK(drop >= 0 && drop < 1, "transformer block %s: drop %g must be in [0, 1)", name, drop);
    int64_t hidden = (int64_t)((double)dim * mlp_ratio); /* timm: int(dim * mlp_ratio) */
    NG_CHECK(hidden > 0, "transformer block %s: dim %lld * mlp_ratio %g leaves no hidden units",
             name, (long long)dim, mlp_ratio);
    char b[128];

    ng_layer *attn = ng_sequence(sub(b, sizeof b, name, "attn_branch"));
    ng_layer_add_child(attn, ng_layernorm(sub(b, sizeof b, name, "norm1"), dim, VIT_LN_EPS));
    ng_layer_add_child(attn, ng_attention(sub(b, sizeof b, name, "attn"), dim, heads, 1));
    if (drop > 0)
        ng_layer_add_child(attn, ng_dropout(sub(b, sizeof b, name, "attn.proj_drop"), drop));

    ng_layer *mlp = ng_sequence(sub(b, sizeof b, name, "mlp_branch"));
    ng_layer_add_child(mlp, ng_layernorm(sub(b, sizeof b, name, "norm2"), dim, VIT_LN_EPS));
    ng_layer_add_child(mlp, ng_linear(sub(b, sizeof b, name, "mlp.fc1"), dim, hidden, 1));
    ng_layer_add_child(mlp, ng_gelu(sub(b, sizeof b, name, "mlp.act"), 0));
    if (drop > 0) ng_layer_add_child(mlp, ng_dropout(sub(b, sizeof b, name, "mlp.drop1"), drop));
    ng_layer_add_child(mlp, ng_linear(sub(b, sizeof b, name, "mlp.fc2"), hidden, dim, 1));
    if (drop > 0) ng_layer_add_child(mlp, ng_dropout(sub(b, sizeof b, name, "mlp.drop2"), drop));

    ng_layer *blk = ng_sequence(name);
    ng_layer_add_child(blk, ng_residual(sub(b, sizeof b, name, "attn_res"), attn));
    ng_layer_add_child(blk, ng_residual(sub(b, sizeof b, name, "mlp_res"), mlp));
    if (checkpoint) ng_sequence_checkpoint(blk, 0, 2);
    return blk;
}

/* ---- ViT --------------------------------------------------------------------------------- */

/* timm's init_weights_vit_timm: every Linear but the patch projection (a conv in timm). */
static void timm_init(ng_layer *l, const ng_layer *skip) {
    if (l != skip && !strcmp(l->ops->kind, "linear")) {
        l->params[0].init = (ng_init){.kind = NG_INIT_TRUNC_NORMAL, .a = 0.02};
        if (l->nparams > 1) l->params[1].init = (ng_init){.kind = NG_INIT_CONSTANT, .a = 0};
    }
    for (int i = 0; i < l->nchildren; i++) timm_init(l->children[i], skip);
}

ng_layer *ng_vit(const ng_vit_config *c) {
    const struct {
        const char *name;
        int64_t v;
    } pos[] = {{"img_size", c->img_size}, {"patch", c->patch}, {"in_ch", c->in_ch},
               {"dim", c->dim},           {"depth", c->depth}, {"heads", c->heads},
               {"classes", c->classes}};
    for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
        NG_CHECK(pos[i].v > 0, "vit: %s = %lld must be > 0", pos[i].name, (long long)pos[i].v);
    NG_CHECK(c->img_size % c->patch == 0, "vit: img_size %lld is not divisible by patch %lld",
             (long long)c->img_size, (long long)c->patch);
    NG_CHECK(c->dim % c->heads == 0, "vit: dim %lld is not a multiple of heads %lld",
             (long long)c->dim, (long long)c->heads);
    NG_CHECK(c->depth <= 60, "vit: depth %lld is more than 60 blocks", (long long)c->depth);
    NG_CHECK(c->mlp_ratio > 0, "vit: mlp_ratio %g must be > 0", c->mlp_ratio);
    NG_CHECK(c->drop >= 0 && c->drop < 1, "vit: drop %g must be in [0, 1)", c->drop);

    ng_layer *m = ng_sequence("");
    ng_layer *pe = ng_patch_embed("patch_embed", c->img_size, c->patch, c->in_ch, c->dim);
    ng_layer_add_child(m, pe);
    for (int64_t i = 0; i < c->depth; i++) {
        char name[32];
        snprintf(name, sizeof name, "blocks.%lld", (long long)i);
        ng_layer_add_child(m,
                           ng_transformer_block(name, c->dim, c->heads, c->mlp_ratio, c->drop, 0));
    }
    ng_checkpoint_blocks(m, 1, (int)c->depth, &c->checkpoint);
    ng_layer_add_child(m, ng_layernorm("norm", c->dim, VIT_LN_EPS));
    ng_layer_add_child(m, ng_cls_pool("pool"));
    ng_layer_add_child(m, ng_linear("head", c->dim, c->classes, 1));
    timm_init(m, pe->children[0]);
    return m;
}

static const struct {
    const char *name;
    ng_vit_config c;
} presets[] = {
    {"vit_tiny_patch16_224", {224, 16, 3, 192, 12, 3, 1000, 4.0, 0.0, {0, 0, 0}}},
    {"vit_small_patch16_224", {224, 16, 3, 384, 12, 6, 1000, 4.0, 0.0, {0, 0, 0}}},
    {"vit_base_patch16_224", {224, 16, 3, 768, 12, 12, 1000, 4.0, 0.0, {0, 0, 0}}},
    {"vit_tiny_patch4_32", {32, 4, 3, 192, 12, 3, 10, 4.0, 0.0, {0, 0, 0}}},
    {"vit_tiny_patch4_28", {28, 4, 1, 192, 12, 3, 10, 4.0, 0.0, {0, 0, 0}}},
};

int ng_vit_preset(const char *name, ng_vit_config *c) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (!strcmp(name, presets[i].name)) {
            *c = presets[i].c;
            return 1;
        }
    }
    return 0;
}

const char *ng_vit_preset_names(void) {
    return "vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224, "
           "vit_tiny_patch4_32, vit_tiny_patch4_28";
}
