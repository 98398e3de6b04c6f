/* Loss smoothing in float64 on the CPU: amplitude 0 is the identity bit for bit; the restore after
 * the backward is exact; Gaussian and uniform smoothing of a quadratic give its gradient in
 * expectation with the closed-form variance (many samples); each rank draws its own eps, a fresh
 * wrapper at step t (a resume) draws what an uninterrupted one did; schedules; layer choice;
 * config errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/smoothing.h"
#include "optim_step.h"
#include "testing.h"

#define ARENA ((size_t)1 << 22)
enum { N = 8, IN = 5, H = 6, C = 3 };

static ng_model *build_mlp(uint64_t seed) {
    return ng_test_optim_mlp(seed, NG_CPU, NG_F64, IN, H, C);
}

static ng_smoothing_config config(int noise, double a) {
    return (ng_smoothing_config){.noise = noise,
                                 .amplitude = a,
                                 .schedule = NG_SMOOTH_CONSTANT,
                                 .decay_steps = 1,
                                 .layers = NG_SMOOTH_ALL,
                                 .seed = 17};
}

static const ng_optim_config sgd_cfg = {.name = "sgd", .momentum = 0.9};

/* A classification step through the interface on a batch drawn for `step`. */
static void train_step(ng_model *m, ng_optimizer *o, int64_t step) {
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, N, IN, "x");
    ng_tensor y = ng_tensor_1d(NG_I32, NG_CPU, N, "y");
    ng_rng_normal(&x, (ng_rng_key){.seed = 3, .stream = 1, .offset = (uint64_t)step << 20}, 0, 1);
    for (int n = 0; n < N; n++) ((int32_t *)y.data)[n] = (int32_t)((n + step) % C);
    ng_test_optim_step(m, o, &x, &y, step, 0.1);
    ng_tensor_free(&x), ng_tensor_free(&y);
}

static void same_bits(const char *what, const ng_tensor *a, const ng_tensor *b) {
    double *x = ng_test_to_f64(a), *y = ng_test_to_f64(b);
    ng_test_close(what, x, y, a->numel, 0, 0);
    free(x), free(y);
}

static void test_identity(void) {
    uint64_t seed = ng_test_seed();
    for (int noise = 0; noise < 2; noise++) {
        ng_model *m1 = build_mlp(seed), *m2 = build_mlp(seed);
        ng_smoothing_config c = config(noise, 0.0);
        c.scale_by_weight = noise; /* both paths of the scale */
        ng_optimizer *o1 = ng_smoothing_new(m1, &c, ng_optimizer_new(m1, &sgd_cfg)),
                     *o2 = ng_optimizer_new(m2, &sgd_cfg);
        for (int64_t s = 0; s < 5; s++) train_step(m1, o1, s), train_step(m2, o2, s);
        same_bits(noise ? "uniform, amplitude 0: the weights of plain SGD"
                        : "gaussian, amplitude 0: the weights of plain SGD",
                  &m1->flat_params, &m2->flat_params);
        ng_optimizer_free(o1), ng_optimizer_free(o2);
        ng_model_free(m1), ng_model_free(m2);
    }
}

/* How many elements of parameter i differ between two flat buffers. */
static int64_t differing(ng_model *m, int i, const double *a, const double *b) {
    int64_t n = 0, off = m->params[i].offset;
    for (int64_t j = 0; j < m->params[i].param->value.numel; j++) n += a[off + j] != b[off + j];
    return n;
}

static void test_restore_and_layers(void) {
    for (int layers = 0; layers < 2; layers++) {
        ng_model *m = build_mlp(ng_test_seed());
        ng_smoothing_config c = config(NG_SMOOTH_GAUSSIAN, 0.3);
        c.layers = layers;
        ng_optimizer *o = ng_smoothing_new(m, &c, ng_optimizer_new(m, &sgd_cfg));
        double *before = ng_test_to_f64(&m->flat_params);
        ng_optimizer_begin(o, 7, N);
        double *during = ng_test_to_f64(&m->flat_params);
        for (int i = 0; i < m->nparams; i++) {
            int covered = m->params[i].layer->capture;
            int64_t n = differing(m, i, before, during), all = m->params[i].param->value.numel;
            if (layers == NG_SMOOTH_ALL || covered)
                NG_TEST(n == all, "layers %d: %s perturbed in %lld of %lld elements", layers,
                        m->params[i].param->name, (long long)n, (long long)all);
            else
                NG_TEST(n == 0, "layers kfac: %s (not K-FAC's) perturbed in %lld elements",
                        m->params[i].param->name, (long long)n);
        }
        ng_optimizer_after_backward(o);
        double *after = ng_test_to_f64(&m->flat_params);
        ng_test_close("the restored weights", before, after, m->numel, 0, 0);
        free(before), free(during), free(after);
        NG_TEST_ERROR((ng_optimizer_begin(o, 8, N), ng_optimizer_begin(o, 9, N)), "still in place");
        ng_optimizer_free(o);
        ng_model_free(m);
    }
}

/* The perturbed weights of a fresh wrapper (rank r) at `step`, as a host copy. */
static double *draw(uint64_t seed, int rank, int64_t step, ng_smoothing_config c) {
    ng_model *m = build_mlp(seed);
    c.rank = rank;
    ng_optimizer *o = ng_smoothing_new(m, &c, ng_optimizer_new(m, &sgd_cfg));
    ng_optimizer_begin(o, step, N);
    double *w = ng_test_to_f64(&m->flat_params);
    ng_optimizer_after_backward(o);
    ng_optimizer_free(o);
    ng_model_free(m);
    return w;
}

static void test_ranks_and_resume(void) {
    uint64_t seed = ng_test_seed();
    ng_smoothing_config c = config(NG_SMOOTH_UNIFORM, 0.1);
    ng_model *m = build_mlp(seed); /* for the parameter layout */
    double *r0 = draw(seed, 0, 3, c), *r1 = draw(seed, 1, 3, c), *again = draw(seed, 1, 3, c),
           *later = draw(seed, 1, 4, c);
    for (int i = 0; i < m->nparams; i++) {
        int64_t all = m->params[i].param->value.numel;
        NG_TEST(differing(m, i, r0, r1) == all, "%s: ranks 0 and 1 drew alike in %lld elements",
                m->params[i].param->name, (long long)(all - differing(m, i, r0, r1)));
        NG_TEST(differing(m, i, r1, later) == all, "%s: steps 3 and 4 drew alike",
                m->params[i].param->name);
    }
    ng_test_close("the same rank and step draw the same eps", r1, again, m->numel, 0, 0);
    /* An uninterrupted wrapper that went through steps 0..3 with SGD steps in between perturbs
     * its (moved) weights by the same eps as a fresh one at step 3: eps = w(3) + eps - w(3). */
    ng_optimizer *o = ng_smoothing_new(m, &c, ng_optimizer_new(m, &sgd_cfg));
    for (int64_t s = 0; s < 3; s++) train_step(m, o, s);
    double *w3 = ng_test_to_f64(&m->flat_params);
    ng_optimizer_begin(o, 3, N);
    double *p3 = ng_test_to_f64(&m->flat_params);
    ng_optimizer_after_backward(o);
    ng_model *fresh = build_mlp(seed);
    ng_tensor_copy(&fresh->flat_params, &m->flat_params); /* what a resume loads */
    ng_optimizer *f = ng_smoothing_new(fresh, &c, ng_optimizer_new(fresh, &sgd_cfg));
    ng_optimizer_begin(f, 3, N);
    double *q3 = ng_test_to_f64(&fresh->flat_params);
    ng_test_close("a resumed wrapper perturbs as the uninterrupted one", p3, q3, m->numel, 0, 0);
    int64_t moved = 0;
    for (int64_t i = 0; i < m->numel; i++) moved += p3[i] != w3[i];
    NG_TEST(moved > 0, "step 3 perturbed nothing");
    ng_optimizer_after_backward(f);
    ng_optimizer_free(f), ng_model_free(fresh);
    ng_optimizer_free(o);
    free(r0), free(r1), free(again), free(later), free(w3), free(p3), free(q3);
    ng_model_free(m);
}

/* Smoothing of L(W) = 1/2 sum_n |W x_n - y_n|^2 (one Linear without bias): the gradient at
 * W + E is dW + E S with S = sum_n x_n x_n^T, so its mean over eps is dW and the variance of
 * element (i, j) is sigma^2 sum_k S_kj^2 (sigma^2 = a^2 rms^2 for gaussian, a^2 rms^2 / 3 for
 * uniform). */
static void test_quadratic(int noise, int scale_by_weight) {
    enum { OUT = 3, B = 4, SAMPLES = 20000 };
    ng_layer *root = ng_sequence("");
    ng_layer_add_child(root, ng_linear("fc", IN, OUT, 0));
    ng_model *m = ng_model_new(root);
    ng_model_build(m, NG_CPU, NG_F64, ng_test_seed(), ARENA, ARENA);
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, B, IN, "x"),
              y = ng_tensor_2d(NG_F64, NG_CPU, B, OUT, "y");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&y, -1, 1);
    const double *xs = x.data, *ys = y.data;
    double *W = ng_test_to_f64(&ng_model_find(m, "fc.weight")->param->value);
    double S[IN * IN] = {0}, g0[OUT * IN] = {0};
    for (int n = 0; n < B; n++)
        for (int i = 0; i < IN; i++)
            for (int j = 0; j < IN; j++) S[i * IN + j] += xs[n * IN + i] * xs[n * IN + j];
    for (int n = 0; n < B; n++)
        for (int i = 0; i < OUT; i++) {
            double r = -ys[n * OUT + i];
            for (int k = 0; k < IN; k++) r += W[i * IN + k] * xs[n * IN + k];
            for (int j = 0; j < IN; j++) g0[i * IN + j] += r * xs[n * IN + j];
        }
    double rms = 0;
    for (int i = 0; i < OUT * IN; i++) rms += W[i] * W[i];
    rms = scale_by_weight ? sqrt(rms / (OUT * IN)) : 1.0;
    const double a = 0.3;
    double sigma2 = a * a * rms * rms / (noise == NG_SMOOTH_UNIFORM ? 3.0 : 1.0);
    ng_smoothing_config c = config(noise, a);
    c.scale_by_weight = scale_by_weight;
    ng_optimizer *o = ng_smoothing_new(m, &c, ng_optimizer_new(m, &sgd_cfg));
    double sum[OUT * IN] = {0}, sum2[OUT * IN] = {0};
    ng_tensor *grad = &ng_model_find(m, "fc.weight")->param->grad;
    for (int64_t s = 0; s < SAMPLES; s++) {
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 1, (uint64_t)s);
        ng_optimizer_begin(o, s, B);
        ng_tensor out = ng_model_forward(m, &ctx, &x);
        ng_tensor d = ng_arena_tensor(&m->grads, NG_F64, 2, out.shape, "d");
        for (int i = 0; i < B * OUT; i++)
            ((double *)d.data)[i] = ((const double *)out.data)[i] - ys[i];
        ng_model_zero_grad(m);
        ng_model_backward(m, &ctx, &d);
        ng_optimizer_after_backward(o);
        const double *g = grad->data;
        for (int i = 0; i < OUT * IN; i++)
            sum[i] += g[i] - g0[i], sum2[i] += (g[i] - g0[i]) * (g[i] - g0[i]);
    }
    double worst_mean = 0, worst_var = 0;
    for (int i = 0; i < OUT; i++)
        for (int j = 0; j < IN; j++) {
            double var = 0;
            for (int k = 0; k < IN; k++) var += S[k * IN + j] * S[k * IN + j];
            var *= sigma2;
            double mean = sum[i * IN + j] / SAMPLES,
                   svar = sum2[i * IN + j] / SAMPLES - mean * mean;
            /* the mean within 5 standard errors; the variance within 8 of its own (~sqrt(2/S)) */
            worst_mean = fmax(worst_mean, fabs(mean) / (5 * sqrt(var / SAMPLES)));
            worst_var = fmax(worst_var, fabs(svar / var - 1) / (8 * sqrt(2.0 / SAMPLES)));
        }
    NG_TEST(worst_mean <= 1,
            "noise %d scale %d: mean of the smoothed gradient off by %.2f of its "
            "bound",
            noise, scale_by_weight, worst_mean);
    NG_TEST(worst_var <= 1, "noise %d scale %d: its variance off by %.2f of its bound", noise,
            scale_by_weight, worst_var);
    ng_optimizer_free(o);
    ng_tensor_free(&x), ng_tensor_free(&y);
    free(W);
    ng_model_free(m);
}

static void test_schedules(void) {
    ng_smoothing_config c = config(NG_SMOOTH_GAUSSIAN, 0.4);
    c.decay_steps = 100;
    NG_TEST(ng_smoothing_amplitude(&c, 50) == 0.4, "constant");
    c.schedule = NG_SMOOTH_LINEAR;
    NG_TEST(ng_smoothing_amplitude(&c, 0) == 0.4 &&
                fabs(ng_smoothing_amplitude(&c, 25) - 0.3) < 1e-15 &&
                ng_smoothing_amplitude(&c, 100) == 0 && ng_smoothing_amplitude(&c, 150) == 0,
            "linear: %g %g %g", ng_smoothing_amplitude(&c, 0), ng_smoothing_amplitude(&c, 25),
            ng_smoothing_amplitude(&c, 150));
    c.schedule = NG_SMOOTH_COSINE;
    NG_TEST(ng_smoothing_amplitude(&c, 0) == 0.4 &&
                fabs(ng_smoothing_amplitude(&c, 50) - 0.2) < 1e-15 &&
                fabs(ng_smoothing_amplitude(&c, 100)) < 1e-15,
            "cosine: %g %g %g", ng_smoothing_amplitude(&c, 0), ng_smoothing_amplitude(&c, 50),
            ng_smoothing_amplitude(&c, 100));
}

static void test_errors(void) {
    ng_model *m = build_mlp(1);
    ng_optimizer *inner = ng_optimizer_new(m, &sgd_cfg); /* stays ours: every call below fails */
    ng_smoothing_config c = config(NG_SMOOTH_GAUSSIAN, -1);
    NG_TEST_ERROR(ng_smoothing_new(m, &c, inner), "smoothing.amplitude");
    c = config(5, 0.1);
    NG_TEST_ERROR(ng_smoothing_new(m, &c, NULL), "optimizer");
    NG_TEST_ERROR(ng_smoothing_new(m, &c, inner), "smoothing.noise");
    c = config(NG_SMOOTH_GAUSSIAN, 0.1);
    c.schedule = NG_SMOOTH_COSINE, c.decay_steps = 0;
    NG_TEST_ERROR(ng_smoothing_new(m, &c, inner), "smoothing.decay_steps");
    c = config(NG_SMOOTH_GAUSSIAN, 0.1);
    c.layers = 7;
    NG_TEST_ERROR(ng_smoothing_new(m, &c, inner), "smoothing.layers");
    ng_optimizer_free(inner);
    ng_model_free(m);
}

int main(void) {
    test_identity();
    test_restore_and_layers();
    test_ranks_and_resume();
    for (int noise = 0; noise < 2; noise++)
        for (int scale = 0; scale < 2; scale++) test_quadratic(noise, scale);
    test_schedules();
    test_errors();
    return ng_test_finish("test_smoothing");
}
