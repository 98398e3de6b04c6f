/* Pooling and batch norm on the CPU: backward against finite differences, forward against
 * direct f64 loops, max-pool tie and NaN rules, batch-norm running statistics (update values,
 * no update while recomputing or in eval, once per step under checkpointing), and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "pool_bn_cases.h"
#include "nn/batchnorm.h"
#include "nn/containers.h"
#include "nn/model.h"
#include "nn/pool.h"
#include "nn/pool_onednn.h"
#include "testing.h"

/* ---- makers -------------------------------------------------------------------------------- */

static ng_layer *make_max2_overlap(void) { /* stride 1: inputs sit in several windows */
    return ng_maxpool("pool", 2, (int64_t[]){2, 3}, (int64_t[]){1, 1}, (int64_t[]){1, 0});
}
static ng_layer *make_max3(void) {
    return ng_maxpool("pool", 3, (int64_t[]){2, 2, 3}, (int64_t[]){2, 1, 2}, (int64_t[]){1, 0, 1});
}
static ng_layer *make_avg2(void) {
    return ng_avgpool("pool", 2, (int64_t[]){3, 3}, (int64_t[]){2, 2}, (int64_t[]){1, 1});
}
static ng_layer *make_avg3(void) {
    return ng_avgpool("pool", 3, (int64_t[]){3, 2, 2}, (int64_t[]){2, 2, 1}, (int64_t[]){1, 1, 0});
}

/* Running statistics away from 0 and 1 so that eval mode tests something; deterministic, since
 * twin checks build the layer twice. */
static ng_layer *make_bn1(void) {
    return ng_batchnorm("bn", 1, 5, 0.1, 1e-5);
}
static ng_layer *make_bn2(void) {
    return ng_batchnorm("bn", 2, 4, 0.1, 1e-5);
}
static ng_layer *make_bn3(void) {
    return ng_batchnorm("bn", 3, 3, 0.2, 1e-3);
}
static ng_layer *make_bn_relu3(void) {
    return ng_batchnorm_relu("bn", 3, 3, 0.2, 1e-3);
}

static void gradchecks(void) {
    ng_gradcheck_opts tr = {.training = 1}, ev = {.training = 0};
    ng_gradcheck("maxpool2d 3 stride 2 pad 1", make_max2, 4, (int64_t[]){2, 3, 7, 8}, tr);
    ng_gradcheck("maxpool2d 2x3 stride 1 (overlapping)", make_max2_overlap, 4,
                 (int64_t[]){2, 2, 5, 6}, tr);
    ng_gradcheck("maxpool3d 2x2x3", make_max3, 5, (int64_t[]){2, 2, 5, 4, 7}, tr);
    ng_gradcheck("avgpool2d 3 stride 2 pad 1", make_avg2, 4, (int64_t[]){2, 3, 7, 8}, tr);
    ng_gradcheck("avgpool3d 3x2x2 pad", make_avg3, 5, (int64_t[]){2, 2, 5, 4, 6}, tr);
    ng_gradcheck("global avgpool 2-D", make_gap, 4, (int64_t[]){3, 4, 5, 6}, tr);
    ng_gradcheck("global avgpool 3-D", make_gap, 5, (int64_t[]){2, 3, 4, 3, 5}, tr);
    ng_gradcheck("batchnorm1d train [N,C]", make_bn1, 2, (int64_t[]){7, 5}, tr);
    ng_gradcheck("batchnorm1d train [N,C,L]", make_bn1, 3, (int64_t[]){3, 5, 4}, tr);
    ng_gradcheck("batchnorm2d train", make_bn2, 4, (int64_t[]){3, 4, 3, 5}, tr);
    ng_gradcheck("batchnorm2d eval", make_bn2, 4, (int64_t[]){3, 4, 3, 5}, ev);
    ng_gradcheck("batchnorm3d train", make_bn3, 5, (int64_t[]){2, 3, 3, 4, 5}, tr);
    ng_gradcheck("batchnorm3d eval", make_bn3, 5, (int64_t[]){2, 3, 3, 4, 5}, ev);
    ng_gradcheck("batchnorm_relu3d train", make_bn_relu3, 5, (int64_t[]){2, 3, 3, 4, 5}, tr);
    ng_gradcheck("batchnorm_relu3d eval", make_bn_relu3, 5, (int64_t[]){2, 3, 3, 4, 5}, ev);
}

/* ---- pooling forward against loops --------------------------------------------------------- */

typedef struct {
    int64_t k[3], s[3], p[3];
} win;

/* x [planes, in[0], in[1], in[2]] -> y [planes, out...]; avg divides by prod(k). */
static void ref_pool(int max, const win *w, int64_t planes, const int64_t *in, const int64_t *out,
                     const double *x, double *y) {
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t od = 0; od < out[0]; od++)
            for (int64_t oh = 0; oh < out[1]; oh++)
                for (int64_t ow = 0; ow < out[2]; ow++) {
                    double best = -INFINITY, sum = 0;
                    for (int64_t a = 0; a < w->k[0]; a++)
                        for (int64_t b = 0; b < w->k[1]; b++)
                            for (int64_t c = 0; c < w->k[2]; c++) {
                                int64_t id = od * w->s[0] - w->p[0] + a;
                                int64_t ih = oh * w->s[1] - w->p[1] + b;
                                int64_t iw = ow * w->s[2] - w->p[2] + c;
                                if (id < 0 || id >= in[0] || ih < 0 || ih >= in[1] || iw < 0 ||
                                    iw >= in[2])
                                    continue;
                                double v = x[((pl * in[0] + id) * in[1] + ih) * in[2] + iw];
                                best = fmax(best, v);
                                sum += v;
                            }
                    y[((pl * out[0] + od) * out[1] + oh) * out[2] + ow] =
                        max ? best : sum / (double)(w->k[0] * w->k[1] * w->k[2]);
                }
}

static void pool_vs_loops(const char *what, int max, int nd, const win *w2, const int64_t *shape,
                          ng_dtype dt) {
    win w = {{1, 1, 1}, {1, 1, 1}, {0, 0, 0}};
    int64_t in[3] = {1, 1, 1}, out[3];
    for (int i = 0; i < nd; i++) {
        int j = 3 - nd + i;
        w.k[j] = w2->k[i], w.s[j] = w2->s[i], w.p[j] = w2->p[i];
        in[j] = shape[2 + i];
    }
    for (int i = 0; i < 3; i++) out[i] = (in[i] + 2 * w.p[i] - w.k[i]) / w.s[i] + 1;
    ng_layer *l =
        max ? ng_maxpool("p", nd, w2->k, w2->s, w2->p) : ng_avgpool("p", nd, w2->k, w2->s, w2->p);
    ng_model *m = ng_model_new(l);
    ng_model_build(m, NG_CPU, dt, 1, 4 << 20, 4 << 20);
    ng_tensor x = ng_tensor_new(dt, NG_CPU, nd + 2, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    int64_t planes = shape[0] * shape[1], ny = planes * out[0] * out[1] * out[2];
    NG_TEST(y.numel == ny, "%s: %lld outputs, expected %lld", what, (long long)y.numel,
            (long long)ny);
    double *xd = ng_test_to_f64(&x), *yd = ng_test_to_f64(&y);
    double *ref = malloc(sizeof(double) * (size_t)ny);
    ref_pool(max, &w, planes, in, out, xd, ref);
    /* Max is exact; the average sums at most prod(k) terms in double before rounding. */
    ng_test_close(what, ref, yd, ny, max ? 0 : (dt == NG_F64 ? 1e-14 : 6e-8), 1e-15);
    free(xd), free(yd), free(ref);
    ng_tensor_free(&x);
    ng_model_free(m);
}

static void pool_forwards(void) {
    win a = {{3, 3}, {2, 2}, {1, 1}}, b = {{2, 2, 3}, {2, 1, 2}, {1, 0, 1}};
    win c = {{3, 2, 2}, {2, 2, 1}, {1, 1, 0}};
    pool_vs_loops("maxpool2d forward vs loops", 1, 2, &a, (int64_t[]){2, 3, 9, 8}, NG_F32);
    pool_vs_loops("maxpool3d forward vs loops", 1, 3, &b, (int64_t[]){2, 2, 5, 6, 7}, NG_F64);
    pool_vs_loops("avgpool2d forward vs loops (count_include_pad)", 0, 2, &a,
                  (int64_t[]){2, 3, 9, 8}, NG_F64);
    /* the loops' f32 average (a double sum rounded once); oneDNN's f32 sum is held to them in
     * test_pool_onednn.c */
    ng_pool_use_onednn(0);
    pool_vs_loops("avgpool3d forward vs loops (count_include_pad)", 0, 3, &c,
                  (int64_t[]){2, 2, 7, 6, 5}, NG_F32);
    ng_pool_use_onednn(1);

    /* Global average pool: the plain mean of each plane. */
    ng_model *m = ng_model_new(ng_global_avgpool("gap"));
    ng_model_build(m, NG_CPU, NG_F64, 1, 1 << 20, 1 << 20);
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 5, (int64_t[]){2, 3, 4, 5, 3}, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    double ref[6];
    for (int r = 0; r < 6; r++) {
        ref[r] = 0;
        for (int s = 0; s < 60; s++) ref[r] += ((double *)x.data)[r * 60 + s];
        ref[r] /= 60;
    }
    NG_TEST(y.ndim == 2 && y.shape[0] == 2 && y.shape[1] == 3, "global avgpool output is [N, C]");
    ng_test_close("global avgpool forward vs loops", ref, y.data, 6, 1e-14, 1e-15);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* Ties go to the first maximum in window order; a NaN wins its window. */
static void maxpool_rules(void) {
    ng_model *m = ng_model_new(ng_maxpool("p", 2, (int64_t[]){2, 2}, NULL, NULL));
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 20, 1 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){1, 1, 4, 4}, "x");
    float *xv = x.data;
    for (int i = 0; i < 16; i++) xv[i] = 0.5f;
    xv[2 * 4 + 3] = 0.75f, xv[3 * 4 + 2] = 0.75f; /* window (1,1): tie at (2,3) and (3,2) */
    xv[0 * 4 + 3] = NAN;                          /* window (0,1) */
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    float *yv = y.data;
    NG_TEST(yv[0] == 0.5f && isnan(yv[1]) && yv[2] == 0.5f && yv[3] == 0.75f,
            "maxpool values with ties and a NaN: %g %g %g %g", yv[0], yv[1], yv[2], yv[3]);
    ng_tensor dy = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){1, 1, 2, 2}, "dy");
    ng_test_fill_uniform(&dy, 1, 2);
    ng_tensor dx = ng_tensor_new(NG_F32, NG_CPU, 4, x.shape, "dx");
    ng_test_poison(&dx);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    double want[16] = {0}, *got = ng_test_to_f64(&dx);
    const float *g = dy.data;
    want[0] = g[0], want[3] = g[1], want[8] = g[2], want[11] = g[3];
    ng_test_close("maxpool gradient goes to the first maximum (or the NaN)", want, got, 16, 0, 0);
    free(got);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m);
}

/* ---- batch norm ---------------------------------------------------------------------------- */

/* Per-channel mean and biased variance of x [N, C, S]. */
static void moments(const double *x, int64_t N, int64_t C, int64_t S, double *mean, double *var) {
    for (int64_t c = 0; c < C; c++) {
        double s = 0, q = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) s += x[(n * C + c) * S + i];
        mean[c] = s / (double)(N * S);
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < S; i++) {
                double d = x[(n * C + c) * S + i] - mean[c];
                q += d * d;
            }
        var[c] = q / (double)(N * S);
    }
}

static void normalise(const double *x, int64_t N, int64_t C, int64_t S, const double *mean,
                      const double *var, double eps, const double *g, const double *b, double *y) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
                int64_t j = (n * C + c) * S + i;
                y[j] = (x[j] - mean[c]) / sqrt(var[c] + eps) * g[c] + b[c];
            }
}

enum { BN_C = 3 };

static void running(ng_layer *bn, double *m, double *v) {
    ng_tensor tm, tv;
    ng_batchnorm_running(bn, &tm, &tv);
    double *a = ng_test_to_f64(&tm), *b = ng_test_to_f64(&tv);
    memcpy(m, a, sizeof(double) * BN_C);
    memcpy(v, b, sizeof(double) * BN_C);
    free(a), free(b);
}

static void batchnorm_running_stats(void) {
    const int64_t N = 4, C = BN_C, S = 30;
    const double mom = 0.1, eps = 1e-5;
    ng_layer *bn = ng_batchnorm("features.1", 2, C, mom, eps);
    double rm[BN_C], rv[BN_C];
    ng_model *m = ng_model_new(bn);
    ng_model_build(m, NG_CPU, NG_F64, 1, 1 << 20, 1 << 20);
    running(bn, rm, rv);
    NG_TEST(rm[0] == 0 && rm[2] == 0 && rv[0] == 1 && rv[2] == 1,
            "running stats start at mean 0, var 1");
    for (int i = 0; i < 2; i++) ng_test_fill_uniform(&m->params[i].param->value, 0.5, 1.5);
    double *g = m->params[0].param->value.data, *b = m->params[1].param->value.data;
    int64_t shape[4] = {N, C, 5, 6};
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x");
    ng_tensor x2 = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x2");
    ng_test_fill_uniform(&x, 2, 5); /* a mean far from 0 */
    ng_test_fill_uniform(&x2, -3, 1);
    double mean[BN_C], var[BN_C], mean2[BN_C], var2[BN_C], want_m[BN_C], want_v[BN_C];
    moments(x.data, N, C, S, mean, var);
    moments(x2.data, N, C, S, mean2, var2);
    double unb = (double)(N * S) / (double)(N * S - 1);
    double *ref = malloc(sizeof(double) * (size_t)x.numel);

    /* Training: batch statistics out, running stats updated with the unbiased variance. */
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    normalise(x.data, N, C, S, mean, var, eps, g, b, ref);
    ng_test_close("batchnorm train output vs loops", ref, y.data, x.numel, 1e-12, 1e-12);
    for (int c = 0; c < C; c++) {
        want_m[c] = (1 - mom) * 0 + mom * mean[c];
        want_v[c] = (1 - mom) * 1 + mom * var[c] * unb;
    }
    running(bn, rm, rv);
    ng_test_close("running mean after one step", want_m, rm, C, 1e-13, 0);
    ng_test_close("running var after one step (unbiased)", want_v, rv, C, 1e-13, 0);

    ng_model_reset_arenas(m);
    ng_model_forward(m, &ctx, &x2);
    for (int c = 0; c < C; c++) {
        want_m[c] = (1 - mom) * want_m[c] + mom * mean2[c];
        want_v[c] = (1 - mom) * want_v[c] + mom * var2[c] * unb;
    }
    running(bn, rm, rv);
    ng_test_close("running mean after two steps", want_m, rm, C, 1e-13, 0);
    ng_test_close("running var after two steps", want_v, rv, C, 1e-13, 0);

    /* Recomputing: the same batch-statistics output, running stats untouched. */
    ng_model_reset_arenas(m);
    ctx.recomputing = 1;
    y = ng_model_forward(m, &ctx, &x);
    normalise(x.data, N, C, S, mean, var, eps, g, b, ref);
    ng_test_close("batchnorm output while recomputing", ref, y.data, x.numel, 1e-12, 1e-12);
    double rm2[BN_C], rv2[BN_C];
    running(bn, rm2, rv2);
    ng_test_close("recomputing leaves the running mean", rm, rm2, C, 0, 0);
    ng_test_close("recomputing leaves the running var", rv, rv2, C, 0, 0);

    /* Eval: running statistics out, nothing updated. */
    ng_model_reset_arenas(m);
    ng_ctx ev = ng_model_ctx(m, 0, 1, 0);
    y = ng_model_forward(m, &ev, &x);
    normalise(x.data, N, C, S, rm, rv, eps, g, b, ref);
    ng_test_close("batchnorm eval output uses running stats", ref, y.data, x.numel, 1e-12, 1e-12);
    running(bn, rm2, rv2);
    ng_test_close("eval leaves the running mean", rm, rm2, C, 0, 0);
    ng_test_close("eval leaves the running var", rv, rv2, C, 0, 0);

    free(ref);
    ng_tensor_free(&x);
    ng_tensor_free(&x2);
    ng_model_free(m);
}

/* Inside a checkpoint segment forward runs twice per step; the statistics move once. */
static void batchnorm_checkpointed(void) {
    ng_layer *bn = ng_batchnorm("blocks.0.bn", 2, BN_C, 0.25, 1e-5);
    ng_layer *seq = ng_sequence("");
    ng_layer_add_child(seq, ng_checkpoint("blocks.0", bn, 1));
    ng_model *m = ng_model_new(seq);
    ng_model_build(m, NG_CPU, NG_F64, 1, 1 << 20, 1 << 20);
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, (int64_t[]){2, BN_C, 3, 4}, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, 4, x.shape, "dy");
    ng_test_fill_uniform(&x, -1, 3);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_model_forward(m, &ctx, &x);
    ng_model_backward(m, &ctx, &dy);
    double mean[BN_C], var[BN_C], rm[BN_C], rv[BN_C], wm[BN_C], wv[BN_C];
    moments(x.data, 2, BN_C, 12, mean, var);
    for (int c = 0; c < BN_C; c++) wm[c] = 0.25 * mean[c], wv[c] = 0.75 + 0.25 * var[c] * 24 / 23;
    running(bn, rm, rv);
    ng_test_close("checkpointed batchnorm: running mean moves once", wm, rm, BN_C, 1e-13, 0);
    ng_test_close("checkpointed batchnorm: running var moves once", wv, rv, BN_C, 1e-13, 0);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(m);
}

/* The fused batch norm + ReLU computes what the two layers did, bit for bit, in every dtype and
 * memory mode: as a model runs it, without its output (the mask recomputed from the input), over
 * its input when no backward follows, and with dx written over dy. Without its output it holds
 * at least one activation less. */
static void batchnorm_relu_fused(void) {
    const ng_dtype dts[4] = {NG_F64, NG_F32, NG_F16, NG_BF16};
    for (int t = 0; t < 4; t++) {
        ng_dtype dt = dts[t];
        ng_tensor x64, dy64;
        double p[6];
        bn_relu_inputs(&x64, &dy64, p);
        int64_t n = x64.numel, zeros = 0;
        bn_relu_result ref = bn_relu_run(NG_CPU, dt, BN_RELU_TWO_LAYERS, &x64, &dy64, p);
        for (int64_t i = 0; i < n; i++) zeros += ref.y[i] == 0;
        NG_TEST(zeros > n / 10 && zeros < n * 9 / 10,
                "batchnorm_relu %s: ReLU cut %lld of %lld outputs; the check needs both sides",
                ng_dtype_name(dt), (long long)zeros, (long long)n);
        bn_relu_check_modes(NG_CPU, dt, &x64, &dy64, p, &ref);
        bn_relu_result_free(&ref);
        ng_tensor_free(&x64), ng_tensor_free(&dy64);
    }
}

/* ---- errors -------------------------------------------------------------------------------- */

static void errors(void) {
    ng_test_forward_error(ng_batchnorm("stage2.bn", 2, 8, 0.1, 1e-5), 4, (int64_t[]){2, 6, 3, 3}, 1,
                          "stage2.bn: input has 6 channels, expected 8");
    ng_test_forward_error(ng_batchnorm("stage2.bn", 3, 8, 0.1, 1e-5), 4, (int64_t[]){2, 8, 3, 3}, 1,
                          "stage2.bn");
    ng_test_forward_error(ng_batchnorm("stage2.bn", 2, 8, 0.1, 1e-5), 4, (int64_t[]){1, 8, 1, 1}, 1,
                          "stage2.bn: training needs more than one value");
    ng_test_forward_error(ng_maxpool("down.1", 3, (int64_t[]){3, 3, 3}, NULL, NULL), 5,
                          (int64_t[]){1, 2, 4, 2, 4}, 1, "down.1: input is too small");
    ng_test_forward_error(ng_avgpool("down.2", 2, (int64_t[]){2, 2}, NULL, NULL), 5,
                          (int64_t[]){1, 2, 4, 2, 4}, 1, "down.2");
    ng_test_forward_error(ng_global_avgpool("head.pool"), 2, (int64_t[]){4, 8}, 1, "head.pool");
    NG_TEST_ERROR(ng_maxpool("p3", 2, (int64_t[]){3, 3}, NULL, (int64_t[]){2, 0}), "p3");
    NG_TEST_ERROR(ng_batchnorm("bn9", 4, 8, 0.1, 1e-5), "bn9");
    ng_layer *gap = ng_global_avgpool("gap");
    ng_tensor a, b;
    NG_TEST_ERROR(ng_batchnorm_running(gap, &a, &b), "gap");
    ng_layer_free(gap);
}

/* Batch norm in f16/bf16 runs on chunks through the bulk conversions; its outputs must be the
 * element formula's bits: in eval mode y = half((float)((x - mean) / sqrt(var + eps) gamma +
 * beta)) in double, from random running statistics and affine parameters. */
static void batchnorm_half_bits(void) {
    ng_dtype dts[2] = {NG_F16, NG_BF16};
    for (int t = 0; t < 2; t++) {
        int64_t C = 3, shape[4] = {2, C, 37, 41}; /* planes longer than a chunk, odd lengths */
        ng_model *m = ng_model_new(ng_batchnorm("bn", 2, C, 0.1, 1e-5));
        ng_model_build_mixed(m, NG_CPU, dts[t], 1, 1 << 22, 1 << 22);
        ng_test_fill_uniform(&m->flat_params, -2, 2);
        ng_test_fill_uniform(&m->flat_buffers, 0.25, 2); /* means and (positive) variances */
        ng_model_refresh_compute(m);
        ng_tensor xd = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x64");
        ng_test_fill_uniform(&xd, -3, 3);
        ng_tensor x = ng_tensor_new(dts[t], NG_CPU, 4, shape, "x");
        ng_cast(&x, &xd);
        ng_ctx ctx = ng_model_ctx(m, 0, 1, 0);
        ng_tensor y = m->root->ops->forward(m->root, &ctx, &x);
        const float *g = ng_model_find(m, "bn.weight")->param->value.data;
        const float *b = ng_model_find(m, "bn.bias")->param->value.data;
        const float *rm = m->buffers[0].buffer->value.data, *rv = m->buffers[1].buffer->value.data;
        int64_t S = 37 * 41, bad = 0;
        for (int64_t i = 0; i < x.numel; i++) {
            int64_t c = i / S % C;
            uint16_t h = ((uint16_t *)x.data)[i];
            double v = dts[t] == NG_F16 ? ng_f16_to_f32(h) : ng_bf16_to_f32(h);
            double is = 1.0 / sqrt((double)rv[c] + 1e-5);
            float f = (float)((v - (double)rm[c]) * (is * (double)g[c]) + (double)b[c]);
            uint16_t want = dts[t] == NG_F16 ? ng_f32_to_f16(f) : ng_f32_to_bf16(f);
            bad += ((uint16_t *)y.data)[i] != want;
        }
        NG_TEST(!bad, "batch norm %s, eval: %lld of %lld outputs differ from the formula's bits",
                ng_dtype_name(dts[t]), (long long)bad, (long long)x.numel);
        ng_tensor_free(&x), ng_tensor_free(&xd);
        ng_model_free(m);
    }
}

/* Max and average pooling (3x3, stride 2, padding 1) of f16/bf16 planes, pooled in f32 a plane at
 * a time, against the element rule written out here: the window in order, the first maximum and
 * the last NaN, the average's sum in double over prod(kernel), rounded through f32. */
static void pool_half_bits(void) {
    /* the loops' half path (the reference); oneDNN's, through f32 copies, is held to it in
     * test_pool_onednn.c */
    ng_pool_use_onednn(0);
    ng_dtype dts[2] = {NG_F16, NG_BF16};
    const int64_t k[2] = {3, 3}, st[2] = {2, 2}, pd[2] = {1, 1}, H = 13, W = 10, OH = 7, OW = 5;
    for (int t = 0; t < 2; t++)
        for (int max = 0; max < 2; max++) {
            int64_t shape[4] = {2, 3, H, W};
            ng_layer *l = max ? ng_maxpool("p", 2, k, st, pd) : ng_avgpool("p", 2, k, st, pd);
            ng_model *m = ng_model_new(l);
            ng_model_build_mixed(m, NG_CPU, dts[t], 1, 1 << 20, 1 << 20);
            ng_tensor xd = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x64");
            ng_test_fill_uniform(&xd, -4, 4);
            ng_tensor x = ng_tensor_new(dts[t], NG_CPU, 4, shape, "x");
            ng_cast(&x, &xd);
            uint16_t *xs = x.data;
            for (int64_t i = 0; i < x.numel; i += 17) xs[i] = xs[i + 1]; /* ties */
            xs[40] = dts[t] == NG_F16 ? 0x7e00 : 0x7fc0;                 /* a NaN */
            ng_ctx ctx = ng_model_ctx(m, 0, 1, 0);
            ng_tensor y = m->root->ops->forward(m->root, &ctx, &x);
            int64_t bad = 0;
            for (int64_t pl = 0; pl < 6; pl++)
                for (int64_t oh = 0; oh < OH; oh++)
                    for (int64_t ow = 0; ow < OW; ow++) {
                        double best = 0, sum = 0;
                        int arg = -1;
                        for (int64_t a = 0; a < 3; a++)
                            for (int64_t b = 0; b < 3; b++) {
                                int64_t ih = oh * 2 - 1 + a, iw = ow * 2 - 1 + b;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                uint16_t h = xs[pl * H * W + ih * W + iw];
                                double v = dts[t] == NG_F16 ? ng_f16_to_f32(h) : ng_bf16_to_f32(h);
                                if (arg < 0 || v > best || isnan(v)) best = v, arg = 1;
                                sum += v;
                            }
                        float f = (float)(max ? best : sum / 9.0);
                        uint16_t want = dts[t] == NG_F16 ? ng_f32_to_f16(f) : ng_f32_to_bf16(f);
                        bad += ((uint16_t *)y.data)[(pl * OH + oh) * OW + ow] != want;
                    }
            NG_TEST(!bad, "%s pooling %s: %lld outputs differ from the element rule",
                    max ? "max" : "average", ng_dtype_name(dts[t]), (long long)bad);
            ng_tensor_free(&x), ng_tensor_free(&xd);
            ng_model_free(m);
        }
    ng_pool_use_onednn(1);
}

int main(void) {
    ng_gradcheck_prepare = ng_gradcheck_set_running_stats;
    gradchecks();
    pool_forwards();
    maxpool_rules();
    batchnorm_running_stats();
    batchnorm_checkpointed();
    batchnorm_half_bits();
    batchnorm_relu_fused();
    pool_half_bits();
    errors();
    return ng_test_finish("test_pool_bn");
}
