/* The CPU convolution on oneDNN against the im2col + GEMM reference path (ng_conv_use_onednn(0)):
 * output, input gradient, weight and bias gradients, 2-D and 3-D, odd sizes, stride, padding,
 * dilation, batch 1, with and without bias; bit-identical reruns (a fixed thread count gives a
 * fixed summation order); gradients accumulate across backward passes; the memory plan of a
 * oneDNN layer equals what it takes; primitives remade after the per-layer cache evicted them
 * give the same bits; f16/bf16 forwards (widened to oneDNN's f32 convolution) against im2col's;
 * bf16 also on oneDNN's native bf16 kernels (where the CPU has AVX512_BF16, else skipped with a
 * message) against im2col and against the f32 copies, the pass counter showing which path ran,
 * and oneDNN's rounding of y and dx checked bit for bit on sums of one product.
 *
 * Tolerance. Both paths compute every element as an f32 sum of k products (forward: k = C
 * prod(kernel) plus the bias; dx: k = out prod(kernel); dW and db: k = N x output positions), in
 * different orders. Each is within k u S of the exact sum (u = 2^-24, S = the sum of the terms'
 * magnitudes, computed here by the f64 reference on |x|, |w|, |dy|), so they differ by at most
 * 2 k u S; a wrong index or a missed term is a difference of the size of a term, far above it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/conv.h"
#include "nn/conv_kernels.h"
#include "nn/model.h"
#include "nn/plan.h"
#include "testing.h"

static ng_layer_run run(ng_layer *(*make)(void), ng_dtype dt, uint64_t seed, const ng_tensor *xh,
                        const ng_tensor *dyh, int absolute, int passes, int need_dx) {
    return ng_test_layer_run(make, dt, seed, xh, dyh, absolute, passes, need_dx, 8 << 20);
}

static double max_abs(const double *v, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

/* |got - want| <= 2 k u mag, element by element. */
static void close_by(const char *what, const char *part, const double *want, const double *got,
                     const double *mag, int64_t n, int64_t k) {
    double worst = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double tol = 2.0 * (double)k * 0x1p-24 * mag[i] + 1e-30;
        double e = fabs(got[i] - want[i]);
        if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
    }
    NG_TEST(bad < 0, "%s: %s element %lld: reference %.9g, oneDNN %.9g, error %.3g x tolerance",
            what, part, (long long)bad, bad < 0 ? 0 : want[bad], bad < 0 ? 0 : got[bad], worst);
}

/* Whether each bf16 run below must take the native path: 1 where the CPU has AVX512_BF16. */
static int native_expected(void) {
    static int said;
    int on = ng_conv_bf16_native();
    if (!on && !said++)
        printf("test_conv_onednn: skipped the native bf16 checks: oneDNN's effective ISA has no "
               "AVX512_BF16 here (the f32-copies path ran for bf16 instead)\n");
    return on;
}

/* run() in bf16 with the native path on (native 1) or forced off, checking from the pass counter
 * that the path asked for ran: two passes (forward, backward) natively, or none. */
static ng_layer_run run_bf16(ng_layer *(*make)(void), int native, uint64_t seed,
                             const ng_tensor *xh, const ng_tensor *dyh, int need_dx,
                             const char *what) {
    ng_conv_use_native_bf16(native);
    long before = ng_conv_native_passes();
    ng_layer_run r = run(make, NG_BF16, seed, xh, dyh, 0, 1, need_dx);
    long ran = ng_conv_native_passes() - before;
    ng_conv_use_native_bf16(1);
    NG_TEST(ran == (native ? 2 : 0), "%s: %s bf16 run made %ld native passes; expected %d", what,
            native ? "a native" : "an f32-copies", ran, native ? 2 : 0);
    return r;
}

static const int64_t *cur_k, *cur_s, *cur_p, *cur_d;
static int cur_nd, cur_bias;
static int64_t cur_in, cur_out;
static ng_layer *make_case(void) {
    return ng_conv("conv", cur_nd, cur_in, cur_out, cur_k, cur_s, cur_p, cur_d, cur_bias);
}

/* The bf16 case on both oneDNN paths: gh (made with the default, the native path where there is
 * one) and the f32 copies. Native against im2col (rh) within the bounds above (y: 2 kf u S +
 * 2 h S; dx: 2 kd u S + (prod(kernel) + 2) h S; the f32 weight gradient 2 kw u S). Native against
 * the copies: both sum exact products in f32 (in different orders) and round y and dx once, so
 * y and dx are within 2 k u S + 2 h S and the weight gradient within 2 kw u S. The test's inputs
 * are normal numbers in [-1, 1] whose products stay far above the denormal range, which
 * AVX512_BF16 flushes to zero (the copies path would keep them). */
static void native_case(const char *what, const ng_layer_run *rh, const ng_layer_run *gh,
                        const ng_layer_run *mag, uint64_t seed, const ng_tensor *x,
                        const ng_tensor *dy, int64_t kf, int64_t kd, int64_t kp, int64_t kw) {
    int native = native_expected();
    char w2[240];
    snprintf(w2, sizeof w2, "%s, bf16 %s", what, native ? "native" : "(no native ISA)");
    ng_layer_run cp = run_bf16(make_case, 0, seed, x, dy, 1, w2);
    ng_layer_run nv = run_bf16(make_case, native, seed, x, dy, 1, w2);
    NG_TEST(!memcmp(nv.y, gh->y, sizeof(double) * (size_t)nv.ny) &&
                !memcmp(nv.dx, gh->dx, sizeof(double) * (size_t)nv.nx),
            "%s: the default bf16 path is not the native one", w2);
    const double h = 0x1p-7;
    const struct {
        const char *part;
        const double *want, *got, *mag;
        int64_t n;
        double rel;
    } checks[] = {
        {"output against im2col", rh->y, nv.y, mag->y, nv.ny, 2.0 * kf * 0x1p-24 + 2 * h},
        {"input gradient against im2col", rh->dx, nv.dx, mag->dx, nv.nx,
         2.0 * kd * 0x1p-24 + (double)(kp + 2) * h},
        {"parameter gradients against im2col", rh->g, nv.g, mag->g, nv.ng, 2.0 * kw * 0x1p-24},
        {"output against the f32 copies", cp.y, nv.y, mag->y, nv.ny, 2.0 * kf * 0x1p-24 + 2 * h},
        {"input gradient against the f32 copies", cp.dx, nv.dx, mag->dx, nv.nx,
         2.0 * kd * 0x1p-24 + 2 * h},
        {"parameter gradients against the f32 copies", cp.g, nv.g, mag->g, nv.ng,
         2.0 * kw * 0x1p-24},
    };
    for (size_t c = 0; c < sizeof checks / sizeof checks[0]; c++) {
        double worst = 0;
        int64_t bad = -1;
        for (int64_t i = 0; i < checks[c].n; i++) {
            double tol = checks[c].rel * checks[c].mag[i] + 1e-30;
            double e = fabs(checks[c].got[i] - checks[c].want[i]);
            if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
        }
        NG_TEST(bad < 0, "%s: %s, element %lld: %.9g against %.9g (%.3g x tolerance)", w2,
                checks[c].part, (long long)bad, bad < 0 ? 0 : checks[c].got[bad],
                bad < 0 ? 0 : checks[c].want[bad], worst);
    }
    ng_layer_run_free(&cp), ng_layer_run_free(&nv);
}

static void one_case(const char *what, int nd, const int64_t *shape, int64_t out, const int64_t *k,
                     const int64_t *s, const int64_t *p, const int64_t *d, int bias) {
    cur_nd = nd, cur_in = shape[1], cur_out = out, cur_k = k, cur_s = s, cur_p = p, cur_d = d;
    cur_bias = bias;
    int ndim = nd + 2;
    ng_layer *probe = make_case(); /* for its geometry */
    ng_conv_geom g = ng_conv_geometry(probe);
    ng_layer_free(probe);
    int64_t osp[3], oshape[5] = {shape[0], out};
    ng_conv_out_spatial(&g, shape + 2, osp, what);
    int64_t P = 1, kp = 1;
    for (int i = 0; i < nd; i++) oshape[2 + i] = osp[i], P *= osp[i], kp *= k[i];
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, ndim, shape, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, ndim, oshape, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_tensor xa = ng_test_abs(&x, "|x|"), dya = ng_test_abs(&dy, "|dy|");
    uint64_t seed = ng_test_seed();

    ng_conv_use_onednn(0);
    ng_layer_run ref = run(make_case, NG_F32, seed, &x, &dy, 0, 1, 1);
    ng_layer_run mag = run(make_case, NG_F64, seed, &xa, &dya, 1, 1, 1);
    ng_conv_use_onednn(1);
    ng_layer_run got = run(make_case, NG_F32, seed, &x, &dy, 0, 1, 1);
    ng_layer_run again = run(make_case, NG_F32, seed, &x, &dy, 0, 1, 1);
    ng_layer_run twice = run(make_case, NG_F32, seed, &x, &dy, 0, 2, 0);

    int64_t kf = shape[1] * kp + 1, kd = out * kp, kw = shape[0] * P;
    close_by(what, "output", ref.y, got.y, mag.y, ref.ny, kf);
    close_by(what, "input gradient", ref.dx, got.dx, mag.dx, ref.nx, kd);
    close_by(what, "parameter gradients", ref.g, got.g, mag.g, ref.ng, kw);
    NG_TEST(!memcmp(got.y, again.y, sizeof(double) * (size_t)got.ny) &&
                !memcmp(got.dx, again.dx, sizeof(double) * (size_t)got.nx) &&
                !memcmp(got.g, again.g, sizeof(double) * (size_t)got.ng),
            "%s: a second oneDNN run is not bit-identical", what);
    /* a + a is exact in f32, so two passes give exactly twice one pass's gradient */
    int64_t off = 0;
    for (int64_t i = 0; i < got.ng; i++) off += twice.g[i] != 2 * got.g[i];
    NG_TEST(!off, "%s: two backward passes (no dx) are not twice one: %lld elements differ", what,
            (long long)off);
    NG_TEST(max_abs(got.dx, got.nx) > 0 && max_abs(got.g, got.ng) > 0, "%s: gradients are all zero",
            what);
    /* f16 and bf16: the forward runs as widen + oneDNN f32 + round (conv.c's half_forward), the
     * reference path as im2col with f32 accumulation; both round the f32 sum to the half type,
     * then add the bias in f32 and round again. The f32 sums differ by 2 k u S at most, and each
     * rounding may fall on either side of a boundary: one half ulp of S (2^-10 S for f16, 2^-7 S
     * for bf16, an upper bound on the value's ulp) each. Backward: oneDNN's f32 sums (conv.c's
     * half_backward) against im2col's; dx is rounded once to the half type there, while im2col
     * rounds each column gradient (one rounding) and each of the prod(kernel) additions into dx:
     * within 2 kd u S + (prod(kernel) + 2) h S. The weight and bias gradients are f32 sums of
     * exact products of half values on both paths (the bias's the same code): 2 kw u S. */
    const ng_dtype halves[2] = {NG_F16, NG_BF16};
    for (int h = 0; h < 2; h++) {
        ng_conv_use_onednn(0);
        ng_layer_run rh = run(make_case, halves[h], seed, &x, &dy, 0, 1, 1);
        ng_conv_use_onednn(1);
        ng_layer_run gh = run(make_case, halves[h], seed, &x, &dy, 0, 1, 1);
        double hu = halves[h] == NG_F16 ? 0x1p-10 : 0x1p-7, worst = 0;
        int64_t bad = -1;
        for (int64_t i = 0; i < rh.ny; i++) {
            double tol = 2.0 * (double)kf * 0x1p-24 * mag.y[i] + 2 * hu * mag.y[i] + 1e-30;
            double e = fabs(gh.y[i] - rh.y[i]);
            if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
        }
        NG_TEST(bad < 0, "%s, %s: output element %lld: im2col %.9g, oneDNN %.9g (%.3g x tolerance)",
                what, ng_dtype_name(halves[h]), (long long)bad, bad < 0 ? 0 : rh.y[bad],
                bad < 0 ? 0 : gh.y[bad], worst);
        bad = -1, worst = 0;
        for (int64_t i = 0; i < rh.nx; i++) {
            double tol = (2.0 * (double)kd * 0x1p-24 + (double)(kp + 2) * hu) * mag.dx[i] + 1e-30;
            double e = fabs(gh.dx[i] - rh.dx[i]);
            if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
        }
        NG_TEST(bad < 0,
                "%s, %s: input gradient element %lld: im2col %.9g, oneDNN %.9g (%.3g x tolerance)",
                what, ng_dtype_name(halves[h]), (long long)bad, bad < 0 ? 0 : rh.dx[bad],
                bad < 0 ? 0 : gh.dx[bad], worst);
        close_by(what, "parameter gradients (half)", rh.g, gh.g, mag.g, rh.ng, kw);
        if (halves[h] == NG_BF16) native_case(what, &rh, &gh, &mag, seed, &x, &dy, kf, kd, kp, kw);
        ng_layer_run_free(&rh), ng_layer_run_free(&gh);
    }
    ng_layer_run_free(&ref), ng_layer_run_free(&mag), ng_layer_run_free(&got),
        ng_layer_run_free(&again), ng_layer_run_free(&twice);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&xa), ng_tensor_free(&dya);
}

static void cases(void) {
    const int64_t one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    one_case("conv2d 3x3 pad 1", 2, (int64_t[]){2, 3, 7, 9}, 5, (int64_t[]){3, 3}, one,
             (int64_t[]){1, 1}, one, 1);
    one_case("conv2d 5x5 stride 2 odd sizes, batch 1", 2, (int64_t[]){1, 3, 13, 11}, 6,
             (int64_t[]){5, 5}, (int64_t[]){2, 2}, (int64_t[]){2, 2}, one, 1);
    one_case("conv2d 3x2 stride 2x1 pad 1x0, floored output", 2, (int64_t[]){3, 4, 10, 7}, 3,
             (int64_t[]){3, 2}, (int64_t[]){2, 1}, (int64_t[]){1, 0}, one, 0);
    one_case("conv2d 3x3 dilation 2x3 pad 2, no bias", 2, (int64_t[]){2, 2, 11, 13}, 4,
             (int64_t[]){3, 3}, (int64_t[]){1, 2}, (int64_t[]){2, 2}, (int64_t[]){2, 3}, 0);
    one_case("conv2d 1x1 (NIN's mlpconv)", 2, (int64_t[]){3, 8, 5, 5}, 7, one, one, zero, one, 1);
    one_case("conv2d 1 input channel (first layer)", 2, (int64_t[]){4, 1, 9, 9}, 6,
             (int64_t[]){5, 5}, one, (int64_t[]){2, 2}, one, 1);
    one_case("conv3d 3x3x3 pad 1", 3, (int64_t[]){2, 1, 7, 6, 5}, 4, (int64_t[]){3, 3, 3}, one, one,
             one, 1);
    one_case("conv3d 3x3x3 pad 1, 3 channels in", 3, (int64_t[]){2, 3, 5, 7, 6}, 8,
             (int64_t[]){3, 3, 3}, one, one, one, 1);
    one_case("conv3d 3x2x2 stride 2x1x2 pad 1x1x0 dilation 2x1x2, batch 1", 3,
             (int64_t[]){1, 3, 9, 5, 11}, 2, (int64_t[]){3, 2, 2}, (int64_t[]){2, 1, 2},
             (int64_t[]){1, 1, 0}, (int64_t[]){2, 1, 2}, 1);
    one_case("conv3d 2x3x1 stride 1x2x1 pad 1x0x2 dilation 2x2x1, no bias", 3,
             (int64_t[]){2, 2, 5, 8, 4}, 3, (int64_t[]){2, 3, 1}, (int64_t[]){1, 2, 1},
             (int64_t[]){1, 0, 2}, (int64_t[]){2, 2, 1}, 0);
}

/* The plan of a oneDNN conv (its scratchpads, the weight-gradient buffer) equals the arenas'
 * measured peaks, forward and backward, with and without an input gradient. */
static void plan_case(void) {
    cur_nd = 3, cur_in = 2, cur_out = 4, cur_bias = 1;
    static const int64_t k3[3] = {3, 3, 3}, one[3] = {1, 1, 1};
    cur_k = k3, cur_s = one, cur_p = one, cur_d = one;
    int64_t in[5] = {2, 2, 9, 8, 7};
    ng_model *m = ng_model_new(make_case());
    ng_arena_plan pl = ng_plan_train_step(m->root, 5, in, NG_F32, NG_F32, NG_CPU, 0);
    ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 8 << 20, 8 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 5, in, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
    ng_fill(&dy, 1);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(pl.acts == m->acts.peak && pl.grads == m->grads.peak,
            "oneDNN conv plan: acts %zu grads %zu planned, %zu %zu measured", pl.acts, pl.grads,
            m->acts.peak, m->grads.peak);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* One layer over more input shapes than its cache keeps: primitives made again after eviction
 * give the same bits as the first time. */
static void cache_case(void) {
    cur_nd = 2, cur_in = 3, cur_out = 5, cur_bias = 1;
    static const int64_t k3[3] = {3, 3, 3}, one[3] = {1, 1, 1};
    cur_k = k3, cur_s = one, cur_p = one, cur_d = one;
    ng_model *m = ng_model_new(make_case());
    ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 8 << 20, 8 << 20);
    NG_TEST(ng_test_same_after_eviction(m, 3, 6, 7),
            "oneDNN conv: outputs after the cache evicted and remade a shape's primitives differ "
            "from the first ones");
    ng_model_free(m);
}

/* oneDNN's rounding of y and dx on the native path, bit for bit: a 1x1 convolution of one
 * channel into one has y = x w and dx = dy w, single products of bf16 values, exact in f32, so
 * the f32-copies path rounds exactly these (ng_cast: nearest, ties to even) and the native path
 * must give the same bits, ties included (a product of two 8-bit significands has up to 16 bits:
 * about one in 256 lands halfway; the test counts them). */
/* The bf16 weight a 1x1, one-channel conv built from seed starts with. */
static double first_weight(uint64_t seed) {
    ng_model *m = ng_model_new(make_case());
    ng_model_build_mixed(m, NG_CPU, NG_BF16, seed, 1 << 20, 1 << 20);
    double *wd = ng_test_to_f64(&m->params[0].param->compute), wv = wd[0];
    free(wd);
    ng_model_free(m);
    return wv;
}

static void rounding_case(void) {
    if (!native_expected()) return;
    static const int64_t one[3] = {1, 1, 1}, zero[3] = {0, 0, 0};
    cur_nd = 2, cur_in = 1, cur_out = 1, cur_bias = 0;
    cur_k = one, cur_s = one, cur_p = zero, cur_d = one;
    int64_t shape[4] = {4, 1, 48, 40};
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, 4, shape, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    /* ties: with the weight's significand Mw (8 bits), a product's significand Mx Mw has 15 or 16
     * bits and is halfway between bf16 values only for a few Mx, if any (for an odd Mw, Mx Mw is
     * 128 mod 256 only for Mx = 128, an exact product). So the case takes a seed whose weight
     * has such Mx and puts them into a third of x and of dy, scaled by 2^-(0..3) */
    uint64_t seed = ng_test_seed();
    double wv = 0, tie[128];
    int nt = 0;
    for (int k = 0; k < 256 && !nt; k++) {
        wv = first_weight(seed + (uint64_t)k);
        for (int mx = 128; mx < 256; mx++) {
            float p = (float)(mx / 256.0 * wv); /* exact */
            uint32_t b;
            memcpy(&b, &p, 4);
            if ((b & 0xffffu) == 0x8000u) tie[nt++] = mx / 256.0;
        }
        if (nt) seed += (uint64_t)k;
    }
    NG_TEST(nt > 0, "rounding case: no weight with halfway products in 256 seeds");
    for (int64_t i = 0; i < x.numel && nt; i += 3) {
        double v = tie[(i / 3) % nt] * ldexp(1, -(int)(i % 4));
        ((double *)x.data)[i] = i % 2 ? v : -v;
        ((double *)dy.data)[i] = i % 2 ? -v : v;
    }
    ng_layer_run cp = run_bf16(make_case, 0, seed, &x, &dy, 1, "rounding case");
    ng_layer_run nv = run_bf16(make_case, 1, seed, &x, &dy, 1, "rounding case");
    NG_TEST(!memcmp(cp.y, nv.y, sizeof(double) * (size_t)cp.ny),
            "bf16 native conv: y is not the nearest-even rounding of its exact f32 sum");
    NG_TEST(!memcmp(cp.dx, nv.dx, sizeof(double) * (size_t)cp.nx),
            "bf16 native conv: dx is not the nearest-even rounding of its exact f32 sum");
    /* ties among the products: x rounded to bf16 times the bf16 weight */
    ng_tensor xb = ng_tensor_new(NG_BF16, NG_CPU, 4, shape, "xb");
    ng_cast(&xb, &x);
    double *xr = ng_test_to_f64(&xb);
    int64_t ties = 0;
    for (int64_t i = 0; i < x.numel; i++) {
        float p = (float)(xr[i] * wv); /* exact */
        uint32_t b;
        memcpy(&b, &p, 4);
        ties += (b & 0xffffu) == 0x8000u;
    }
    NG_TEST(ties > 0, "rounding case: no product lies halfway between bf16 values (weight %g)", wv);
    if (getenv("NG_TEST_VERBOSE"))
        printf("rounding case: weight %g, %lld of %lld products were ties\n", wv, (long long)ties,
               (long long)x.numel);
    free(xr);
    ng_layer_run_free(&cp), ng_layer_run_free(&nv);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&xb);
}

int main(void) {
    cases();
    rounding_case();
    plan_case();
    cache_case();
    return ng_test_finish("test_conv_onednn");
}
