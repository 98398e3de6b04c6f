/* ReLU, GELU, dropout, softmax and flatten on the CPU: finite differences, f64 reference loops,
 * dropout's mask statistics and replay from its key, and errors that name the layer or tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/ops.h"
#include "core/rng.h"
#include "activation_cases.h"
#include "gradcheck.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "testing.h"

#define ARENA ((size_t)16 << 20)

/* A model around one layer with arenas poisoned with 0xFF bytes: NaN in every float dtype, so an
 * output element the layer does not write shows up. */
static ng_model *model_of(ng_layer *l) {
    ng_model *m = ng_model_new(l);
    ng_model_build(m, NG_CPU, NG_F64, 1, ARENA, ARENA);
    memset(m->acts.base, 0xFF, m->acts.capacity);
    memset(m->grads.base, 0xFF, m->grads.capacity);
    return m;
}

static double relu_ref(double x) {
    return x > 0 ? x : 0;
}
static double gelu_erf_ref(double x) {
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}
static double gelu_tanh_ref(double x) {
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Each twin computes in double and rounds once on store, so against a double reference taken on
 * the same (already rounded) inputs the error is the store's half ulp, plus the double rounding
 * through float for f16/bf16 (2^-24, negligible), plus a few double ulps from the formula
 * written differently (1+erf cancels for x near -3: ~20 ulps). atol covers results that land in
 * the subnormal range. */
static void tolerances(ng_dtype dt, double *rtol, double *atol) {
    switch (dt) {
        case NG_F64:
            *rtol = 1e-13, *atol = 1e-300;
            break;
        case NG_F32:
            *rtol = ldexp(1.0, -24) * 1.01, *atol = 1e-45;
            break;
        case NG_F16:
            *rtol = ldexp(1.0, -11) * 1.01, *atol = ldexp(1.0, -25);
            break;
        default:
            *rtol = ldexp(1.0, -8) * 1.01, *atol = 1e-40;
            break;
    }
}

static void test_forward(const char *what, ng_layer *(*make)(void), double (*ref)(double),
                         ng_dtype dt) {
    ng_model *m = model_of(make());
    int64_t shape[3] = {3, 4, 33};
    ng_tensor x = ng_tensor_new(dt, NG_CPU, 3, shape, "x");
    ng_test_fill_uniform(&x, -3, 3);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    NG_TEST(y.dtype == dt && ng_tensor_same_shape(&x, &y), "%s %s: output is %s", what,
            ng_dtype_name(dt), ng_tensor_desc(&y));
    double *xs = ng_test_to_f64(&x), *ys = ng_test_to_f64(&y), rtol, atol;
    double *e = malloc(sizeof(double) * (size_t)x.numel);
    for (int64_t i = 0; i < x.numel; i++) e[i] = ref(xs[i]);
    tolerances(dt, &rtol, &atol);
    char label[128];
    snprintf(label, sizeof label, "%s forward %s vs f64 loop", what, ng_dtype_name(dt));
    ng_test_close(label, e, ys, x.numel, rtol, atol);
    free(xs), free(ys), free(e);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* softmax over the last dim by plain loops (max subtracted: the inputs would overflow exp). */
static void softmax_ref(const double *x, double *y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * cols;
        double m = xr[0], s = 0;
        for (int64_t j = 1; j < cols; j++) m = xr[j] > m ? xr[j] : m;
        for (int64_t j = 0; j < cols; j++) s += exp(xr[j] - m);
        for (int64_t j = 0; j < cols; j++) y[r * cols + j] = exp(xr[j] - m) / s;
    }
}

static void test_softmax_rows(ng_dtype dt) {
    int64_t shape[3] = {4, 3, 19}, rows = 12, cols = 19, n = rows * cols;
    ng_tensor x = ng_tensor_new(dt, NG_CPU, 3, shape, "scores");
    ng_tensor y = ng_tensor_new(dt, NG_CPU, 3, shape, "probs");
    /* Around 700: exp() of the raw values overflows double, so only a shifted softmax passes. */
    ng_test_fill_uniform(&x, dt == NG_F16 ? -8 : 690, dt == NG_F16 ? 8 : 720);
    ng_test_poison(&y);
    ng_softmax_rows(&x, &y);
    double *xs = ng_test_to_f64(&x), *ys = ng_test_to_f64(&y), rtol, atol;
    double *e = malloc(sizeof(double) * (size_t)n);
    softmax_ref(xs, e, rows, cols);
    tolerances(dt, &rtol, &atol);
    if (dt == NG_F64) rtol = 1e-14; /* same formula and order; only y = e/s vs e*(1/s) */
    char label[128];
    snprintf(label, sizeof label, "ng_softmax_rows %s vs f64 loop", ng_dtype_name(dt));
    ng_test_close(label, e, ys, n, rtol, atol);
    if (dt == NG_F64) {
        double worst = 0;
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += ys[r * cols + j];
            worst = fmax(worst, fabs(s - 1));
        }
        NG_TEST(worst <= cols * 2.3e-16, "softmax rows sum to 1: worst |sum - 1| = %g", worst);
        /* In place (y = x) must give the same bits. */
        ng_softmax_rows(&x, &x);
        double *in = ng_test_to_f64(&x);
        ng_test_close("ng_softmax_rows in place equals out of place", ys, in, n, 0, 0);
        free(in);

        /* Backward: dx = y (dy - sum(dy y)) by plain loops. */
        ng_tensor dy = ng_tensor_new(dt, NG_CPU, 3, shape, "dy"),
                  dx = ng_tensor_new(dt, NG_CPU, 3, shape, "dx");
        ng_test_fill_uniform(&dy, -1, 1);
        ng_test_poison(&dx);
        ng_softmax_rows_backward(&y, &dy, &dx);
        double *g = ng_test_to_f64(&dy), *d = ng_test_to_f64(&dx);
        for (int64_t r = 0; r < rows; r++) {
            double dot = 0;
            for (int64_t j = 0; j < cols; j++) dot += g[r * cols + j] * ys[r * cols + j];
            for (int64_t j = 0; j < cols; j++)
                e[r * cols + j] = ys[r * cols + j] * (g[r * cols + j] - dot);
        }
        /* dy_j - dot cancels: absolute error ~ cols * eps * |dy| |y|. */
        ng_test_close("ng_softmax_rows_backward vs f64 loop", e, d, n, 1e-14, cols * 2.3e-16);
        free(g), free(d);
        ng_tensor_free(&dy);
        ng_tensor_free(&dx);
    }
    free(xs), free(ys), free(e);
    ng_tensor_free(&x);
    ng_tensor_free(&y);
}

static void test_flatten(void) {
    ng_model *m = model_of(make_flatten());
    int64_t shape[4] = {3, 2, 5, 7};
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    NG_TEST(y.ndim == 2 && y.shape[0] == 3 && y.shape[1] == 70 && y.data == x.data,
            "flatten forward is a [3,70] view of x: got %s", ng_tensor_desc(&y));
    ng_tensor dy = ng_tensor_2d(NG_F64, NG_CPU, 3, 70, "dy");
    ng_tensor dx = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "dx");
    ng_test_fill_uniform(&dy, -1, 1);
    ng_test_poison(&dx);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    double *a = ng_test_to_f64(&dy), *b = ng_test_to_f64(&dx);
    ng_test_close("flatten backward copies dy", a, b, dy.numel, 0, 0);
    free(a), free(b);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m);
}

/* 1 where the element was kept, from an output whose input had no zeros. */
static char *kept_of(const ng_tensor *y) {
    double *v = ng_test_to_f64(y);
    char *k = malloc((size_t)y->numel);
    for (int64_t i = 0; i < y->numel; i++) k[i] = v[i] != 0;
    free(v);
    return k;
}

static void test_dropout(void) {
    const double p = 0.3;
    const int64_t n = 200003; /* not a multiple of 4: the last Philox block is partial */
    ng_model *m = model_of(ng_dropout("drop", p));
    ng_tensor x = ng_tensor_1d(NG_F64, NG_CPU, n, "x");
    ng_test_fill_uniform(&x, 0.5, 1.5);
    uint64_t seed = ng_test_seed();
    ng_ctx ctx = ng_model_ctx(m, 1, seed, 5);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    NG_TEST(y.data != x.data, "dropout in training allocates its output");
    double *xs = ng_test_to_f64(&x), *ys = ng_test_to_f64(&y);
    char *k1 = kept_of(&y);

    int64_t kept = 0, bad_scale = 0;
    for (int64_t i = 0; i < n; i++) {
        kept += k1[i];
        /* x * (1/(1-p)) vs x/(1-p): two roundings apart at most. */
        if (k1[i] && fabs(ys[i] - xs[i] / (1 - p)) > 4.5e-16 * fabs(xs[i] / (1 - p))) bad_scale++;
    }
    double frac = (double)kept / n, sigma = sqrt(p * (1 - p) / n);
    NG_TEST(fabs(frac - (1 - p)) <= 5 * sigma, "kept fraction %.5f within 5 sigma (%.5f) of %.2f",
            frac, 5 * sigma, 1 - p);
    NG_TEST(bad_scale == 0, "kept values are x/(1-p): %lld are not", (long long)bad_scale);

    /* The documented key: exactly ng_rng_bernoulli(1-p) of stream (1<<32)|index at ctx.rng. */
    ng_tensor mask = ng_tensor_1d(NG_F64, NG_CPU, n, "mask");
    ng_rng_key key = {.seed = seed,
                      .stream = ((uint64_t)1 << 32) | (uint64_t)m->root->index,
                      .offset = ctx.rng.offset};
    ng_rng_bernoulli(&mask, key, 1 - p);
    const double *mv = mask.data;
    int64_t off = 0;
    for (int64_t i = 0; i < n; i++) off += (mv[i] == 1.0) != k1[i];
    NG_TEST(off == 0, "mask equals ng_rng_bernoulli(1-p) of the documented key: %lld differ",
            (long long)off);

    /* Backward rebuilds the mask from the key: dx = dy/(1-p) where kept, 0 elsewhere. */
    ng_tensor dy = ng_tensor_1d(NG_F64, NG_CPU, n, "dy"),
              dx = ng_tensor_1d(NG_F64, NG_CPU, n, "dx");
    ng_test_fill_uniform(&dy, -1, 1);
    ng_test_poison(&dx);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    double *g = ng_test_to_f64(&dy), *d = ng_test_to_f64(&dx);
    double *e = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) e[i] = k1[i] ? g[i] / (1 - p) : 0;
    ng_test_close("dropout backward uses the forward's mask", e, d, n, 4.5e-16, 0);

    /* Same ctx again: the same mask; the next step: a different one. */
    ng_model_reset_arenas(m);
    ng_tensor y2 = ng_model_forward(m, &ctx, &x);
    double *y2s = ng_test_to_f64(&y2);
    ng_test_close("dropout: same ctx, same output", ys, y2s, n, 0, 0);
    ng_model_reset_arenas(m);
    ng_ctx next = ng_model_ctx(m, 1, seed, 6);
    ng_tensor y3 = ng_model_forward(m, &next, &x);
    char *k3 = kept_of(&y3);
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) differ += k1[i] != k3[i];
    /* Independent masks differ in 2 p (1-p) = 42% of elements. */
    NG_TEST(differ > n / 3, "dropout: the next step draws a new mask (%lld of %lld differ)",
            (long long)differ, (long long)n);

    /* Another layer index is another stream. */
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_flatten("flat"));
    ng_layer_add_child(s, ng_dropout("drop", p));
    ng_model *m2 = model_of(s);
    ng_tensor x2 = ng_tensor_reshape(&x, 2, (int64_t[]){n, 1});
    ng_ctx c2 = ng_model_ctx(m2, 1, seed, 5);
    ng_tensor y4 = ng_model_forward(m2, &c2, &x2);
    char *k4 = kept_of(&y4);
    differ = 0;
    for (int64_t i = 0; i < n; i++) differ += k1[i] != k4[i];
    NG_TEST(differ > n / 3, "dropout: another layer draws another mask (%lld of %lld differ)",
            (long long)differ, (long long)n);

    /* Eval: the identity, x itself; backward passes dy through. */
    ng_model_reset_arenas(m);
    ng_ctx ev = ng_model_ctx(m, 0, seed, 5);
    ng_tensor y5 = ng_model_forward(m, &ev, &x);
    NG_TEST(y5.data == x.data && ng_tensor_same_shape(&x, &y5), "dropout in eval returns x");
    ng_test_poison(&dx);
    m->root->ops->backward(m->root, &ev, &dy, &dx);
    double *d5 = ng_test_to_f64(&dx);
    ng_test_close("dropout in eval: dx = dy", g, d5, n, 0, 0);

    free(xs), free(ys), free(k1), free(g), free(d), free(e), free(y2s), free(k3), free(k4),
        free(d5);
    ng_tensor_free(&mask);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m2);

    /* p = 0 in training is the identity too; p = 1 drops everything. */
    ng_model *m0 = model_of(ng_dropout("drop", 0));
    ng_ctx c0 = ng_model_ctx(m0, 1, seed, 5);
    ng_tensor y6 = ng_model_forward(m0, &c0, &x);
    NG_TEST(y6.data == x.data, "dropout p=0 in training returns x");
    ng_model_free(m0);
    ng_model *m1 = model_of(ng_dropout("drop", 1));
    ng_ctx c1 = ng_model_ctx(m1, 1, seed, 5);
    ng_tensor y7 = ng_model_forward(m1, &c1, &x);
    NG_TEST(ng_maxabs(&y7) == 0, "dropout p=1 gives zeros (max |y| = %g)", ng_maxabs(&y7));
    ng_model_free(m1);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* A checkpoint segment with dropout inside: the replay during backward must draw the same mask,
 * so outputs and gradients equal those of the plain model bit for bit. */
static ng_layer *make_ckpt_dropout(int enabled) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("stem", 6, 32, 1));
    ng_layer *f = ng_sequence("");
    ng_layer_add_child(f, ng_gelu("blocks.0.act", 0));
    ng_layer_add_child(f, ng_dropout("blocks.0.drop", 0.4));
    ng_layer_add_child(f, ng_linear("blocks.0.fc", 32, 32, 1));
    ng_layer_add_child(s, ng_checkpoint("blocks.0", f, enabled));
    ng_layer_add_child(s, ng_linear("head", 32, 3, 1));
    return s;
}

static void test_dropout_checkpoint(void) {
    uint64_t seed = ng_test_seed();
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, 9, 6, "x"),
              dy = ng_tensor_2d(NG_F64, NG_CPU, 9, 3, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    double *out[2], *grads[2];
    int64_t ny = 0, ng = 0;
    for (int enabled = 0; enabled < 2; enabled++) {
        ng_model *m = ng_model_new(make_ckpt_dropout(enabled));
        ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
        ng_ctx ctx = ng_model_ctx(m, 1, seed, 2);
        ng_tensor y = ng_model_forward(m, &ctx, &x);
        out[enabled] = ng_test_to_f64(&y); /* before backward hands the activations back */
        ng_model_backward(m, &ctx, &dy);
        grads[enabled] = ng_test_to_f64(&m->flat_grads);
        ny = y.numel, ng = m->numel;
        ng_model_free(m);
    }
    ng_test_close("checkpointed dropout: same output", out[0], out[1], ny, 0, 0);
    ng_test_close("checkpointed dropout: same gradients (replay redraws the mask)", grads[0],
                  grads[1], ng, 0, 0);
    free(out[0]), free(out[1]), free(grads[0]), free(grads[1]);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

static void test_errors(void) {
    NG_TEST_ERROR(ng_dropout("drop.bad", 1.5), "drop.bad");
    NG_TEST_ERROR(ng_dropout("drop.neg", -0.1), "drop.neg");
    NG_TEST_ERROR(ng_gelu("act.bad", 2), "act.bad");

    ng_model *m = model_of(ng_relu("blocks.1.act"));
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor xi = ng_tensor_2d(NG_I32, NG_CPU, 2, 3, "ids");
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &xi), "blocks.1.act");
    NG_TEST_ERROR(m->root->ops->backward(m->root, &ctx, &xi, NULL), "backward without a forward");
    ng_tensor x = ng_tensor_2d(NG_F32, NG_CPU, 2, 3, "x"),
              dy = ng_tensor_2d(NG_F32, NG_CPU, 2, 4, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_model_forward(m, &ctx, &x);
    NG_TEST_ERROR(m->root->ops->backward(m->root, &ctx, &dy, NULL), "blocks.1.act");

    ng_tensor s = ng_tensor_2d(NG_F32, NG_CPU, 3, 4, "scores"),
              p = ng_tensor_2d(NG_F32, NG_CPU, 3, 5, "probs");
    NG_TEST_ERROR(ng_softmax_rows(&s, &p), "probs");
    ng_tensor p64 = ng_tensor_2d(NG_F64, NG_CPU, 3, 4, "probs64");
    NG_TEST_ERROR(ng_softmax_rows(&s, &p64), "probs64");
    NG_TEST_ERROR(ng_softmax_rows_backward(&s, &s, &p), "probs");
    ng_tensor_free(&xi);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&s);
    ng_tensor_free(&p);
    ng_tensor_free(&p64);
    ng_model_free(m);
}

/* ReLU on f16/bf16 runs through f32 a chunk at a time; every pattern (NaNs, infinities, signed
 * zeros, subnormals) must come out as x > 0 ? x : +0 in the type, and the backward as dy where
 * y > 0, else dy x 0, on a length that is not a multiple of the chunk or the vector width. */
static void test_relu_half_patterns(void) {
    ng_dtype dts[2] = {NG_F16, NG_BF16};
    for (int t = 0; t < 2; t++) {
        int64_t n = 65536 + 4099;
        ng_tensor x = ng_tensor_new(dts[t], NG_CPU, 1, &n, "x");
        ng_tensor dy = ng_tensor_new(dts[t], NG_CPU, 1, &n, "dy");
        ng_tensor dx = ng_tensor_new(dts[t], NG_CPU, 1, &n, "dx");
        uint16_t *xs = x.data, *gs = dy.data;
        for (int64_t i = 0; i < n; i++)
            xs[i] = (uint16_t)(i * 40503u), gs[i] = (uint16_t)(i * 7919u);
        ng_model *m = ng_model_new(ng_relu("r"));
        ng_model_build_mixed(m, NG_CPU, dts[t], 1, 1 << 20, 1 << 20);
        ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
        ng_tensor out = m->root->ops->forward(m->root, &ctx, &x);
        m->root->ops->backward(m->root, &ctx, &dy, &dx);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float v = dts[t] == NG_F16 ? ng_f16_to_f32(xs[i]) : ng_bf16_to_f32(xs[i]);
            uint16_t want = v > 0 ? xs[i] : 0;
            float g = dts[t] == NG_F16 ? ng_f16_to_f32(gs[i]) : ng_bf16_to_f32(gs[i]);
            float d = g * (float)(v > 0);
            uint16_t wd = dts[t] == NG_F16 ? ng_f32_to_f16(d) : ng_f32_to_bf16(d);
            bad += ((uint16_t *)out.data)[i] != want || ((uint16_t *)dx.data)[i] != wd;
        }
        NG_TEST(!bad, "relu %s over all patterns: %lld elements differ", ng_dtype_name(dts[t]),
                (long long)bad);
        ng_model_free(m);
        ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dx);
    }
}

int main(void) {
    ng_gradcheck_opts o = {0}, wide = {.input_lo = -3, .input_hi = 3};
    int64_t s3[3] = {3, 4, 5}, s2[2] = {5, 6}, s4[4] = {2, 3, 4, 5};
    ng_gradcheck("relu", make_relu, 3, s3, o);
    ng_gradcheck("gelu erf", make_gelu_erf, 3, s3, wide);
    ng_gradcheck("gelu tanh", make_gelu_tanh, 3, s3, wide);
    ng_gradcheck("softmax", make_softmax, 3, s3, wide);
    ng_gradcheck("softmax 2-D", make_softmax, 2, s2, o);
    ng_gradcheck("flatten", make_flatten, 4, s4, o);
    ng_gradcheck_opts train = {.training = 1}, eval = {.training = 0};
    ng_gradcheck("dropout training", make_dropout, 3, s3, train);
    ng_gradcheck("dropout eval", make_dropout, 3, s3, eval);

    ng_dtype dts[4] = {NG_F64, NG_F32, NG_F16, NG_BF16};
    for (int i = 0; i < 4; i++) {
        test_forward("relu", make_relu, relu_ref, dts[i]);
        test_forward("gelu erf", make_gelu_erf, gelu_erf_ref, dts[i]);
        test_forward("gelu tanh", make_gelu_tanh, gelu_tanh_ref, dts[i]);
    }
    test_softmax_rows(NG_F64);
    test_softmax_rows(NG_F32);
    test_softmax_rows(NG_F16);
    test_relu_half_patterns();
    test_flatten();
    test_dropout();
    test_dropout_checkpoint();
    test_errors();
    return ng_test_finish("test_activation");
}
