/* fp16 inference on the CPU (evaluation forwards, f32 masters rounded to fp16) in both of its
 * arithmetics: f32 arithmetic on widened halves (every CPU), and fp16 arithmetic (core/hgemm.h),
 * run here through its scalar model, which gives the bits of the Arm FP16 and AVX512-FP16 tiles
 * (tests/test_hgemm.c, tests/hgemm_cross.sh), so natgrad's use of it is checked on any CPU.
 *
 * - Wiring: an evaluation forward of Linear and of 2-D and 3-D convolutions (odd sizes, stride,
 *   padding, dilation, batch 1) in fp16 arithmetic has exactly the bits of ng_hgemm on operands
 *   built independently (the weights transposed by hand; ng_im2col's columns, transposed, then
 *   the bias added as the f32 path adds it); training forwards keep the f32 arithmetic (the bits
 *   of the same forward with fp16 arithmetic turned off).
 * - Whole models (MLP, LeNet, VGG with batch norm, NIN) in evaluation mode against f32 on the
 *   same numbers, their outputs (ng_mixedcheck_eval), in each arithmetic, with the tolerance of
 *   tests/test_mixed.c: 2 n u + k 2^-24 for n stored roundings on the forward chain and
 *   reductions of length k. fp16 arithmetic adds, per GEMM on the chain, the fp16 sums of
 *   NG_HGEMM_BLOCK = 32 terms: gamma_32(u) S, which at the conditioning test_mixed assumes (S
 *   within 2|y|) counts as 16 more roundings.
 * - The plan: evaluation forwards in fp16 arithmetic use the scratch ng_plan_eval predicts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hgemm.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "nn/models.h"
#include "nn/plan.h"
#include "testing.h"

/* Runs l (taken) as an fp16 model's forward on a random input; returns the model (free it), the
 * input and output through x and y. */
static ng_model *forward(ng_layer *l, int ndim, const int64_t *shape, int training, ng_tensor *x,
                         ng_tensor *y) {
    ng_model *m = ng_model_new(l);
    ng_model_build_mixed(m, NG_CPU, NG_F16, ng_test_seed(), 8 << 20, 8 << 20);
    *x = ng_tensor_new(NG_F16, NG_CPU, ndim, shape, "x");
    ng_test_fill_uniform(x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, training, 1, 0);
    *y = ng_model_forward(m, &ctx, x);
    return m;
}

static int same_bits(const ng_tensor *y, const ng_f16 *want) {
    return !memcmp(y->data, want, sizeof(ng_f16) * (size_t)y->numel);
}

/* A training forward with fp16 arithmetic available gives the bits of one without it: m's
 * forward on x again with the kind NG_HGEMM_NONE, against y. */
static int training_keeps_f32(ng_model *m, const ng_tensor *x, const ng_tensor *y) {
    ng_f16 *first = malloc(2 * (size_t)y->numel);
    memcpy(first, y->data, 2 * (size_t)y->numel);
    ng_hgemm_force(NG_HGEMM_NONE);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor again = ng_model_forward(m, &ctx, x);
    int same = same_bits(&again, first);
    ng_hgemm_force(NG_HGEMM_MODEL);
    free(first);
    return same;
}

static void linear_wiring(int training) {
    int64_t in = ng_test_int(1, 70), out = ng_test_int(1, 40), rows = ng_test_int(1, 9);
    ng_tensor x, y;
    ng_model *m = forward(ng_linear("fc", in, out, 1), 2, (int64_t[]){rows, in}, training, &x, &y);
    const ng_f16 *w = m->root->params[0].compute.data, *b = m->root->params[1].compute.data;
    ng_f16 *wt = malloc(sizeof(ng_f16) * (size_t)(in * out)), *want = malloc(2 * (size_t)y.numel);
    for (int64_t k = 0; k < in; k++)
        for (int64_t o = 0; o < out; o++) wt[k * out + o] = w[o * in + k];
    ng_hgemm(rows, out, in, x.data, in, wt, out, b, want, out);
    if (training)
        NG_TEST(training_keeps_f32(m, &x, &y),
                "linear %lld -> %lld, training: took fp16 arithmetic", (long long)in,
                (long long)out);
    else
        NG_TEST(same_bits(&y, want), "linear %lld -> %lld, %lld rows: not ng_hgemm's bits",
                (long long)in, (long long)out, (long long)rows);
    free(wt), free(want);
    ng_tensor_free(&x);
    ng_model_free(m);
}

static void conv_wiring(int nd, int training) {
    int64_t k[3], st[3], pad[3], dil[3], shape[5];
    int64_t C = ng_test_int(1, 4), O = ng_test_int(1, 7), N = ng_test_int(1, 2);
    shape[0] = N, shape[1] = C;
    for (int i = 0; i < nd; i++) {
        k[i] = ng_test_int(1, 3), st[i] = ng_test_int(1, 2), pad[i] = ng_test_int(0, 1);
        dil[i] = ng_test_int(1, 2);
        shape[2 + i] = (k[i] - 1) * dil[i] + 1 + ng_test_int(0, nd == 2 ? 6 : 3);
    }
    ng_tensor x, y;
    ng_model *m =
        forward(ng_conv("conv", nd, C, O, k, st, pad, dil, 1), nd + 2, shape, training, &x, &y);
    ng_conv_geom g = ng_conv_geometry(m->root);
    const ng_tensor *W = &m->root->params[0].compute, *b = &m->root->params[1].compute;
    int64_t K = W->numel / O, P = y.numel / (N * O);
    ng_tensor cols = ng_tensor_new(NG_F16, NG_CPU, 2, (int64_t[]){P, K}, "cols");
    ng_f16 *colsT = malloc(2 * (size_t)(K * P)), *want = malloc(2 * (size_t)y.numel);
    for (int64_t n = 0; n < N; n++) {
        ng_im2col(&x, n, &g, 0, P, &cols);
        const ng_f16 *c = cols.data;
        for (int64_t p = 0; p < P; p++)
            for (int64_t j = 0; j < K; j++) colsT[j * P + p] = c[p * K + j];
        ng_f16 *yn = want + n * O * P;
        ng_hgemm(O, P, K, W->data, K, colsT, P, NULL, yn, P);
        for (int64_t o = 0; o < O; o++) /* the bias as the f32 path adds it: f32, one rounding */
            for (int64_t p = 0; p < P; p++)
                yn[o * P + p] = ng_f32_to_f16(ng_f16_to_f32(yn[o * P + p]) +
                                              ng_f16_to_f32(((const ng_f16 *)b->data)[o]));
    }
    if (training)
        NG_TEST(training_keeps_f32(m, &x, &y), "conv%dd training: took fp16 arithmetic", nd);
    else
        NG_TEST(same_bits(&y, want),
                "conv%dd C %lld O %lld N %lld (K %lld, P %lld): not ng_hgemm's bits", nd,
                (long long)C, (long long)O, (long long)N, (long long)K, (long long)P);
    free(colsT), free(want);
    ng_tensor_free(&cols), ng_tensor_free(&x);
    ng_model_free(m);
}

static ng_arch cur;
static ng_layer *make_cur(void) {
    return ng_arch_build(&cur);
}

/* n: stored roundings of the f32-arithmetic run; gemms: GEMMs on the forward chain. */
static void model_check(const char *arch, int64_t img, int64_t width, int depth, int n, int gemms,
                        int64_t k, int fp16_arith) {
    ng_arch_defaults(arch, &cur);
    cur.img = img, cur.width = width, cur.depth = depth, cur.classes = 3;
    int64_t shape[4] = {2, cur.in_ch, img, img};
    char what[80];
    snprintf(what, sizeof what, "%s eval, %s arithmetic", arch, fp16_arith ? "fp16" : "f32");
    ng_hgemm_force(fp16_arith ? NG_HGEMM_MODEL : NG_HGEMM_NONE);
    ng_mixedcheck_eval(what, make_cur, 4, shape, NG_F16, NG_F32,
                       ng_mixed_tol(NG_F16, n + (fp16_arith ? 16 * gemms : 0), k));
    ng_hgemm_force(-1);
}

static void models(int fp16_arith) {
    /* MLP 16-24-24-3: 3 Linear, 2 roundings each (product, bias); ReLU exact: n = 6. */
    model_check("mlp", 4, 24, 2, 6, 3, 24, fp16_arith);
    /* LeNet on 12x12: conv 2 roundings x 2, Linear 2 x 3 (ReLU, max pooling exact): 10; k = 150
     * (conv2's C k). */
    model_check("lenet", 12, 0, 0, 10, 5, 150, fp16_arith);
    /* VGG, 2 stages of 2 conv + BN-ReLU on 8x8, 4 then 8 channels: conv 2 x 4, BN 1 x 4, global
     * pooling 1, head 2: 15; k = 72. */
    model_check("vgg", 8, 4, 2, 15, 5, 72, fp16_arith);
    /* NIN, 2 blocks of 3 conv (5x5 or 3x3, 1x1, 1x1) on 8x8: conv 2 x 6, global pooling 1: 13;
     * k = 75. */
    model_check("nin", 8, 4, 2, 13, 6, 75, fp16_arith);
}

/* The arenas of evaluation forwards in fp16 arithmetic (MLP, LeNet, VGG at 32x32): measured
 * high-water marks equal to what ng_plan_eval predicts for the same pass, planned on a tree that
 * is never built. */
static void plan_matches(void) {
    ng_hgemm_force(NG_HGEMM_MODEL);
    const char *archs[3] = {"mlp", "lenet", "vgg"};
    for (int i = 0; i < 3; i++) {
        ng_arch_defaults(archs[i], &cur);
        if (!strcmp(archs[i], "vgg")) cur.width = 8, cur.depth = 2;
        int64_t shape[4] = {3, cur.in_ch, cur.img, cur.img};
        ng_layer *shadow = ng_arch_build(&cur);
        ng_arena_plan e = ng_plan_eval(shadow, 4, shape, NG_F32, NG_F16, NG_CPU);
        ng_layer_free(shadow);
        ng_model *m = ng_model_new(ng_arch_build(&cur));
        ng_model_build_mixed(m, NG_CPU, NG_F16, 1, 16 << 20, 16 << 20);
        ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "x");
        ng_test_fill_uniform(&x, -1, 1);
        ng_ctx ctx = ng_model_ctx(m, 0, 1, 0);
        ng_model_forward(m, &ctx, &x);
        NG_TEST(e.acts == m->acts.peak && e.grads == m->grads.peak && e.joint == m->arena_peak,
                "%s fp16-arithmetic evaluation: planned %zu and %zu bytes, measured %zu and %zu",
                archs[i], e.acts, e.grads, m->acts.peak, m->grads.peak);
        NG_TEST(e.grads > 0, "%s: the plan holds no scratch for the fp16 operands", archs[i]);
        ng_tensor_free(&x);
        ng_model_free(m);
    }
    ng_hgemm_force(-1);
}

int main(void) {
    ng_test_seed();
    ng_hgemm_force(NG_HGEMM_MODEL);
    for (int t = 0; t < 20; t++) {
        linear_wiring(0);
        conv_wiring(2, 0);
        conv_wiring(3, 0);
    }
    for (int t = 0; t < 5; t++) {
        linear_wiring(1);
        conv_wiring(2, 1);
    }
    ng_hgemm_force(-1);
    models(0);
    models(1);
    plan_matches();
    return ng_test_finish("test_f16_infer");
}
