/* Fisher-shaped smoothing noise on CUDA (f64 and f32) against a float64 CPU reference: the same
 * weights and K-FAC state (factors, eigendecompositions, flags: what a resume loads) give the same
 * eps at the same key, before K-FAC's first inverse (the gaussian path) and after it (the
 * Fisher-shaped path: host roots, device GEMMs), and the restore after the backward is exact on
 * the device.
 *
 * Tolerance (relative norm of eps, per parameter; u the device dtype's unit round-off): each
 * element of eps = a QG (rG rA^T .* Z) QA^T is a sum of K = out x da <= 42 products of five
 * factors that are each rounded once in the device's dtype (Z from Philox, the roots, QA, QG),
 * accumulated through two GEMMs of at most out + da <= 13 terms and an outer product: at most
 * about 20 u relative to the sum of the terms' magnitudes, which for terms of random sign is some
 * sqrt(K) < 7 times |eps|; w + eps and the subtraction that recovers eps add u |w| / |eps|, below
 * 1 u here (a = 0.3 gives |eps| above the weights' scale). 250 u covers that: 3e-5 in f32,
 * 3e-14 in f64 (allowing the device's FMA contractions and another summation order). The gaussian
 * path (a z added by axpy) is within the same bound. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/kfac.h"
#include "optim/smoothing.h"
#include "optim_step.h"
#include "testing.h"

#define ARENA ((size_t)1 << 22)
enum { N = 8, IN = 5, H = 6, C = 3 };

static const ng_optim_config sgd_cfg = {.name = "sgd", .momentum = 0.9};

static ng_model *build(uint64_t seed, ng_device dev, ng_dtype dt) {
    return ng_test_optim_mlp(seed, dev, dt, IN, H, C);
}

static ng_optimizer *chain(ng_model *m) {
    ng_smoothing_config c = {.noise = NG_SMOOTH_FISHER,
                             .amplitude = 0.3,
                             .schedule = NG_SMOOTH_CONSTANT,
                             .decay_steps = 1,
                             .layers = NG_SMOOTH_ALL,
                             .seed = 29,
                             .rank = 1,
                             .fisher_damping = 0.05};
    ng_kfac_config k = ng_kfac_default_config();
    k.damping = k.damping_final = 0.01;
    k.inv_every = 1000;
    k.kl_clip = 0;
    return ng_smoothing_new(m, &c, ng_kfac_optimizer_new(m, &k, ng_optimizer_new(m, &sgd_cfg)));
}

/* A classification step on the CPU reference. */
static void train_step(ng_model *m, ng_optimizer *o, int64_t step) {
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, N, IN, "x");
    ng_tensor y = ng_tensor_1d(NG_I32, NG_CPU, N, "y");
    ng_rng_normal(&x, (ng_rng_key){.seed = 5, .stream = 2, .offset = (uint64_t)step << 20}, 0, 1);
    for (int n = 0; n < N; n++) ((int32_t *)y.data)[n] = (int32_t)((n + step) % C);
    ng_test_optim_step(m, o, &x, &y, step, 0.1);
    ng_tensor_free(&x), ng_tensor_free(&y);
}

/* dst = src, converted to dst's dtype and device through the host. */
static void load(ng_tensor *dst, const ng_tensor *src) {
    if (dst->dtype == src->dtype) {
        ng_tensor_copy(dst, src);
        return;
    }
    ng_tensor h = ng_tensor_to(src, NG_CPU, "load"),
              t = ng_tensor_new(dst->dtype, NG_CPU, dst->ndim, dst->shape, "load");
    ng_cast(&t, &h);
    ng_tensor_copy(dst, &t);
    ng_tensor_free(&h), ng_tensor_free(&t);
}

/* K-FAC's state of `from` into `to`, by name. */
static void load_kfac(ng_optimizer *from, ng_optimizer *to) {
    ng_kfac *a = ng_kfac_of(from->inner), *b = ng_kfac_of(to->inner);
    int n = ng_kfac_state(a, NULL, NULL, 0);
    NG_TEST(n == ng_kfac_state(b, NULL, NULL, 0), "K-FAC state counts differ");
    const char **na = malloc(sizeof *na * (size_t)n), **nb = malloc(sizeof *nb * (size_t)n);
    ng_tensor **ta = malloc(sizeof *ta * (size_t)n), **tb = malloc(sizeof *tb * (size_t)n);
    ng_kfac_state(a, na, ta, n);
    ng_kfac_state(b, nb, tb, n);
    for (int j = 0; j < n; j++) {
        NG_TEST(!strcmp(na[j], nb[j]), "state %d: %s vs %s", j, na[j], nb[j]);
        load(tb[j], ta[j]);
    }
    free(na), free(nb), free(ta), free(tb);
}

/* eps of `step` (host, f64), and whether the weights came back bit for bit. */
static double *eps_of(ng_model *m, ng_optimizer *o, int64_t step, int *restored) {
    double *w0 = ng_test_to_f64(&m->flat_params);
    ng_optimizer_begin(o, step, N);
    double *w1 = ng_test_to_f64(&m->flat_params);
    ng_optimizer_after_backward(o);
    double *w2 = ng_test_to_f64(&m->flat_params);
    *restored = !memcmp(w0, w2, sizeof *w0 * (size_t)m->numel);
    for (int64_t i = 0; i < m->numel; i++) w1[i] -= w0[i];
    free(w0), free(w2);
    return w1;
}

static void compare(const char *what, ng_model *m, const double *ref, const double *got,
                    double tol) {
    for (int i = 0; i < m->nparams; i++) {
        char label[200];
        snprintf(label, sizeof label, "%s: %s", what, m->params[i].param->name);
        int64_t off = m->params[i].offset;
        ng_test_rel_norm(label, ref + off, got + off, m->params[i].param->value.numel, tol);
    }
}

static void check(ng_dtype dt) {
    double tol = dt == NG_F32 ? 3e-5 : 3e-14;
    uint64_t seed = ng_test_seed();
    ng_model *mc = build(seed, NG_CPU, NG_F64), *mg = build(seed, NG_CUDA, dt);
    ng_optimizer *oc = chain(mc), *og = chain(mg);
    load(&mg->flat_params, &mc->flat_params);
    ng_model_refresh_compute(mg);
    int rc, rg;
    char what[120];
    double *ec = eps_of(mc, oc, 0, &rc), *eg = eps_of(mg, og, 0, &rg);
    snprintf(what, sizeof what, "%s, before the first inverse", ng_dtype_name(dt));
    compare(what, mc, ec, eg, tol);
    NG_TEST(rc && rg, "%s: restore cpu %d cuda %d", what, rc, rg);
    free(ec), free(eg);
    for (int64_t s = 0; s < 2; s++) train_step(mc, oc, s);
    load(&mg->flat_params, &mc->flat_params);
    ng_model_refresh_compute(mg);
    load_kfac(oc, og);
    ec = eps_of(mc, oc, 7, &rc), eg = eps_of(mg, og, 7, &rg);
    snprintf(what, sizeof what, "%s, Fisher-shaped", ng_dtype_name(dt));
    compare(what, mc, ec, eg, tol);
    NG_TEST(rc && rg, "%s: restore cpu %d cuda %d", what, rc, rg);
    char buf[512];
    ng_optimizer_metrics(og, buf, sizeof buf);
    NG_TEST(strstr(buf, "\"smoothing_fisher_layers\": 2"), "%s: metrics %s", what, buf);
    free(ec), free(eg);
    ng_optimizer_free(oc), ng_optimizer_free(og);
    ng_model_free(mc), ng_model_free(mg);
}

int main(void) {
    ng_test_require_gpu("test_fisher_noise_gpu");
    check(NG_F64);
    check(NG_F32);
    return ng_test_finish("test_fisher_noise_gpu");
}
