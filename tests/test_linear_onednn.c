/* The Linear layer on oneDNN's matmul against ng_gemm (ng_linear_use_onednn(0)): f32 (oneDNN's
 * f32 kernels against OpenBLAS's sgemm), and bf16 on the native bf16 matmul (where the CPU has
 * AVX512_BF16) against the widened path (ng_gemm's f32 copies and sgemm): output, input
 * gradient, weight and bias gradients, 2-D inputs and batched 3-D ones as the ViT feeds (rows =
 * batch x tokens), odd sizes, batch 1, with and without bias and input gradient, gradients
 * accumulated over two backward passes; the pass counter shows which path ran; the memory plan
 * of a native layer equals the arenas' measured peaks. On a CPU without the ISA the native bf16
 * checks are skipped with a message (both runs then take the widened path), and so are the f32
 * ones where oneDNN's f32 matmul is not brgemm (aarch64: the Linear keeps OpenBLAS).
 *
 * f32: each path forms every element as an f32 sum of n rounded f32 products, within gamma_n S
 * of the exact sum (S = the sum of the products' magnitudes), so the two differ by at most
 * 2 gamma_n S; with a bias both add it to their f32 sum with one rounding, a further 2 u (S + |b|);
 * the gradients as for bf16 below (2 gamma_{P n} P S). c = (1 + u)^3 covers S taken from the f64
 * weights of the same seed.
 *
 * Tolerance, derived. Both paths compute each element as an f32 sum of n products of bf16 values
 * (forward: n = in; dx: n = out; dW and db: n = rows per backward pass). A product of two bf16
 * values (8 significant bits each) has at most 16 bits and is exact in f32, in both paths
 * (vdpbf16ps multiplies exactly; the copies are exact widenings). So each path's sum is some
 * summation order of the same exact terms, within gamma_{n-1} S of the exact sum, gamma_j =
 * j u / (1 - j u), u = 2^-24, S = the sum of the terms' magnitudes; the two differ by at most
 * 2 gamma_n S. After P backward passes a gradient element is one f32 sum of P n exact terms (the
 * accumulation into the master gradient is part of the summation tree in both paths), so the
 * gradients differ by at most 2 gamma_{P n} S_P, S_P = P S.
 * y and dx are then rounded to bf16 (unit roundoff h = 2^-8), once, by the same rounding: two
 * values within D of each other round to values within D + h (|a| + |b|) <= D + 2 h S (1 + gamma).
 * With a bias both paths then form fl32(t + b) (t the rounded y) and round it to bf16 again: a
 * further 2 u and 2 h of S + |b| each (to first order). So:
 *   y without bias, dx:  2 gamma_n S + 2 h S
 *   y with bias:         2 gamma_n S + (4 h + 2 u) (S + |b|)
 *   dW, db:              2 gamma_{P n} P S
 * each times c = (1 + h)^3 for the second-order terms and for S itself: S is computed in f64 from
 * |x| and the layer's f64 weights (same seed), which the bf16 operands exceed by at most
 * (1 + h + u) each. vdpbf16ps reads bf16 subnormals as zero and flushes subnormal sums; the
 * inputs here are normal numbers in [-1, 1] and weights of the layer's uniform init, whose
 * products stay far above 2^-126. A wrong index, a missed term or a lost accumulation is an error
 * of the size of a term, orders of magnitude above these bounds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/linear.h"
#include "nn/linear_onednn.h"
#include "nn/model.h"
#include "nn/onednn.h"
#include "nn/plan.h"
#include "testing.h"

#define PASSES 2

static int64_t cur_in, cur_out;
static int cur_bias;

static ng_layer *make_case(void) {
    return ng_linear("fc", cur_in, cur_out, cur_bias);
}

/* Forward on x and PASSES backward passes from dy of one Linear built in dt (bf16: f32 masters,
 * bf16 compute); see ng_test_layer_run. */
static ng_layer_run run(ng_dtype dt, uint64_t seed, const ng_tensor *xh, const ng_tensor *dyh,
                        int absolute, int need_dx) {
    return ng_test_layer_run(make_case, dt, seed, xh, dyh, absolute, PASSES, need_dx, 16 << 20);
}

/* Whether the runs in dt must take oneDNN here: bf16 where oneDNN has AVX512_BF16, f32 where its
 * f32 matmul is brgemm; says once per dtype when the checks are skipped. */
static int onednn_expected(ng_dtype dt) {
    static int said[2];
    int f32 = dt == NG_F32, on = f32 ? ng_linear_onednn_f32_here() : ng_dnnl_bf16_native();
    if (!on && !said[f32]++)
        printf("test_linear_onednn: skipped the %s oneDNN checks: %s\n", ng_dtype_name(dt),
               f32 ? "oneDNN's f32 matmul here is not brgemm (the Linear keeps OpenBLAS, so its "
                     "sums do not split across threads)"
                   : "oneDNN's effective ISA has no AVX512_BF16 here (the widened path ran)");
    return on;
}

/* A run in dt with oneDNN's matmul on (bf16: where native) or forced off (ng_gemm); the counter
 * must show the forward and one pass per backward on oneDNN, or none. */
static ng_layer_run run_path(ng_dtype dt, int on, uint64_t seed, const ng_tensor *x,
                             const ng_tensor *dy, int need_dx, const char *what) {
    ng_linear_use_onednn(on);
    long before = ng_linear_native_passes();
    ng_layer_run r = run(dt, seed, x, dy, 0, need_dx);
    long ran = ng_linear_native_passes() - before;
    ng_linear_use_onednn(1);
    NG_TEST(ran == (on ? 1 + PASSES : 0), "%s: a %s run with oneDNN %s made %ld oneDNN passes",
            what, ng_dtype_name(dt), on ? "on" : "off", ran);
    return r;
}

static double gamma_of(double n) {
    double nu = n * 0x1p-24;
    return nu / (1.0 - nu);
}

/* |got - want| <= rel mag, element by element, over [lo, hi). */
static void within(const char *what, const char *part, const double *want, const double *got,
                   const double *mag, int64_t lo, int64_t hi, double rel) {
    double worst = 0;
    int64_t bad = -1;
    for (int64_t i = lo; i < hi; i++) {
        double tol = rel * mag[i];
        double e = fabs(got[i] - want[i]);
        if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
    }
    NG_TEST(bad < 0, "%s: %s element %lld: widened %.9g, native %.9g (%.3g x tolerance)", what,
            part, (long long)bad, bad < 0 ? 0 : want[bad], bad < 0 ? 0 : got[bad], worst);
}

static void one_case(const char *what, int ndim, const int64_t *shape, int64_t out, int bias,
                     int need_dx) {
    cur_in = shape[ndim - 1], cur_out = out, cur_bias = bias;
    int64_t rows = 1, oshape[3];
    for (int i = 0; i < ndim - 1; i++) rows *= shape[i], oshape[i] = shape[i];
    oshape[ndim - 1] = out;
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, ndim, shape, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, ndim, oshape, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_tensor xa = ng_test_abs(&x, "|x|"), dya = ng_test_abs(&dy, "|dy|");
    uint64_t seed = ng_test_seed();

    int native = onednn_expected(NG_BF16);
    char w2[200];
    snprintf(w2, sizeof w2, "%s (%s)", what, native ? "native" : "no native ISA");
    ng_layer_run mag = run(NG_F64, seed, &xa, &dya, 1, need_dx);
    ng_layer_run wide = run_path(NG_BF16, 0, seed, &x, &dy, need_dx, w2);
    ng_layer_run nat = run_path(NG_BF16, native, seed, &x, &dy, need_dx, w2);

    const double u = 0x1p-24, h = 0x1p-8, c = (1 + h) * (1 + h) * (1 + h);
    double gy = 2 * gamma_of((double)cur_in), gd = 2 * gamma_of((double)out);
    double gg = 2 * gamma_of((double)(PASSES * rows));
    within(w2, "output", wide.y, nat.y, mag.y, 0, nat.ny,
           c * (bias ? gy + 4 * h + 2 * u : gy + 2 * h));
    if (need_dx) within(w2, "input gradient", wide.dx, nat.dx, mag.dx, 0, nat.nx, c * (gd + 2 * h));
    /* mag.g holds P S: the f64 run accumulated the same PASSES passes */
    within(w2, "weight gradient", wide.g, nat.g, mag.g, 0, out * cur_in, c * gg);
    if (bias) within(w2, "bias gradient", wide.g, nat.g, mag.g, out * cur_in, nat.ng, c * gg);

    /* f32: oneDNN's kernels against OpenBLAS's */
    ng_layer_run blas = run_path(NG_F32, 0, seed, &x, &dy, need_dx, what);
    ng_layer_run dnnl = run_path(NG_F32, onednn_expected(NG_F32), seed, &x, &dy, need_dx, what);
    char w3[200];
    snprintf(w3, sizeof w3, "%s (f32)", what);
    const double c32 = (1 + u) * (1 + u) * (1 + u);
    within(w3, "output", blas.y, dnnl.y, mag.y, 0, dnnl.ny, c32 * (bias ? gy + 2 * u : gy));
    if (need_dx) within(w3, "input gradient", blas.dx, dnnl.dx, mag.dx, 0, dnnl.nx, c32 * gd);
    within(w3, "weight gradient", blas.g, dnnl.g, mag.g, 0, out * cur_in, c32 * gg);
    if (bias) within(w3, "bias gradient", blas.g, dnnl.g, mag.g, out * cur_in, dnnl.ng, c32 * gg);
    ng_layer_run_free(&blas), ng_layer_run_free(&dnnl);
    ng_layer_run_free(&mag), ng_layer_run_free(&wide), ng_layer_run_free(&nat);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&xa), ng_tensor_free(&dya);
}

/* The plan of a Linear on oneDNN (bf16: f32 destinations, the f32 bias, the ones column; f32:
 * the ones column; both: oneDNN's scratchpads) equals the arenas' measured peaks. */
static void plan_case(ng_dtype dt, int64_t B, int64_t T, int64_t in, int64_t out, int bias) {
    cur_in = in, cur_out = out, cur_bias = bias;
    int64_t shape[3] = {B, T, in};
    ng_model *m = ng_model_new(make_case());
    ng_arena_plan pl = ng_plan_train_step(m->root, 3, shape, NG_F32, dt, NG_CPU, 0);
    if (dt == NG_F32)
        ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 16 << 20, 16 << 20);
    else
        ng_model_build_mixed(m, NG_CPU, dt, ng_test_seed(), 16 << 20, 16 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 3, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_model_reset_arenas(m);
    ng_tensor xc = x;
    if (dt != NG_F32) { /* the trainer's cast of the f32 batch into the activation arena */
        xc = ng_arena_tensor(&m->acts, dt, 3, shape, "x half");
        ng_cast(&xc, &x);
    }
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    long before = ng_linear_native_passes();
    ng_tensor y = ng_model_forward(m, &ctx, &xc);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
    ng_fill(&dy, 1);
    ng_model_backward(m, &ctx, &dy);
    long ran = ng_linear_native_passes() - before;
    int expect = (dt == NG_F32 ? ng_linear_onednn_f32_here() : ng_dnnl_bf16_native()) ? 2 : 0;
    NG_TEST(ran == expect, "plan case %s: %ld oneDNN passes, expected %d", ng_dtype_name(dt), ran,
            expect);
    NG_TEST(pl.acts == m->acts.peak && pl.grads == m->grads.peak,
            "%s linear plan [%lld,%lld,%lld]->%lld bias %d: acts %zu grads %zu planned, %zu %zu "
            "measured",
            ng_dtype_name(dt), (long long)B, (long long)T, (long long)in, (long long)out, bias,
            pl.acts, pl.grads, m->acts.peak, m->grads.peak);
    ng_tensor_free(&x);
    ng_model_free(m);
}

int main(void) {
    one_case("2-D [7,13] -> 5, bias", 2, (int64_t[]){7, 13}, 5, 1, 1);
    one_case("2-D [7,13] -> 5, no input gradient", 2, (int64_t[]){7, 13}, 5, 1, 0);
    one_case("batch 1 [1,33] -> 10, no bias", 2, (int64_t[]){1, 33}, 10, 0, 1);
    one_case("3-D batch 1 [1,65,24] -> 72", 3, (int64_t[]){1, 65, 24}, 72, 1, 1);
    one_case("3-D [3,17,32] -> 96 (qkv-like)", 3, (int64_t[]){3, 17, 32}, 96, 1, 1);
    one_case("3-D [5,37,192] -> 77, no bias", 3, (int64_t[]){5, 37, 192}, 77, 0, 1);
    one_case("3-D [64,65,48] -> 31 (many rows)", 3, (int64_t[]){64, 65, 48}, 31, 1, 1);
    for (int d = 0; d < 2; d++) {
        ng_dtype dt = d ? NG_F32 : NG_BF16;
        plan_case(dt, 3, 17, 32, 96, 1);
        plan_case(dt, 1, 5, 7, 3, 0);
    }
    return ng_test_finish("test_linear_onednn");
}
