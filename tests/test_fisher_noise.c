/* Fisher-shaped smoothing noise (smoothing.noise: fisher) in float64 on the CPU: the sample
 * covariance of many draws against a^2 (A + gI)^-1 kron (G + gI)^-1 of K-FAC's factors; the
 * default g (sqrt of K-FAC's gamma, both damping units); before K-FAC's first inverse, and for
 * parameters K-FAC does not cover, the draws are gaussian smoothing's, bit for bit; ranks and
 * steps draw differently, the same (rank, step) alike, and a chain restored from K-FAC's state (a
 * resume) draws what the original does; the restore after the backward is exact; config errors.
 * Noisy K-FAC: the same covariance with a^2 = lambda/N and g = sqrt(lambda eta/N), its draws are
 * fisher smoothing's, the mean where there is no eigendecomposition or no K-FAC, evaluation
 * samples, lambda = 0 is the mean exactly, config errors. */
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
enum { N = 8 };

static const ng_optim_config sgd_cfg = {.name = "sgd", .momentum = 0.9};

/* One Linear in -> out with bias (the covariance test), or Linear, LayerNorm (not K-FAC's),
 * ReLU, Linear. */
static ng_model *build(uint64_t seed, int mlp, int in, int out) {
    if (mlp) return ng_test_optim_mlp(seed, NG_CPU, NG_F64, in, 6, out);
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc", in, out, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
    return m;
}

static ng_smoothing_config smoothing_config(int noise, double a, double g) {
    return (ng_smoothing_config){.noise = noise,
                                 .amplitude = a,
                                 .schedule = NG_SMOOTH_CONSTANT,
                                 .decay_steps = 1,
                                 .layers = NG_SMOOTH_ALL,
                                 .seed = 23,
                                 .fisher_damping = g};
}

static ng_kfac_config kfac_config(int units) {
    ng_kfac_config k = ng_kfac_default_config();
    k.damping = 0.01;
    k.damping_final = 0.01;
    k.damping_units = units;
    k.inv_every = 1000; /* the eigendecomposition of step 0 stays */
    k.kl_clip = 0;
    return k;
}

/* Noisy K-FAC's config: lambda, eta, N; 3 evaluation samples. */
static ng_noisy_kfac_config noisy_config(double lambda, double eta, int64_t n) {
    return (ng_noisy_kfac_config){.kl_weight = lambda,
                                  .prior_precision = eta,
                                  .dataset_size = n,
                                  .eval_samples = 3,
                                  .seed = 23};
}

/* smoothing in front of K-FAC in front of SGD. */
static ng_optimizer *chain(ng_model *m, ng_smoothing_config c, int units) {
    ng_kfac_config k = kfac_config(units);
    return ng_smoothing_new(m, &c, ng_kfac_optimizer_new(m, &k, ng_optimizer_new(m, &sgd_cfg)));
}

static ng_kfac *kfac_behind(ng_optimizer *o) {
    return ng_kfac_of(o->inner);
}

/* A classification step through the interface: inputs with unequal column scales and offsets
 * (an anisotropic A with off-diagonal terms), labels cycling over `classes`. */
static void train_step(ng_model *m, ng_optimizer *o, int64_t step, int in, int classes) {
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, N, in, "x");
    ng_tensor y = ng_tensor_1d(NG_I32, NG_CPU, N, "y");
    ng_rng_normal(&x, (ng_rng_key){.seed = 5, .stream = 2, .offset = (uint64_t)step << 20}, 0, 1);
    double *xs = x.data;
    for (int n = 0; n < N; n++)
        for (int j = 0; j < in; j++) xs[n * in + j] = xs[n * in + j] * (0.5 + j) + 0.4 * (j - 1);
    for (int n = 0; n < N; n++) ((int32_t *)y.data)[n] = (int32_t)((n + step) % classes);
    ng_test_optim_step(m, o, &x, &y, step, 0.1);
    ng_tensor_free(&x), ng_tensor_free(&y);
}

/* The weights during `step`'s perturbation (host copy); the weights are restored after. */
static double *perturbed(ng_model *m, ng_optimizer *o, int64_t step) {
    ng_optimizer_begin(o, step, N);
    double *w = ng_test_to_f64(&m->flat_params);
    ng_optimizer_after_backward(o);
    return w;
}

/* How many elements of parameter i differ between two flat buffers. */
static int64_t differing(ng_model *m, int i, const double *a, const double *b) {
    int64_t n = 0, off = m->params[i].offset;
    for (int64_t j = 0; j < m->params[i].param->value.numel; j++) n += a[off + j] != b[off + j];
    return n;
}

/* X^-1 of a symmetric positive definite n x n matrix (Gauss-Jordan, n small). */
static void invert(int n, const double *X, double *out) {
    double a[8][16];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 2 * n; j++) a[i][j] = j < n ? X[i * n + j] : (j - n == i);
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r][c]) > fabs(a[p][c])) p = r;
        for (int j = 0; j < 2 * n; j++) {
            double t = a[c][j];
            a[c][j] = a[p][j], a[p][j] = t;
        }
        double piv = a[c][c];
        for (int j = 0; j < 2 * n; j++) a[c][j] /= piv;
        for (int r = 0; r < n; r++) {
            if (r == c) continue;
            double f = a[r][c];
            for (int j = 0; j < 2 * n; j++) a[r][j] -= f * a[c][j];
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) out[i * n + j] = a[i][n + j];
}

/* eps of the Linear "fc" [OUT, IN] with bias, as x = vec of [OUT, DA] (bias last), over S draws
 * (steps 1..S after K-FAC's inverse at step 0); its sample covariance 1/S sum x x^T (the mean is
 * known, 0) against Sigma = a^2 (G + gI)^-1 kron (A + gI)^-1 in that row-major order, i.e.
 * Sigma[(i,j),(k,l)] = a^2 Ginv[i,k] Ainv[j,l].
 * Tolerance: for zero-mean Gaussian x, the estimate C_pq = 1/S sum_s x_p x_q has variance
 * (Sigma_pp Sigma_qq + Sigma_pq^2) / S (Isserlis: E[x_p^2 x_q^2] = Sigma_pp Sigma_qq +
 * 2 Sigma_pq^2), so its standard error is se_pq = sqrt((Sigma_pp Sigma_qq + Sigma_pq^2) / S);
 * every one of the 64 entries must lie within 5 se (a false alarm per entry about 6e-7). The
 * test must also be able to fail: some off-diagonal entry of Sigma is over 20 se from 0, which
 * isotropic noise (or noise shaped by one factor only) would show. */
static void test_covariance(int noisy) {
    enum { IN = 3, OUT = 2, DA = IN + 1, D = OUT * DA, S = 20000 };
    const double a = 0.5, g = 0.05;
    ng_model *m = build(ng_test_seed(), 0, IN, OUT);
    ng_optimizer *o;
    if (noisy) { /* Noisy K-FAC with lambda / N = a^2 and lambda eta / N = g^2 */
        ng_noisy_kfac_config nc = noisy_config(a * a * 100, g * g / (a * a), 100);
        ng_kfac_config k = kfac_config(NG_KFAC_UNITS_PER_EXAMPLE);
        o = ng_noisy_kfac_new(m, &nc, ng_kfac_optimizer_new(m, &k, ng_optimizer_new(m, &sgd_cfg)));
    } else {
        o = chain(m, smoothing_config(NG_SMOOTH_FISHER, a, g), NG_KFAC_UNITS_PER_EXAMPLE);
    }
    train_step(m, o, 0, IN, OUT);
    ng_kfac *k = kfac_behind(o);
    ng_tensor QA, dA, QG, dG, A, G;
    NG_TEST(ng_kfac_eigen(k, 0, &QA, &dA, &QG, &dG) == 1, "no eigendecomposition after step 0");
    ng_kfac_factors(k, 0, NULL, &A, &G);
    double *Ah = ng_test_to_f64(&A), *Gh = ng_test_to_f64(&G), Ainv[DA * DA], Ginv[OUT * OUT];
    for (int i = 0; i < DA; i++) Ah[i * DA + i] += g;
    for (int i = 0; i < OUT; i++) Gh[i * OUT + i] += g;
    invert(DA, Ah, Ainv);
    invert(OUT, Gh, Ginv);
    /* zero weights: w + eps is eps exactly */
    ng_fill(&m->flat_params, 0.0);
    const double *flat = m->flat_params.data;
    int64_t ow = ng_model_find(m, "fc.weight")->offset, ob = ng_model_find(m, "fc.bias")->offset;
    double *C = calloc(D * D, sizeof *C);
    for (int64_t s = 1; s <= S; s++) {
        ng_optimizer_begin(o, s, N);
        double x[D];
        for (int i = 0; i < OUT; i++) {
            for (int j = 0; j < IN; j++) x[i * DA + j] = flat[ow + i * IN + j];
            x[i * DA + IN] = flat[ob + i];
        }
        ng_optimizer_after_backward(o);
        for (int p = 0; p < D; p++)
            for (int q = 0; q < D; q++) C[p * D + q] += x[p] * x[q];
    }
    double Sigma[D * D], worst = 0, reach = 0;
    for (int p = 0; p < D; p++)
        for (int q = 0; q < D; q++)
            Sigma[p * D + q] = a * a * Ginv[(p / DA) * OUT + q / DA] * Ainv[(p % DA) * DA + q % DA];
    int wp = 0, wq = 0;
    for (int p = 0; p < D; p++)
        for (int q = 0; q < D; q++) {
            double sig = Sigma[p * D + q],
                   se = sqrt((Sigma[p * D + p] * Sigma[q * D + q] + sig * sig) / S),
                   err = fabs(C[p * D + q] / S - sig) / se;
            if (err > worst) worst = err, wp = p, wq = q;
            if (p != q && fabs(sig) / se > reach) reach = fabs(sig) / se;
        }
    NG_TEST(worst <= 5,
            "%s: sample covariance entry (%d, %d) is %.2f standard errors from a^2 (A + gI)^-1 "
            "kron (G + gI)^-1 (%.6g against %.6g)",
            noisy ? "noisy K-FAC" : "fisher smoothing", wp, wq, worst, C[wp * D + wq] / S,
            Sigma[wp * D + wq]);
    NG_TEST(reach > 20,
            "the target is too close to isotropic to test (largest off-diagonal %.1f se)", reach);
    free(C), free(Ah), free(Gh);
    ng_optimizer_free(o);
    ng_model_free(m);
}

/* Copies every part's state of `from` into `to` by name (K-FAC's factors and eigenvectors, SGD's
 * momentum; smoothing has none) and the step count, as a resume does. */
static void copy_state(ng_optimizer *from, ng_optimizer *to) {
    ng_optimizer *pa[4], *pb[4];
    int na = ng_optimizer_parts(from, pa, 4), nb = ng_optimizer_parts(to, pb, 4);
    NG_TEST(na == nb && na == 3, "parts %d and %d", na, nb);
    for (int i = 0; i < na && i < nb; i++) {
        int n = ng_optimizer_state_count(pa[i]);
        NG_TEST(n == ng_optimizer_state_count(pb[i]), "%s: state counts differ", pa[i]->ops->kind);
        const char **names = malloc(sizeof *names * (size_t)(n + 1)),
                   **names2 = malloc(sizeof *names2 * (size_t)(n + 1));
        ng_tensor **ta = malloc(sizeof *ta * (size_t)(n + 1)),
                  **tb = malloc(sizeof *tb * (size_t)(n + 1));
        ng_optimizer_state(pa[i], names, ta, n);
        ng_optimizer_state(pb[i], names2, tb, n);
        for (int j = 0; j < n; j++) {
            NG_TEST(!strcmp(names[j], names2[j]), "state %d: %s vs %s", j, names[j], names2[j]);
            ng_tensor_copy(tb[j], ta[j]);
        }
        free(names), free(names2), free(ta), free(tb);
    }
    ng_optimizer_set_step(to, ng_optimizer_get_step(from));
}

/* g = 0 takes sqrt of K-FAC's gamma at the step: damping, or N^2 damping in kfac-pytorch units. */
static void test_default_damping(void) {
    for (int units = 0; units < 2; units++) {
        uint64_t seed = ng_test_seed();
        double gamma = 0.01 * (units == NG_KFAC_UNITS_KFAC_PYTORCH ? (double)N * N : 1.0);
        ng_model *m1 = build(seed, 1, 5, 3), *m2 = build(seed, 1, 5, 3);
        ng_optimizer *o1 = chain(m1, smoothing_config(NG_SMOOTH_FISHER, 0.2, 0), units),
                     *o2 = chain(m2, smoothing_config(NG_SMOOTH_FISHER, 0.2, sqrt(gamma)), units),
                     *o3 =
                         chain(m2, smoothing_config(NG_SMOOTH_FISHER, 0.2, 2 * sqrt(gamma)), units);
        train_step(m1, o1, 0, 5, 3);
        train_step(m2, o2, 0, 5, 3);
        copy_state(o2, o3); /* the same factors, another g */
        double *w1 = perturbed(m1, o1, 4), *w2 = perturbed(m2, o2, 4), *w3 = perturbed(m2, o3, 4);
        ng_test_close(units ? "kfac-pytorch units: g = 0 draws as g = sqrt(N^2 gamma)"
                            : "per-example units: g = 0 draws as g = sqrt(gamma)",
                      w1, w2, m1->numel, 0, 0);
        int64_t moved = 0;
        for (int64_t i = 0; i < m1->numel; i++) moved += w2[i] != w3[i];
        NG_TEST(moved > 0, "units %d: g does not change the draws", units);
        free(w1), free(w2), free(w3);
        ng_optimizer_free(o1), ng_optimizer_free(o2), ng_optimizer_free(o3);
        ng_model_free(m1), ng_model_free(m2);
    }
}

/* Before K-FAC's first inverse every parameter draws gaussian smoothing's eps; after it, the
 * covered layers draw Fisher-shaped eps and the LayerNorm keeps gaussian's. */
static void test_fallback(void) {
    uint64_t seed = ng_test_seed();
    ng_model *m = build(seed, 1, 5, 3), *mg = build(seed, 1, 5, 3);
    ng_optimizer *f =
        chain(m, smoothing_config(NG_SMOOTH_FISHER, 0.3, 0), NG_KFAC_UNITS_PER_EXAMPLE);
    ng_smoothing_config gc = smoothing_config(NG_SMOOTH_GAUSSIAN, 0.3, 0);
    ng_optimizer *gs = ng_smoothing_new(mg, &gc, ng_optimizer_new(mg, &sgd_cfg));
    double *wf = perturbed(m, f, 0), *wg = perturbed(mg, gs, 0);
    ng_test_close("before the first inverse: gaussian smoothing's draws", wg, wf, m->numel, 0, 0);
    char buf[512];
    ng_optimizer_metrics(f, buf, sizeof buf);
    NG_TEST(strstr(buf, "\"smoothing_fisher_layers\": 0"), "metrics before the inverse: %s", buf);
    free(wf), free(wg);
    train_step(m, f, 0, 5, 3);
    ng_tensor_copy(&mg->flat_params, &m->flat_params);
    wf = perturbed(m, f, 1), wg = perturbed(mg, gs, 1);
    ng_optimizer_metrics(f, buf, sizeof buf);
    NG_TEST(strstr(buf, "\"smoothing_fisher_layers\": 2"), "metrics after the inverse: %s", buf);
    for (int i = 0; i < m->nparams; i++) {
        int64_t n = differing(m, i, wf, wg), all = m->params[i].param->value.numel;
        if (m->params[i].layer->capture)
            NG_TEST(n == all, "%s: Fisher-shaped eps equals gaussian's in %lld of %lld elements",
                    m->params[i].param->name, (long long)(all - n), (long long)all);
        else
            NG_TEST(n == 0, "%s (not K-FAC's): %lld elements differ from gaussian's draw",
                    m->params[i].param->name, (long long)n);
    }
    free(wf), free(wg);
    ng_optimizer_free(f), ng_optimizer_free(gs);
    ng_model_free(m), ng_model_free(mg);
}

/* Ranks and steps draw differently, the same key alike; a restored chain draws as the original;
 * the restore after the backward is exact. */
static void test_ranks_resume_restore(void) {
    uint64_t seed = ng_test_seed();
    ng_model *m = build(seed, 1, 5, 3);
    ng_smoothing_config c = smoothing_config(NG_SMOOTH_FISHER, 0.1, 0);
    ng_optimizer *r0 = chain(m, c, NG_KFAC_UNITS_PER_EXAMPLE);
    c.rank = 1;
    ng_optimizer *r1 = chain(m, c, NG_KFAC_UNITS_PER_EXAMPLE);
    for (int64_t s = 0; s < 3; s++) train_step(m, r0, s, 5, 3);
    copy_state(r0, r1); /* the same factors on both ranks, as distributed K-FAC has */
    double *before = ng_test_to_f64(&m->flat_params);
    double *a = perturbed(m, r0, 5), *b = perturbed(m, r1, 5), *b2 = perturbed(m, r1, 5),
           *b6 = perturbed(m, r1, 6);
    for (int i = 0; i < m->nparams; i++) {
        int64_t all = m->params[i].param->value.numel;
        NG_TEST(differing(m, i, a, b) == all, "%s: ranks 0 and 1 drew alike in %lld elements",
                m->params[i].param->name, (long long)(all - differing(m, i, a, b)));
        NG_TEST(differing(m, i, b, b6) == all, "%s: steps 5 and 6 drew alike",
                m->params[i].param->name);
    }
    ng_test_close("the same rank and step draw the same eps", b, b2, m->numel, 0, 0);
    double *after = ng_test_to_f64(&m->flat_params);
    ng_test_close("the weights after four Fisher-shaped perturbations", before, after, m->numel, 0,
                  0);
    /* a resume: fresh model and chain, the weights and K-FAC's state loaded */
    ng_model *fresh = build(seed + 1, 1, 5, 3);
    ng_tensor_copy(&fresh->flat_params, &m->flat_params);
    c.rank = 0;
    ng_optimizer *f = chain(fresh, c, NG_KFAC_UNITS_PER_EXAMPLE);
    copy_state(r0, f);
    double *q = perturbed(fresh, f, 5);
    ng_test_close("a resumed chain draws the uninterrupted one's eps", a, q, m->numel, 0, 0);
    /* the uninterrupted and the resumed chain take the same next step */
    train_step(m, r0, 3, 5, 3);
    train_step(fresh, f, 3, 5, 3);
    double *x = ng_test_to_f64(&m->flat_params), *y = ng_test_to_f64(&fresh->flat_params);
    ng_test_close("the resumed chain's next step", x, y, m->numel, 0, 0);
    free(before), free(a), free(b), free(b2), free(b6), free(after), free(q), free(x), free(y);
    ng_optimizer_free(f), ng_optimizer_free(r0), ng_optimizer_free(r1);
    ng_model_free(fresh), ng_model_free(m);
}

static void test_errors(void) {
    ng_model *m = build(1, 1, 5, 3);
    ng_optimizer *sgd = ng_optimizer_new(m, &sgd_cfg); /* stays ours: every call below fails */
    ng_smoothing_config c = smoothing_config(NG_SMOOTH_FISHER, 0.1, 0);
    NG_TEST_ERROR(ng_smoothing_new(m, &c, sgd), "smoothing.noise");
    NG_TEST_ERROR(ng_smoothing_new(m, &c, sgd), "kfac.enabled");
    ng_kfac_config kc = kfac_config(NG_KFAC_UNITS_PER_EXAMPLE);
    kc.inverse = NG_KFAC_CHOLESKY, kc.damping_mode = NG_KFAC_DAMP_FACTORED;
    ng_optimizer *chol = ng_kfac_optimizer_new(m, &kc, ng_optimizer_new(m, &sgd_cfg));
    NG_TEST_ERROR(ng_smoothing_new(m, &c, chol), "kfac.inverse=eigen");
    c.fisher_damping = -1;
    NG_TEST_ERROR(ng_smoothing_new(m, &c, chol), "smoothing.fisher_damping");
    c.fisher_damping = NAN;
    NG_TEST_ERROR(ng_smoothing_new(m, &c, chol), "smoothing.fisher_damping");
    ng_optimizer_free(chol), ng_optimizer_free(sgd);
    ng_model_free(m);
}

/* Noisy K-FAC in front of K-FAC in front of SGD. */
static ng_optimizer *noisy_chain(ng_model *m, ng_noisy_kfac_config c) {
    ng_kfac_config k = kfac_config(NG_KFAC_UNITS_PER_EXAMPLE);
    return ng_noisy_kfac_new(m, &c, ng_kfac_optimizer_new(m, &k, ng_optimizer_new(m, &sgd_cfg)));
}

/* The weights of evaluation sample k (host copy); the mean is restored after. */
static double *sampled(ng_model *m, ng_optimizer *o, int64_t k) {
    ng_noisy_kfac_sample(o, k);
    double *w = ng_test_to_f64(&m->flat_params);
    ng_noisy_kfac_restore(o);
    return w;
}

/* Noisy K-FAC: is the Fisher-shaped smoothing of its config, bit for bit; before K-FAC's first
 * inverse, and on parameters K-FAC does not cover (the LayerNorm), the mean; lambda = 0 is the
 * mean exactly; evaluation samples are a function of (seed, k), differ between k, and the mean is
 * restored exactly after each; the prior's gamma; config errors name the noisy.* key. */
static void test_noisy(void) {
    uint64_t seed = ng_test_seed();
    ng_noisy_kfac_config nc = noisy_config(2.0, 5.0, 400);
    NG_TEST(fabs(ng_noisy_kfac_gamma(&nc) - 2.0 * 5.0 / 400) < 1e-15, "gamma_in = lambda eta / N");
    ng_smoothing_config sc = ng_noisy_kfac_smoothing(&nc);
    NG_TEST(fabs(sc.amplitude - sqrt(2.0 / 400)) < 1e-15 &&
                fabs(sc.fisher_damping - sqrt(2.0 * 5.0 / 400)) < 1e-15 &&
                sc.noise == NG_SMOOTH_FISHER && sc.layers == NG_SMOOTH_KFAC_LAYERS,
            "the smoothing config of Noisy K-FAC: a = sqrt(lambda/N), g = sqrt(lambda eta/N)");
    ng_model *m = build(seed, 1, 5, 3), *ms = build(seed, 1, 5, 3), *m0 = build(seed, 1, 5, 3);
    ng_optimizer *o = noisy_chain(m, nc), *f = chain(ms, sc, NG_KFAC_UNITS_PER_EXAMPLE),
                 *z = noisy_chain(m0, noisy_config(0, 5.0, 400));
    double *mean = ng_test_to_f64(&m->flat_params), *w = perturbed(m, o, 0);
    ng_test_close("before the first inverse: the mean", mean, w, m->numel, 0, 0);
    free(mean), free(w);
    train_step(m, o, 0, 5, 3);
    train_step(m0, z, 0, 5, 3);
    copy_state(o, f); /* fisher smoothing with the same factors and weights */
    ng_tensor_copy(&ms->flat_params, &m->flat_params);
    mean = ng_test_to_f64(&m->flat_params);
    w = perturbed(m, o, 1);
    double *ws = perturbed(ms, f, 1);
    for (int i = 0; i < m->nparams; i++) {
        int64_t n = differing(m, i, w, mean), all = m->params[i].param->value.numel;
        if (m->params[i].layer->capture) {
            NG_TEST(n == all, "%s: the sample equals the mean in %lld of %lld elements",
                    m->params[i].param->name, (long long)(all - n), (long long)all);
            NG_TEST(differing(m, i, w, ws) == 0, "%s: not fisher smoothing's draw",
                    m->params[i].param->name);
        } else {
            NG_TEST(n == 0, "%s (not K-FAC's): moved from the mean", m->params[i].param->name);
        }
    }
    char buf[512];
    ng_optimizer_metrics(o, buf, sizeof buf);
    NG_TEST(strstr(buf, "\"noisy_layers\": 2"), "metrics: %s", buf);
    double *after = ng_test_to_f64(&m->flat_params);
    ng_test_close("the mean after a sampled step's restore", mean, after, m->numel, 0, 0);
    NG_TEST(ng_noisy_kfac_find(o) == o && ng_noisy_kfac_find(f) == NULL &&
                ng_noisy_kfac_eval_samples(o) == 3,
            "find the part and its evaluation samples");
    /* evaluation samples */
    double *e0 = sampled(m, o, 0), *e0b = sampled(m, o, 0), *e1 = sampled(m, o, 1);
    ng_test_close("evaluation sample 0 twice", e0, e0b, m->numel, 0, 0);
    int64_t moved = 0;
    for (int64_t i = 0; i < m->numel; i++) moved += e0[i] != e1[i];
    NG_TEST(moved > 0, "evaluation samples 0 and 1 are alike");
    free(after);
    after = ng_test_to_f64(&m->flat_params);
    ng_test_close("the mean after evaluation samples", mean, after, m->numel, 0, 0);
    /* lambda = 0: the mean exactly, in training and at evaluation */
    double *mean0 = ng_test_to_f64(&m0->flat_params), *t0 = perturbed(m0, z, 1),
           *s0 = sampled(m0, z, 2);
    ng_test_close("lambda = 0: the training sample is the mean", mean0, t0, m0->numel, 0, 0);
    ng_test_close("lambda = 0: the evaluation sample is the mean", mean0, s0, m0->numel, 0, 0);
    NG_TEST_ERROR(ng_noisy_kfac_sample(f, 0), "Noisy K-FAC");
    free(mean), free(w), free(ws), free(after), free(e0), free(e0b), free(e1), free(mean0),
        free(t0), free(s0);
    ng_optimizer_free(o), ng_optimizer_free(f), ng_optimizer_free(z);
    ng_model_free(m), ng_model_free(ms), ng_model_free(m0);
    /* errors */
    ng_model *me = build(1, 1, 5, 3);
    ng_optimizer *sgd = ng_optimizer_new(me, &sgd_cfg); /* stays ours: every call below fails */
    ng_noisy_kfac_config bad = noisy_config(-1, 1, 10);
    NG_TEST_ERROR(ng_noisy_kfac_new(me, &bad, sgd), "noisy.kl_weight");
    bad = noisy_config(1, 0, 10);
    NG_TEST_ERROR(ng_noisy_kfac_new(me, &bad, sgd), "noisy.prior_precision");
    bad = noisy_config(1, 1, 0);
    NG_TEST_ERROR(ng_noisy_kfac_new(me, &bad, sgd), "noisy.dataset_size");
    bad = noisy_config(1, 1, 10);
    bad.eval_samples = 0;
    NG_TEST_ERROR(ng_noisy_kfac_new(me, &bad, sgd), "noisy.eval_samples");
    bad.eval_samples = 1;
    NG_TEST_ERROR(ng_noisy_kfac_new(me, &bad, sgd), "noisy.enabled: fisher noise");
    ng_optimizer_free(sgd);
    ng_model_free(me);
}

int main(void) {
    test_covariance(0);
    test_covariance(1);
    test_noisy();
    test_default_damping();
    test_fallback();
    test_ranks_resume_restore();
    test_errors();
    return ng_test_finish("test_fisher_noise");
}
