/* K-FAC on CUDA (f32) against a float64 CPU reference run of the same model and inputs: factors,
 * raw and preconditioned gradients over two steps (running average, inverse update, KL clip), on
 * a small ViT (Linear layers on tokens, expand and reduce) and on 2-D and 3-D conv nets (patch
 * factors in chunks); and categorical sampling, CUDA against CPU, bit for bit.
 *
 * Tolerances (relative norms; u = 2^-24, f32 unit round-off):
 *  - factors: a sum of r products (r = rows summed: N*T tokens or N*P patch positions) in f32
 *    is off by at most r u sum|a_i a_j| <= r u sqrt(A_ii A_jj) per element, whose Frobenius norm
 *    is r u tr(A) <= r u sqrt(n) ||A||; the activations feeding them carry the model's own f32
 *    error, twice in a product, estimated by the largest raw-gradient error of the step (e_act):
 *    tolerance 2 (r u sqrt(n) + 2 e_act).
 *  - preconditioned gradient X = (G + gG)^-1 V (A + gA)^-1: a relative error e_V of the raw
 *    gradient V (measured, it comes from the model's f32 backward) propagates by at most
 *    kA kG e_V, an error e_M of a damped factor M by at most k(M) e_M, where k is the condition
 *    number, (lambda_max(M) + damping) / damping from the reference factors (power iteration,
 *    10% margin, capped by the trace); e_M is the
 *    factor error (2 r u) plus f32 eigendecomposition backward error (n u for n x n). Sum damping
 *    uses k = (lambda_max(A) lambda_max(G) + gamma) / gamma for all three. The KL clip's nu =
 * sqrt(c / vg) adds half of vg's relative error, itself below the gradients' error. Each bound gets
 * a factor 2. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "nn/sample.h"
#include "nn/transformer.h"
#include "optim/kfac.h"
#include "testing.h"

#define U32 (1.0 / 16777216.0)
#define MAXL 16
#define STEPS 2

static ng_layer *make_vit(void) {
    ng_vit_config c = {.img_size = 8,
                       .patch = 4,
                       .in_ch = 3,
                       .dim = 16,
                       .depth = 2,
                       .heads = 2,
                       .classes = 5,
                       .mlp_ratio = 2,
                       .drop = 0,
                       .checkpoint = {.every = 1}};
    return ng_vit(&c);
}

static ng_layer *make_cnn(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(
        s, ng_conv("conv1", 2, 3, 4, (int64_t[]){3, 3}, NULL, (int64_t[]){1, 1}, NULL, 1));
    ng_layer_add_child(s, ng_relu("act1"));
    ng_layer_add_child(s, ng_conv("conv2", 2, 4, 6, (int64_t[]){3, 3}, (int64_t[]){2, 2},
                                  (int64_t[]){1, 1}, (int64_t[]){1, 1}, 0));
    ng_layer_add_child(s, ng_relu("act2"));
    ng_layer_add_child(s, ng_flatten("flat"));
    ng_layer_add_child(s, ng_linear("head", 6 * 4 * 4, 5, 1));
    return s;
}

static ng_layer *make_cnn3d(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_conv("conv1", 3, 2, 3, (int64_t[]){3, 3, 3}, (int64_t[]){1, 2, 1},
                                  (int64_t[]){1, 1, 1}, (int64_t[]){1, 1, 2}, 1));
    ng_layer_add_child(s, ng_relu("act1"));
    ng_layer_add_child(s, ng_flatten("flat"));
    ng_layer_add_child(s, ng_linear("head", 3 * 5 * 5 * 3, 4, 1));
    return s;
}

typedef struct {
    int n;
    const char *name[MAXL];
    int64_t da[MAXL], out[MAXL];
    double *A[STEPS][MAXL], *G[STEPS][MAXL], *raw[STEPS][MAXL], *pre[STEPS][MAXL];
} record;

/* A layer's gradient as one [out, in(+1)] matrix on the host. */
static double *grad_matrix(ng_model *m, const char *layer, int64_t out, int64_t da) {
    char name[160];
    snprintf(name, sizeof name, "%s.weight", layer);
    ng_param_entry *w = ng_model_find(m, name);
    double *wv = ng_test_to_f64(&w->param->grad), *g = malloc(sizeof *g * (size_t)(out * da));
    int64_t in = w->param->grad.numel / out;
    snprintf(name, sizeof name, "%s.bias", layer);
    ng_param_entry *b = da > in ? ng_model_find(m, name) : NULL;
    double *bv = b ? ng_test_to_f64(&b->param->grad) : NULL;
    for (int64_t i = 0; i < out; i++) {
        for (int64_t j = 0; j < in; j++) g[i * da + j] = wv[i * in + j];
        if (bv) g[i * da + in] = bv[i];
    }
    free(wv);
    free(bv);
    return g;
}

static ng_tensor convert(const ng_tensor *h, ng_device dev, ng_dtype dt) {
    ng_tensor c = ng_tensor_new(dt, NG_CPU, h->ndim, h->shape, "input");
    ng_cast(&c, h);
    if (dev == NG_CPU) return c;
    ng_tensor d = ng_tensor_to(&c, dev, "input");
    ng_tensor_free(&c);
    return d;
}

/* STEPS steps of K-FAC on a fresh model; inputs x[s], dy[s] are f64 host tensors. */
static void run(ng_layer *(*make)(void), ng_device dev, ng_dtype dt, const ng_kfac_config *c,
                size_t chunk, const ng_tensor *x, const ng_tensor *dy, double lr, record *r) {
    ng_model *m = ng_model_new(make());
    ng_model_build(m, dev, dt, 1234, (size_t)64 << 20, (size_t)64 << 20);
    ng_kfac *k = ng_kfac_new(m, c);
    if (chunk) ng_kfac_set_chunk_bytes(k, chunk);
    r->n = ng_kfac_layers(k);
    for (int s = 0; s < STEPS; s++) {
        ng_tensor xs = convert(&x[s], dev, dt), ds = convert(&dy[s], dev, dt);
        ng_model_reset_arenas(m);
        ng_model_zero_grad(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 5, (uint64_t)s);
        ctx.observer = ng_kfac_observer(k);
        ng_kfac_begin(k, s, x[s].shape[0], 1, 1);
        ng_model_forward(m, &ctx, &xs);
        ng_model_backward(m, &ctx, &ds);
        for (int i = 0; i < r->n; i++) {
            ng_tensor A, G;
            ng_kfac_factors(k, i, &r->name[i], &A, &G);
            r->da[i] = A.shape[0];
            r->out[i] = G.shape[0];
            r->raw[s][i] = grad_matrix(m, r->name[i], r->out[i], r->da[i]);
        }
        ng_kfac_step(k, s, lr);
        for (int i = 0; i < r->n; i++) {
            ng_tensor A, G;
            ng_kfac_factors(k, i, NULL, &A, &G);
            r->A[s][i] = ng_test_to_f64(&A);
            r->G[s][i] = ng_test_to_f64(&G);
            r->pre[s][i] = grad_matrix(m, r->name[i], r->out[i], r->da[i]);
        }
        ng_tensor_free(&xs);
        ng_tensor_free(&ds);
    }
    /* names point into the layers, which die with the model: keep copies */
    for (int i = 0; i < r->n; i++) r->name[i] = strdup(r->name[i]);
    ng_kfac_free(k);
    ng_model_free(m);
}

static void record_free(record *r) {
    for (int i = 0; i < r->n; i++) {
        free((char *)r->name[i]);
        for (int s = 0; s < STEPS; s++)
            free(r->A[s][i]), free(r->G[s][i]), free(r->raw[s][i]), free(r->pre[s][i]);
    }
}

static double rel_err(const double *e, const double *g, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) num += (g[i] - e[i]) * (g[i] - e[i]), den += e[i] * e[i];
    return sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
}

static double trace(const double *M, int64_t n) {
    double t = 0;
    for (int64_t i = 0; i < n; i++) t += M[i * n + i];
    return t;
}

/* The largest eigenvalue of a symmetric positive semi-definite M by power iteration, with a 10%
 * margin for its slow convergence from below (and never above the trace, a sure bound). */
static double lambda_max(const double *M, int64_t n) {
    double *v = malloc(sizeof *v * (size_t)n), *w = malloc(sizeof *w * (size_t)n), lam = 0;
    for (int64_t i = 0; i < n; i++) v[i] = 1.0 + 0.01 * (double)i;
    for (int it = 0; it < 500; it++) {
        double norm = 0;
        for (int64_t i = 0; i < n; i++) {
            w[i] = 0;
            for (int64_t j = 0; j < n; j++) w[i] += M[i * n + j] * v[j];
            norm += w[i] * w[i];
        }
        norm = sqrt(norm);
        if (!(norm > 0)) break;
        double vv = 0;
        for (int64_t i = 0; i < n; i++) vv += v[i] * v[i];
        lam = norm / sqrt(vv);
        for (int64_t i = 0; i < n; i++) v[i] = w[i] / norm;
    }
    free(v);
    free(w);
    return fmin(1.1 * lam, trace(M, n));
}

static void compare(const char *what, const ng_kfac_config *c, int64_t rows, const record *ref,
                    const record *got) {
    NG_TEST(ref->n == got->n && ref->n > 0, "%s: %d layers on CUDA, %d on the CPU", what, got->n,
            ref->n);
    if (ref->n != got->n) return;
    for (int s = 0; s < STEPS; s++) {
        /* The activations that feed the factors carry the model's own f32 error; the raw
         * gradients (sums of products of activations and output gradients) show its size. */
        double e_act = 0;
        for (int i = 0; i < ref->n; i++)
            e_act = fmax(e_act, rel_err(ref->raw[s][i], got->raw[s][i], ref->out[i] * ref->da[i]));
        for (int i = 0; i < ref->n; i++) {
            int64_t da = ref->da[i], o = ref->out[i];
            char msg[256];
            double tol_a = 2 * ((double)rows * U32 * sqrt((double)da) + 2 * e_act),
                   tol_g = 2 * ((double)rows * U32 * sqrt((double)o) + 2 * e_act);
            snprintf(msg, sizeof msg, "%s step %d %s: A", what, s, ref->name[i]);
            ng_test_rel_norm(msg, ref->A[s][i], got->A[s][i], da * da, tol_a);
            snprintf(msg, sizeof msg, "%s step %d %s: G", what, s, ref->name[i]);
            ng_test_rel_norm(msg, ref->G[s][i], got->G[s][i], o * o, tol_g);
            double gamma = ng_kfac_damping(c, s), tA = trace(ref->A[s][i], da) / (double)da,
                   tG = trace(ref->G[s][i], o) / (double)o;
            double pi = c->pi_damping && tA > 0 && tG > 0 ? sqrt(tA / tG) : 1.0;
            double e_raw = rel_err(ref->raw[s][i], got->raw[s][i], o * da);
            double eA = tol_a + (double)da * U32, eG = tol_g + (double)o * U32, bound;
            double lA = lambda_max(ref->A[s][i], da), lG = lambda_max(ref->G[s][i], o);
            if (c->damping_mode == NG_KFAC_DAMP_SUM) {
                double k = (lA * lG + gamma) / gamma;
                bound = k * (e_raw + eA + eG);
            } else {
                double gA = pi * sqrt(gamma), gG = sqrt(gamma) / pi;
                double kA = (lA + gA) / gA, kG = (lG + gG) / gG;
                bound = kA * kG * e_raw + kA * eA + kG * eG;
            }
            if (c->kl_clip > 0) bound *= 1.5;
            snprintf(msg, sizeof msg, "%s step %d %s: preconditioned gradient (raw error %.2g)",
                     what, s, ref->name[i], e_raw);
            ng_test_rel_norm(msg, ref->pre[s][i], got->pre[s][i], o * da, 2 * bound);
        }
    }
}

static void check_model(const char *what, ng_layer *(*make)(void), int xdim, const int64_t *xshape,
                        int64_t classes, int64_t rows, size_t chunk) {
    ng_tensor x[STEPS], dy[STEPS];
    for (int s = 0; s < STEPS; s++) {
        x[s] = ng_tensor_new(NG_F64, NG_CPU, xdim, xshape, "x");
        dy[s] = ng_tensor_2d(NG_F64, NG_CPU, xshape[0], classes, "dy");
        ng_test_fill_uniform(&x[s], -1, 1);
        ng_test_fill_uniform(&dy[s], -1, 1);
        ng_scale(1.0 / (double)xshape[0], &dy[s]);
    }
    const double lr = 0.1;
    ng_kfac_config cf = ng_kfac_default_config();
    cf.factor_decay = 0.8;
    cf.damping = 0.3;
    cf.kl_clip = 0;
    cf.damping_mode = NG_KFAC_DAMP_FACTORED;
    cf.pi_damping = 1;
    ng_kfac_config cases[4] = {cf, cf, cf, cf};
    const char *names[4] = {"eigen, factored, pi", "Cholesky, factored, pi", "eigen, sum, reduce",
                            "eigen, factored, KL clip"};
    cases[1].inverse = NG_KFAC_CHOLESKY;
    cases[2].damping_mode = NG_KFAC_DAMP_SUM;
    cases[2].damping = 0.05;
    cases[2].tokens = NG_KFAC_REDUCE;
    for (int ci = 0; ci < 4; ci++) {
        ng_kfac_config *c = &cases[ci];
        record ref = {0}, cpu32 = {0}, gpu = {0};
        if (ci == 3) { /* a clip that halves the step: nu = 0.5 at step 0 */
            record plain = {0};
            run(make, NG_CPU, NG_F64, &cases[0], 0, x, dy, lr, &plain);
            double vg = 0;
            for (int i = 0; i < plain.n; i++)
                for (int64_t j = 0; j < plain.out[i] * plain.da[i]; j++)
                    vg += plain.pre[0][i][j] * plain.raw[0][i][j];
            c->kl_clip = 0.25 * lr * lr * fabs(vg);
            record_free(&plain);
        }
        run(make, NG_CPU, NG_F64, c, 0, x, dy, lr, &ref);
        run(make, NG_CPU, NG_F32, c, chunk, x, dy, lr, &cpu32);
        run(make, NG_CUDA, NG_F32, c, chunk, x, dy, lr, &gpu);
        char msg[160];
        snprintf(msg, sizeof msg, "%s, %s, CUDA f32", what, names[ci]);
        compare(msg, c, rows, &ref, &gpu);
        snprintf(msg, sizeof msg, "%s, %s, CPU f32", what, names[ci]);
        compare(msg, c, rows, &ref, &cpu32);
        record_free(&ref);
        record_free(&cpu32);
        record_free(&gpu);
    }
    for (int s = 0; s < STEPS; s++) ng_tensor_free(&x[s]), ng_tensor_free(&dy[s]);
}

static void check_sampling(void) {
    const int64_t N = 30001, C = 10;
    for (int f64 = 0; f64 < 2; f64++) {
        ng_tensor h = ng_tensor_2d(f64 ? NG_F64 : NG_F32, NG_CPU, N, C, "logits");
        ng_test_fill_uniform(&h, -6, 6);
        ng_tensor d = ng_tensor_to(&h, NG_CUDA, "logits");
        ng_tensor lh = ng_tensor_1d(NG_I32, NG_CPU, N, "labels"),
                  ld = ng_tensor_1d(NG_I32, NG_CUDA, N, "labels");
        ng_test_poison(&lh);
        ng_test_poison(&ld);
        ng_rng_key key = {.seed = ng_test_seed(), .stream = 3, .offset = 1u << 20};
        ng_sample_categorical(&h, key, &lh);
        ng_sample_categorical(&d, key, &ld);
        ng_tensor back = ng_tensor_to(&ld, NG_CPU, "labels");
        int64_t differ = 0;
        for (int64_t n = 0; n < N; n++)
            differ += ((int32_t *)lh.data)[n] != ((int32_t *)back.data)[n];
        NG_TEST(differ == 0, "sampling from %s logits: CUDA labels equal CPU labels (%lld differ)",
                f64 ? "f64" : "f32", (long long)differ);
        ng_tensor_free(&back);
        ng_tensor_free(&h);
        ng_tensor_free(&d);
        ng_tensor_free(&lh);
        ng_tensor_free(&ld);
    }
}

int main(void) {
    ng_test_require_gpu("test_kfac_gpu");
    /* ViT: 4 images of 8x8 in 4x4 patches, 5 tokens; rows summed <= 4 * 5 = 20 */
    check_model("vit", make_vit, 4, (int64_t[]){4, 3, 8, 8}, 5, 20, 0);
    /* CNN: conv1 sums 4 * 64 positions; chunks of 40 patch rows of conv1 (K = 27, f32) */
    check_model("cnn", make_cnn, 4, (int64_t[]){4, 3, 8, 8}, 5, 4 * 64, 40 * 27 * 4);
    /* 3D CNN: 3 volumes 5x9x5 -> 5x5x3 = 75 positions; whole samples per chunk (K = 54) */
    check_model("cnn3d", make_cnn3d, 5, (int64_t[]){3, 2, 5, 9, 5}, 4, 3 * 75, 80 * 54 * 4);
    check_sampling();
    return ng_test_finish("test_kfac_gpu");
}
