/* The pooling layer makers and the fused batch norm + ReLU runner used by both
 * tests/test_pool_bn.c (CPU) and its CUDA twin tests/test_pool_bn_gpu.c; makers whose geometry
 * differs between the two stay in each test. */
#ifndef NG_TESTS_POOL_BN_CASES_H
#define NG_TESTS_POOL_BN_CASES_H

#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/activation_kernels.h"
#include "nn/batchnorm.h"
#include "nn/containers.h"
#include "nn/model.h"
#include "nn/pool.h"
#include "testing.h"

static ng_layer *make_max2(void) {
    return ng_maxpool("pool", 2, (int64_t[]){3, 3}, (int64_t[]){2, 2}, (int64_t[]){1, 1});
}
static ng_layer *make_gap(void) {
    return ng_global_avgpool("gap");
}

/* ---- fused batch norm + ReLU --------------------------------------------------------------- */

/* What one training step of a batch norm + ReLU gives on x [2, 3, 37, 41] with dy, the
 * parameters p (weights then biases) set from f64 values, as f64 copies
 * (exact for every dtype, -0 kept). */
typedef struct {
    double *y, *dx, *dgamma, *dbeta;
    int y_missing; /* the forward returned no data */
    int64_t acts;  /* activation-arena bytes after forward */
} bn_relu_result;

enum {
    BN_RELU_PLAIN,    /* the fused layer as a model runs it */
    BN_RELU_UNUSED,   /* ctx->output_unused: no output, the mask recomputed in backward */
    BN_RELU_FWD_ONLY, /* ctx->forward_only + ctx->inplace: the output over the input, no backward */
    BN_RELU_DX_OVER_DY, /* backward writes dx into dy's memory */
    BN_RELU_TWO_LAYERS, /* reference: ng_batchnorm then ng_relu in a sequence */
};

static const int64_t bn_relu_shape[4] = {2, 3, 37, 41}; /* planes over a chunk */

static bn_relu_result bn_relu_run(ng_device dev, ng_dtype dt, int mode, const ng_tensor *x64,
                                  const ng_tensor *dy64, const double *p) {
    ng_layer *root;
    if (mode == BN_RELU_TWO_LAYERS) {
        root = ng_sequence("");
        ng_layer_add_child(root, ng_batchnorm("bn", 2, 3, 0.1, 1e-5));
        ng_layer_add_child(root, ng_relu("act"));
    } else {
        root = ng_batchnorm_relu("bn", 2, 3, 0.1, 1e-5);
    }
    ng_model *m = ng_model_new(root);
    int half = dt == NG_F16 || dt == NG_BF16;
    if (half)
        ng_model_build_mixed(m, dev, dt, 1, 1 << 20, 1 << 20);
    else
        ng_model_build(m, dev, dt, 1, 1 << 20, 1 << 20);
    ng_dtype master = half ? NG_F32 : dt;
    for (int k = 0; k < 2; k++) {
        ng_tensor ph = ng_tensor_new(master, NG_CPU, 1, (int64_t[]){3}, "p");
        for (int i = 0; i < 3; i++) ng_act_st(ph.data, master, i, p[3 * k + i]);
        ng_tensor pd = ng_tensor_to(&ph, dev, "p");
        ng_copy(&ng_model_find(m, k ? "bn.bias" : "bn.weight")->param->value, &pd);
        ng_tensor_free(&ph), ng_tensor_free(&pd);
    }
    ng_model_refresh_compute(m);
    ng_tensor xh = ng_tensor_new(dt, NG_CPU, 4, bn_relu_shape, "x"), dyh = xh;
    ng_cast(&xh, x64);
    dyh = ng_tensor_new(dt, NG_CPU, 4, bn_relu_shape, "dy");
    ng_cast(&dyh, dy64);
    ng_tensor x = ng_tensor_to(&xh, dev, "x"), dy = ng_tensor_to(&dyh, dev, "dy");
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.output_unused = mode == BN_RELU_UNUSED;
    ctx.forward_only = ctx.inplace = mode == BN_RELU_FWD_ONLY;
    ng_tensor y = root->ops->forward(root, &ctx, &x);
    ctx.output_unused = ctx.forward_only = ctx.inplace = 0;
    bn_relu_result r = {0};
    r.y_missing = !y.data;
    r.acts = (int64_t)ng_arena_get_mark(ctx.acts);
    if (y.data) r.y = ng_test_to_f64(&y);
    if (mode != BN_RELU_FWD_ONLY) {
        ng_tensor dx = dy;
        if (mode == BN_RELU_DX_OVER_DY)
            ctx.dy_scratch = 1;
        else
            dx = ng_tensor_new(dt, dev, 4, bn_relu_shape, "dx");
        ng_layer_backward(root, &ctx, &dy, &dx);
        r.dx = ng_test_to_f64(&dx);
        if (mode != BN_RELU_DX_OVER_DY) ng_tensor_free(&dx);
        r.dgamma = ng_test_to_f64(&ng_model_find(m, "bn.weight")->param->grad);
        r.dbeta = ng_test_to_f64(&ng_model_find(m, "bn.bias")->param->grad);
    }
    ng_tensor_free(&xh), ng_tensor_free(&dyh);
    ng_tensor_free(&x), ng_tensor_free(&dy);
    ng_model_free(m);
    return r;
}

static void bn_relu_result_free(bn_relu_result *r) {
    free(r->y), free(r->dx), free(r->dgamma), free(r->dbeta);
}

/* Random x, dy and parameters, gammas of both signs (ReLU then cuts either tail). */
static void bn_relu_inputs(ng_tensor *x64, ng_tensor *dy64, double p[6]) {
    *x64 = ng_tensor_new(NG_F64, NG_CPU, 4, bn_relu_shape, "x64");
    *dy64 = ng_tensor_new(NG_F64, NG_CPU, 4, bn_relu_shape, "dy64");
    ng_test_fill_uniform(x64, -3, 3);
    ng_test_fill_uniform(dy64, -1, 1);
    ng_tensor pt = ng_tensor_new(NG_F64, NG_CPU, 1, (int64_t[]){6}, "p");
    ng_test_fill_uniform(&pt, 0.2, 2);
    memcpy(p, pt.data, sizeof(double) * 6);
    p[1] = -p[1];             /* one negative gamma */
    p[3] = 0.5, p[4] = -0.25; /* shifts: ReLU cuts off more or less than half */
    ng_tensor_free(&pt);
}

/* Bit for bit, -0 apart from +0 */
static int bn_relu_same(const double *a, const double *b, int64_t n) {
    return a && b && !memcmp(a, b, sizeof(double) * (size_t)n);
}

/* Every mode of the fused layer on dev against ref (the two layers on dev), bit for bit; without
 * its output the step holds at least one activation less. */
static void bn_relu_check_modes(ng_device dev, ng_dtype dt, const ng_tensor *x64,
                                const ng_tensor *dy64, const double *p, const bn_relu_result *ref) {
    const char *names[4] = {"as a model runs it", "output unused", "forward only, in place",
                            "dx over dy"};
    const char *where = ng_device_name(dev), *type = ng_dtype_name(dt);
    int64_t n = x64->numel;
    for (int mode = BN_RELU_PLAIN; mode <= BN_RELU_DX_OVER_DY; mode++) {
        bn_relu_result r = bn_relu_run(dev, dt, mode, x64, dy64, p);
        if (mode == BN_RELU_UNUSED) {
            int64_t held = ref->acts - r.acts, act = n * (int64_t)ng_dtype_size(dt);
            NG_TEST(r.y_missing && held >= act,
                    "batchnorm_relu %s %s, output unused: output %s, %lld bytes less held than "
                    "by two layers (one activation: %lld)",
                    where, type, r.y_missing ? "not computed" : "computed", (long long)held,
                    (long long)act);
        } else {
            NG_TEST(bn_relu_same(ref->y, r.y, n),
                    "batchnorm_relu %s %s, %s: output differs from batch norm + ReLU", where, type,
                    names[mode]);
        }
        if (mode != BN_RELU_FWD_ONLY)
            NG_TEST(bn_relu_same(ref->dx, r.dx, n) && bn_relu_same(ref->dgamma, r.dgamma, 3) &&
                        bn_relu_same(ref->dbeta, r.dbeta, 3),
                    "batchnorm_relu %s %s, %s: gradients differ from batch norm + ReLU", where,
                    type, names[mode]);
        bn_relu_result_free(&r);
    }
}

#endif
