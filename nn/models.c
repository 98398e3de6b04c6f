/* The model zoo: each architecture as a few lines over the layer constructors. */
#include "nn/models.h"

#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
#include "nn/containers.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/pool.h"
#include "nn/transformer.h"

const char *ng_arch_names(void) {
    return "mlp, lenet, vgg, nin, cnn3d, vit, vit_tiny_patch16_224, vit_small_patch16_224, "
           "vit_base_patch16_224, vit_tiny_patch4_32, vit_tiny_patch4_28";
}

int ng_arch_defaults(const char *arch, ng_arch *a) {
    memset(a, 0, sizeof *a);
    snprintf(a->arch, sizeof a->arch, "%s", arch);
    a->in_ch = 1, a->img = 28, a->classes = 10;
    if (!strcmp(arch, "mlp")) {
        a->width = 512, a->depth = 2;
    } else if (!strcmp(arch, "lenet")) {
    } else if (!strcmp(arch, "vgg")) {
        a->in_ch = 3, a->img = 32, a->width = 64, a->depth = 4, a->batchnorm = 1;
    } else if (!strcmp(arch, "nin")) {
        a->in_ch = 3, a->img = 32, a->width = 96, a->depth = 3;
    } else if (!strcmp(arch, "cnn3d")) {
        /* The 3D-CNN of docs/gpu.md: 6 conv3d 3x3x3, 16 channels, BN, ReLU. */
        a->in_ch = 1, a->img = 32, a->width = 16, a->depth = 6, a->batchnorm = 1, a->classes = 2;
    } else if (!strncmp(arch, "vit", 3)) {
        ng_vit_config v;
        if (!strcmp(arch, "vit")) {
            if (!ng_vit_preset("vit_tiny_patch4_28", &v)) return 0;
        } else if (!ng_vit_preset(arch, &v)) {
            return 0;
        }
        a->in_ch = v.in_ch, a->img = v.img_size, a->classes = v.classes, a->width = v.dim;
        a->depth = (int)v.depth, a->heads = v.heads, a->patch = v.patch;
        a->mlp_ratio = v.mlp_ratio, a->dropout = v.drop, a->checkpoint = v.checkpoint;
    } else {
        return 0;
    }
    return 1;
}

int ng_arch_input_shape(const ng_arch *a, int64_t *s) {
    s[0] = a->in_ch;
    s[1] = s[2] = s[3] = a->img;
    return !strcmp(a->arch, "cnn3d") ? 4 : 3;
}

static const int64_t k1[3] = {1, 1, 1}, k2[3] = {2, 2, 2}, k3[3] = {3, 3, 3}, k5[3] = {5, 5, 5};
static const int64_t p0[3] = {0, 0, 0}, p1[3] = {1, 1, 1}, p2[3] = {2, 2, 2};

static void add(ng_layer *seq, ng_layer *l) {
    ng_layer_add_child(seq, l);
}

static ng_layer *conv(const char *name, int nd, int64_t in, int64_t out, const int64_t *k,
                      const int64_t *stride, const int64_t *pad) {
    return ng_conv(name, nd, in, out, k, stride, pad, k1, 1);
}

static ng_layer *mlp(const ng_arch *a) {
    ng_layer *s = ng_sequence("");
    char n[64];
    add(s, ng_flatten("flatten"));
    int64_t in = a->in_ch * a->img * a->img;
    for (int i = 0; i < a->depth; i++) {
        snprintf(n, sizeof n, "fc%d", i + 1);
        add(s, ng_linear(n, in, a->width, 1));
        snprintf(n, sizeof n, "act%d", i + 1);
        add(s, ng_relu(n));
        if (a->dropout > 0) {
            snprintf(n, sizeof n, "drop%d", i + 1);
            add(s, ng_dropout(n, a->dropout));
        }
        in = a->width;
    }
    add(s, ng_linear("head", in, a->classes, 1));
    return s;
}

/* Appends flatten and a classifier head sized from the shape reached so far. */
static void head(ng_layer *s, const ng_arch *a, const char *name, int hidden1, int hidden2) {
    int64_t in[5], out[5];
    int nd = ng_arch_input_shape(a, in + 1) + 1, on;
    in[0] = 1;
    ng_children_out_shape(s, nd, in, &on, out);
    int64_t f = 1;
    for (int i = 1; i < on; i++) f *= out[i];
    add(s, ng_flatten("flatten"));
    if (hidden1) {
        add(s, ng_linear("fc1", f, hidden1, 1));
        add(s, ng_relu("act_fc1"));
        add(s, ng_linear("fc2", hidden1, hidden2, 1));
        add(s, ng_relu("act_fc2"));
        f = hidden2;
    }
    add(s, ng_linear(name, f, a->classes, 1));
}

static ng_layer *lenet(const ng_arch *a) {
    ng_layer *s = ng_sequence("");
    NG_CHECK(a->img >= 12, "model lenet: image side %lld is below 12", (long long)a->img);
    add(s, conv("conv1", 2, a->in_ch, 6, k5, k1, p2));
    add(s, ng_relu("act1"));
    add(s, ng_maxpool("pool1", 2, k2, k2, p0));
    add(s, conv("conv2", 2, 6, 16, k5, k1, p0));
    add(s, ng_relu("act2"));
    add(s, ng_maxpool("pool2", 2, k2, k2, p0));
    head(s, a, "head", 120, 84);
    return s;
}

/* conv -> (bn) -> relu, named "<prefix>.conv", "<prefix>.bn". */
static ng_layer *conv_block(const char *prefix, int nd, int64_t in, int64_t out, int bn,
                            const int64_t *k, const int64_t *pad) {
    ng_layer *b = ng_sequence(prefix);
    char n[80];
    snprintf(n, sizeof n, "%s.conv", prefix);
    add(b, conv(n, nd, in, out, k, k1, pad));
    if (bn) { /* fused: the same values, less memory (nn/batchnorm.h) */
        snprintf(n, sizeof n, "%s.bn", prefix);
        add(b, ng_batchnorm_relu(n, nd, out, 0.1, 1e-5));
        return b;
    }
    snprintf(n, sizeof n, "%s.act", prefix);
    add(b, ng_relu(n));
    return b;
}

static ng_layer *vgg(const ng_arch *a) {
    NG_CHECK(a->depth >= 1 && (a->img >> a->depth) >= 1,
             "model vgg: %d stages halve a %lld-pixel image below 1 pixel", a->depth,
             (long long)a->img);
    ng_layer *s = ng_sequence("");
    int64_t in = a->in_ch;
    char n[64];
    for (int st = 0; st < a->depth; st++) {
        int64_t out = a->width << st;
        if (out > 512) out = 512;
        snprintf(n, sizeof n, "stages.%d", st);
        ng_layer *stage = ng_sequence(n);
        for (int j = 0; j < 2; j++) {
            snprintf(n, sizeof n, "stages.%d.%d", st, j);
            add(stage, conv_block(n, 2, j ? out : in, out, a->batchnorm, k3, p1));
        }
        snprintf(n, sizeof n, "stages.%d.pool", st);
        add(stage, ng_maxpool(n, 2, k2, k2, p0));
        snprintf(n, sizeof n, "stages.%d", st);
        add(s, stage);
        in = out;
    }
    ng_checkpoint_blocks(s, 0, a->depth, &a->checkpoint);
    add(s, ng_global_avgpool("pool"));
    add(s, ng_linear("head", in, a->classes, 1));
    return s;
}

/* Network in Network: each block is a kxk conv and two 1x1 convs (the "mlpconv"), then a
 * pool; the last block maps to the classes and global average pooling replaces the head. */
static ng_layer *nin(const ng_arch *a) {
    NG_CHECK(a->depth >= 2, "model nin: depth %d, at least 2 blocks", a->depth);
    ng_layer *s = ng_sequence("");
    int64_t in = a->in_ch;
    char n[64];
    /* Each mlpconv block (and its pooling) is a sequence of its own, so it can be a checkpoint
     * segment; parameter names are the layers' own, as before. */
    for (int b = 0; b < a->depth; b++) {
        int last = b == a->depth - 1;
        int64_t w = last ? a->classes : a->width * (b ? 2 : 1);
        const int64_t *k = b == 0 ? k5 : k3, *pad = b == 0 ? p2 : p1;
        snprintf(n, sizeof n, "blocks.%d", b);
        ng_layer *blk = ng_sequence(n);
        snprintf(n, sizeof n, "blocks.%d.0", b);
        add(blk, conv_block(n, 2, in, w, 0, k, pad));
        snprintf(n, sizeof n, "blocks.%d.1", b);
        add(blk, conv_block(n, 2, w, w, 0, k1, p0));
        snprintf(n, sizeof n, "blocks.%d.2", b);
        add(blk, conv_block(n, 2, w, w, 0, k1, p0));
        if (!last) {
            snprintf(n, sizeof n, "blocks.%d.pool", b);
            add(blk, ng_maxpool(n, 2, k3, k2, p1));
        }
        add(s, blk);
        in = w;
    }
    ng_checkpoint_blocks(s, 0, a->depth, &a->checkpoint);
    add(s, ng_global_avgpool("pool"));
    return s;
}

static ng_layer *cnn3d(const ng_arch *a) {
    ng_layer *s = ng_sequence("");
    char n[64];
    int64_t in = a->in_ch;
    for (int i = 0; i < a->depth; i++) {
        snprintf(n, sizeof n, "layers.%d", i);
        ng_layer *b = conv_block(n, 3, in, a->width, a->batchnorm, k3, p1);
        add(s, b);
        in = a->width;
    }
    ng_checkpoint_blocks(s, 0, a->depth, &a->checkpoint);
    add(s, ng_global_avgpool("pool"));
    add(s, ng_linear("head", in, a->classes, 1));
    return s;
}

int ng_arch_blocks(const ng_arch *a) {
    if (!strcmp(a->arch, "vgg") || !strcmp(a->arch, "nin") || !strcmp(a->arch, "cnn3d") ||
        !strncmp(a->arch, "vit", 3))
        return a->depth;
    return 0;
}

void ng_arch_check_checkpoint(const ng_arch *a) {
    if (!ng_ckpt_spec_active(&a->checkpoint)) return;
    int n = ng_arch_blocks(a);
    NG_CHECK(n > 0,
             "model.checkpoint: %s has no blocks to checkpoint (vgg, nin, cnn3d and vit have)",
             a->arch);
    for (int b = n; b < NG_CKPT_MAX_BLOCKS; b++)
        NG_CHECK(!(a->checkpoint.blocks >> b & 1),
                 "model.checkpoint: block %d does not exist (%s has %d blocks: 0 to %d)", b,
                 a->arch, n, n - 1);
}

ng_layer *ng_arch_build(const ng_arch *a) {
    ng_arch_check_checkpoint(a);
    NG_CHECK(a->in_ch > 0 && a->img > 0 && a->classes > 0,
             "model %s: in_ch %lld, image %lld and classes %lld must be > 0", a->arch,
             (long long)a->in_ch, (long long)a->img, (long long)a->classes);
    if (!strcmp(a->arch, "mlp")) return mlp(a);
    if (!strcmp(a->arch, "lenet")) return lenet(a);
    if (!strcmp(a->arch, "vgg")) return vgg(a);
    if (!strcmp(a->arch, "nin")) return nin(a);
    if (!strcmp(a->arch, "cnn3d")) return cnn3d(a);
    if (!strncmp(a->arch, "vit", 3)) {
        ng_vit_config v = {.img_size = a->img,
                           .patch = a->patch,
                           .in_ch = a->in_ch,
                           .dim = a->width,
                           .depth = a->depth,
                           .heads = a->heads,
                           .classes = a->classes,
                           .mlp_ratio = a->mlp_ratio,
                           .drop = a->dropout,
                           .checkpoint = a->checkpoint};
        return ng_vit(&v);
    }
    ng_fail("model: unknown architecture '%s' (one of: %s)", a->arch, ng_arch_names());
    return NULL;
}
