/* Transformer layers (LayerNorm, attention, patch embedding, class pooling, blocks, whole ViT):
 * backward against finite differences in float64, forward against plain-loop references,
 * timm's parameter names and counts, init, observers, checkpointing and bad-input errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/attention.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "nn/patch_embed.h"
#include "nn/transformer.h"
#include "testing.h"

#define ARENA ((size_t)16 << 20)

/* ---- makers ------------------------------------------------------------------------------ */

static ng_layer *make_ln(void) {
    return ng_layernorm("norm", 8, 1e-5);
}
static ng_layer *make_attn(void) {
    return ng_attention("attn", 8, 2, 1);
}
static ng_layer *make_attn_nobias(void) {
    return ng_attention("attn", 8, 2, 0);
}
static ng_layer *make_pe(void) {
    return ng_patch_embed("patch_embed", 8, 4, 3, 6);
}
static ng_layer *make_pool(void) {
    return ng_cls_pool("pool");
}
static ng_layer *make_block(void) {
    return ng_transformer_block("blocks.0", 8, 2, 4.0, 0, 0);
}
static ng_layer *make_block_ck(void) {
    return ng_transformer_block("blocks.0", 8, 2, 4.0, 0, 1);
}
static ng_layer *make_block_drop_ck(void) {
    return ng_transformer_block("blocks.0", 8, 2, 4.0, 0.25, 1);
}

static ng_vit_config tiny_config(int checkpoint) {
    return (ng_vit_config){.img_size = 8,
                           .patch = 4,
                           .in_ch = 3,
                           .dim = 8,
                           .depth = 2,
                           .heads = 2,
                           .classes = 3,
                           .mlp_ratio = 4.0,
                           .drop = 0,
                           .checkpoint = {.every = checkpoint}};
}
static ng_layer *make_vit(void) {
    ng_vit_config c = tiny_config(0);
    return ng_vit(&c);
}
static ng_layer *make_vit_ck(void) {
    ng_vit_config c = tiny_config(1);
    return ng_vit(&c);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static ng_model *build(ng_layer *root, ng_dtype dt) {
    ng_model *m = ng_model_new(root);
    ng_model_build(m, NG_CPU, dt, ng_test_seed(), ARENA, ARENA);
    return m;
}

/* Random parameters: initial values (unit norms, zero biases) would hide mistakes. */
static void randomize(ng_model *m) {
    for (int i = 0; i < m->nparams; i++) ng_test_fill_uniform(&m->params[i].param->value, -1, 1);
}

static double *param64(ng_model *m, const char *name) {
    ng_param_entry *e = ng_model_find(m, name);
    if (!e) {
        ng_test_fail("parameter %s is missing", name);
        exit(1);
    }
    return ng_test_to_f64(&e->param->value);
}

static ng_tensor forward(ng_model *m, const ng_tensor *x, int training) {
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, training, 11, 2);
    return ng_model_forward(m, &ctx, x);
}

/* ---- LayerNorm --------------------------------------------------------------------------- */

/* Plain loops in double from the stored (possibly f32) inputs and parameters. */
static void ref_layernorm(const double *x, const double *w, const double *b, double eps,
                          int64_t rows, int64_t d, double *y) {
    for (int64_t r = 0; r < rows; r++) {
        double mu = 0, var = 0;
        for (int64_t i = 0; i < d; i++) mu += x[r * d + i];
        mu /= (double)d;
        for (int64_t i = 0; i < d; i++) var += (x[r * d + i] - mu) * (x[r * d + i] - mu);
        var /= (double)d;
        for (int64_t i = 0; i < d; i++)
            y[r * d + i] = (x[r * d + i] - mu) / sqrt(var + eps) * w[i] + b[i];
    }
}

static void test_layernorm_forward(ng_dtype dt) {
    int64_t d = 24;
    double eps = 1e-5;
    ng_model *m = build(ng_layernorm("norm", d, eps), dt);
    randomize(m);
    /* Inputs offset from 0 with a small spread, where a one-pass variance would cancel. */
    ng_tensor x = ng_tensor_3d(dt, NG_CPU, 3, 5, d, "x");
    ng_test_fill_uniform(&x, 3.0, 3.5);
    ng_tensor y = forward(m, &x, 1);
    double *x64 = ng_test_to_f64(&x), *y64 = ng_test_to_f64(&y),
           *ref = malloc(sizeof(double) * x.numel);
    double *w = param64(m, "norm.weight"), *b = param64(m, "norm.bias");
    ref_layernorm(x64, w, b, eps, 15, d, ref);
    /* f64: only summation order differs (~d ulps of terms of size ~4). f32: the CPU twin works
     * in double and rounds once at the end, so the error is half an ulp of y (2^-24 relative). */
    if (dt == NG_F64)
        ng_test_close("layernorm f64 forward vs loops", ref, y64, x.numel, 1e-13, 1e-13);
    else
        ng_test_close("layernorm f32 forward vs loops", ref, y64, x.numel, 0x1p-24, 1e-12);
    free(x64), free(y64), free(ref), free(w), free(b);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* ---- attention --------------------------------------------------------------------------- */

/* Independent multi-head attention in double: q, k, v from the timm (qkv, head, hd) layout. */
static void ref_attention(const double *x, int64_t B, int64_t T, int64_t D, int64_t H,
                          const double *wqkv, const double *bqkv, const double *wp,
                          const double *bp, double *y) {
    int64_t hd = D / H;
    double *qkv = malloc(sizeof(double) * B * T * 3 * D),
           *merged = malloc(sizeof(double) * B * T * D);
    double *p = malloc(sizeof(double) * T);
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t j = 0; j < 3 * D; j++) {
            double s = bqkv ? bqkv[j] : 0;
            for (int64_t i = 0; i < D; i++) s += x[r * D + i] * wqkv[j * D + i];
            qkv[r * 3 * D + j] = s;
        }
#define Q(b, t, h, e) qkv[((b)*T + (t)) * 3 * D + 0 * D + (h)*hd + (e)]
#define K(b, t, h, e) qkv[((b)*T + (t)) * 3 * D + 1 * D + (h)*hd + (e)]
#define V(b, t, h, e) qkv[((b)*T + (t)) * 3 * D + 2 * D + (h)*hd + (e)]
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t t = 0; t < T; t++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t u = 0; u < T; u++) {
                    double s = 0;
                    for (int64_t e = 0; e < hd; e++) s += Q(b, t, h, e) * K(b, u, h, e);
                    p[u] = s / sqrt((double)hd);
                    if (p[u] > mx) mx = p[u];
                }
                for (int64_t u = 0; u < T; u++) sum += (p[u] = exp(p[u] - mx));
                for (int64_t e = 0; e < hd; e++) {
                    double o = 0;
                    for (int64_t u = 0; u < T; u++) o += p[u] / sum * V(b, u, h, e);
                    merged[(b * T + t) * D + h * hd + e] = o;
                }
            }
#undef Q
#undef K
#undef V
    for (int64_t r = 0; r < B * T; r++)
        for (int64_t j = 0; j < D; j++) {
            double s = bp[j];
            for (int64_t i = 0; i < D; i++) s += merged[r * D + i] * wp[j * D + i];
            y[r * D + j] = s;
        }
    free(qkv), free(merged), free(p);
}

static void test_attention_forward(int qkv_bias) {
    int64_t B = 2, T = 5, D = 8, H = 2;
    ng_model *m = build(ng_attention("attn", D, H, qkv_bias), NG_F64);
    randomize(m);
    NG_TEST(m->nparams == (qkv_bias ? 4 : 3), "attention has %d parameters", m->nparams);
    ng_tensor x = ng_tensor_3d(NG_F64, NG_CPU, B, T, D, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_tensor y = forward(m, &x, 1);
    double *wqkv = param64(m, "attn.qkv.weight"), *wp = param64(m, "attn.proj.weight");
    double *bp = param64(m, "attn.proj.bias"),
           *bqkv = qkv_bias ? param64(m, "attn.qkv.bias") : NULL;
    double *ref = malloc(sizeof(double) * x.numel), *y64 = ng_test_to_f64(&y);
    ref_attention(x.data, B, T, D, H, wqkv, bqkv, wp, bp, ref);
    /* Sums of at most 3D = 24 f64 terms of size <= ~10 in a different order: errors ~1e-14. */
    ng_test_close(qkv_bias ? "attention forward vs loops" : "attention (no qkv bias) vs loops", ref,
                  y64, x.numel, 1e-11, 1e-11);
    free(wqkv), free(wp), free(bp), free(bqkv), free(ref), free(y64);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* ---- patch embedding and pooling -------------------------------------------------------- */

static void test_patch_embed_forward(void) {
    int64_t B = 2, C = 3, S = 8, P = 4, D = 6, G = S / P, N = G * G, T = 1 + N;
    ng_model *m = build(ng_patch_embed("patch_embed", S, P, C, D), NG_F64);
    randomize(m);
    ng_param_entry *w = ng_model_find(m, "patch_embed.proj.weight");
    NG_TEST(w && w->param->value.ndim == 4 && w->param->value.shape[0] == D &&
                w->param->value.shape[1] == C && w->param->value.shape[2] == P &&
                w->param->value.shape[3] == P,
            "patch_embed.proj.weight is [dim, C, P, P] like timm's conv weight");
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, (int64_t[]){B, C, S, S}, "images");
    ng_test_fill_uniform(&x, -1, 1);
    ng_tensor y = forward(m, &x, 1);
    NG_TEST(y.ndim == 3 && y.shape[0] == B && y.shape[1] == T && y.shape[2] == D,
            "patch_embed output is [B, 1 + N, dim]: %s", ng_tensor_desc(&y));
    double *W = param64(m, "patch_embed.proj.weight"), *bias = param64(m, "patch_embed.proj.bias");
    double *cls = param64(m, "cls_token"), *pos = param64(m, "pos_embed");
    double *ref = malloc(sizeof(double) * y.numel), *y64 = ng_test_to_f64(&y);
    const double *xs = x.data;
    /* A stride-P convolution, flattened over (row, col) of the patch grid, as timm does. */
    for (int64_t b = 0; b < B; b++) {
        for (int64_t d = 0; d < D; d++) ref[(b * T) * D + d] = cls[d] + pos[d];
        for (int64_t py = 0; py < G; py++)
            for (int64_t px = 0; px < G; px++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t t = 1 + py * G + px;
                    double s = bias[d] + pos[t * D + d];
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t i = 0; i < P; i++)
                            for (int64_t j = 0; j < P; j++)
                                s += W[((d * C + c) * P + i) * P + j] *
                                     xs[((b * C + c) * S + py * P + i) * S + px * P + j];
                    ref[(b * T + t) * D + d] = s;
                }
    }
    ng_test_close("patch_embed forward vs convolution loops", ref, y64, y.numel, 1e-12, 1e-12);
    free(W), free(bias), free(cls), free(pos), free(ref), free(y64);
    ng_tensor_free(&x);
    ng_model_free(m);
}

static void test_cls_pool(void) {
    int64_t B = 3, T = 5, D = 4;
    ng_model *m = build(ng_cls_pool("pool"), NG_F64);
    ng_tensor x = ng_tensor_3d(NG_F64, NG_CPU, B, T, D, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_tensor y = forward(m, &x, 1);
    double *y64 = ng_test_to_f64(&y), ref[12];
    for (int64_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++) ref[b * D + d] = ((double *)x.data)[b * T * D + d];
    NG_TEST(y.ndim == 2 && y.shape[0] == B && y.shape[1] == D, "cls_pool output is [B, D]");
    ng_test_close("cls_pool takes token 0", ref, y64, B * D, 0, 0);
    /* Backward: dy lands on token 0, every other token's gradient is exactly 0. */
    ng_tensor dy = ng_tensor_2d(NG_F64, NG_CPU, B, D, "dy"),
              dx = ng_tensor_3d(NG_F64, NG_CPU, B, T, D, "dx");
    ng_test_fill_uniform(&dy, -1, 1);
    ng_test_poison(&dx);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    double *dx64 = ng_test_to_f64(&dx), *want = calloc((size_t)dx.numel, sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t d = 0; d < D; d++) want[b * T * D + d] = ((double *)dy.data)[b * D + d];
    ng_test_close("cls_pool backward scatters into token 0", want, dx64, dx.numel, 0, 0);
    free(y64), free(dx64), free(want);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dx);
    ng_model_free(m);
}

/* ---- blocks: checkpointing changes memory, not results ---------------------------------- */

/* Three blocks in a row, plain or checkpointed: same seed, same input, one training step. */
static void run_block(int checkpoint, double drop, uint64_t seed, const ng_tensor *x,
                      const ng_tensor *dy, double **y, double **g, size_t *peak, int64_t *ng) {
    ng_layer *root = ng_sequence("");
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof name, "blocks.%d", i);
        ng_layer_add_child(root, ng_transformer_block(name, 8, 2, 4.0, drop, checkpoint));
    }
    ng_model *m = ng_model_new(root);
    ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
    ng_ctx ctx = ng_model_ctx(m, 1, 5, 9);
    ng_tensor out = ng_model_forward(m, &ctx, x);
    *y = ng_test_to_f64(&out); /* before backward, which hands the activations back */
    ng_model_backward(m, &ctx, dy);
    *g = ng_test_to_f64(&m->flat_grads);
    *peak = m->acts.peak;
    *ng = m->numel;
    ng_model_free(m);
}

static void test_block_checkpoint(double drop) {
    ng_tensor x = ng_tensor_3d(NG_F64, NG_CPU, 2, 5, 8, "x");
    ng_tensor dy = ng_tensor_3d(NG_F64, NG_CPU, 2, 5, 8, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    /* Both models start from the same seed: identical parameters without randomize(). */
    uint64_t seed = ng_test_seed() + 17;
    double *y0, *g0, *y1, *g1;
    size_t p0, p1;
    int64_t ny = x.numel, ng;
    run_block(0, drop, seed, &x, &dy, &y0, &g0, &p0, &ng);
    run_block(1, drop, seed, &x, &dy, &y1, &g1, &p1, &ng);
    const char *what = drop > 0 ? "block with dropout" : "block";
    char label[128];
    snprintf(label, sizeof label, "%s: checkpointed output equals plain", what);
    ng_test_close(label, y0, y1, ny, 0, 0);
    snprintf(label, sizeof label, "%s: checkpointed gradients equal plain", what);
    ng_test_close(label, g0, g1, ng, 0, 0);
    /* Without checkpointing each of the 3 blocks keeps its interior, at least its [2,5,32] MLP
     * hidden activation; with it, only one block's interior exists at a time. */
    NG_TEST(p1 + 2 * (2 * 5 * 32 * sizeof(double)) <= p0,
            "%s: checkpointing saves activation memory: %zu vs %zu bytes", what, p1, p0);
    free(y0), free(g0), free(y1), free(g1);
    ng_tensor_free(&x), ng_tensor_free(&dy);
}

/* ---- the whole ViT: names, counts, init, observers ------------------------------------- */

static void test_vit_names(void) {
    ng_vit_config c = tiny_config(0);
    ng_model *m = ng_model_new(ng_vit(&c));
    const char *per_block[] = {"norm1.weight",  "norm1.bias",       "attn.qkv.weight",
                               "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                               "norm2.weight",  "norm2.bias",       "mlp.fc1.weight",
                               "mlp.fc1.bias",  "mlp.fc2.weight",   "mlp.fc2.bias"};
    char want[64][64];
    int n = 0;
    const char *head[] = {"cls_token", "pos_embed", "patch_embed.proj.weight",
                          "patch_embed.proj.bias"};
    for (int i = 0; i < 4; i++) snprintf(want[n++], 64, "%s", head[i]);
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 12; i++) snprintf(want[n++], 64, "blocks.%d.%s", b, per_block[i]);
    const char *tail[] = {"norm.weight", "norm.bias", "head.weight", "head.bias"};
    for (int i = 0; i < 4; i++) snprintf(want[n++], 64, "%s", tail[i]);
    int same = m->nparams == n;
    for (int i = 0; same && i < n; i++) {
        if (strcmp(m->params[i].param->name, want[i])) {
            ng_test_fail("vit parameter %d is %s, timm's is %s", i, m->params[i].param->name,
                         want[i]);
            same = 0;
        }
    }
    NG_TEST(same, "vit tiny: %d parameters with timm's names in timm's order (%d expected)",
            m->nparams, n);
    /* Shapes that matter for loading timm weights. */
    ng_param_entry *pos = ng_model_find(m, "pos_embed"),
                   *qkv = ng_model_find(m, "blocks.1.attn.qkv.weight");
    ng_param_entry *cls = ng_model_find(m, "cls_token");
    NG_TEST(pos && pos->param->value.ndim == 3 && pos->param->value.shape[1] == 5 &&
                pos->param->value.shape[2] == 8,
            "pos_embed is [1, 5, 8]");
    NG_TEST(cls && cls->param->value.ndim == 3 && cls->param->value.numel == 8,
            "cls_token is [1, 1, 8]");
    NG_TEST(qkv && qkv->param->value.shape[0] == 24 && qkv->param->value.shape[1] == 8,
            "qkv weight is [3 dim, dim]");
    int nodecay_ok = 1;
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        int decays =
            p->value.ndim >= 2 && strcmp(p->name, "pos_embed") && strcmp(p->name, "cls_token");
        if (p->decay != decays) {
            ng_test_fail("%s: weight decay %d, expected %d", p->name, p->decay, decays);
            nodecay_ok = 0;
        }
    }
    NG_TEST(nodecay_ok, "weight decay only on matrices (not norms, biases, cls_token, pos_embed)");
    ng_model_free(m);
}

/* Parameter counts of timm's models (timm's own figures). */
static void test_presets(void) {
    const struct {
        const char *name;
        int64_t count;
    } known[] = {{"vit_tiny_patch16_224", 5717416},
                 {"vit_small_patch16_224", 22050664},
                 {"vit_base_patch16_224", 86567656}};
    for (int i = 0; i < 3; i++) {
        ng_vit_config c;
        int ok = ng_vit_preset(known[i].name, &c);
        NG_TEST(ok, "preset %s exists", known[i].name);
        if (!ok) continue;
        ng_model *m = ng_model_new(ng_vit(&c));
        NG_TEST(m->count == known[i].count, "%s has %lld parameters, timm says %lld", known[i].name,
                (long long)m->count, (long long)known[i].count);
        ng_model_free(m);
    }
    ng_vit_config c;
    NG_TEST(ng_vit_preset("vit_tiny_patch4_28", &c) && c.img_size == 28 && c.patch == 4 &&
                c.in_ch == 1 && c.dim == 192 && c.heads == 3 && c.depth == 12,
            "vit_tiny_patch4_28: MNIST-sized ViT-Tiny");
    NG_TEST(ng_vit_preset("vit_tiny_patch4_32", &c) && c.img_size == 32 && c.in_ch == 3 &&
                c.dim == 192,
            "vit_tiny_patch4_32: CIFAR-sized ViT-Tiny");
    /* 7x7 patches of 4x4 on 28px: 50 tokens. */
    ng_vit_preset("vit_tiny_patch4_28", &c);
    ng_model *m = ng_model_new(ng_vit(&c));
    ng_param_entry *pos = ng_model_find(m, "pos_embed");
    NG_TEST(pos && pos->param->value.shape[1] == 50, "vit_tiny_patch4_28 has 1 + 7*7 tokens");
    ng_model_free(m);
    NG_TEST(!ng_vit_preset("vit_huge_patch99", &c), "an unknown preset returns 0");
}

/* timm's init: Linear weights trunc_normal(0.02), zero biases, LayerNorm 1/0, the patch conv
 * at PyTorch's default, cls_token ~1e-6, pos_embed trunc_normal(0.02). */
static void test_vit_init(void) {
    ng_vit_config c = tiny_config(0);
    c.dim = 32, c.heads = 4;
    ng_model *m = build(ng_vit(&c), NG_F64);
    int ok = 1;
    for (int i = 0; i < m->nparams; i++) {
        ng_param *p = m->params[i].param;
        double *v = ng_test_to_f64(&p->value), mx = 0, ss = 0;
        for (int64_t j = 0; j < p->value.numel; j++) mx = fmax(mx, fabs(v[j])), ss += v[j] * v[j];
        double rms = sqrt(ss / (double)p->value.numel);
        const char *n = p->name;
        size_t len = strlen(n);
        int is_bias = len > 5 && !strcmp(n + len - 5, ".bias");
        int is_norm = strstr(n, "norm") != NULL;
        int good;
        if (!strcmp(n, "patch_embed.proj.weight") || !strcmp(n, "patch_embed.proj.bias"))
            good = mx <= 1.0 / sqrt(48.0) && rms > 0.25 / sqrt(48.0); /* uniform 1/sqrt(fan_in) */
        else if (!strcmp(n, "cls_token"))
            good = mx > 0 && mx < 1e-5;
        else if (is_norm)
            good = ss == (is_bias ? 0.0 : (double)p->value.numel) && mx == (is_bias ? 0.0 : 1.0);
        else if (is_bias)
            good = mx == 0;
        else /* Linear weights and pos_embed: trunc_normal(0.02) cuts at an absolute 2 (timm),
              * so in practice a normal: no value past 6 std, rms near 0.02 */
            good = mx <= 0.12 && rms > 0.01 && rms < 0.03;
        if (!good) {
            ng_test_fail("vit init: %s has max |v| %g, rms %g", n, mx, rms);
            ok = 0;
        }
        free(v);
    }
    NG_TEST(ok, "vit init follows timm for all %d parameters", m->nparams);
    ng_model_free(m);
}

/* Every Linear (patch projection, qkv, proj, fc1, fc2, head) is seen once per step, also when
 * checkpointed, and the patch projection shows observers a plain [dim, C*P*P] matrix. */
static int n_in, n_grad, matrix_ok = 1;
static char seen[16][80];
static void on_input(void *s, ng_layer *l, const ng_tensor *x) {
    (void)s;
    if (n_in < 16) snprintf(seen[n_in], 80, "%s", l->name);
    n_in++;
    int64_t in, out;
    int bias;
    ng_linear_dims(l, &in, &out, &bias);
    const ng_tensor *w = &l->params[0].value;
    if (w->ndim != 2 || w->shape[0] != out || w->shape[1] != in || x->ndim != 2 ||
        x->shape[1] != in)
        matrix_ok = 0;
}
static void on_grad(void *s, ng_layer *l, const ng_tensor *g) {
    (void)s, (void)l, (void)g;
    n_grad++;
}

static void test_vit_observer(void) {
    ng_vit_config c = tiny_config(1);
    ng_model *m = build(ng_vit(&c), NG_F32);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){2, 3, 8, 8}, "images");
    ng_tensor dy = ng_tensor_2d(NG_F32, NG_CPU, 2, 3, "dlogits");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_observer obs = {.input = on_input, .output_grad = on_grad};
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.observer = &obs;
    ng_model_forward(m, &ctx, &x);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(n_in == 10 && n_grad == 10, "10 Linear layers observed once each: %d inputs, %d grads",
            n_in, n_grad);
    const char *order[] = {"patch_embed.proj",   "blocks.0.attn.qkv",
                           "blocks.0.attn.proj", "blocks.0.mlp.fc1",
                           "blocks.0.mlp.fc2",   "blocks.1.attn.qkv",
                           "blocks.1.attn.proj", "blocks.1.mlp.fc1",
                           "blocks.1.mlp.fc2",   "head"};
    int names_ok = n_in == 10;
    for (int i = 0; names_ok && i < 10; i++) names_ok = !strcmp(seen[i], order[i]);
    NG_TEST(names_ok, "observers see the Linear layers in forward order");
    NG_TEST(matrix_ok, "observers see every weight as [out, in] and inputs as [rows, in]");
    ng_param_entry *w = ng_model_find(m, "patch_embed.proj.weight");
    NG_TEST(w->param->value.ndim == 4 && w->param->grad.ndim == 4,
            "patch_embed.proj.weight is 4-D again after the passes");
    ng_tensor_free(&x), ng_tensor_free(&dy);
    ng_model_free(m);
}

/* ---- bad input --------------------------------------------------------------------------- */

static void test_errors(void) {
    ng_test_forward_error(ng_layernorm("blocks.2.norm1", 8, 1e-6), 3, (int64_t[]){2, 5, 7}, 1,
                          "blocks.2.norm1");
    ng_test_forward_error(ng_attention("blocks.1.attn", 8, 2, 1), 3, (int64_t[]){2, 5, 6}, 1,
                          "blocks.1.attn");
    ng_test_forward_error(ng_attention("blocks.1.attn", 8, 2, 1), 2, (int64_t[]){5, 8}, 1,
                          "blocks.1.attn");
    NG_TEST_ERROR(ng_attention("blocks.3.attn", 10, 3, 1), "blocks.3.attn");
    NG_TEST_ERROR(ng_patch_embed("patch_embed", 30, 4, 3, 8), "image size 30 is not divisible");
    ng_test_forward_error(ng_patch_embed("patch_embed", 8, 4, 3, 6), 4, (int64_t[]){2, 3, 12, 12},
                          1, "patch_embed");
    ng_test_forward_error(ng_patch_embed("patch_embed", 8, 4, 3, 6), 4, (int64_t[]){2, 1, 8, 8}, 1,
                          "patch_embed");
    ng_test_forward_error(ng_cls_pool("pool"), 2, (int64_t[]){2, 8}, 1, "pool");
    ng_test_forward_error(make_vit(), 4, (int64_t[]){2, 3, 16, 16}, 1, "patch_embed");
    ng_test_forward_error(make_block(), 3, (int64_t[]){2, 5, 9}, 1, "blocks.0.norm1");
    ng_vit_config c = tiny_config(0);
    c.img_size = 10;
    NG_TEST_ERROR(ng_vit(&c), "img_size 10 is not divisible by patch 4");
    c = tiny_config(0);
    c.heads = 3;
    NG_TEST_ERROR(ng_vit(&c), "heads 3");
    c = tiny_config(0);
    c.classes = 0;
    NG_TEST_ERROR(ng_vit(&c), "classes");
    c = tiny_config(0);
    c.drop = 1.5;
    NG_TEST_ERROR(ng_vit(&c), "drop");
}

int main(void) {
    ng_gradcheck_opts o = {0}, train = {.training = 1};
    int64_t tok[3] = {2, 5, 8}, img[4] = {2, 3, 8, 8};

    ng_gradcheck("layernorm", make_ln, 3, tok, o);
    ng_gradcheck("layernorm 2-D", make_ln, 2, (int64_t[]){6, 8}, o);
    test_layernorm_forward(NG_F64);
    test_layernorm_forward(NG_F32);

    ng_gradcheck("attention", make_attn, 3, tok, o);
    ng_gradcheck("attention without qkv bias", make_attn_nobias, 3, tok, o);
    test_attention_forward(1);
    test_attention_forward(0);

    ng_gradcheck("patch_embed", make_pe, 4, img, o);
    test_patch_embed_forward();
    ng_gradcheck("cls_pool", make_pool, 3, tok, o);
    test_cls_pool();

    ng_gradcheck("transformer block", make_block, 3, tok, o);
    ng_gradcheck("transformer block, checkpointed", make_block_ck, 3, tok, o);
    ng_gradcheck("transformer block, dropout, checkpointed", make_block_drop_ck, 3, tok, train);
    test_block_checkpoint(0);
    test_block_checkpoint(0.25);

    ng_gradcheck("vit tiny", make_vit, 4, img, o);
    ng_gradcheck("vit tiny, checkpointed", make_vit_ck, 4, img, o);
    test_vit_names();
    test_presets();
    test_vit_init();
    test_vit_observer();
    test_errors();
    return ng_test_finish("test_transformer");
}
