/* f32 max and average pooling on oneDNN against natgrad's loops (ng_pool_use_onednn(0)): 2-D and
 * 3-D, odd sizes, stride != kernel (overlapping and gapped windows), padding, batch 1, shapes
 * small enough for oneDNN's simple kernels and wide enough for its jit ones; NaN, -inf and
 * -FLT_MAX in windows (natgrad's rule: a NaN is its window's maximum); bit-identical reruns; the
 * plan of the workspace and scratch equal to the arenas' peaks; primitives remade after eviction.
 *
 * Max pooling selects, so its output must be the reference's bits. Its gradient goes to the same
 * element (the first maximum in window order, oneDNN's rule too: it replaces only on a larger
 * value), so where windows do not overlap (stride >= kernel: LeNet's, VGG's, the 3D-CNN's pools)
 * it is the same bits. Where they overlap (NIN's 3x3 stride 2), an input that is the maximum of
 * t > 2 windows gets their t terms added in oneDNN's order, not the loops' increasing output
 * order: two f32 sums of the same t <= w terms (w below) differ by at most 2 (t - 1) u D, D the
 * sum of their magnitudes (the f64 loops on x and |dy|).
 *
 * Average tolerance. The loops sum a window's k = prod(kernel) terms in double and round once:
 * within u |y| (u = 2^-24) of the exact mean m. oneDNN sums in f32 in its own order and divides:
 * within (k - 1) u S / k + u |m| + u S / k (the sum, the division, a reciprocal's rounding), S the
 * sum of the terms' magnitudes (the f64 loops on |x| give S / k). As |m| <= S / k, the two differ
 * by at most 2 (k + 2) u S / k. The gradient of input i adds one rounded dy / k per window that
 * holds it, at most w = prod(ceil(kernel / stride)) of them, in f32 by both: by the same argument
 * within 2 (w + 2) u T, T the sum of |dy| / k over those windows (the f64 loops on |dy|). A missed
 * or doubled term is the size of a term, far above either.
 *
 * f16/bf16 run on oneDNN through f32 copies (pool.c's half_forward), the loops on widened planes;
 * both round each output once to the half type, so beyond the f32 bounds above each side may round
 * across a half boundary: one ulp of the value (h = 2^-10 for f16, 2^-7 for bf16, relative to the
 * magnitude). Max pooling's output is a selection: the same bits. Its gradient where windows do
 * not overlap is one term: the same bits. Elsewhere the loops round after each of up to w terms
 * (f16/bf16 adds) where oneDNN rounds once: within (w + 1) h T of each other, T as above; the
 * average's gradient likewise, its terms rounded dy / k.
 *
 * bf16 also runs on oneDNN's native bf16 kernels (the default where the CPU has AVX512_BF16; else
 * skipped with a message), held to the loops by the bounds above and to the f32 copies
 * (ng_pool_use_native_bf16(0)): max outputs the same bits, gradients where windows do not overlap
 * the same bits; averages are f32 sums rounded once on both (2 (k + 2) u S + 2 h S), overlapping
 * gradients within the bound above. The pass counter shows which path ran. Evaluation forwards
 * (max pooling without the workspace) give the training forward's bits and a backward after one
 * the same gradient; plans of both equal the measured peaks, f32 and bf16. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/containers.h"
#include "nn/model.h"
#include "nn/plan.h"
#include "nn/pool.h"
#include "nn/pool_onednn.h"
#include "testing.h"

typedef struct {
    double *y, *dx;
    float *yf, *dxf; /* the f32 bits (NaN payloads included) */
    int64_t ny, nx;
} pass;

static int cur_max, cur_nd;
static const int64_t *cur_k, *cur_s, *cur_p;

static ng_layer *make_case(void) {
    return cur_max ? ng_maxpool("pool", cur_nd, cur_k, cur_s, cur_p)
                   : ng_avgpool("pool", cur_nd, cur_k, cur_s, cur_p);
}

static float *bits_of(const ng_tensor *t) {
    float *b = malloc(ng_tensor_bytes(t) + 1);
    memcpy(b, t->data, ng_tensor_bytes(t));
    return b;
}

/* Forward of xh and a backward from dyh (f64 host tensors) in dt. */
static pass run(ng_dtype dt, const ng_tensor *xh, const ng_tensor *dyh) {
    ng_model *m = ng_model_new(make_case());
    if (dt == NG_F16 || dt == NG_BF16) /* no parameters: only the activations' dtype */
        ng_model_build_mixed(m, NG_CPU, dt, 1, 8 << 20, 8 << 20);
    else
        ng_model_build(m, NG_CPU, dt, 1, 8 << 20, 8 << 20);
    ng_tensor x = ng_tensor_new(dt, NG_CPU, xh->ndim, xh->shape, "x");
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, dyh->ndim, dyh->shape, "dy");
    ng_cast(&x, xh), ng_cast(&dy, dyh);
    ng_tensor dx = ng_tensor_new(dt, NG_CPU, x.ndim, x.shape, "dx");
    ng_test_poison(&dx);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    NG_TEST(ng_tensor_same_shape(&y, &dy), "pool case: output shape differs from dy's");
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    pass r = {ng_test_to_f64(&y), ng_test_to_f64(&dx), NULL, NULL, y.numel, dx.numel};
    if (dt == NG_F32) r.yf = bits_of(&y), r.dxf = bits_of(&dx);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dx);
    ng_model_free(m);
    return r;
}

static void pass_free(pass *p) {
    free(p->y), free(p->dx), free(p->yf), free(p->dxf);
}

static void same_bits(const char *what, const char *part, const float *want, const float *got,
                      int64_t n) {
    int64_t bad = -1, count = 0;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&want[i], &got[i], 4)) count++, bad = bad < 0 ? i : bad;
    NG_TEST(bad < 0, "%s: %s: %lld of %lld elements differ, first %lld: loops %.9g, oneDNN %.9g",
            what, part, (long long)count, (long long)n, (long long)bad, bad < 0 ? 0 : want[bad],
            bad < 0 ? 0 : got[bad]);
}

/* |got - want| <= 2 (k + 2) u mag, element by element. */
static void close_by(const char *what, const char *part, const double *want, const double *got,
                     const double *mag, int64_t n, int64_t k) {
    double worst = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double tol = 2.0 * (double)(k + 2) * 0x1p-24 * mag[i] + 1e-30;
        double e = fabs(got[i] - want[i]);
        if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
    }
    NG_TEST(bad < 0, "%s: %s element %lld: loops %.9g, oneDNN %.9g, error %.3g x tolerance", what,
            part, (long long)bad, bad < 0 ? 0 : want[bad], bad < 0 ? 0 : got[bad], worst);
}

static ng_tensor absolute(const ng_tensor *t) {
    ng_tensor a = ng_tensor_new(NG_F64, NG_CPU, t->ndim, t->shape, "|t|");
    for (int64_t i = 0; i < t->numel; i++) ((double *)a.data)[i] = fabs(((double *)t->data)[i]);
    return a;
}

/* |got - want| <= (f32 bound) + (w + 1) h mag (see the top), element by element. */
static void half_close(const char *what, const char *part, const double *want, const double *got,
                       const double *mag, int64_t n, int64_t k, int64_t w, double h) {
    double worst = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double tol = (2.0 * (double)(k + 2) * 0x1p-24 + (double)(w + 1) * h) * mag[i] + 1e-30;
        double e = fabs(got[i] - want[i]);
        if (!(e <= tol) && (bad < 0 || e / tol > worst)) bad = i, worst = e / tol;
    }
    NG_TEST(bad < 0, "%s: %s element %lld: loops %.9g, oneDNN %.9g, error %.3g x tolerance", what,
            part, (long long)bad, bad < 0 ? 0 : want[bad], bad < 0 ? 0 : got[bad], worst);
}

/* Whether bf16 runs must take the native path: 1 where the CPU has AVX512_BF16. */
static int native_expected(void) {
    static int said;
    int on = ng_pool_bf16_native();
    if (!on && !said++)
        printf("test_pool_onednn: skipped the native bf16 checks: oneDNN's effective ISA has no "
               "AVX512_BF16 here (the f32-copies path ran for bf16 instead)\n");
    return on;
}

/* run() in bf16 on the native path (native 1) or the f32 copies, counting native passes. */
static pass run_bf16(int native, const ng_tensor *xh, const ng_tensor *dyh, long *passes) {
    ng_pool_use_native_bf16(native);
    long before = ng_pool_native_passes();
    pass r = run(NG_BF16, xh, dyh);
    *passes = ng_pool_native_passes() - before;
    ng_pool_use_native_bf16(1);
    return r;
}

/* bf16 native against the f32 copies (see the top); got is the default path's pass. */
static void native_case(const char *what, const ng_tensor *xr, const ng_tensor *dy, const pass *got,
                        const pass *mag, int64_t kk, int64_t wins, int overlap) {
    int native = native_expected(), special = 0;
    for (int64_t i = 0; i < xr->numel; i++) {
        double v = ((const double *)xr->data)[i];
        special |= isnan(v) || v <= -0x1.fep127; /* the calls that run on the loops */
    }
    char w2[260];
    snprintf(w2, sizeof w2, "%s native", what);
    long nc, nn;
    pass cp = run_bf16(0, xr, dy, &nc);
    pass nv = run_bf16(native, xr, dy, &nn);
    long want = native && !(cur_max && special) ? 2 : 0;
    NG_TEST(nc == 0 && nn == want,
            "%s: native passes %ld with the copies forced, %ld on the native path; expected 0, %ld",
            w2, nc, nn, want);
    NG_TEST(!memcmp(nv.y, got->y, sizeof(double) * (size_t)nv.ny) &&
                !memcmp(nv.dx, got->dx, sizeof(double) * (size_t)nv.nx),
            "%s: the default bf16 path is not the native one", w2);
    const double h = 0x1p-7;
    if (cur_max) {
        NG_TEST(!memcmp(cp.y, nv.y, sizeof(double) * (size_t)cp.ny),
                "%s: max pooling's output differs from the f32 copies'", w2);
        if (!overlap)
            NG_TEST(!memcmp(cp.dx, nv.dx, sizeof(double) * (size_t)cp.nx),
                    "%s: max pooling's gradient (windows apart) differs from the copies'", w2);
        else
            half_close(w2, "input gradient against the copies", cp.dx, nv.dx, mag->dx, cp.nx, wins,
                       wins, h);
    } else {
        half_close(w2, "output against the copies", cp.y, nv.y, mag->y, cp.ny, kk, 1, h);
        half_close(w2, "input gradient against the copies", cp.dx, nv.dx, mag->dx, cp.nx, wins,
                   wins, h);
    }
    pass_free(&cp), pass_free(&nv);
}

/* The case in f16 and bf16: oneDNN through f32 copies against the loops' half path. x is rounded
 * to the half type first, so the f64 magnitudes select the maxima the half runs select. */
static void half_case(const char *name, const ng_tensor *x, const ng_tensor *dy,
                      const ng_tensor *dya, int64_t kk, int64_t wins, int overlap) {
    const ng_dtype dts[2] = {NG_F16, NG_BF16};
    for (int t = 0; t < 2; t++) {
        char what[240];
        snprintf(what, sizeof what, "%s, %s", name, ng_dtype_name(dts[t]));
        double h = dts[t] == NG_F16 ? 0x1p-10 : 0x1p-7;
        ng_tensor xt = ng_tensor_new(dts[t], NG_CPU, x->ndim, x->shape, "x half");
        ng_tensor xr = ng_tensor_new(NG_F64, NG_CPU, x->ndim, x->shape, "x rounded");
        ng_cast(&xt, x), ng_cast(&xr, &xt);
        ng_tensor xa = absolute(&xr);
        ng_pool_use_onednn(0);
        pass ref = run(dts[t], &xr, dy);
        pass mag = run(NG_F64, cur_max ? &xr : &xa, dya);
        ng_pool_use_onednn(1);
        pass got = run(dts[t], &xr, dy);
        if (cur_max) {
            NG_TEST(!memcmp(ref.y, got.y, sizeof(double) * (size_t)ref.ny),
                    "%s: max pooling's output differs from the loops'", what);
            if (!overlap)
                NG_TEST(!memcmp(ref.dx, got.dx, sizeof(double) * (size_t)ref.nx),
                        "%s: max pooling's gradient (windows apart) differs from the loops'", what);
            else
                half_close(what, "input gradient", ref.dx, got.dx, mag.dx, ref.nx, wins, wins, h);
        } else {
            half_close(what, "output", ref.y, got.y, mag.y, ref.ny, kk, 0, h);
            half_close(what, "input gradient", ref.dx, got.dx, mag.dx, ref.nx, wins, wins, h);
        }
        if (dts[t] == NG_BF16) native_case(what, &xr, dy, &got, &mag, kk, wins, overlap);
        pass_free(&ref), pass_free(&mag), pass_free(&got);
        ng_tensor_free(&xt), ng_tensor_free(&xr), ng_tensor_free(&xa);
    }
}

/* One geometry, max and average, on fresh uniform inputs; x_fill (may be NULL) then puts special
 * values into x. */
static void one_case(const char *what, int nd, const int64_t *shape, const int64_t *k,
                     const int64_t *s, const int64_t *p, void (*x_fill)(ng_tensor *)) {
    cur_nd = nd, cur_k = k, cur_s = s, cur_p = p;
    int ndim = nd + 2;
    int64_t oshape[5] = {shape[0], shape[1]}, kk = 1, wins = 1;
    for (int i = 0; i < nd; i++) {
        oshape[2 + i] = (shape[2 + i] + 2 * p[i] - k[i]) / s[i] + 1;
        kk *= k[i], wins *= (k[i] + s[i] - 1) / s[i];
    }
    int overlap = wins > 1;
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, ndim, shape, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, ndim, oshape, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    /* f32 values, so the f64 magnitude runs pick the maxima the f32 runs pick */
    for (int64_t i = 0; i < x.numel; i++) ((double *)x.data)[i] = (float)((double *)x.data)[i];
    /* ties: a quarter of the inputs on a coarse grid, so windows hold equal maxima */
    for (int64_t i = 0; i < x.numel; i += 4)
        ((double *)x.data)[i] = floor(((double *)x.data)[i] * 4) / 4;
    if (x_fill) x_fill(&x);
    ng_tensor xa = absolute(&x), dya = absolute(&dy);
    for (cur_max = 1; cur_max >= 0; cur_max--) {
        if (!cur_max && x_fill) break; /* the special values are max pooling's concern */
        char name[200];
        snprintf(name, sizeof name, "%s %s", cur_max ? "maxpool" : "avgpool", what);
        ng_pool_use_onednn(0);
        pass ref = run(NG_F32, &x, &dy);
        pass mag = run(NG_F64, cur_max ? &x : &xa, &dya);
        ng_pool_use_onednn(1);
        pass got = run(NG_F32, &x, &dy);
        pass again = run(NG_F32, &x, &dy);
        if (cur_max) {
            same_bits(name, "output", ref.yf, got.yf, ref.ny);
            if (!overlap || x_fill) /* specials: the loops ran; ties: windows apart */
                same_bits(name, "input gradient", ref.dxf, got.dxf, ref.nx);
            else /* 2 (w - 1) u D <= 2 (w + 2) u D */
                close_by(name, "input gradient", ref.dx, got.dx, mag.dx, ref.nx, wins);
        } else {
            close_by(name, "output", ref.y, got.y, mag.y, ref.ny, kk);
            close_by(name, "input gradient", ref.dx, got.dx, mag.dx, ref.nx, wins);
        }
        NG_TEST(!memcmp(got.yf, again.yf, 4 * (size_t)got.ny) &&
                    !memcmp(got.dxf, again.dxf, 4 * (size_t)got.nx),
                "%s: a second oneDNN run is not bit-identical", name);
        double gmax = 0;
        for (int64_t i = 0; i < got.nx; i++) gmax = fmax(gmax, fabs(got.dx[i]));
        NG_TEST(gmax > 0, "%s: the input gradient is all zero", name);
        pass_free(&ref), pass_free(&mag), pass_free(&got), pass_free(&again);
        half_case(name, &x, &dy, &dya, kk, wins, overlap);
    }
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&xa), ng_tensor_free(&dya);
}

/* Special values: NaNs (one, two in a window), a window of -inf, a -FLT_MAX beside -inf. */
static void fill_specials(ng_tensor *x) {
    double *v = x->data;
    int64_t n = x->numel, W = x->shape[x->ndim - 1];
    v[n / 3] = NAN;
    v[n / 2] = NAN, v[n / 2 + 1] = NAN;
    v[0] = v[1] = v[W] = v[W + 1] = -INFINITY; /* the first window (with padding around it) */
    v[n - 1] = -FLT_MAX, v[n - 2] = -INFINITY;
}

/* Every value on four levels, so most windows hold their maximum more than once: which of the tied
 * elements takes the gradient is then visible in dx. No special values: oneDNN runs. */
static void fill_ties(ng_tensor *x) {
    double *v = x->data;
    for (int64_t i = 0; i < x->numel; i++) v[i] = floor(v[i] * 2) / 2;
}

static void fill_neg_huge(ng_tensor *x) { /* no NaN: -inf and -FLT_MAX alone */
    double *v = x->data;
    int64_t W = x->shape[x->ndim - 1];
    v[0] = v[1] = v[W] = v[W + 1] = -FLT_MAX;
    v[x->numel - 1] = -INFINITY;
}

static void cases(void) {
    const int64_t one[3] = {1, 1, 1}, zero[3] = {0, 0, 0}, two[3] = {2, 2, 2};
    one_case("2-D 2x2 stride 2 (LeNet's), odd size", 2, (int64_t[]){3, 6, 11, 13}, two, two, zero,
             NULL);
    one_case("2-D 3x3 stride 2 pad 1, batch 1", 2, (int64_t[]){1, 5, 9, 8}, (int64_t[]){3, 3}, two,
             one, NULL);
    one_case("2-D 3x3 stride 1 pad 1 (overlapping)", 2, (int64_t[]){2, 3, 7, 9}, (int64_t[]){3, 3},
             one, one, NULL);
    one_case("2-D 2x3 stride 1x2 pad 1x0", 2, (int64_t[]){2, 4, 6, 11}, (int64_t[]){2, 3},
             (int64_t[]){1, 2}, (int64_t[]){1, 0}, NULL);
    one_case("2-D 2x2 stride 3 (gaps)", 2, (int64_t[]){2, 3, 10, 8}, two, (int64_t[]){3, 3}, zero,
             NULL);
    one_case("2-D 2x2 stride 2, 32 channels (jit kernels)", 2, (int64_t[]){4, 32, 14, 14}, two, two,
             zero, NULL);
    one_case("2-D 3x3 stride 2 pad 1, 16 channels", 2, (int64_t[]){3, 16, 15, 15},
             (int64_t[]){3, 3}, two, one, NULL);
    one_case("3-D 2x2x2 stride 2 (the 3D-CNN's)", 3, (int64_t[]){2, 4, 8, 7, 9}, two, two, zero,
             NULL);
    one_case("3-D 2x2x3 stride 2x1x2 pad 1x0x1", 3, (int64_t[]){2, 3, 5, 6, 7},
             (int64_t[]){2, 2, 3}, (int64_t[]){2, 1, 2}, (int64_t[]){1, 0, 1}, NULL);
    one_case("3-D 3x3x3 stride 1 pad 1, batch 1", 3, (int64_t[]){1, 16, 5, 4, 6},
             (int64_t[]){3, 3, 3}, one, one, NULL);
    one_case("3-D 7x7x7 stride 1 (343 positions: a workspace wider than u8)", 3,
             (int64_t[]){1, 4, 7, 9, 8}, (int64_t[]){7, 7, 7}, one, zero, NULL);
    one_case("2-D 2x2 stride 2, ties, 32 channels", 2, (int64_t[]){2, 32, 12, 10}, two, two, zero,
             fill_ties);
    one_case("2-D 3x2 stride 3x2 pad 1x0, ties, batch 1", 2, (int64_t[]){1, 3, 7, 9},
             (int64_t[]){3, 2}, (int64_t[]){3, 2}, (int64_t[]){1, 0}, fill_ties);
    one_case("3-D 2x2x2 stride 2, ties, 16 channels", 3, (int64_t[]){2, 16, 6, 5, 8}, two, two,
             zero, fill_ties);
    one_case("2-D 3x3 stride 2 pad 1, NaN and -inf", 2, (int64_t[]){2, 3, 9, 8}, (int64_t[]){3, 3},
             two, one, fill_specials);
    one_case("3-D 2x2x2 stride 1 pad 1, NaN and -inf, 16 channels", 3, (int64_t[]){2, 16, 4, 5, 6},
             two, one, one, fill_specials);
    one_case("2-D 3x3 stride 1 pad 1, -FLT_MAX and -inf", 2, (int64_t[]){1, 16, 7, 7},
             (int64_t[]){3, 3}, one, one, fill_neg_huge);
}

/* natgrad's rules where oneDNN's differ, on values: a NaN is its window's maximum and takes the
 * gradient; a window of -inf (with padding around it) gives -inf. */
static void rules(void) {
    cur_max = 1, cur_nd = 2;
    static const int64_t k[2] = {2, 2}, p[2] = {1, 1};
    cur_k = k, cur_s = k, cur_p = p;
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, 4, (int64_t[]){1, 1, 4, 4}, "x");
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, 4, (int64_t[]){1, 1, 3, 3}, "dy");
    double *v = x.data;
    for (int i = 0; i < 16; i++) v[i] = 0.25 * i;
    v[0] = -INFINITY; /* window (0,0) holds only x[0] and padding */
    v[5] = NAN;       /* window (1,1): x[5], x[6], x[9], x[10] */
    for (int i = 0; i < 9; i++) ((double *)dy.data)[i] = 1 + i;
    pass r = run(NG_F32, &x, &dy);
    NG_TEST(r.y[0] == -INFINITY && isnan(r.y[4]) && r.y[8] == 3.75,
            "maxpool rules on oneDNN's path: y[0] %g (want -inf), y[4] %g (NaN), y[8] %g (3.75)",
            r.y[0], r.y[4], r.y[8]);
    NG_TEST(r.dx[0] == 1 && r.dx[5] == 5 && r.dx[6] == 0 && r.dx[15] == 9,
            "maxpool rules: the gradient goes to the -inf, the NaN and the maxima: %g %g %g %g",
            r.dx[0], r.dx[5], r.dx[6], r.dx[15]);
    pass_free(&r);
    ng_tensor_free(&x), ng_tensor_free(&dy);
}

/* The plan of oneDNN pooling (max's workspace in the activation arena, scratchpads in the
 * gradient arena) equals the arenas' measured peaks, with the input gradient wanted (the second
 * layer) and not (the first), in 2-D and 3-D. */
static void plan_case(int nd, const int64_t *in, ng_dtype dt, int native) {
    static const int64_t k[3] = {3, 3, 3}, s[3] = {2, 2, 2}, p[3] = {1, 1, 1};
    ng_pool_use_native_bf16(native);
    ng_layer *seq = ng_sequence("net");
    ng_layer_add_child(seq, ng_maxpool("net.0", nd, k, s, p));
    ng_layer_add_child(seq, ng_avgpool("net.1", nd, k, s, p));
    ng_layer_add_child(seq, ng_maxpool("net.2", nd, k, k, NULL));
    ng_model *m = ng_model_new(seq);
    int ndim = nd + 2;
    ng_arena_plan pl = ng_plan_train_step(m->root, ndim, in, NG_F32, dt, NG_CPU, 0);
    ng_arena_plan pe = ng_plan_eval(m->root, ndim, in, NG_F32, dt, NG_CPU);
    ng_model_build_mixed(m, NG_CPU, dt, ng_test_seed(), 8 << 20, 8 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, ndim, in, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
    ng_fill(&dy, 1);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(pl.acts == m->acts.peak && pl.grads == m->grads.peak && pl.joint == m->arena_peak,
            "oneDNN pool plan (%d-D, %s%s): acts %zu grads %zu joint %zu planned, %zu %zu %zu "
            "measured",
            nd, ng_dtype_name(dt), native ? "" : ", copies", pl.acts, pl.grads, pl.joint,
            m->acts.peak, m->grads.peak, m->arena_peak);
    size_t train_acts = m->acts.peak;
    ng_model_reset_arenas(m);
    m->acts.peak = m->grads.peak = m->arena_peak = 0;
    ng_ctx ev = ng_model_ctx(m, 0, 1, 0);
    ng_model_forward(m, &ev, &x);
    NG_TEST(pe.acts == m->acts.peak && pe.grads == m->grads.peak && pe.joint == m->arena_peak,
            "oneDNN pool evaluation plan (%d-D, %s%s): acts %zu grads %zu planned, %zu %zu "
            "measured",
            nd, ng_dtype_name(dt), native ? "" : ", copies", pe.acts, pe.grads, m->acts.peak,
            m->grads.peak);
    /* no workspaces: less than the training forward, which also kept them */
    NG_TEST(m->acts.peak < train_acts,
            "%d-D %s: an evaluation forward holds %zu bytes, training %zu", nd, ng_dtype_name(dt),
            m->acts.peak, train_acts);
    ng_pool_use_native_bf16(1);
    ng_tensor_free(&x);
    ng_model_free(m);
}

/* Max pooling in evaluation mode (ng_model_ctx training 0: oneDNN's inference forward, no
 * workspace) gives the training forward's bits, and a backward after it (gradient checks do
 * that) the same gradient, found again from x. Windows apart (2x2 stride 2), so the gradient's
 * bits are defined; f32, and bf16 on both paths. */
static void eval_case(void) {
    static const int64_t k[3] = {2, 2, 2};
    cur_max = 1, cur_nd = 3, cur_k = k, cur_s = k, cur_p = (const int64_t[]){0, 0, 0};
    int64_t in[5] = {2, 16, 6, 8, 10}, out[5] = {2, 16, 3, 4, 5};
    const struct {
        ng_dtype dt;
        int native;
    } runs[] = {{NG_F32, 1}, {NG_BF16, 1}, {NG_BF16, 0}};
    for (int r = 0; r < 3; r++) {
        ng_pool_use_native_bf16(runs[r].native);
        double *y[2], *dx[2];
        ng_tensor x = ng_tensor_new(runs[r].dt, NG_CPU, 5, in, "x");
        ng_tensor dy = ng_tensor_new(runs[r].dt, NG_CPU, 5, out, "dy");
        ng_test_fill_uniform(&x, -1, 1);
        ng_test_fill_uniform(&dy, -1, 1);
        for (int training = 0; training < 2; training++) {
            ng_model *m = ng_model_new(make_case());
            ng_model_build_mixed(m, NG_CPU, runs[r].dt, 1, 8 << 20, 8 << 20);
            ng_tensor dxt = ng_tensor_new(runs[r].dt, NG_CPU, 5, in, "dx");
            ng_test_poison(&dxt);
            ng_ctx ctx = ng_model_ctx(m, training, 1, 0);
            ng_tensor yt = ng_model_forward(m, &ctx, &x);
            m->root->ops->backward(m->root, &ctx, &dy, &dxt);
            y[training] = ng_test_to_f64(&yt), dx[training] = ng_test_to_f64(&dxt);
            ng_tensor_free(&dxt);
            ng_model_free(m);
        }
        ng_tensor_free(&x), ng_tensor_free(&dy);
        int64_t ny = 2 * 16 * 3 * 4 * 5, nx = 2 * 16 * 6 * 8 * 10;
        NG_TEST(!memcmp(y[0], y[1], sizeof(double) * (size_t)ny) &&
                    !memcmp(dx[0], dx[1], sizeof(double) * (size_t)nx),
                "maxpool %s%s: evaluation and training forwards (or their gradients) differ",
                ng_dtype_name(runs[r].dt), runs[r].native ? "" : " (copies)");
        for (int i = 0; i < 2; i++) free(y[i]), free(dx[i]);
    }
    ng_pool_use_native_bf16(1);
}

/* One layer over more input shapes than its cache keeps: primitives made again after eviction
 * give the same bits as the first time. */
static void cache_case(void) {
    static const int64_t k[2] = {3, 3}, s[2] = {2, 2}, p[2] = {1, 1};
    cur_max = 1, cur_nd = 2, cur_k = k, cur_s = s, cur_p = p;
    ng_model *m = ng_model_new(make_case());
    ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 8 << 20, 8 << 20);
    NG_TEST(ng_test_same_after_eviction(m, 8, 9, 7),
            "oneDNN pool: outputs after the cache evicted and remade a shape's primitives differ "
            "from the first ones");
    ng_model_free(m);
}

int main(void) {
    cases();
    rules();
    for (int native = 1; native >= 0; native--) {
        plan_case(2, (int64_t[]){3, 5, 17, 15}, native ? NG_F32 : NG_BF16, native);
        plan_case(3, (int64_t[]){2, 16, 13, 9, 11}, native ? NG_F32 : NG_BF16, native);
    }
    plan_case(2, (int64_t[]){3, 5, 17, 15}, NG_BF16, 1);
    plan_case(3, (int64_t[]){2, 16, 13, 9, 11}, NG_BF16, 1);
    eval_case();
    cache_case();
    return ng_test_finish("test_pool_onednn");
}
