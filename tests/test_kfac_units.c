/* K-FAC's damping units, in float64 on the CPU: a step with kfac.damping_units kfac-pytorch and
 * gamma equals one in per-example units with gamma N^2 (constant and scheduled damping, sum and
 * factored modes), and what that means: N^2 times the preconditioned gradient is kfac-pytorch's,
 * (A kron G_kp + gamma I)^-1 vec(dW) with G_kp = 1/N sum dy dy^T, written out as a dense solve. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "optim/kfac.h"
#include "testing.h"

#define ARENA ((size_t)1 << 22)
enum { N = 6, IN = 3, OUT = 4, DA = IN + 1 };

static ng_model *build(uint64_t seed) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc", IN, OUT, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
    return m;
}

/* One forward and backward of x with output gradient dy (the gradient of a mean loss over the N
 * examples), then ng_kfac_step at `step`; returns the preconditioned [dW, db] as [OUT, DA]. */
static double *precondition(const ng_kfac_config *c, uint64_t seed, const ng_tensor *x,
                            const ng_tensor *dy, int64_t step) {
    ng_model *m = build(seed);
    ng_kfac *k = ng_kfac_new(m, c);
    ng_model_zero_grad(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, (uint64_t)step);
    ctx.observer = ng_kfac_observer(k);
    ng_kfac_begin(k, step, N, 1, 1);
    ng_model_forward(m, &ctx, x);
    ng_model_backward(m, &ctx, dy);
    ng_kfac_step(k, step, 0.1);
    double *w = ng_test_to_f64(&ng_model_find(m, "fc.weight")->param->grad),
           *b = ng_test_to_f64(&ng_model_find(m, "fc.bias")->param->grad);
    double *g = malloc(sizeof *g * OUT * DA);
    for (int i = 0; i < OUT; i++) {
        for (int j = 0; j < IN; j++) g[i * DA + j] = w[i * IN + j];
        g[i * DA + IN] = b[i];
    }
    free(w), free(b);
    ng_kfac_free(k);
    ng_model_free(m);
    return g;
}

/* x = M^-1 y for M [n, n] by Gauss elimination with partial pivoting (M is overwritten). */
static void solve(double *M, double *y, int n) {
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(M[r * n + c]) > fabs(M[p * n + c])) p = r;
        for (int j = 0; j < n; j++) {
            double t = M[c * n + j];
            M[c * n + j] = M[p * n + j], M[p * n + j] = t;
        }
        double t = y[c];
        y[c] = y[p], y[p] = t;
        for (int r = c + 1; r < n; r++) {
            double f = M[r * n + c] / M[c * n + c];
            for (int j = c; j < n; j++) M[r * n + j] -= f * M[c * n + j];
            y[r] -= f * y[c];
        }
    }
    for (int r = n - 1; r >= 0; r--) {
        for (int j = r + 1; j < n; j++) y[r] -= M[r * n + j] * y[j];
        y[r] /= M[r * n + r];
    }
}

/* kfac-pytorch's preconditioned gradient of the layer, from its own definitions: A = 1/N sum a
 * a^T (a = [x, 1]), G = 1/N sum dy dy^T, dW = dy^T a, and X solving G X A + gamma X = dW. */
static double *kfac_pytorch(const double *x, const double *dy, double gamma) {
    double A[DA * DA] = {0}, G[OUT * OUT] = {0}, dW[OUT * DA] = {0};
    for (int n = 0; n < N; n++) {
        double a[DA];
        for (int j = 0; j < IN; j++) a[j] = x[n * IN + j];
        a[IN] = 1.0;
        for (int i = 0; i < DA; i++)
            for (int j = 0; j < DA; j++) A[i * DA + j] += a[i] * a[j] / N;
        for (int i = 0; i < OUT; i++) {
            for (int j = 0; j < OUT; j++) G[i * OUT + j] += dy[n * OUT + i] * dy[n * OUT + j] / N;
            for (int j = 0; j < DA; j++) dW[i * DA + j] += dy[n * OUT + i] * a[j];
        }
    }
    enum { K = OUT * DA };
    double *M = calloc(K * K, sizeof *M), *X = malloc(sizeof *X * K);
    for (int i = 0; i < OUT; i++)
        for (int j = 0; j < DA; j++)
            for (int k = 0; k < OUT; k++)
                for (int l = 0; l < DA; l++)
                    M[(i * DA + j) * K + k * DA + l] =
                        G[i * OUT + k] * A[l * DA + j] + (i == k && j == l ? gamma : 0.0);
    memcpy(X, dW, sizeof dW);
    solve(M, X, K);
    free(M);
    return X;
}

static void test_conversion(const ng_tensor *x, const ng_tensor *dy, uint64_t seed) {
    const double gamma = 0.02 + 0.05 * fabs(ng_test_uniform());
    for (int mode = 0; mode < 3; mode++) {
        ng_kfac_config kp = ng_kfac_default_config(), pe;
        kp.kl_clip = 0;
        if (mode) { /* factored with pi: by eigendecomposition, then by damped Cholesky inverses */
            kp.damping_mode = NG_KFAC_DAMP_FACTORED, kp.pi_damping = 1;
            kp.inverse = mode == 1 ? NG_KFAC_EIGEN : NG_KFAC_CHOLESKY;
        }
        kp.damping = kp.damping_final = gamma;
        kp.damping_units = NG_KFAC_UNITS_KFAC_PYTORCH;
        pe = kp;
        pe.damping_units = NG_KFAC_UNITS_PER_EXAMPLE;
        pe.damping = pe.damping_final = gamma * N * N;
        double *a = precondition(&kp, seed, x, dy, 0), *b = precondition(&pe, seed, x, dy, 0);
        char what[128];
        snprintf(what, sizeof what, "mode %d: kfac-pytorch gamma %g = per-example gamma N^2", mode,
                 gamma);
        ng_test_close(what, b, a, OUT * DA, 0, 0);
        /* and the units matter: the same number in per-example units is another step */
        pe.damping = pe.damping_final = gamma;
        double *c = precondition(&pe, seed, x, dy, 0), diff = 0;
        for (int i = 0; i < OUT * DA; i++) diff = fmax(diff, fabs(c[i] - a[i]) / fabs(a[i]));
        NG_TEST(diff > 1e-3, "mode %d: the units changed nothing (max rel diff %g)", mode, diff);
        free(a), free(b), free(c);
    }
    /* A damping schedule converts as a whole: halfway along it, both runs apply the same gamma. */
    ng_kfac_config kp = ng_kfac_default_config(), pe;
    kp.kl_clip = 0;
    kp.damping = gamma, kp.damping_final = gamma / 10, kp.damping_steps = 8;
    kp.damping_units = NG_KFAC_UNITS_KFAC_PYTORCH;
    pe = kp;
    pe.damping_units = NG_KFAC_UNITS_PER_EXAMPLE;
    pe.damping *= N * N, pe.damping_final *= N * N;
    double *a = precondition(&kp, seed, x, dy, 4), *b = precondition(&pe, seed, x, dy, 4);
    ng_test_close("scheduled damping in kfac-pytorch units", b, a, OUT * DA, 1e-12, 0);
    free(a), free(b);
}

static void test_meaning(const ng_tensor *x, const ng_tensor *dy, uint64_t seed) {
    const double gamma = 0.001 + 0.01 * fabs(ng_test_uniform());
    ng_kfac_config c = ng_kfac_default_config();
    c.kl_clip = 0;
    c.damping = c.damping_final = gamma;
    c.damping_units = NG_KFAC_UNITS_KFAC_PYTORCH;
    double *got = precondition(&c, seed, x, dy, 0);
    for (int i = 0; i < OUT * DA; i++) got[i] *= (double)N * N;
    double *xs = ng_test_to_f64(x), *dys = ng_test_to_f64(dy);
    double *want = kfac_pytorch(xs, dys, gamma);
    ng_test_close("N^2 x the step in kfac-pytorch units = kfac-pytorch's step", want, got, OUT * DA,
                  1e-9, 1e-12);
    free(got), free(want), free(xs), free(dys);
}

static void test_errors(void) {
    ng_model *m = build(1);
    ng_kfac_config c = ng_kfac_default_config();
    c.damping_units = 2;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.damping_units");
    c.damping_units = NG_KFAC_UNITS_KFAC_PYTORCH;
    ng_kfac *k = ng_kfac_new(m, &c);
    NG_TEST_ERROR(ng_kfac_step_damping(k, 0), "kfac.damping_units");
    ng_kfac_begin(k, 0, 5, 1, 1);
    NG_TEST(ng_kfac_step_damping(k, 0) == c.damping * 25, "gamma at batch 5: %g",
            ng_kfac_step_damping(k, 0));
    ng_kfac_free(k);
    ng_model_free(m);
}

int main(void) {
    uint64_t seed = ng_test_seed();
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, N, IN, "x"),
              dy = ng_tensor_2d(NG_F64, NG_CPU, N, OUT, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1.0 / N, 1.0 / N); /* the gradient of a mean over N examples */
    test_conversion(&x, &dy, seed);
    test_meaning(&x, &dy, seed);
    test_errors();
    ng_tensor_free(&x), ng_tensor_free(&dy);
    return ng_test_finish("test_kfac_units");
}
