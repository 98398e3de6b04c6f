/* Mixed precision on the CPU: every layer in f16 and bf16 (f32 masters) against the same maths in
 * f64 on the same numbers, whole models (MLP, ViT, 3D-CNN) against f32, the softmax
 * cross-entropy's f32 statistics, and the compute copy of the weights (refresh rounds once and
 * never touches the f32 masters).
 *
 * Tolerances (normwise relative, ||got - ref|| / ||ref||) are derived, not fitted:
 *   u = 2^-11 (f16) or 2^-8 (bf16), the unit roundoff of the compute format. Every value stored
 *   in the compute dtype carries a relative error of at most u; n counts the stored roundings on
 *   the longest chain an output or gradient depends on (forward then backward), and errors add
 *   along it. Each layer may amplify a relative error by its conditioning, which we take as 2 for
 *   these layers on inputs and weights of order 1 (so 2 n u). Reductions accumulate in f32 (or
 *   double on the CPU) and add at most k 2^-24 for a reduction of length k.
 *   ng_mixed_tol(dt, n, k) = 2 n u + k 2^-24. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/pool.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/patch_embed.h"
#include "nn/transformer.h"
#include "nn/weights.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/models.h"
#include "testing.h"

/* ---- layers ---------------------------------------------------------------------------------- */

static ng_layer *make_linear(void) {
    return ng_linear("fc", 33, 17, 1);
}
static ng_layer *make_relu(void) {
    return ng_relu("relu");
}
static ng_layer *make_gelu(void) {
    return ng_gelu("gelu", 0);
}
static ng_layer *make_dropout(void) {
    return ng_dropout("drop", 0.25);
}
static ng_layer *make_softmax(void) {
    return ng_softmax("softmax");
}
static ng_layer *make_residual_seq(void) {
    ng_layer *s = ng_sequence("seq");
    ng_layer_add_child(s, ng_linear("seq.fc1", 12, 12, 1));
    ng_layer_add_child(s, ng_gelu("seq.act", 1));
    ng_layer_add_child(s, ng_linear("seq.fc2", 12, 12, 1));
    return ng_checkpoint("ckpt", ng_residual("res", s), 1);
}

static ng_layer *make_layernorm(void) {
    return ng_layernorm("ln", 33, 1e-6);
}
static ng_layer *make_attention(void) {
    return ng_attention("attn", 12, 3, 1);
}
static ng_layer *make_patch_embed(void) {
    return ng_patch_embed("pe", 8, 4, 2, 12);
}
static ng_layer *make_block(void) {
    return ng_transformer_block("blk", 12, 2, 2.0, 0.1, 1);
}

static void vit_layers(ng_dtype dt) {
    const int64_t xs[2] = {5, 33}, tok[3] = {2, 5, 12};
    /* LayerNorm: statistics in double from stored x; y rounded once; dx rounded once; dw, db are
     * f32. The normalisation divides by the row's std, which for random rows of 33 values is not
     * small, so the conditioning stays near 1: n = 1 forward, 1 backward. */
    ng_mixedcheck("layernorm", make_layernorm, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 2, 33));
    /* Attention: qkv Linear (2), permute (exact), scores (1), softmax (1), P v (1), proj (2):
     * 7 forward; backward proj dx (1), dP and dv (1), softmax backward (1), dq/dk (1), qkv dx
     * (1): 5. n = 12, reductions over T = 5 tokens and dim 12. */
    ng_mixedcheck("attention", make_attention, 3, tok, 1, dt, NG_F64, ng_mixed_tol(dt, 12, 12));
    /* Patch embedding: proj (2 roundings), pos add (1); backward proj dx (1): n = 4; the
     * reduction is C P P = 32 long. */
    ng_mixedcheck("patch_embed", make_patch_embed, 4, (int64_t[]){2, 2, 8, 8}, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 4, 32));
    /* Transformer block: x + attn(ln1(x)) then + mlp(ln2(.)): ln 1, attention 12, add 1, ln 1,
     * fc1 2, gelu 1, dropout 1, fc2 2, add 1 = 22 forward; backward through the same chain about
     * 12 more. n = 34. */
    ng_mixedcheck("transformer block", make_block, 3, tok, 1, dt, NG_F64, ng_mixed_tol(dt, 34, 24));
}

static ng_layer *make_conv2d(void) {
    return ng_conv("conv", 2, 3, 5, (int64_t[]){3, 3}, (int64_t[]){2, 1}, (int64_t[]){1, 1}, NULL,
                   1);
}
static ng_layer *make_conv3d(void) {
    return ng_conv("conv", 3, 2, 4, (int64_t[]){3, 3, 3}, NULL, (int64_t[]){1, 1, 1}, NULL, 1);
}
static ng_layer *make_maxpool(void) {
    return ng_maxpool("pool", 3, (int64_t[]){2, 2, 2}, NULL, NULL);
}
static ng_layer *make_avgpool(void) {
    return ng_avgpool("pool", 2, (int64_t[]){3, 3}, (int64_t[]){2, 2}, (int64_t[]){1, 1});
}
static ng_layer *make_global_avgpool(void) {
    return ng_global_avgpool("gap");
}
static ng_layer *make_bn3d(void) {
    return ng_batchnorm("bn", 3, 3, 0.1, 1e-5);
}

static void conv_layers(ng_dtype dt) {
    const int64_t v[5] = {2, 3, 4, 5, 6};
    /* Conv (im2col + GEMM): y = round(round(W cols) + b), 2 roundings (im2col copies exactly);
     * dx: column gradients rounded (1), then col2im sums them in double and rounds once (1); dW
     * and db are f32 sums of exact products. Reductions of C k = 27 (2-D) and 54 (3-D). */
    ng_mixedcheck("conv2d", make_conv2d, 4, (int64_t[]){2, 3, 7, 6}, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 2, 27));
    ng_mixedcheck("conv3d", make_conv3d, 5, (int64_t[]){2, 2, 4, 5, 3}, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 2, 54));
    /* Max pooling selects a stored value (exact) and routes dy to it (exact unless windows
     * overlap); average pooling rounds its mean (1) and, backward, dy / k (1) plus one rounding
     * per overlapping window added (at most 4 here): n = 5 for avg. */
    ng_mixedcheck("maxpool3d", make_maxpool, 5, v, 1, dt, NG_F64, ng_mixed_tol(dt, 1, 0));
    ng_mixedcheck("avgpool2d", make_avgpool, 4, (int64_t[]){2, 3, 7, 6}, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 5, 9));
    ng_mixedcheck("global avgpool", make_global_avgpool, 5, v, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 1, 120));
    /* Batch norm: statistics in double from stored x, parameters f32; y and dx rounded once
     * each. Normalising by the batch std of random values keeps the conditioning near 1. */
    ng_mixedcheck("batchnorm3d", make_bn3d, 5, v, 1, dt, NG_F64, ng_mixed_tol(dt, 2, 240));
    /* Eval mode normalises with the f32 running statistics: the same two roundings. */
    ng_mixedcheck("batchnorm3d eval", make_bn3d, 5, v, 0, dt, NG_F64, ng_mixed_tol(dt, 2, 0));
}

static void layers(ng_dtype dt) {
    const int64_t xs[2] = {5, 33}, x12[3] = {2, 3, 12};
    /* Linear: y = round(round(x W^T) + b) is two roundings; dx = round(dy W) one; dW, db are f32
     * sums (k = 5 rows) of exact products of stored values. */
    ng_mixedcheck("linear", make_linear, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 2, 33));
    /* Element-wise: one rounding of y, one of dx. */
    ng_mixedcheck("relu", make_relu, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 1, 0));
    ng_mixedcheck("gelu", make_gelu, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 1, 0));
    ng_mixedcheck("dropout", make_dropout, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 1, 0));
    /* Softmax: statistics in double (f32 on CUDA) from stored x, y rounded once; backward reads
     * the stored y and dy and rounds dx once: n = 2, row sums of 33. */
    ng_mixedcheck("softmax", make_softmax, 2, xs, 1, dt, NG_F64, ng_mixed_tol(dt, 2, 33));
    /* checkpoint(residual(fc1, gelu, fc2)): forward 2 + 1 + 2 roundings and the residual add's 1;
     * backward through fc2, gelu, fc1 (1 + 1 + 1) and the add of the skip gradient (1): n = 10. */
    ng_mixedcheck("checkpoint(residual(sequence))", make_residual_seq, 3, x12, 1, dt, NG_F64,
                  ng_mixed_tol(dt, 10, 12));
}

/* ---- softmax cross-entropy: loss and statistics in f32 (double on the CPU), dlogits rounded once
 * into the compute dtype ------------------------------------------------------------------- */

static void xent(ng_dtype dt) {
    const int64_t n = 7, c = 11;
    ng_tensor z = ng_tensor_2d(dt, NG_CPU, n, c, "logits"),
              z64 = ng_tensor_2d(NG_F64, NG_CPU, n, c, "z");
    ng_test_fill_uniform(&z, -4, 4);
    ng_cast(&z64, &z);
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, n, "labels");
    for (int i = 0; i < n; i++) ((int32_t *)lab.data)[i] = (int32_t)((ng_test_uniform() + 1) * 5.4);
    ng_tensor d = ng_tensor_2d(dt, NG_CPU, n, c, "dlogits"),
              d64 = ng_tensor_2d(NG_F64, NG_CPU, n, c, "d");
    int64_t k1, k2;
    double scale = 1024;
    double l = ng_softmax_xent_scaled(&z, &lab, 0.1, scale, &d, &k1);
    double l64 = ng_softmax_xent(&z64, &lab, 0.1, &d64, &k2);
    /* The loss never passes through the compute dtype: only double-sum rounding separates them. */
    NG_TEST(fabs(l - l64) <= 1e-12 * fabs(l64) && k1 == k2, "%s xent: loss %.17g vs f64 %.17g",
            ng_dtype_name(dt), l, l64);
    double *got = ng_test_to_f64(&d), *ref = ng_test_to_f64(&d64);
    for (int64_t i = 0; i < n * c; i++) got[i] /= scale; /* a power of two: exact */
    /* Each element is rounded once: elementwise relative error u (the scaled values are far from
     * f16's subnormal range: |p - t| scale / n >= 2^-14 is not guaranteed, so an absolute term of
     * half an f16 subnormal step, 2^-25 / (scale / n), covers the smallest). */
    ng_test_close("xent dlogits", ref, got, n * c, ng_unit_roundoff(dt),
                  0x1p-25 * (double)n / scale);
    free(got), free(ref);
    ng_tensor_free(&z), ng_tensor_free(&z64), ng_tensor_free(&lab), ng_tensor_free(&d),
        ng_tensor_free(&d64);
}

/* ---- the compute copy ------------------------------------------------------------------------ */

static void refresh(ng_dtype dt) {
    ng_model *m = ng_model_new(make_linear());
    ng_model_build_mixed(m, NG_CPU, dt, 3, 1 << 16, 1 << 16);
    NG_TEST(m->flat_params.dtype == NG_F32 && m->flat_grads.dtype == NG_F32 &&
                m->flat_compute.dtype == dt && m->params[0].param->compute.dtype == dt &&
                m->params[0].param->value.dtype == NG_F32,
            "%s model: f32 masters and gradients, compute copy in %s", ng_dtype_name(dt),
            ng_dtype_name(dt));
    ng_test_fill_uniform(&m->flat_params, -3, 3);
    ng_tensor before = ng_tensor_to(&m->flat_params, NG_CPU, "before");
    ng_model_refresh_compute(m);
    NG_TEST(!memcmp(before.data, m->flat_params.data, ng_tensor_bytes(&before)),
            "%s: refresh leaves the f32 masters bit for bit", ng_dtype_name(dt));
    ng_tensor want = ng_tensor_1d(dt, NG_CPU, m->numel, "want");
    ng_cast(&want, &before);
    NG_TEST(!memcmp(want.data, m->flat_compute.data, ng_tensor_bytes(&want)),
            "%s: the compute copy is the masters rounded once", ng_dtype_name(dt));
    /* The master is the state: a different compute copy is not its concern. */
    int diff = 0;
    for (int64_t i = 0; i < m->numel; i++)
        diff += ((float *)before.data)[i] !=
                (float)(dt == NG_F16 ? ng_f16_to_f32(((ng_f16 *)want.data)[i])
                                     : ng_bf16_to_f32(((ng_bf16 *)want.data)[i]));
    NG_TEST(diff > 0, "%s: random masters are not all representable (the copy rounds)",
            ng_dtype_name(dt));
    /* Loading weights refreshes the copy: it computes with what was loaded. */
    const char *path = "test_mixed_weights.safetensors";
    ng_weights_save(m, path, NULL);
    ng_fill(&m->flat_params, 0.5);
    ng_model_refresh_compute(m);
    ng_weights_load(m, path);
    remove(path);
    int same = 1; /* parameters only: the alignment gaps are not saved */
    for (int i = 0; i < m->nparams; i++) {
        int64_t o = m->params[i].offset, n = m->params[i].param->value.numel;
        same &= !memcmp((char *)want.data + 2 * o, (char *)m->flat_compute.data + 2 * o,
                        (size_t)(2 * n)) &&
                !memcmp((float *)before.data + o, (float *)m->flat_params.data + o,
                        sizeof(float) * (size_t)n);
    }
    NG_TEST(same, "%s: loading weights restores the masters and refreshes the compute copy",
            ng_dtype_name(dt));
    ng_tensor_free(&before), ng_tensor_free(&want);
    ng_model_free(m);

    ng_model *f = ng_model_new(make_linear());
    ng_model_build(f, NG_CPU, NG_F32, 3, 1 << 16, 1 << 16);
    NG_TEST(f->flat_compute.data == f->flat_params.data && f->compute_dtype == NG_F32,
            "an f32 model reads its masters directly");
    ng_model_free(f);
    ng_model *g = ng_model_new(make_linear());
    NG_TEST_ERROR(ng_model_build(g, NG_CPU, NG_F16, 3, 1 << 16, 1 << 16), "f32 or f64");
    ng_model_free(g);
}

/* ---- whole models against f32 ---------------------------------------------------------------- */

static ng_arch cur;
static ng_layer *make_cur(void) {
    return ng_arch_build(&cur);
}

static void models(ng_dtype dt) {
    /* MLP 16-24-24-3 with dropout: forward 3 Linear (2 roundings each), ReLU and dropout (exact
     * apart from dropout's 1 each): 8; backward 3 dx, 2 ReLU/dropout: 5; n = 13. */
    ng_arch_defaults("mlp", &cur);
    cur.img = 4, cur.width = 24, cur.depth = 2, cur.classes = 3, cur.dropout = 0.1;
    ng_mixedcheck("mlp", make_cur, 4, (int64_t[]){4, 1, 4, 4}, 1, dt, NG_F32,
                  ng_mixed_tol(dt, 13, 24));
    /* ViT with 2 blocks: patch embedding 4, two blocks 34 each, final norm 1, class pooling (a
     * copy) and head 2 + 1: n = 76. A long chain, so its bound is loose; errors of independent
     * roundings add like a random walk in practice. */
    ng_arch_defaults("vit", &cur);
    cur.img = 8, cur.patch = 4, cur.width = 12, cur.depth = 2, cur.heads = 2, cur.classes = 3;
    ng_mixedcheck("vit", make_cur, 4, (int64_t[]){2, 1, 8, 8}, 1, dt, NG_F32,
                  ng_mixed_tol(dt, 76, 24));
    /* 3D-CNN, 3 conv layers with batch norm and ReLU, global pooling and head. Forward: conv 2,
     * BN 1 (ReLU exact) per layer, pooling 1, head 2: 12. Backward: head dx 1, pooling 1, per
     * layer BN 1 and conv 2 (column gradients, col2im): 11. n = 23; reductions of 2 x 27 = 54.
     * Small on purpose: every ReLU input within rounding distance of 0 may switch sides (see
     * ng_mixedcheck), and few units keep switch-free draws likely in bf16. */
    ng_arch_defaults("cnn3d", &cur);
    cur.img = 3, cur.width = 2, cur.depth = 3, cur.classes = 3;
    ng_mixedcheck("cnn3d", make_cur, 5, (int64_t[]){2, 1, 3, 3, 3}, 1, dt, NG_F32,
                  ng_mixed_tol(dt, 23, 54));
}

/* Activation memory: the arena's high-water mark of forward + backward for the 3D-CNN and the
 * ViT, f32 against the compute dtype on the same input. Every activation and activation gradient
 * is half the bytes; what does not shrink is per-channel or per-row statistics (f64/f32) and the
 * arena's alignment of each tensor, a few percent at these sizes: the peak must fall to at most
 * 0.55 of f32's. */
static size_t peak_of(ng_dtype compute, int64_t ndim, const int64_t *shape, size_t *grads_peak) {
    ng_model *m = ng_model_new(make_cur());
    if (compute == NG_F32)
        ng_model_build(m, NG_CPU, NG_F32, 5, 64 << 20, 64 << 20);
    else
        ng_model_build_mixed(m, NG_CPU, compute, 5, 64 << 20, 64 << 20);
    ng_tensor x = ng_tensor_new(compute, NG_CPU, (int)ndim, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 5, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_arena_tensor(ctx.acts, y.dtype, y.ndim, y.shape, "dy");
    ng_test_fill_uniform(&dy, -1, 1);
    ng_model_backward(m, &ctx, &dy);
    size_t peak = m->acts.peak;
    *grads_peak = m->grads.peak;
    ng_tensor_free(&x);
    ng_model_free(m);
    return peak;
}

static void activation_memory(void) {
    struct {
        const char *arch;
        int64_t ndim, shape[5];
    } cases[2] = {{"cnn3d", 5, {2, 1, 24, 24, 24}}, {"vit", 4, {8, 1, 28, 28}}};
    for (int c = 0; c < 2; c++) {
        ng_arch_defaults(cases[c].arch, &cur);
        if (c == 0)
            cur.img = 24;
        else
            cur.img = 28, cur.patch = 4, cur.width = 48, cur.depth = 3, cur.heads = 3;
        size_t g32, g16, gbf;
        size_t p32 = peak_of(NG_F32, cases[c].ndim, cases[c].shape, &g32);
        size_t p16 = peak_of(NG_F16, cases[c].ndim, cases[c].shape, &g16);
        size_t pbf = peak_of(NG_BF16, cases[c].ndim, cases[c].shape, &gbf);
        if (getenv("NG_TEST_VERBOSE"))
            printf("%s activation arena peak: f32 %zu, f16 %zu, bf16 %zu bytes; gradient arena "
                   "peak: f32 %zu, f16 %zu, bf16 %zu bytes\n",
                   cases[c].arch, p32, p16, pbf, g32, g16, gbf);
        NG_TEST(p16 <= 0.55 * (double)p32 && pbf == p16,
                "%s: activation peak f16 %zu / bf16 %zu bytes against f32 %zu", cases[c].arch, p16,
                pbf, p32);
    }
}

int main(void) {
    ng_test_seed();
    ng_dtype dts[2] = {NG_F16, NG_BF16};
    for (int i = 0; i < 2; i++) {
        refresh(dts[i]);
        layers(dts[i]);
        vit_layers(dts[i]);
        conv_layers(dts[i]);
        xent(dts[i]);
        models(dts[i]);
    }
    activation_memory();
    return ng_test_finish("test_mixed");
}
