/* K-FAC in float64 on the CPU: factors against the exact Gauss-Newton block and against factors
 * written out by plain loops (Linear expand/reduce on tokens, Conv2d/Conv3d patches, chunked or
 * not), preconditioned gradients against direct inverses, running averages, update intervals,
 * KL clip, non-finite factors, damping schedule, checkpoint state, activation checkpointing,
 * config errors, categorical label sampling, and factors from fp16 passes under a loss scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/attention.h"
#include "nn/containers.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/sample.h"
#include "nn/transformer.h"
#include "optim/kfac.h"
#include "testing.h"

#define ARENA ((size_t)1 << 22)

/* ---- small dense helpers in double ------------------------------------------------------- */

/* inv = M^-1 for M [n,n] by Gauss-Jordan with partial pivoting. */
static void gj_inverse(const double *M, double *inv, int n) {
    double *a = malloc(sizeof *a * (size_t)(n * 2 * n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 2 * n; j++)
            a[i * 2 * n + j] = j < n ? M[i * n + j] : (j - n == i ? 1.0 : 0.0);
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(a[r * 2 * n + c]) > fabs(a[p * 2 * n + c])) p = r;
        for (int j = 0; j < 2 * n; j++) {
            double t = a[c * 2 * n + j];
            a[c * 2 * n + j] = a[p * 2 * n + j];
            a[p * 2 * n + j] = t;
        }
        double d = a[c * 2 * n + c];
        for (int j = 0; j < 2 * n; j++) a[c * 2 * n + j] /= d;
        for (int r = 0; r < n; r++) {
            if (r == c) continue;
            double f = a[r * 2 * n + c];
            for (int j = 0; j < 2 * n; j++) a[r * 2 * n + j] -= f * a[c * 2 * n + j];
        }
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) inv[i * n + j] = a[i * 2 * n + n + j];
    free(a);
}

/* C [m,n] = A [m,k] B [k,n] */
static void matmul(const double *A, const double *B, double *C, int m, int k, int n) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int t = 0; t < k; t++) s += A[i * k + t] * B[t * n + j];
            C[i * n + j] = s;
        }
}

static double max_abs(const double *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

/* ---- model passes ------------------------------------------------------------------------ */

static ng_model *build(ng_layer *root, uint64_t seed) {
    ng_model *m = ng_model_new(root);
    ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
    return m;
}

static ng_tensor rand_tensor(int ndim, const int64_t *shape, const char *name) {
    ng_tensor t = ng_tensor_new(NG_F64, NG_CPU, ndim, shape, name);
    ng_test_fill_uniform(&t, -1, 1);
    return t;
}

/* Zeroed gradients, then one forward and backward with dy as the output gradient; K-FAC (when
 * given) captures A and G at `step` for a batch of N. */
static void pass(ng_model *m, ng_kfac *k, int64_t step, int64_t N, const ng_tensor *x,
                 const ng_tensor *dy) {
    ng_model_reset_arenas(m);
    ng_model_zero_grad(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 11, (uint64_t)step);
    if (k) {
        ctx.observer = ng_kfac_observer(k);
        ng_kfac_begin(k, step, N, 1, 1);
    }
    ng_model_forward(m, &ctx, x);
    ng_model_backward(m, &ctx, dy);
}

static ng_tensor *state_of(ng_kfac *k, const char *name) {
    const char *names[512];
    ng_tensor *ts[512];
    int n = ng_kfac_state(k, names, ts, 512);
    for (int i = 0; i < n && i < 512; i++)
        if (!strcmp(names[i], name)) return ts[i];
    ng_test_fail("no K-FAC state named %s", name);
    return NULL;
}

static ng_kfac_config factored(double damping, int pi) {
    ng_kfac_config c = ng_kfac_default_config();
    c.damping = damping;
    c.damping_mode = NG_KFAC_DAMP_FACTORED;
    c.pi_damping = pi;
    c.kl_clip = 0;
    return c;
}

/* Host copies of the layer's gradient (weight then bias) into one [out, in(+1)] matrix. */
static double *grad_matrix(ng_model *m, const char *layer, int64_t out, int64_t in, int bias) {
    char name[128];
    snprintf(name, sizeof name, "%s.weight", layer);
    double *w = ng_test_to_f64(&ng_model_find(m, name)->param->grad);
    int64_t da = in + bias;
    double *g = malloc(sizeof *g * (size_t)(out * da));
    double *b = NULL;
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", layer);
        b = ng_test_to_f64(&ng_model_find(m, name)->param->grad);
    }
    for (int64_t i = 0; i < out; i++) {
        for (int64_t j = 0; j < in; j++) g[i * da + j] = w[i * in + j];
        if (bias) g[i * da + in] = b[i];
    }
    free(w);
    free(b);
    return g;
}

/* ---- 1. A kron G equals the exact Gauss-Newton block for one example ---------------------- */

static ng_layer *make_mlp(int64_t in, int64_t hidden, int64_t out) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", in, hidden, 1));
    ng_layer_add_child(s, ng_relu("act"));
    ng_layer_add_child(s, ng_linear("fc2", hidden, out, 1));
    return s;
}

static void test_gauss_newton(void) {
    const int IN = 3, H = 4, OUT = 2;
    ng_model *m = build(make_mlp(IN, H, OUT), ng_test_seed());
    ng_kfac_config c = factored(0.1, 0);
    ng_kfac *k = ng_kfac_new(m, &c);
    ng_tensor x = rand_tensor(2, (int64_t[]){1, IN}, "x");
    ng_ctx ctx = ng_model_ctx(m, 1, 3, 0);
    ctx.observer = ng_kfac_observer(k);
    ctx.retain = 1; /* one forward, OUT backwards */
    ng_kfac_begin(k, 0, 1, 1, 0);
    ng_model_forward(m, &ctx, &x);
    /* MSE's Hessian is a multiple of I: one backward per output unit e_k, G summed over them. */
    ng_tensor dy = ng_tensor_2d(NG_F64, NG_CPU, 1, OUT, "dy");
    for (int o = 0; o < OUT; o++) {
        ng_fill(&dy, 0);
        ((double *)dy.data)[o] = 1;
        ng_kfac_begin(k, 0, 1, 0, 1);
        ng_model_backward(m, &ctx, &dy);
    }
    ng_kfac_step(k, 0, 0.1);
    NG_TEST(ng_kfac_layers(k) == 2, "two Linear layers registered, got %d", ng_kfac_layers(k));

    /* The analytic Jacobian of y w.r.t. [W, b] of each layer, row-major vec. */
    double *W1 = ng_test_to_f64(&ng_model_find(m, "fc1.weight")->param->value);
    double *b1 = ng_test_to_f64(&ng_model_find(m, "fc1.bias")->param->value);
    double *W2 = ng_test_to_f64(&ng_model_find(m, "fc2.weight")->param->value);
    const double *xv = x.data;
    double s1[4], h[5], xe[4];
    for (int i = 0; i < H; i++) {
        s1[i] = b1[i];
        for (int j = 0; j < IN; j++) s1[i] += W1[i * IN + j] * xv[j];
        h[i] = s1[i] > 0 ? s1[i] : 0;
    }
    h[H] = 1;
    for (int j = 0; j < IN; j++) xe[j] = xv[j];
    xe[IN] = 1;
    for (int li = 0; li < 2; li++) {
        int da = li == 0 ? IN + 1 : H + 1, out = li == 0 ? H : OUT, P = out * da;
        double *J = calloc((size_t)(OUT * P), sizeof *J);
        for (int o = 0; o < OUT; o++)
            for (int i = 0; i < out; i++)
                for (int j = 0; j < da; j++)
                    J[o * P + i * da + j] = li == 1
                                                ? (o == i ? h[j] : 0)
                                                : W2[o * H + i] * (s1[i] > 0 ? 1.0 : 0.0) * xe[j];
        double *gn = calloc((size_t)(P * P), sizeof *gn),
               *kr = malloc(sizeof *kr * (size_t)(P * P));
        for (int p = 0; p < P; p++)
            for (int q = 0; q < P; q++)
                for (int o = 0; o < OUT; o++) gn[p * P + q] += J[o * P + p] * J[o * P + q];
        const char *name;
        ng_tensor At, Gt;
        ng_kfac_factors(k, li, &name, &At, &Gt);
        double *A = ng_test_to_f64(&At), *G = ng_test_to_f64(&Gt);
        for (int i = 0; i < out; i++)
            for (int j = 0; j < da; j++)
                for (int i2 = 0; i2 < out; i2++)
                    for (int j2 = 0; j2 < da; j2++)
                        kr[(i * da + j) * P + i2 * da + j2] = G[i * out + i2] * A[j * da + j2];
        char what[96];
        snprintf(what, sizeof what, "%s: A kron G = J^T J for one example", name);
        ng_test_close(what, gn, kr, P * P, 1e-12, 1e-12 * max_abs(gn, P * P));
        free(J), free(gn), free(kr), free(A), free(G);
    }
    free(W1), free(b1), free(W2);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_kfac_free(k);
    ng_model_free(m);
}

/* ---- 2. preconditioned gradients against direct inverses --------------------------------- */

typedef struct {
    ng_kfac_config c;
    const char *what;
} precond_case;

/* One step of K-FAC on a Linear; returns the gradient matrix before and after and the factors. */
static void precondition_once(const ng_kfac_config *c, int bias, uint64_t seed, const ng_tensor *x,
                              const ng_tensor *dy, double **before, double **after, double **A,
                              double **G) {
    ng_model *m = build(ng_linear("fc", 4, 3, bias), seed);
    ng_kfac *k = ng_kfac_new(m, c);
    pass(m, k, 0, x->shape[0], x, dy);
    *before = grad_matrix(m, "fc", 3, 4, bias);
    ng_kfac_step(k, 0, 0.1);
    *after = grad_matrix(m, "fc", 3, 4, bias);
    ng_tensor At, Gt;
    ng_kfac_factors(k, 0, NULL, &At, &Gt);
    *A = ng_test_to_f64(&At);
    *G = ng_test_to_f64(&Gt);
    ng_kfac_free(k);
    ng_model_free(m);
}

static void test_precondition(void) {
    const int N = 6, IN = 4, OUT = 3;
    uint64_t seed = ng_test_seed();
    ng_tensor x = rand_tensor(2, (int64_t[]){N, IN}, "x");
    ng_tensor dy = rand_tensor(2, (int64_t[]){N, OUT}, "dy");
    ng_scale(1.0 / N, &dy); /* the gradient of a mean over N */
    for (int bias = 0; bias < 2; bias++) {
        int da = IN + bias, P = OUT * da;
        double gamma = 0.03;
        precond_case cases[] = {
            {factored(gamma, 0), "factored damping, pi off"},
            {factored(gamma, 1), "factored damping, pi on"},
            {factored(gamma, 1), "Cholesky, factored damping, pi on"},
            {factored(gamma, 0), "sum damping"},
        };
        cases[2].c.inverse = NG_KFAC_CHOLESKY;
        cases[3].c.damping_mode = NG_KFAC_DAMP_SUM;
        double *eig_pi = NULL;
        for (int ci = 0; ci < 4; ci++) {
            double *g0, *g1, *A, *G;
            precondition_once(&cases[ci].c, bias, seed, &x, &dy, &g0, &g1, &A, &G);
            double *exp = malloc(sizeof *exp * (size_t)P);
            if (cases[ci].c.damping_mode == NG_KFAC_DAMP_FACTORED) {
                double pi = 1;
                if (cases[ci].c.pi_damping) {
                    double ta = 0, tg = 0;
                    for (int i = 0; i < da; i++) ta += A[i * da + i];
                    for (int i = 0; i < OUT; i++) tg += G[i * OUT + i];
                    pi = sqrt((ta / da) / (tg / OUT));
                }
                double *Ad = malloc(sizeof *Ad * (size_t)(da * da)), *Gd = malloc(sizeof *Gd * 9);
                double *Ai = malloc(sizeof *Ai * (size_t)(da * da)), Gi[9], T[15];
                for (int i = 0; i < da * da; i++)
                    Ad[i] = A[i] + (i % (da + 1) == 0) * pi * sqrt(gamma);
                for (int i = 0; i < 9; i++) Gd[i] = G[i] + (i % 4 == 0) * sqrt(gamma) / pi;
                gj_inverse(Ad, Ai, da);
                gj_inverse(Gd, Gi, OUT);
                matmul(Gi, g0, T, OUT, OUT, da);
                matmul(T, Ai, exp, OUT, da, da);
                free(Ad), free(Gd), free(Ai);
            } else { /* (G kron A + gamma I)^-1 vec(dW), row-major vec */
                double *M = malloc(sizeof *M * (size_t)(P * P)),
                       *Mi = malloc(sizeof *Mi * (size_t)(P * P));
                for (int i = 0; i < OUT; i++)
                    for (int j = 0; j < da; j++)
                        for (int i2 = 0; i2 < OUT; i2++)
                            for (int j2 = 0; j2 < da; j2++)
                                M[(i * da + j) * P + i2 * da + j2] =
                                    G[i * OUT + i2] * A[j * da + j2] +
                                    (i == i2 && j == j2 ? gamma : 0);
                gj_inverse(M, Mi, P);
                matmul(Mi, g0, exp, P, P, 1);
                free(M), free(Mi);
            }
            char what[128];
            snprintf(what, sizeof what, "%s%s: preconditioned gradient = direct inverse",
                     cases[ci].what, bias ? "" : " (no bias)");
            ng_test_close(what, exp, g1, P, 1e-10, 1e-12 * max_abs(exp, P));
            NG_TEST(fabs(g1[0] - g0[0]) > 1e-9 * fabs(g0[0]), "%s: the gradient changed", what);
            if (ci == 1) eig_pi = g1;
            if (ci == 2) {
                snprintf(what, sizeof what, "Cholesky path = eigen path%s",
                         bias ? "" : " (no bias)");
                ng_test_close(what, eig_pi, g1, P, 1e-11, 1e-13 * max_abs(eig_pi, P));
            }
            if (ci != 1) free(g1);
            free(g0), free(A), free(G), free(exp);
        }
        free(eig_pi);
    }
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

/* ---- 3. conv factors against patches written out by loops ------------------------------- */

typedef struct {
    int nd;
    int64_t C, O, k[3], s[3], p[3], d[3], in[3];
    int bias;
} conv_case;

/* Reference factors: A = 1/(N P) sum a a^T over patch rows (+1), G = 1/N sum g g^T, g = N dy. */
static void conv_reference(const conv_case *cc, int64_t N, const double *x, const double *dy,
                           double *A, double *G, int64_t *Pout) {
    int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, p[3] = {0, 0, 0},
            d[3] = {1, 1, 1}, o[3];
    int off = 3 - cc->nd;
    for (int i = 0; i < cc->nd; i++) {
        in[off + i] = cc->in[i], k[off + i] = cc->k[i], s[off + i] = cc->s[i];
        p[off + i] = cc->p[i], d[off + i] = cc->d[i];
    }
    for (int i = 0; i < 3; i++) o[i] = (in[i] + 2 * p[i] - d[i] * (k[i] - 1) - 1) / s[i] + 1;
    int64_t P = o[0] * o[1] * o[2], K = cc->C * k[0] * k[1] * k[2], da = K + cc->bias;
    *Pout = P;
    double *a = malloc(sizeof *a * (size_t)da);
    memset(A, 0, sizeof *A * (size_t)(da * da));
    memset(G, 0, sizeof *G * (size_t)(cc->O * cc->O));
    for (int64_t n = 0; n < N; n++)
        for (int64_t od = 0; od < o[0]; od++)
            for (int64_t oh = 0; oh < o[1]; oh++)
                for (int64_t ow = 0; ow < o[2]; ow++) {
                    int64_t j = 0;
                    for (int64_t c = 0; c < cc->C; c++)
                        for (int64_t kd = 0; kd < k[0]; kd++)
                            for (int64_t kh = 0; kh < k[1]; kh++)
                                for (int64_t kw = 0; kw < k[2]; kw++) {
                                    int64_t id = od * s[0] - p[0] + kd * d[0],
                                            ih = oh * s[1] - p[1] + kh * d[1],
                                            iw = ow * s[2] - p[2] + kw * d[2];
                                    int inside = id >= 0 && id < in[0] && ih >= 0 && ih < in[1] &&
                                                 iw >= 0 && iw < in[2];
                                    a[j++] = inside
                                                 ? x[(((n * cc->C + c) * in[0] + id) * in[1] + ih) *
                                                         in[2] +
                                                     iw]
                                                 : 0.0;
                                }
                    if (cc->bias) a[j++] = 1;
                    for (int64_t r = 0; r < da; r++)
                        for (int64_t q = 0; q < da; q++)
                            A[r * da + q] += a[r] * a[q] / (double)(N * P);
                    int64_t pos = (od * o[1] + oh) * o[2] + ow;
                    for (int64_t r = 0; r < cc->O; r++)
                        for (int64_t q = 0; q < cc->O; q++) {
                            double gr = N * dy[(n * cc->O + r) * P + pos],
                                   gq = N * dy[(n * cc->O + q) * P + pos];
                            G[r * cc->O + q] += gr * gq / (double)N;
                        }
                }
    free(a);
}

static void test_conv(const conv_case *cc, const char *what) {
    const int64_t N = 3;
    ng_model *m = build(ng_conv("conv", cc->nd, cc->C, cc->O, cc->k, cc->s, cc->p, cc->d, cc->bias),
                        ng_test_seed());
    int64_t xs[5] = {N, cc->C, cc->in[0], cc->in[1], cc->in[2]}, ys[5];
    int ydim;
    ng_layer_out_shape(m->root, cc->nd + 2, xs, &ydim, ys);
    ng_tensor x = rand_tensor(cc->nd + 2, xs, "x"), dy = rand_tensor(ydim, ys, "dy");
    double *A_chunk[3] = {0}, *G_chunk[3] = {0};
    int64_t K = cc->C * cc->k[0] * cc->k[1] * (cc->nd == 3 ? cc->k[2] : 1), da = K + cc->bias;
    int64_t P = dy.numel / (N * cc->O);
    /* Default chunk (all samples at once), one sample and a bit per chunk, 3 positions per chunk.
     */
    size_t chunks[3] = {0, (size_t)((P + 2) * K) * 8, (size_t)(3 * K) * 8};
    for (int ci = 0; ci < 3; ci++) {
        ng_kfac_config c = factored(0.1, 1);
        ng_kfac *k = ng_kfac_new(m, &c);
        if (chunks[ci]) ng_kfac_set_chunk_bytes(k, chunks[ci]);
        pass(m, k, 0, N, &x, &dy);
        ng_kfac_step(k, 0, 0.1);
        ng_tensor At, Gt;
        ng_kfac_factors(k, 0, NULL, &At, &Gt);
        NG_TEST(At.numel == da * da && Gt.numel == cc->O * cc->O, "%s: factor sizes %lld, %lld",
                what, (long long)At.numel, (long long)Gt.numel);
        A_chunk[ci] = ng_test_to_f64(&At);
        G_chunk[ci] = ng_test_to_f64(&Gt);
        ng_kfac_free(k);
    }
    double *A = malloc(sizeof *A * (size_t)(da * da)),
           *G = malloc(sizeof *G * (size_t)(cc->O * cc->O));
    int64_t Pr;
    conv_reference(cc, N, x.data, dy.data, A, G, &Pr);
    NG_TEST(Pr == P, "%s: %lld output positions", what, (long long)P);
    char msg[128];
    snprintf(msg, sizeof msg, "%s: A against patch loops", what);
    ng_test_close(msg, A, A_chunk[0], da * da, 1e-12, 1e-14);
    snprintf(msg, sizeof msg, "%s: G against dy loops", what);
    ng_test_close(msg, G, G_chunk[0], cc->O * cc->O, 1e-12, 1e-14);
    for (int ci = 1; ci < 3; ci++) {
        snprintf(msg, sizeof msg, "%s: A in chunks of %zu bytes = A at once", what, chunks[ci]);
        ng_test_close(msg, A_chunk[0], A_chunk[ci], da * da, 1e-13, 1e-15);
        snprintf(msg, sizeof msg, "%s: G with chunked A = G at once", what);
        ng_test_close(msg, G_chunk[0], G_chunk[ci], cc->O * cc->O, 0, 0);
    }
    for (int ci = 0; ci < 3; ci++) free(A_chunk[ci]), free(G_chunk[ci]);
    free(A), free(G);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(m);
}

static void test_convs(void) {
    conv_case c2 = {.nd = 2,
                    .C = 2,
                    .O = 3,
                    .k = {3, 2, 1},
                    .s = {2, 1, 1},
                    .p = {1, 0, 0},
                    .d = {1, 2, 1},
                    .in = {7, 8, 1},
                    .bias = 1};
    test_conv(&c2, "conv2d stride/pad/dilation, bias");
    c2.bias = 0;
    test_conv(&c2, "conv2d no bias");
    conv_case c3 = {.nd = 3,
                    .C = 2,
                    .O = 2,
                    .k = {2, 3, 2},
                    .s = {1, 2, 1},
                    .p = {1, 0, 1},
                    .d = {2, 1, 1},
                    .in = {5, 6, 4},
                    .bias = 1};
    test_conv(&c3, "conv3d stride/pad/dilation, bias");
}

/* ---- 4. Linear on tokens: expand and reduce against loops over captured tensors ------------ */

#define SPY_MAX 8
typedef struct {
    ng_observer self, *inner;
    ng_layer *layer[SPY_MAX];
    double *x[SPY_MAX], *dy[SPY_MAX];
    int64_t xn[SPY_MAX], dyn[SPY_MAX];
    int n;
} spy;

static int spy_slot(spy *s, ng_layer *l) {
    for (int i = 0; i < s->n; i++)
        if (s->layer[i] == l) return i;
    s->layer[s->n] = l;
    s->x[s->n] = s->dy[s->n] = NULL;
    return s->n++;
}

static void spy_input(void *self, ng_layer *l, const ng_tensor *x) {
    spy *s = self;
    int i = spy_slot(s, l);
    free(s->x[i]);
    s->x[i] = ng_test_to_f64(x);
    s->xn[i] = x->numel;
    s->inner->input(s->inner->self, l, x);
}

static void spy_grad(void *self, ng_layer *l, const ng_tensor *dy) {
    spy *s = self;
    int i = spy_slot(s, l);
    free(s->dy[i]);
    s->dy[i] = ng_test_to_f64(dy);
    s->dyn[i] = dy->numel;
    s->inner->output_grad(s->inner->self, l, dy);
}

static void test_tokens_case(ng_layer *(*make)(void), int ndim, const int64_t *xshape,
                             const char *what) {
    int64_t N = xshape[0];
    for (int mode = 0; mode < 2; mode++) {
        ng_model *m = build(make(), 99);
        ng_kfac_config c = factored(0.1, 0);
        c.tokens = mode ? NG_KFAC_REDUCE : NG_KFAC_EXPAND;
        ng_kfac *k = ng_kfac_new(m, &c);
        spy s = {.inner = ng_kfac_observer(k)};
        s.self = (ng_observer){.self = &s, .input = spy_input, .output_grad = spy_grad};
        ng_tensor x = rand_tensor(ndim, xshape, "x");
        ng_ctx ctx = ng_model_ctx(m, 1, 5, 0);
        ctx.observer = &s.self;
        ng_kfac_begin(k, 0, N, 1, 1);
        ng_tensor y = ng_model_forward(m, &ctx, &x);
        ng_tensor dy = rand_tensor(y.ndim, y.shape, "dy");
        ng_scale(1.0 / (double)N, &dy);
        ng_model_backward(m, &ctx, &dy);
        ng_kfac_step(k, 0, 0.1);
        NG_TEST(s.n == ng_kfac_layers(k), "%s: every registered layer was observed (%d of %d)",
                what, s.n, ng_kfac_layers(k));
        for (int li = 0; li < ng_kfac_layers(k); li++) {
            const char *name;
            ng_tensor At, Gt;
            ng_kfac_factors(k, li, &name, &At, &Gt);
            int i = 0;
            while (i < s.n && strcmp(s.layer[i]->name, name)) i++;
            if (i == s.n) {
                ng_test_fail("%s: layer %s never observed", what, name);
                continue;
            }
            int64_t in, out;
            int bias;
            ng_linear_dims(s.layer[i], &in, &out, &bias);
            int64_t da = in + bias, rows = s.xn[i] / in, R = rows / N;
            double *A = calloc((size_t)(da * da), sizeof *A),
                   *G = calloc((size_t)(out * out), sizeof *G);
            double *a = malloc(sizeof *a * (size_t)da), *g = malloc(sizeof *g * (size_t)out);
            for (int64_t n = 0; n < N; n++) {
                if (mode == 0) { /* expand: every token is an example of its own */
                    for (int64_t r = 0; r < R; r++) {
                        const double *xr = s.x[i] + (n * R + r) * in,
                                     *dr = s.dy[i] + (n * R + r) * out;
                        for (int64_t j = 0; j < da; j++) a[j] = j < in ? xr[j] : 1;
                        for (int64_t j = 0; j < out; j++) g[j] = (double)N * dr[j];
                        for (int64_t p = 0; p < da; p++)
                            for (int64_t q = 0; q < da; q++)
                                A[p * da + q] += a[p] * a[q] / (double)(N * R);
                        for (int64_t p = 0; p < out; p++)
                            for (int64_t q = 0; q < out; q++)
                                G[p * out + q] += g[p] * g[q] / (double)N;
                    }
                } else { /* reduce: token mean of inputs, token sum of gradients */
                    for (int64_t j = 0; j < da; j++) a[j] = j < in ? 0 : 1;
                    for (int64_t j = 0; j < out; j++) g[j] = 0;
                    for (int64_t r = 0; r < R; r++) {
                        const double *xr = s.x[i] + (n * R + r) * in,
                                     *dr = s.dy[i] + (n * R + r) * out;
                        for (int64_t j = 0; j < in; j++) a[j] += xr[j] / (double)R;
                        for (int64_t j = 0; j < out; j++) g[j] += (double)N * dr[j];
                    }
                    for (int64_t p = 0; p < da; p++)
                        for (int64_t q = 0; q < da; q++) A[p * da + q] += a[p] * a[q] / (double)N;
                    for (int64_t p = 0; p < out; p++)
                        for (int64_t q = 0; q < out; q++) G[p * out + q] += g[p] * g[q] / (double)N;
                }
            }
            double *Ag = ng_test_to_f64(&At), *Gg = ng_test_to_f64(&Gt);
            char msg[160];
            snprintf(msg, sizeof msg, "%s %s: %s A (R = %lld)", what, mode ? "reduce" : "expand",
                     name, (long long)R);
            ng_test_close(msg, A, Ag, da * da, 1e-12, 1e-14 * max_abs(A, da * da));
            snprintf(msg, sizeof msg, "%s %s: %s G (R = %lld)", what, mode ? "reduce" : "expand",
                     name, (long long)R);
            ng_test_close(msg, G, Gg, out * out, 1e-12, 1e-14 * max_abs(G, out * out));
            free(A), free(G), free(a), free(g), free(Ag), free(Gg);
        }
        for (int i = 0; i < s.n; i++) free(s.x[i]), free(s.dy[i]);
        ng_tensor_free(&x);
        ng_tensor_free(&dy);
        ng_kfac_free(k);
        ng_model_free(m);
    }
}

static ng_layer *make_attention(void) {
    return ng_attention("attn", 6, 2, 1);
}
static ng_layer *make_plain_mlp(void) {
    return make_mlp(5, 6, 3);
}

static void test_tokens(void) {
    test_tokens_case(make_attention, 3, (int64_t[]){3, 5, 6}, "attention, T=5");
    test_tokens_case(make_plain_mlp, 2, (int64_t[]){4, 5}, "mlp, R=1");
}

/* ---- 5. what K-FAC leaves alone, running averages, intervals, clip, failures, state -------- */

static ng_layer *make_vit(void) {
    ng_vit_config c = {.img_size = 8,
                       .patch = 4,
                       .in_ch = 2,
                       .dim = 8,
                       .depth = 1,
                       .heads = 2,
                       .classes = 3,
                       .mlp_ratio = 2,
                       .drop = 0,
                       .checkpoint = {0, 0}};
    return ng_vit(&c);
}

static int registered(ng_kfac *k, const ng_param_entry *e) {
    for (int i = 0; i < ng_kfac_layers(k); i++) {
        const char *name;
        ng_kfac_factors(k, i, &name, NULL, NULL);
        if (!strcmp(name, e->layer->name)) return 1;
    }
    return 0;
}

static void test_untouched(void) {
    ng_model *m = build(make_vit(), ng_test_seed());
    ng_kfac_config c = factored(0.05, 1);
    ng_kfac *k = ng_kfac_new(m, &c);
    const char *expect[] = {"patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj",
                            "blocks.0.mlp.fc1", "blocks.0.mlp.fc2",  "head"};
    NG_TEST(ng_kfac_layers(k) == 6, "ViT: 6 layers registered, got %d", ng_kfac_layers(k));
    for (int i = 0; i < ng_kfac_layers(k) && i < 6; i++) {
        const char *name;
        ng_kfac_factors(k, i, &name, NULL, NULL);
        NG_TEST(!strcmp(name, expect[i]), "ViT layer %d is %s, expected %s", i, name, expect[i]);
    }
    ng_tensor x = rand_tensor(4, (int64_t[]){2, 2, 8, 8}, "x");
    ng_tensor dy = rand_tensor(2, (int64_t[]){2, 3}, "dy");
    pass(m, k, 0, 2, &x, &dy);
    double *g0 = ng_test_to_f64(&m->flat_grads);
    ng_kfac_step(k, 0, 0.1);
    double *g1 = ng_test_to_f64(&m->flat_grads);
    int plain = 0, changed = 0;
    for (int i = 0; i < m->nparams; i++) {
        const ng_param_entry *e = &m->params[i];
        int64_t n = e->param->value.numel, o = e->offset;
        if (registered(k, e)) {
            int diff = 0;
            for (int64_t j = 0; j < n; j++) diff += g0[o + j] != g1[o + j];
            NG_TEST(diff > n / 2, "%s is preconditioned (%lld of %lld changed)", e->param->name,
                    (long long)diff, (long long)n);
            changed++;
        } else {
            char what[128];
            snprintf(what, sizeof what, "%s keeps its plain gradient", e->param->name);
            ng_test_close(what, g0 + o, g1 + o, n, 0, 0);
            plain++;
        }
    }
    NG_TEST(plain == 8 && changed == 12,
            "ViT: %d plain parameters (norms, cls_token, pos_embed), "
            "%d preconditioned",
            plain, changed);
    free(g0), free(g1);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_kfac_free(k);
    ng_model_free(m);
}

/* A small MLP whose first layer has a bias and second has none. */
static ng_layer *make_mlp2(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 5, 6, 1));
    ng_layer_add_child(s, ng_relu("act"));
    ng_layer_add_child(s, ng_linear("fc2", 6, 4, 0));
    return s;
}

static void snapshot_factors(ng_kfac *k, double **A, double **G) {
    for (int i = 0; i < ng_kfac_layers(k); i++) {
        ng_tensor At, Gt;
        ng_kfac_factors(k, i, NULL, &At, &Gt);
        A[i] = ng_test_to_f64(&At);
        G[i] = ng_test_to_f64(&Gt);
    }
}

static void test_running_average(void) {
    const int64_t N = 4;
    ng_model *m = build(make_mlp2(), ng_test_seed());
    ng_kfac_config c = factored(0.1, 0), c0 = c;
    c.factor_decay = 0.7;
    c0.factor_decay = 0; /* F = F_batch every step */
    ng_kfac *k = ng_kfac_new(m, &c), *k0 = ng_kfac_new(m, &c0);
    double *A[3][2], *G[3][2], *Af[2], *Gf[2];
    for (int step = 0; step < 3; step++) {
        ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
                  dy = rand_tensor(2, (int64_t[]){N, 4}, "dy");
        pass(m, k0, step, N, &x, &dy);
        ng_kfac_step(k0, step, 0.1);
        pass(m, k, step, N, &x, &dy);
        ng_kfac_step(k, step, 0.1);
        snapshot_factors(k0, A[step], G[step]);
        ng_tensor_free(&x);
        ng_tensor_free(&dy);
    }
    snapshot_factors(k, Af, Gf);
    int64_t na[2] = {36, 36}, ng[2] = {36, 16};
    for (int i = 0; i < 2; i++) {
        double *ea = malloc(sizeof *ea * (size_t)na[i]), *eg = malloc(sizeof *eg * (size_t)ng[i]);
        for (int64_t j = 0; j < na[i]; j++)
            ea[j] = 0.7 * (0.7 * A[0][i][j] + 0.3 * A[1][i][j]) + 0.3 * A[2][i][j];
        for (int64_t j = 0; j < ng[i]; j++)
            eg[j] = 0.7 * (0.7 * G[0][i][j] + 0.3 * G[1][i][j]) + 0.3 * G[2][i][j];
        ng_test_close("A after 3 steps with decay 0.7", ea, Af[i], na[i], 1e-13, 1e-15);
        ng_test_close("G after 3 steps with decay 0.7", eg, Gf[i], ng[i], 1e-13, 1e-15);
        free(ea), free(eg), free(Af[i]), free(Gf[i]);
        for (int s = 0; s < 3; s++) free(A[s][i]), free(G[s][i]);
    }
    ng_kfac_free(k);
    ng_kfac_free(k0);
    ng_model_free(m);
}

static int same(const ng_tensor *t, const double *ref) {
    double *v = ng_test_to_f64(t);
    int eq = !memcmp(v, ref, sizeof(double) * (size_t)t->numel);
    free(v);
    return eq;
}

static void test_intervals(void) {
    const int64_t N = 4;
    ng_model *m = build(make_mlp2(), ng_test_seed());
    ng_kfac_config c = factored(0.1, 1);
    c.factor_decay = 0.5;
    c.factor_every = 2;
    c.inv_every = 3;
    ng_kfac *k = ng_kfac_new(m, &c);
    ng_tensor *A = state_of(k, "fc1.kfac_A"), *G = state_of(k, "fc2.kfac_G");
    ng_tensor *QA = state_of(k, "fc1.kfac_QA"), *dG = state_of(k, "fc2.kfac_dG");
    double *a = ng_test_to_f64(A), *g = ng_test_to_f64(G), *qa = ng_test_to_f64(QA),
           *dg = ng_test_to_f64(dG);
    for (int64_t step = 0; step <= 6; step++) {
        ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
                  dy = rand_tensor(2, (int64_t[]){N, 4}, "dy");
        pass(m, k, step, N, &x, &dy);
        ng_kfac_step(k, step, 0.1);
        int fac = step % 2 == 0, inv = step % 3 == 0;
        NG_TEST(same(A, a) == !fac && same(G, g) == !fac, "step %lld: factors %s", (long long)step,
                fac ? "updated" : "kept");
        NG_TEST(same(QA, qa) == !inv && same(dG, dg) == !inv, "step %lld: eigendecompositions %s",
                (long long)step, inv ? "updated" : "kept");
        free(a), free(g), free(qa), free(dg);
        a = ng_test_to_f64(A), g = ng_test_to_f64(G), qa = ng_test_to_f64(QA),
        dg = ng_test_to_f64(dG);
        ng_tensor_free(&x);
        ng_tensor_free(&dy);
    }
    free(a), free(g), free(qa), free(dg);
    ng_kfac_free(k);
    ng_model_free(m);
}

/* Small factors (side <= 32) of one step go through batched eigendecompositions: the
 * preconditioned gradients equal those of one call per factor, also when one layer's factor is
 * NaN (that layer alone keeps its last good inverse, the batch mates are unaffected). */
static ng_layer *make_small(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 7, 8, 1)); /* A 8x8, G 8x8 */
    ng_layer_add_child(s, ng_relu("act1"));
    ng_layer_add_child(s, ng_linear("fc2", 8, 8, 0)); /* A 8x8, G 8x8 */
    ng_layer_add_child(s, ng_relu("act2"));
    ng_layer_add_child(s, ng_linear("fc3", 8, 5, 1)); /* A 9x9, G 5x5 */
    return s;
}

static void test_batched_small(void) {
    const int64_t N = 6;
    uint64_t seed = ng_test_seed();
    ng_model *m[2] = {build(make_small(), seed), build(make_small(), seed)};
    ng_kfac_config c = factored(0.05, 1);
    c.inv_every = 2;
    ng_kfac *k[2] = {ng_kfac_new(m[0], &c), ng_kfac_new(m[1], &c)};
    ng_kfac_set_batch_small(k[1], 0);
    for (int64_t step = 0; step < 4; step++) {
        ng_tensor x = rand_tensor(2, (int64_t[]){N, 7}, "x"),
                  dy = rand_tensor(2, (int64_t[]){N, 5}, "dy");
        if (step == 2) /* fc2's running A goes bad on both: its update must be skipped alone */
            for (int v = 0; v < 2; v++) ((double *)state_of(k[v], "fc2.kfac_A")->data)[3] = NAN;
        double *g[2];
        for (int v = 0; v < 2; v++) {
            pass(m[v], k[v], step, N, &x, &dy);
            if (step == 2) {
                int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
                dup2(devnull, 2); /* the expected warning */
                ng_kfac_step(k[v], step, 0.1);
                dup2(saved, 2);
                close(devnull), close(saved);
            } else {
                ng_kfac_step(k[v], step, 0.1);
            }
            g[v] = ng_test_to_f64(&m[v]->flat_grads);
        }
        char what[96];
        snprintf(what, sizeof what, "step %lld: batched small eigh == one call per factor",
                 (long long)step);
        ng_test_close(what, g[1], g[0], m[0]->numel, 0, 0);
        int finite = 1;
        for (int64_t i = 0; i < m[0]->numel; i++) finite &= isfinite(g[0][i]);
        NG_TEST(finite, "step %lld: gradients stay finite", (long long)step);
        free(g[0]), free(g[1]);
        ng_tensor_free(&x), ng_tensor_free(&dy);
    }
    for (int v = 0; v < 2; v++) ng_kfac_free(k[v]), ng_model_free(m[v]);
}

static void test_kl_clip(void) {
    const int64_t N = 4;
    const double lr = 0.3;
    ng_model *m = build(make_mlp2(), ng_test_seed());
    ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
              dy = rand_tensor(2, (int64_t[]){N, 4}, "dy");
    ng_kfac_config c = factored(0.02, 1);
    ng_kfac *ku = ng_kfac_new(m, &c);
    pass(m, ku, 0, N, &x, &dy);
    double *g0 = ng_test_to_f64(&m->flat_grads);
    ng_kfac_step(ku, 0, lr);
    double *gu = ng_test_to_f64(&m->flat_grads);
    double vg = 0;
    for (int i = 0; i < m->nparams; i++)
        for (int64_t j = 0; j < m->params[i].param->value.numel; j++) {
            int64_t o = m->params[i].offset + j;
            vg += gu[o] * g0[o];
        }
    double clips[2] = {0.01 * lr * lr * fabs(vg), 100 * lr * lr * fabs(vg)};
    for (int ci = 0; ci < 2; ci++) {
        c.kl_clip = clips[ci];
        ng_kfac *kc = ng_kfac_new(m, &c);
        pass(m, kc, 0, N, &x, &dy);
        ng_kfac_step(kc, 0, lr);
        double *gc = ng_test_to_f64(&m->flat_grads);
        double nu = fmin(1.0, sqrt(c.kl_clip / (lr * lr * fabs(vg))));
        double *e = malloc(sizeof *e * (size_t)m->numel);
        for (int64_t j = 0; j < m->numel; j++) e[j] = nu * gu[j];
        char what[96];
        snprintf(what, sizeof what, "KL clip %g: gradients scaled by nu = %g", c.kl_clip, nu);
        ng_test_close(what, e, gc, m->numel, 1e-12, 1e-15);
        NG_TEST(ci == 1 || fabs(nu - 0.1) < 1e-12, "the clip is active (nu %g)", nu);
        free(e), free(gc);
        ng_kfac_free(kc);
    }
    free(g0), free(gu);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_kfac_free(ku);
    ng_model_free(m);
}

/* stderr into a temporary file while a step runs, to read its warnings. */
static int saved_fd = -1;
static FILE *cap_file;
static void capture_begin(void) {
    fflush(stderr);
    cap_file = tmpfile();
    saved_fd = dup(2);
    dup2(fileno(cap_file), 2);
}
static char *capture_end(void) {
    fflush(stderr);
    dup2(saved_fd, 2);
    close(saved_fd);
    long n = ftell(cap_file);
    char *s = calloc((size_t)n + 1, 1);
    rewind(cap_file);
    size_t got = fread(s, 1, (size_t)n, cap_file);
    s[got] = 0;
    fclose(cap_file);
    return s;
}

static void test_nonfinite(void) {
    const int64_t N = 4;
    uint64_t seed = ng_test_seed();
    ng_model *m = build(make_mlp2(), seed);
    ng_kfac_config c = factored(0.1, 1), c2 = c;
    c2.inv_every = 2; /* the twin does not recompute at step 1: its inverse stays step 0's */
    ng_kfac *k = ng_kfac_new(m, &c), *k2 = ng_kfac_new(m, &c2);
    ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
              dy = rand_tensor(2, (int64_t[]){N, 4}, "dy");
    pass(m, k, 0, N, &x, &dy);
    ng_kfac_step(k, 0, 0.1);
    pass(m, k2, 0, N, &x, &dy);
    ng_kfac_step(k2, 0, 0.1);
    double *qa = ng_test_to_f64(state_of(k, "fc1.kfac_QA"));

    /* A running factor turned NaN: the inverse update of step 1 is skipped with a warning. */
    ng_tensor *A = state_of(k, "fc1.kfac_A");
    double *a_good = ng_test_to_f64(A);
    ng_fill(A, NAN);
    pass(m, NULL, 1, N, &x, &dy);
    capture_begin();
    ng_kfac_step(k, 1, 0.1);
    char *log = capture_end();
    NG_TEST(strstr(log, "fc1") && strstr(log, "not finite"), "warning names the layer: '%s'", log);
    free(log);
    NG_TEST(same(state_of(k, "fc1.kfac_QA"), qa), "the last good eigenvectors are kept");
    double *g_nan = ng_test_to_f64(&m->flat_grads);
    pass(m, NULL, 1, N, &x, &dy);
    ng_kfac_step(k2, 1, 0.1);
    double *g_twin = ng_test_to_f64(&m->flat_grads);
    int finite = 1;
    for (int64_t i = 0; i < m->numel; i++) finite &= isfinite(g_nan[i]) != 0;
    NG_TEST(finite, "gradients stay finite");
    ng_test_close("preconditioning with the kept inverse", g_twin, g_nan, m->numel, 0, 0);
    free(g_nan), free(g_twin);

    /* A non-finite batch factor is left out of the running average. */
    ng_tensor_copy(A, &(ng_tensor){.data = a_good,
                                   .dtype = NG_F64,
                                   .device = NG_CPU,
                                   .ndim = 1,
                                   .shape = {A->numel},
                                   .numel = A->numel});
    ng_tensor xn = ng_tensor_2d(NG_F64, NG_CPU, N, 5, "x");
    ng_fill(&xn, NAN);
    ng_kfac_begin(k, 2, N, 1, 0);
    ng_observer *obs = ng_kfac_observer(k);
    obs->input(obs->self, m->root->children[0], &xn);
    capture_begin();
    ng_kfac_step(k, 2, 0.1);
    log = capture_end();
    NG_TEST(strstr(log, "fc1") && strstr(log, "A factor is not finite"),
            "warning about the batch factor names the layer: '%s'", log);
    free(log);
    NG_TEST(same(A, a_good), "the running factor is unchanged");

    /* No good A yet for fc1 (its only batch factor is NaN): fc1 keeps its plain gradient while
     * fc2 is preconditioned. */
    ng_kfac *k3 = ng_kfac_new(m, &c);
    pass(m, k3, 0, N, &x, &dy);
    ng_observer *o3 = ng_kfac_observer(k3);
    o3->input(o3->self, m->root->children[0], &xn);
    double *g0 = ng_test_to_f64(&m->flat_grads);
    capture_begin();
    ng_kfac_step(k3, 0, 0.1);
    log = capture_end();
    free(log);
    double *g3 = ng_test_to_f64(&m->flat_grads);
    ng_param_entry *w1 = ng_model_find(m, "fc1.weight"), *b1 = ng_model_find(m, "fc1.bias"),
                   *w2 = ng_model_find(m, "fc2.weight");
    ng_test_close("fc1 without a good A keeps its plain weight gradient", g0 + w1->offset,
                  g3 + w1->offset, w1->param->value.numel, 0, 0);
    ng_test_close("fc1 without a good A keeps its plain bias gradient", g0 + b1->offset,
                  g3 + b1->offset, b1->param->value.numel, 0, 0);
    int64_t changed = 0;
    for (int64_t i = 0; i < w2->param->value.numel; i++)
        changed += g0[w2->offset + i] != g3[w2->offset + i];
    NG_TEST(changed > 0, "fc2 is still preconditioned");
    free(g0), free(g3), free(qa), free(a_good);
    ng_tensor_free(&xn);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_kfac_free(k);
    ng_kfac_free(k2);
    ng_kfac_free(k3);
    ng_model_free(m);
}

static void test_damping_schedule(void) {
    ng_kfac_config c = factored(0.1, 0);
    c.damping_final = 0.001;
    c.damping_steps = 100;
    double want[5][2] = {
        {0, 0.1}, {50, 0.01}, {25, 0.1 * pow(0.01, 0.25)}, {100, 0.001}, {1000, 0.001}};
    for (int i = 0; i < 5; i++) {
        double got = ng_kfac_damping(&c, (int64_t)want[i][0]);
        NG_TEST(fabs(got - want[i][1]) <= 1e-15 * want[i][1],
                "damping at step %g: %.17g, want %.17g", want[i][0], got, want[i][1]);
    }
    c.damping_steps = 0;
    NG_TEST(ng_kfac_damping(&c, 500) == 0.1, "constant damping without a schedule");
}

static void test_state_roundtrip(void) {
    const int64_t N = 4;
    for (int inv = 0; inv < 2; inv++) {
        ng_model *m = build(make_mlp2(), ng_test_seed());
        ng_kfac_config c = factored(0.05, 1);
        c.factor_decay = 0.6;
        c.inv_every = 3;
        c.inverse = inv ? NG_KFAC_CHOLESKY : NG_KFAC_EIGEN;
        ng_kfac *k = ng_kfac_new(m, &c);
        ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
                  dy = rand_tensor(2, (int64_t[]){N, 4}, "dy");
        for (int step = 0; step < 2; step++) {
            pass(m, k, step, N, &x, &dy);
            ng_kfac_step(k, step, 0.1);
            ng_test_fill_uniform(&x, -1, 1);
        }
        /* Save into host copies, load into a fresh K-FAC, and run step 2 on both. */
        int n = ng_kfac_state(k, NULL, NULL, 0);
        NG_TEST(n == 2 * (inv ? 5 : 7), "%d state tensors for 2 layers", n);
        const char **names = malloc(sizeof *names * (size_t)n),
                   **names2 = malloc(sizeof *names2 * (size_t)n);
        ng_tensor **ts = malloc(sizeof *ts * (size_t)n), **ts2 = malloc(sizeof *ts2 * (size_t)n);
        ng_kfac_state(k, names, ts, n);
        ng_kfac *k2 = ng_kfac_new(m, &c);
        NG_TEST(ng_kfac_state(k2, names2, ts2, n) == n, "same state count");
        for (int i = 0; i < n; i++) {
            NG_TEST(!strcmp(names[i], names2[i]), "state %d: %s", i, names[i]);
            ng_tensor h = ng_tensor_to(ts[i], NG_CPU, "saved");
            ng_tensor_copy(ts2[i], &h);
            ng_tensor_free(&h);
        }
        pass(m, k, 2, N, &x, &dy);
        ng_kfac_step(k, 2, 0.1);
        double *g1 = ng_test_to_f64(&m->flat_grads);
        pass(m, k2, 2, N, &x, &dy);
        ng_kfac_step(k2, 2, 0.1);
        double *g2 = ng_test_to_f64(&m->flat_grads);
        ng_test_close(inv ? "resumed K-FAC (Cholesky) preconditions identically"
                          : "resumed K-FAC (eigen) preconditions identically",
                      g1, g2, m->numel, 0, 0);
        free(g1), free(g2), free(names), free(names2), free(ts), free(ts2);
        ng_tensor_free(&x);
        ng_tensor_free(&dy);
        ng_kfac_free(k);
        ng_kfac_free(k2);
        ng_model_free(m);
    }
}

static ng_layer *make_ckpt(int enabled) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("stem", 5, 8, 1));
    for (int b = 0; b < 2; b++) {
        char name[32];
        ng_layer *f = ng_sequence("");
        snprintf(name, sizeof name, "blocks.%d.fc1", b);
        ng_layer_add_child(f, ng_linear(name, 8, 12, 1));
        snprintf(name, sizeof name, "blocks.%d.act", b);
        ng_layer_add_child(f, ng_relu(name));
        snprintf(name, sizeof name, "blocks.%d.fc2", b);
        ng_layer_add_child(f, ng_linear(name, 12, 8, 1));
        snprintf(name, sizeof name, "blocks.%d", b);
        ng_layer_add_child(s, ng_checkpoint(name, ng_residual(name, f), enabled));
    }
    ng_layer_add_child(s, ng_linear("head", 8, 3, 1));
    return s;
}

static void test_checkpointed_model(void) {
    const int64_t N = 4;
    uint64_t seed = ng_test_seed();
    ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x"),
              dy = rand_tensor(2, (int64_t[]){N, 3}, "dy");
    double *F[2][6][2];
    for (int en = 0; en < 2; en++) {
        ng_model *m = build(make_ckpt(en), seed);
        ng_kfac_config c = factored(0.1, 1);
        ng_kfac *k = ng_kfac_new(m, &c);
        NG_TEST(ng_kfac_layers(k) == 6, "6 layers registered, got %d", ng_kfac_layers(k));
        pass(m, k, 0, N, &x, &dy);
        ng_kfac_step(k, 0, 0.1);
        for (int i = 0; i < 6; i++) {
            ng_tensor At, Gt;
            ng_kfac_factors(k, i, NULL, &At, &Gt);
            F[en][i][0] = ng_test_to_f64(&At);
            F[en][i][1] = ng_test_to_f64(&Gt);
            if (en) {
                ng_test_close("checkpointed model: A as without checkpointing", F[0][i][0],
                              F[1][i][0], At.numel, 0, 0);
                ng_test_close("checkpointed model: G as without checkpointing", F[0][i][1],
                              F[1][i][1], Gt.numel, 0, 0);
            }
        }
        ng_kfac_free(k);
        ng_model_free(m);
    }
    for (int en = 0; en < 2; en++)
        for (int i = 0; i < 6; i++) free(F[en][i][0]), free(F[en][i][1]);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

/* True Fisher: A from the forward, G from a backward on labels sampled from the model, and the
 * real backward (capture off) preconditioned; equal to capturing both on the sampled labels. */
static void test_true_fisher(void) {
    const int64_t N = 6, C = 4;
    uint64_t seed = ng_test_seed();
    ng_tensor x = rand_tensor(2, (int64_t[]){N, 5}, "x");
    ng_tensor labels = ng_tensor_1d(NG_I32, NG_CPU, N, "labels"),
              sampled = ng_tensor_1d(NG_I32, NG_CPU, N, "sampled");
    for (int64_t n = 0; n < N; n++) ((int32_t *)labels.data)[n] = (int32_t)(n % C);
    double *F[2][2][2], *g[2];
    for (int flow = 0; flow < 2; flow++) {
        ng_model *m = build(make_mlp(5, 7, C), seed);
        ng_kfac_config c = factored(0.05, 1);
        ng_kfac *k = ng_kfac_new(m, &c);
        ng_ctx ctx = ng_model_ctx(m, 1, 3, 0);
        ctx.observer = ng_kfac_observer(k);
        ng_model_zero_grad(m);
        ng_kfac_begin(k, 0, N, 1, flow == 1);
        ng_tensor logits = ng_model_forward(m, &ctx, &x);
        ng_tensor d = ng_tensor_2d(NG_F64, NG_CPU, N, C, "dlogits");
        ng_sample_categorical(&logits, (ng_rng_key){.seed = 9, .stream = 4}, &sampled);
        ng_softmax_xent(&logits, &sampled, 0, &d, NULL);
        if (flow == 0) ng_kfac_begin(k, 0, N, 0, 1);
        ctx.retain = 1; /* the second backward below runs over the same forward */
        ng_model_backward(m, &ctx, &d);
        ctx.retain = 0;
        ng_model_zero_grad(m);
        ng_softmax_xent(&logits, &labels, 0, &d, NULL);
        ng_kfac_begin(k, 0, N, 0, 0);
        ng_model_backward(m, &ctx, &d);
        ng_kfac_step(k, 0, 0.1);
        for (int i = 0; i < 2; i++) {
            ng_tensor At, Gt;
            ng_kfac_factors(k, i, NULL, &At, &Gt);
            F[flow][i][0] = ng_test_to_f64(&At);
            F[flow][i][1] = ng_test_to_f64(&Gt);
            if (flow) {
                ng_test_close("true Fisher A", F[1][i][0], F[0][i][0], At.numel, 0, 0);
                ng_test_close("true Fisher G from the sampled-label pass only", F[1][i][1],
                              F[0][i][1], Gt.numel, 0, 0);
            }
        }
        g[flow] = ng_test_to_f64(&m->flat_grads);
        if (flow)
            ng_test_close("true Fisher preconditions the real gradient", g[1], g[0], m->numel, 0,
                          0);
        ng_tensor_free(&d);
        ng_kfac_free(k);
        ng_model_free(m);
    }
    for (int f = 0; f < 2; f++) {
        free(g[f]);
        for (int i = 0; i < 2; i++) free(F[f][i][0]), free(F[f][i][1]);
    }
    ng_tensor_free(&x);
    ng_tensor_free(&labels);
    ng_tensor_free(&sampled);
}

static void test_config_errors(void) {
    ng_model *m = build(make_mlp2(), 1);
    ng_kfac_config c = factored(0.1, 0);
    c.inverse = NG_KFAC_CHOLESKY;
    c.damping_mode = NG_KFAC_DAMP_SUM;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.inverse");
    c = factored(0.1, 0);
    c.factor_decay = 1;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.factor_decay");
    c = factored(0, 0);
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.damping");
    c = factored(0.1, 0);
    c.inv_every = 0;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.inv_every");
    c = factored(0.1, 0);
    c.tokens = 7;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.tokens");
    c = factored(0.1, 0);
    c.damping_steps = 10;
    c.damping_final = -1;
    NG_TEST_ERROR(ng_kfac_new(m, &c), "kfac.damping_final");
    /* A batch that does not divide the rows names the layer. */
    c = factored(0.1, 0);
    ng_kfac *k = ng_kfac_new(m, &c);
    ng_tensor x = rand_tensor(2, (int64_t[]){5, 5}, "x");
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.observer = ng_kfac_observer(k);
    ng_kfac_begin(k, 0, 2, 1, 1);
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &x), "fc1");
    ng_tensor_free(&x);
    ng_kfac_free(k);
    ng_model_free(m);
}

/* ---- 6. categorical sampling ------------------------------------------------------------- */

static void test_sampling(void) {
    const int64_t N = 100000, C = 5;
    double logit[5];
    for (int j = 0; j < C; j++) logit[j] = 2 * ng_test_uniform();
    logit[3] = -40; /* a class of probability ~1e-18: never drawn */
    double z = 0, p[5];
    for (int j = 0; j < C; j++) z += exp(logit[j]);
    for (int j = 0; j < C; j++) p[j] = exp(logit[j]) / z;
    ng_tensor L32 = ng_tensor_2d(NG_F32, NG_CPU, N, C, "logits"),
              L64 = ng_tensor_2d(NG_F64, NG_CPU, N, C, "logits");
    for (int64_t n = 0; n < N; n++)
        for (int j = 0; j < C; j++) {
            ((float *)L32.data)[n * C + j] = (float)logit[j];
            ((double *)L64.data)[n * C + j] = (float)logit[j];
        }
    ng_tensor lab = ng_tensor_1d(NG_I32, NG_CPU, N, "labels"),
              lab2 = ng_tensor_1d(NG_I32, NG_CPU, N, "labels"),
              lab3 = ng_tensor_1d(NG_I32, NG_CPU, N, "labels");
    ng_rng_key key = {.seed = ng_test_seed(), .stream = 77, .offset = 5};
    ng_test_poison(&lab);
    ng_sample_categorical(&L32, key, &lab);
    int64_t count[5] = {0}, bad = 0;
    for (int64_t n = 0; n < N; n++) {
        int32_t l = ((int32_t *)lab.data)[n];
        if (l < 0 || l >= C)
            bad++;
        else
            count[l]++;
    }
    NG_TEST(bad == 0, "%lld labels outside [0, %lld)", (long long)bad, (long long)C);
    for (int j = 0; j < C; j++) {
        double sigma = sqrt(N * p[j] * (1 - p[j])), dev = fabs(count[j] - N * p[j]);
        NG_TEST(dev <= 5 * sigma + (j == 3 ? 0 : 1e-9),
                "class %d: %lld draws, expected %.1f +- %.1f", j, (long long)count[j], N * p[j],
                sigma);
    }
    NG_TEST(count[3] == 0, "a class of probability 1e-18 is never drawn (%lld)",
            (long long)count[3]);
    ng_test_poison(&lab2);
    ng_sample_categorical(&L32, key, &lab2);
    NG_TEST(!memcmp(lab.data, lab2.data, (size_t)N * 4), "same key, same labels");
    ng_test_poison(&lab3);
    ng_sample_categorical(&L64, key, &lab3);
    NG_TEST(!memcmp(lab.data, lab3.data, (size_t)N * 4),
            "f64 logits of the same values, same labels");
    key.offset += ng_rng_blocks(N);
    ng_sample_categorical(&L32, key, &lab2);
    int64_t differ = 0;
    for (int64_t n = 0; n < N; n++) differ += ((int32_t *)lab.data)[n] != ((int32_t *)lab2.data)[n];
    double q = 1;
    for (int j = 0; j < C; j++) q -= p[j] * p[j];
    NG_TEST(fabs(differ - N * q) <= 5 * sqrt(N * q * (1 - q)),
            "the next offset draws independent labels: %lld differ, expected %.0f",
            (long long)differ, N * q);
    /* A dominant logit, -inf logits and a NaN row. */
    ng_tensor small = ng_tensor_2d(NG_F64, NG_CPU, 3, 3, "logits");
    double *s = small.data;
    s[0] = -INFINITY, s[1] = 50, s[2] = -INFINITY;
    s[3] = 0, s[4] = 0, s[5] = NAN;
    s[6] = -INFINITY, s[7] = -INFINITY, s[8] = -INFINITY;
    ng_tensor l3 = ng_tensor_1d(NG_I32, NG_CPU, 3, "labels");
    ng_test_poison(&l3);
    ng_sample_categorical(&small, key, &l3);
    int32_t *r = l3.data;
    NG_TEST(r[0] == 1 && r[1] == 0 && r[2] == 0, "dominant / NaN / all -inf rows: %d %d %d", r[0],
            r[1], r[2]);
    /* exp from IEEE operations against libm. */
    double worst = 0;
    for (int i = 0; i < 100000; i++) {
        double xv = -30 * (ng_test_uniform() + 1) / 2;
        worst = fmax(worst, fabs(ng_sample_exp(xv) - exp(xv)) / exp(xv));
    }
    NG_TEST(worst < 4e-16, "ng_sample_exp within 2 ulp of exp (worst relative %g)", worst);
    NG_TEST(ng_sample_exp(0) == 1 && ng_sample_exp(-800) == 0, "exp(0) = 1, exp(-800) = 0");
    ng_tensor wrong = ng_tensor_1d(NG_F32, NG_CPU, N, "labels");
    NG_TEST_ERROR(ng_sample_categorical(&L32, key, &wrong), "labels");
    ng_tensor_free(&wrong);
    ng_tensor_free(&small);
    ng_tensor_free(&l3);
    ng_tensor_free(&L32);
    ng_tensor_free(&L64);
    ng_tensor_free(&lab);
    ng_tensor_free(&lab2);
    ng_tensor_free(&lab3);
}

/* ---- half precision ------------------------------------------------------------------------ */

/* A K-FAC factor built from N vectors v_n (F = c sum_n v_n v_n^T) whose entries carry errors
 * |dv_ni| <= eps m_ni, with |v_ni| <= m_ni: entry ij is off by at most
 * (2 eps + eps^2 + gamma) c sum_n m_ni m_nj, gamma for the f32 sum. Returns the worst ratio of
 * |F_ij - R_ij| to c sum_n m_ni m_nj, c read off R's largest diagonal entry against v. */
static double factor_err(const double *F, const double *R, const double *v, const double *mag,
                         int64_t N, int64_t d) {
    int64_t big = 0;
    for (int64_t i = 1; i < d; i++)
        if (R[i * d + i] > R[big * d + big]) big = i;
    double vv = 0;
    for (int64_t n = 0; n < N; n++) vv += v[n * d + big] * v[n * d + big];
    double c = R[big * d + big] / vv, worst = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double m = 0;
            for (int64_t n = 0; n < N; n++) m += mag[n * d + i] * mag[n * d + j];
            if (m > 0) worst = fmax(worst, fabs(F[i * d + j] - R[i * d + j]) / (c * m));
        }
    return worst;
}

/* K-FAC under fp16 (issue 10): factors summed in f32 from fp16 activations and output gradients,
 * the loss scale s divided out of G. Model: fc1 -> fc2 (no nonlinearity: a ReLU's mask flips
 * where fp16's rounding of W x before the bias moves a pre-activation across 0, which no
 * entry-wise bound covers). An f32-master model computing in fp16 runs against an f64 model
 * holding the very weights the fp16 one computes with, on the same fp16 input, and the
 * vectors K-FAC sees are rebuilt here in double with their error scales m:
 *   fc1's A: [x, 1], exact in fp16 (m = 0 but for the f32 sum);
 *   fc2's A: [h, 1], h = fp16(fp16(W1 x) + b1): m = sum |W1||x| + |b1|, two fp16 roundings;
 *   fc2's G: dy, m = |dy|, one rounding; fc1's G: W2^T dy, m = |W2|^T |dy|, two roundings
 * (eps = 2 u16 covers both, the f32 sums adding gamma_k << u16). The output gradient is tiny
 * (1e-6, under fp16's smallest normal 6.1e-5): at s = 1 its subnormal fp16 copy loses most of
 * its digits and G misses the bound; at s = 2^16 it is a normal number and G meets it, so the
 * scale reached the fp16 gradient and left G. A, which the scale never touches, is the same bits
 * whatever s. */
static void test_half_precision(void) {
    const int64_t N = 32, in = 12, hid = 20, out = 6;
    const double u16 = ldexp(1, -11), eps = 2 * u16,
                 bound = 2 * eps + eps * eps + (double)(N + in + 1) * ldexp(1, -24);
    uint64_t seed = ng_test_seed();
    ng_layer *roots[2];
    for (int i = 0; i < 2; i++) {
        roots[i] = ng_sequence("");
        ng_layer_add_child(roots[i], ng_linear("fc1", in, hid, 1));
        ng_layer_add_child(roots[i], ng_linear("fc2", hid, out, 1));
    }
    ng_model *m16 = ng_model_new(roots[0]);
    ng_model_build_mixed(m16, NG_CPU, NG_F16, seed, ARENA, ARENA);
    ng_model *m64 = build(roots[1], seed);
    for (int i = 0; i < m64->nparams; i++) /* the weights the fp16 model computes with */
        ng_cast(&m64->params[i].param->value, &m16->params[i].param->compute);

    ng_tensor x64 = rand_tensor(2, (int64_t[]){N, in}, "x"),
              dy64 = rand_tensor(2, (int64_t[]){N, out}, "dy");
    ng_scale(1e-6, &dy64);
    ng_tensor x16 = ng_tensor_new(NG_F16, NG_CPU, 2, x64.shape, "x16");
    ng_cast(&x16, &x64);
    ng_cast(&x64, &x16); /* both models see the same fp16 input */
    ng_tensor dy16 = ng_tensor_new(NG_F16, NG_CPU, 2, dy64.shape, "dy16");
    ng_tensor dys = ng_tensor_new(NG_F64, NG_CPU, 2, dy64.shape, "dy scaled");

    /* The vectors (v) and their error scales (m), per layer, in double. */
    double *W1 = ng_test_to_f64(&ng_model_find(m64, "fc1.weight")->param->value),
           *b1 = ng_test_to_f64(&ng_model_find(m64, "fc1.bias")->param->value),
           *W2 = ng_test_to_f64(&ng_model_find(m64, "fc2.weight")->param->value),
           *X = ng_test_to_f64(&x64), *D = ng_test_to_f64(&dy64);
    int64_t da[2] = {in + 1, hid + 1}, dg[2] = {hid, out};
    double *va[2], *ma[2], *vg[2], *mg[2];
    for (int l = 0; l < 2; l++) {
        va[l] = calloc((size_t)(N * da[l]), sizeof(double));
        ma[l] = calloc((size_t)(N * da[l]), sizeof(double));
        vg[l] = calloc((size_t)(N * dg[l]), sizeof(double));
        mg[l] = calloc((size_t)(N * dg[l]), sizeof(double));
    }
    for (int64_t n = 0; n < N; n++) {
        for (int64_t i = 0; i < in; i++) va[0][n * da[0] + i] = X[n * in + i];
        va[0][n * da[0] + in] = va[1][n * da[1] + hid] = 1;
        for (int64_t j = 0; j < hid; j++) {
            double h = b1[j], mh = fabs(b1[j]), g = 0, mgj = 0;
            for (int64_t i = 0; i < in; i++)
                h += W1[j * in + i] * X[n * in + i], mh += fabs(W1[j * in + i] * X[n * in + i]);
            for (int64_t k = 0; k < out; k++)
                g += W2[k * hid + j] * D[n * out + k],
                    mgj += fabs(W2[k * hid + j] * D[n * out + k]);
            va[1][n * da[1] + j] = h, ma[1][n * da[1] + j] = mh;
            vg[0][n * dg[0] + j] = g, mg[0][n * dg[0] + j] = mgj;
        }
        for (int64_t k = 0; k < out; k++)
            vg[1][n * out + k] = D[n * out + k], mg[1][n * out + k] = fabs(D[n * out + k]);
    }
    for (int l = 0; l < 2; l++) /* x and the ones are exact: only the f32 sums (in bound) */
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < da[l]; i++)
                if (l == 0 || i == hid) ma[l][n * da[l] + i] = fabs(va[l][n * da[l] + i]);

    ng_kfac_config c = factored(0.1, 0);
    c.factor_decay = 0;
    ng_kfac *k64 = ng_kfac_new(m64, &c);
    pass(m64, k64, 0, N, &x64, &dy64);
    ng_kfac_step(k64, 0, 0.1);
    double *Ar[2], *Gr[2], *A0[2] = {NULL, NULL};
    snapshot_factors(k64, Ar, Gr);

    const double scales[2] = {1.0, 65536.0};
    double gerr[2][2];
    for (int si = 0; si < 2; si++) {
        ng_copy(&dys, &dy64);
        ng_scale(scales[si], &dys);
        ng_cast(&dy16, &dys);
        ng_kfac *k16 = ng_kfac_new(m16, &c);
        ng_kfac_set_loss_scale(k16, scales[si]);
        pass(m16, k16, 0, N, &x16, &dy16);
        ng_kfac_step(k16, 0, 0.1);
        double *A[2], *G[2];
        snapshot_factors(k16, A, G);
        for (int l = 0; l < 2; l++) {
            double ea = factor_err(A[l], Ar[l], va[l], ma[l], N, da[l]);
            NG_TEST(ea <= bound, "fp16 K-FAC: A of layer %d is %.3g from f64's (bound %.3g)", l, ea,
                    bound);
            if (!A0[l]) {
                A0[l] = A[l];
            } else {
                NG_TEST(!memcmp(A0[l], A[l], sizeof(double) * (size_t)(da[l] * da[l])),
                        "fp16 K-FAC: A of layer %d changed with the loss scale", l);
                free(A[l]);
            }
            gerr[si][l] = factor_err(G[l], Gr[l], vg[l], mg[l], N, dg[l]);
            free(G[l]);
        }
        ng_kfac_free(k16);
    }
    for (int l = 0; l < 2; l++) {
        NG_TEST(gerr[1][l] <= bound,
                "fp16 K-FAC at loss scale 2^16: G of layer %d is %.3g from f64's (bound %.3g)", l,
                gerr[1][l], bound);
        NG_TEST(gerr[0][l] > bound,
                "fp16 K-FAC at loss scale 1: G of layer %d (%.3g from f64's) should have lost the "
                "underflowing gradient (bound %.3g)",
                l, gerr[0][l], bound);
        free(Ar[l]), free(Gr[l]), free(A0[l]);
        free(va[l]), free(ma[l]), free(vg[l]), free(mg[l]);
    }
    free(W1), free(b1), free(W2), free(X), free(D);
    ng_tensor_free(&x64), ng_tensor_free(&dy64), ng_tensor_free(&x16), ng_tensor_free(&dy16);
    ng_tensor_free(&dys);
    ng_kfac_free(k64);
    ng_model_free(m16);
    ng_model_free(m64);
}

int main(void) {
    test_batched_small();
    test_gauss_newton();
    test_precondition();
    test_convs();
    test_tokens();
    test_untouched();
    test_running_average();
    test_intervals();
    test_kl_clip();
    test_nonfinite();
    test_damping_schedule();
    test_state_roundtrip();
    test_checkpointed_model();
    test_true_fisher();
    test_config_errors();
    test_sampling();
    test_half_precision();
    return ng_test_finish("test_kfac");
}
