/* The CPU twins of the dense ops against plain float64 loops, with tolerances derived from the
 * roundings each op performs; casts against an independent round-to-nearest-even in double;
 * usage errors name the offending tensor. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/half.h"
#include "core/ops.h"
#include "ops_ref.h"
#include "testing.h"

/* |got - ref| <= tol[i] for every i (NaN and Inf must match exactly); prints the first misses. */
static int check_within(const char *what, const double *ref, const double *got, const double *tol,
                        int64_t n) {
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        int ok = isnan(ref[i])   ? isnan(got[i])
                 : isinf(ref[i]) ? got[i] == ref[i]
                                 : fabs(got[i] - ref[i]) <= tol[i];
        if (!ok && bad++ < 8)
            fprintf(stderr, "  %s: [%lld] expected %.10g got %.10g (tol %.3g)\n", what,
                    (long long)i, ref[i], got[i], tol[i]);
    }
    if (bad) {
        ng_test_fail("%s: %lld of %lld elements out of tolerance", what, (long long)bad,
                     (long long)n);
        return 0;
    }
    ng_test_pass();
    return 1;
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

static void gemm_case_run(const gemm_case *c) {
    ng_tensor A, B, C;
    gemm_dims d = gemm_case_inputs(c, &A, &B, &C);
    /* The reference reads the inputs as stored, so rounded halves cost nothing here. */
    double *a = ng_test_to_f64(&A), *b = ng_test_to_f64(&B), *c0 = ng_test_to_f64(&C);
    ng_gemm(c->ta, c->tb, c->alpha, &A, &B, c->beta, &C);
    double *got = ng_test_to_f64(&C);

    int64_t mn = c->m * c->n, total = d.bt * mn;
    double *ref = malloc(sizeof(double) * (size_t)total),
           *tol = malloc(sizeof(double) * (size_t)total);
    /* f32 accumulation over k terms plus alpha and beta: gamma_{k+2} of |alpha||A||B| + |beta||C|;
     * then one rounding into C's type. */
    double ua = c->in == NG_F64 ? U64 : U32, uo = unit(c->out), g = gamma_n((double)c->k + 2, ua);
    for (int64_t p = 0; p < d.bt; p++)
        for (int64_t i = 0; i < c->m; i++)
            for (int64_t j = 0; j < c->n; j++) {
                double mag, s = gemm_ref_entry(c, &d, a, b, p, i, j, &mag);
                int64_t o = p * mn + i * c->n + j;
                double cin = c->beta != 0 ? c0[o] : 0.0;
                ref[o] = c->alpha * s + c->beta * cin;
                double err = g * (fabs(c->alpha) * mag + fabs(c->beta * cin));
                tol[o] = err + uo * (fabs(ref[o]) + err) + tiny(c->out);
            }
    char what[160];
    snprintf(
        what, sizeof what,
        "gemm %s->%s ta=%d tb=%d [%lld,%lld,%lld] batch %lld (A %lld, B %lld) alpha %g beta %g",
        ng_dtype_name(c->in), ng_dtype_name(c->out), c->ta, c->tb, (long long)c->m, (long long)c->n,
        (long long)c->k, (long long)c->batch, (long long)d.ba, (long long)d.bb, c->alpha, c->beta);
    check_within(what, ref, got, tol, total);
    free(a), free(b), free(c0), free(got), free(ref), free(tol);
    ng_tensor_free(&A);
    ng_tensor_free(&B);
    ng_tensor_free(&C);
}

static void test_gemm(void) {
    const int64_t(*sizes)[3] = gemm_sizes;
    const int64_t(*bab)[2] = gemm_batches;
    gemm_f32_cases(gemm_case_run);
    /* Halves in, f32 out and half out; the big size once per type and transpose pair. */
    const ng_dtype halves[2] = {NG_F16, NG_BF16};
    for (int h = 0; h < 2; h++)
        for (int o = 0; o < 2; o++) {
            ng_dtype out = o ? halves[h] : NG_F32;
            for (int s = 0; s < 3; s++) {
                gemm_case c = {0, 1, sizes[s][0], sizes[s][1], sizes[s][2], 0,
                               0, 0, halves[h],   out,         0.75,        0.0};
                gemm_case_run(&c);
                c.ta = 1, c.tb = 0, c.beta = -0.5;
                gemm_case_run(&c);
            }
            gemm_case c = {1, 1, 9, 6, 40, 3, 1, 3, halves[h], out, -1.25, 0.5};
            gemm_case_run(&c);
            c.ba = 3, c.bb = 1, c.ta = 0, c.tb = 0, c.beta = 0;
            gemm_case_run(&c);
        }
    /* f64. */
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 4; t += 3) {
            gemm_case c = {t & 1, t >> 1, sizes[s][0], sizes[s][1], sizes[s][2], 0,
                           0,     0,      NG_F64,      NG_F64,      0.75,        t ? -0.5 : 0.0};
            gemm_case_run(&c);
        }
    for (int v = 0; v < 3; v++) {
        gemm_case c = {v & 1,     1,         11,     7,      13,    3,
                       bab[v][0], bab[v][1], NG_F64, NG_F64, -1.25, v ? 0.5 : 0.0};
        gemm_case_run(&c);
    }
    /* k = 0: the product is empty, so C = beta C (and zeros for beta 0, NaN not read). */
    gemm_case k0 = {0, 0, 4, 6, 0, 0, 0, 0, NG_F32, NG_F32, 0.75, -0.5};
    gemm_case_run(&k0);
    k0.beta = 0;
    gemm_case_run(&k0);
    k0.in = k0.out = NG_F16, k0.beta = 2.0, k0.batch = 2, k0.ba = 1, k0.bb = 2;
    gemm_case_run(&k0);
}

/* ---- Element-wise -------------------------------------------------------------------------- */

/* Element-wise results: f32 and f64 round once per operation; halves compute in f32 (rounding
 * per operation at u32) and round once more into the half. `ops` roundings in the compute type,
 * each bounded by u times the magnitude `mag`. */
static void elementwise_tol(ng_dtype t, const double *ref, const double *mag, double *tol,
                            int64_t n, int ops) {
    double uc = t == NG_F64 ? U64 : U32, ut = t == NG_F64 || t == NG_F32 ? 0 : unit(t);
    for (int64_t i = 0; i < n; i++) {
        double err = ops * uc * mag[i];
        tol[i] = err + ut * (fabs(ref[i]) + err) + tiny(t);
    }
}

static void test_axpy_scale_binary(void) {
    const int64_t n = 3001; /* not a multiple of any chunk or vector width */
    for (int d = 0; d < 4; d++) {
        ng_dtype t = float_types[d];
        const char *tn = ng_dtype_name(t);
        char what[64];
        ng_tensor x = ng_tensor_1d(t, NG_CPU, n, "x"), y = ng_tensor_1d(t, NG_CPU, n, "y");
        ng_tensor z = ng_tensor_1d(t, NG_CPU, n, "z");
        ng_test_fill_uniform(&x, -2, 2);
        ng_test_fill_uniform(&y, -2, 2);
        double *xv = ng_test_to_f64(&x), *yv = ng_test_to_f64(&y);
        double *ref = malloc(sizeof(double) * n), *mag = malloc(sizeof(double) * n);
        double *tol = malloc(sizeof(double) * n);

        /* axpy: alpha = -1.375 is exact in every type, so two roundings: a*x, then the add. */
        const double alpha = -1.375;
        ng_axpy(alpha, &x, &y);
        double *got = ng_test_to_f64(&y);
        for (int64_t i = 0; i < n; i++) {
            ref[i] = yv[i] + alpha * xv[i];
            mag[i] = fabs(alpha * xv[i]) + fabs(ref[i]);
        }
        elementwise_tol(t, ref, mag, tol, n, 1);
        snprintf(what, sizeof what, "axpy %s", tn);
        check_within(what, ref, got, tol, n);
        free(got);

        /* scale by a value that is not exact in f32 beyond its own rounding: (float)0.3. */
        ng_tensor_copy(&z, &x);
        const double s = t == NG_F64 ? 0.3 : (double)(float)0.3;
        ng_scale(0.3, &z);
        got = ng_test_to_f64(&z);
        for (int64_t i = 0; i < n; i++) ref[i] = s * xv[i], mag[i] = fabs(ref[i]);
        elementwise_tol(t, ref, mag, tol, n, 1);
        snprintf(what, sizeof what, "scale %s", tn);
        check_within(what, ref, got, tol, n);
        free(got);

        /* add and mul; mul writes into its first operand (aliasing is allowed). */
        ng_test_poison(&z);
        ng_test_fill_uniform(&y, -2, 2);
        free(yv);
        yv = ng_test_to_f64(&y);
        ng_add(&x, &y, &z);
        got = ng_test_to_f64(&z);
        for (int64_t i = 0; i < n; i++) ref[i] = xv[i] + yv[i], mag[i] = fabs(ref[i]);
        elementwise_tol(t, ref, mag, tol, n, 1);
        snprintf(what, sizeof what, "add %s", tn);
        check_within(what, ref, got, tol, n);
        free(got);
        ng_mul(&x, &y, &x);
        got = ng_test_to_f64(&x);
        for (int64_t i = 0; i < n; i++) ref[i] = xv[i] * yv[i], mag[i] = fabs(ref[i]);
        elementwise_tol(t, ref, mag, tol, n, 1);
        snprintf(what, sizeof what, "mul %s (in place)", tn);
        check_within(what, ref, got, tol, n);
        free(got);
        if (t == NG_F32) {
            /* Bit for bit what C computes in f32, with no fused multiply-add: the CUDA twin
             * matches these bits, so the CPU twin must produce exactly them. */
            float *X = malloc(sizeof(float) * n), *Y = malloc(sizeof(float) * n);
            ng_test_fill_uniform(&x, -2, 2);
            ng_test_fill_uniform(&y, -2, 2);
            memcpy(X, x.data, sizeof(float) * n);
            memcpy(Y, y.data, sizeof(float) * n);
            ng_axpy(0.3, &x, &y);
            volatile float a = (float)0.3;
            int64_t bad = 0;
            for (int64_t i = 0; i < n; i++) {
                volatile float p = a * X[i];
                float e = Y[i] + p;
                if (memcmp(&e, (float *)y.data + i, 4)) bad++;
            }
            NG_TEST(!bad, "axpy f32 rounds a*x and the add separately (%lld differ)",
                    (long long)bad);
            free(X), free(Y);
        }
        free(xv), free(yv), free(ref), free(mag), free(tol);
        ng_tensor_free(&x), ng_tensor_free(&y), ng_tensor_free(&z);
    }
}

static void test_add_diagonal(void) {
    for (int d = 0; d < 4; d++) {
        ng_dtype t = float_types[d];
        for (int batched = 0; batched < 2; batched++) {
            int64_t b = batched ? 3 : 1, n = 37, total = b * n * n;
            int64_t shape[3] = {b, n, n};
            ng_tensor A =
                ng_tensor_new(t, NG_CPU, batched ? 3 : 2, batched ? shape : shape + 1, "A");
            ng_test_fill_uniform(&A, -1, 1);
            double *a = ng_test_to_f64(&A);
            ng_add_diagonal(&A, 2.5);
            double *got = ng_test_to_f64(&A), *ref = malloc(sizeof(double) * total);
            double *mag = malloc(sizeof(double) * total), *tol = malloc(sizeof(double) * total);
            for (int64_t i = 0; i < total; i++) {
                int diag = (i % (n * n)) / n == i % n;
                ref[i] = a[i] + (diag ? 2.5 : 0.0);
                mag[i] = diag ? fabs(ref[i]) : 0.0; /* off-diagonal: unchanged, exactly */
            }
            elementwise_tol(t, ref, mag, tol, total, 1);
            for (int64_t i = 0; i < total; i++)
                if (mag[i] == 0) tol[i] = 0;
            char what[64];
            snprintf(what, sizeof what, "add_diagonal %s %s", ng_dtype_name(t),
                     batched ? "[3,37,37]" : "[37,37]");
            check_within(what, ref, got, tol, total);
            free(a), free(got), free(ref), free(mag), free(tol);
            ng_tensor_free(&A);
        }
    }
}

/* ---- Fill and cast ------------------------------------------------------------------------- */

/* Round-to-nearest-even of v to a binary format with p significand bits, minimum normal
 * exponent emin and maximum exponent emax, computed in double: an independent reference for
 * half.h's bit manipulation. */
static double round_format(double v, int p, int emin, int emax) {
    if (isnan(v) || isinf(v) || v == 0) return v;
    int e;
    frexp(fabs(v), &e);
    int lead = e - 1 < emin ? emin : e - 1;
    double ulp = ldexp(1.0, lead - (p - 1));
    double r = nearbyint(v / ulp) * ulp; /* the default rounding mode breaks ties to even */
    if (fabs(r) > ldexp(2.0 - ldexp(1.0, 1 - p), emax)) return copysign(INFINITY, v);
    return r;
}

/* What a cast to t must give for the exact value v. */
static double expected_cast(double v, ng_dtype t) {
    switch (t) {
        case NG_F32:
            return (double)(float)v;
        case NG_F64:
            return v;
        case NG_F16:
            return round_format(v, 11, -14, 15);
        case NG_BF16:
            return round_format(v, 8, -126, 127);
        case NG_I32:
            return isnan(v)             ? 0
                   : v <= -2147483648.0 ? -2147483648.0
                   : v >= 2147483647.0  ? 2147483647.0
                                        : trunc(v);
        case NG_U8:
            return isnan(v) || v <= 0 ? 0 : v >= 255 ? 255 : trunc(v);
        default:
            return NAN;
    }
}

static void test_fill(void) {
    const double values[5] = {0.1, -3.7, 200.9, 1e6, -0.0};
    for (int t = 0; t < NG_NUM_DTYPES; t++)
        for (int v = 0; v < 5; v++) {
            ng_tensor x = ng_tensor_1d((ng_dtype)t, NG_CPU, 1001, "x");
            ng_test_poison(&x);
            ng_fill(&x, values[v]);
            double *got = ng_test_to_f64(&x), e = expected_cast(values[v], (ng_dtype)t);
            int64_t bad = 0;
            for (int64_t i = 0; i < x.numel; i++) bad += !(got[i] == e);
            NG_TEST(!bad, "fill %s with %g: %lld elements are not %.9g", ng_dtype_name((ng_dtype)t),
                    values[v], (long long)bad, e);
            free(got);
            ng_tensor_free(&x);
        }
    ng_tensor x = ng_tensor_1d(NG_F16, NG_CPU, 7, "x");
    ng_fill(&x, NAN);
    double *got = ng_test_to_f64(&x);
    NG_TEST(isnan(got[0]) && isnan(got[6]), "fill f16 with NaN");
    free(got);
    ng_tensor_free(&x);
}

/* 1 when v is exactly representable in t (so a source tensor holds it unchanged). */
static int exact_in(double v, ng_dtype t) {
    switch (t) {
        case NG_F32:
            return isnan(v) || (double)(float)v == v;
        case NG_F64:
            return 1;
        case NG_F16:
            return isnan(v) || round_format(v, 11, -14, 15) == v;
        case NG_BF16:
            return isnan(v) || round_format(v, 8, -126, 127) == v;
        case NG_I32:
            return v == trunc(v) && v >= -2147483648.0 && v <= 2147483647.0;
        case NG_U8:
            return v == trunc(v) && v >= 0 && v <= 255;
        default:
            return 0;
    }
}

/* Fills a cast source: the interesting values that its type holds exactly first, then random
 * ones (wide for floats, reaching past every target's range; integers for integer types). */
static void cast_source(ng_tensor *s) {
    static const double special[] = {
        0.0, -0.0, 0.5, -0.5, 0.99, -0.99, 1.0, -1.0, 2.5, 254.5, 255.0, 255.5, 256.0, -300.0,
        1000.0, 65504.0, 1e5, NAN, INFINITY, -INFINITY,
        /* f16 and bf16 half-way points: ties go to the even neighbour */
        1.0 + 1.0 / 2048, 1.0 + 3.0 / 2048, -(1.0 + 1.0 / 2048), 1.0 + 1.0 / 256, 1.0 + 3.0 / 256,
        65520.0, 65519.0, 65536.0, 1.0 / 33554432, 3.0 / 33554432, 1.0 / 16777216, 6e-8,
        /* f32-exact values just off those ties */
        1.0 + 1.0 / 2048 + 1.0 / 8388608, 1.0 + 1.0 / 256 - 1.0 / 8388608, 3e38, -1e-40,
        /* above a tie by far less than an f32 ulp: rounding through f32 would land on the tie
         * and wrongly go down to even */
        1.0 + 1.0 / 2048 + 1.0 / 1099511627776.0, 1.0 + 1.0 / 256 + 1.0 / 1099511627776.0,
        -(1.0 + 1.0 / 256 + 1.0 / 1099511627776.0), 1.0 + 1.0 / 16777216, 1.0 + 3.0 / 16777216,
        1.0 + 1.0 / 16777216 + 1e-15, 1e39, -1e300, 1e-300, 3e9, -3e9, 2147483647.5, 2147483648.0,
        -2147483648.9,
        /* integers past f32's 24 bits; 2^24 + 2^16 + 1 lands on a bf16 tie through f32 */
        16777217.0, 16842753.0, 2147483647.0, -2147483648.0, -70000.0, 70000.0};
    ng_dtype t = s->dtype;
    int64_t k = 0;
    for (size_t i = 0; i < sizeof special / sizeof *special; i++)
        if (exact_in(special[i], t)) put(s, k++, special[i]);
    for (int64_t i = k; i < s->numel; i++) {
        double u = ng_test_uniform(), v;
        if (t == NG_U8)
            v = floor((u + 1) * 128);
        else if (t == NG_I32)
            v = floor(u * 70000);
        else if (i % 2)
            v = u * 300;
        else
            v = u * ldexp(1.0, (int)(ng_test_uniform() * 20)); /* magnitudes 2^-20 .. 2^20 */
        /* round into the source type so the value is exact there */
        if (t != NG_F64 && ng_dtype_is_float(t)) v = expected_cast(v, t);
        put(s, i, v);
    }
}

static void test_cast(void) {
    const int64_t n = 2003;
    for (int st = 0; st < NG_NUM_DTYPES; st++) {
        ng_tensor s = ng_tensor_1d((ng_dtype)st, NG_CPU, n, "src");
        cast_source(&s);
        double *sv = ng_test_to_f64(&s);
        for (int dt = 0; dt < NG_NUM_DTYPES; dt++) {
            ng_tensor d = ng_tensor_1d((ng_dtype)dt, NG_CPU, n, "dst");
            ng_test_poison(&d);
            ng_cast(&d, &s);
            double *got = ng_test_to_f64(&d), *exp = malloc(sizeof(double) * n);
            for (int64_t i = 0; i < n; i++) exp[i] = expected_cast(sv[i], (ng_dtype)dt);
            char what[64];
            snprintf(what, sizeof what, "cast %s -> %s", ng_dtype_name((ng_dtype)st),
                     ng_dtype_name((ng_dtype)dt));
            ng_test_close(what, exp, got, n, 0, 0);
            free(got), free(exp);
            ng_tensor_free(&d);
        }
        free(sv);
        ng_tensor_free(&s);
    }
    /* Specific ties, by bits: f32 -> f16 and bf16, and f64 -> f16 just above a tie. */
    float f[6] = {1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 65520.0f,
                  3.0f / 33554432,    1.0f + 1.0f / 256,  1.0f + 3.0f / 256};
    const uint16_t want16[4] = {0x3c00, 0x3c02, 0x7c00, 0x0002}, want_bf[2] = {0x3f80, 0x3f82};
    ng_tensor fs = ng_tensor_wrap(f, NG_F32, NG_CPU, 1, (int64_t[]){6}, "ties");
    uint16_t h[6];
    ng_tensor hs = ng_tensor_wrap(h, NG_F16, NG_CPU, 1, (int64_t[]){6}, "halves");
    ng_cast(&hs, &fs);
    NG_TEST(!memcmp(h, want16, sizeof want16), "f32->f16 ties to even: %04x %04x %04x %04x", h[0],
            h[1], h[2], h[3]);
    hs.dtype = NG_BF16;
    ng_cast(&hs, &fs);
    NG_TEST(h[4] == want_bf[0] && h[5] == want_bf[1], "f32->bf16 ties to even: %04x %04x", h[4],
            h[5]);
    double dv[2] = {1.0 + 1.0 / 2048 + 1.0 / 1099511627776.0, 1.0 + 1.0 / 2048};
    ng_tensor ds = ng_tensor_wrap(dv, NG_F64, NG_CPU, 1, (int64_t[]){2}, "near ties");
    hs = ng_tensor_wrap(h, NG_F16, NG_CPU, 1, (int64_t[]){2}, "halves");
    ng_cast(&hs, &ds);
    NG_TEST(h[0] == 0x3c01 && h[1] == 0x3c00, "f64->f16 rounds once: %04x (want 3c01) %04x", h[0],
            h[1]);
}

/* Every f16 and bf16 bit pattern widens to the value its fields spell, and rounds back to itself
 * (NaN comes back quiet). */
static void test_all_half_patterns(void) {
    const int64_t n = 65536;
    ng_tensor h = ng_tensor_1d(NG_F16, NG_CPU, n, "patterns"),
              f = ng_tensor_1d(NG_F32, NG_CPU, n, "f32");
    ng_tensor back = ng_tensor_1d(NG_F16, NG_CPU, n, "back");
    for (int bf = 0; bf < 2; bf++) {
        h.dtype = back.dtype = bf ? NG_BF16 : NG_F16;
        for (int64_t i = 0; i < n; i++) ((uint16_t *)h.data)[i] = (uint16_t)i;
        ng_test_poison(&f);
        ng_cast(&f, &h);
        ng_cast(&back, &f);
        int64_t bad_value = 0, bad_back = 0;
        for (int64_t i = 0; i < n; i++) {
            int sign = (int)(i >> 15), e = bf ? (int)(i >> 7) & 0xff : (int)(i >> 10) & 0x1f;
            int m = bf ? (int)(i & 0x7f) : (int)(i & 0x3ff), emax = bf ? 0xff : 0x1f;
            int mbits = bf ? 7 : 10, bias = bf ? 127 : 15;
            double v = e == emax ? (m ? NAN : INFINITY)
                       : e == 0  ? ldexp(m, 1 - bias - mbits)
                                 : ldexp(m + (1 << mbits), e - bias - mbits);
            if (sign) v = -v;
            double got = ((float *)f.data)[i];
            if (!(isnan(v) ? isnan(got) : got == v && signbit(got) == signbit(v))) {
                if (bad_value++ < 4)
                    fprintf(stderr, "  %s %04llx -> f32: expected %g got %g\n", bf ? "bf16" : "f16",
                            (unsigned long long)i, v, got);
            }
            uint16_t want = (uint16_t)(isnan(v) ? i | (bf ? 0x40 : 0x200) : i);
            bad_back += ((uint16_t *)back.data)[i] != want;
        }
        NG_TEST(!bad_value, "%s: %lld of 65536 patterns widen wrongly", bf ? "bf16" : "f16",
                (long long)bad_value);
        NG_TEST(!bad_back, "%s: %lld of 65536 patterns do not survive f32 and back",
                bf ? "bf16" : "f16", (long long)bad_back);
    }
    ng_tensor_free(&h), ng_tensor_free(&f), ng_tensor_free(&back);
}

/* ---- Reductions ---------------------------------------------------------------------------- */

static void test_reduce(void) {
    const int64_t n = 10007;
    for (int d = 0; d < 4; d++) {
        ng_dtype t = float_types[d];
        const char *tn = ng_dtype_name(t);
        ng_tensor x = ng_tensor_1d(t, NG_CPU, n, "x");
        ng_test_fill_uniform(&x, -3, 2);
        double *v = ng_test_to_f64(&x), sum = 0, sumsq = 0, sabs = 0, maxabs = 0;
        for (int64_t i = 0; i < n; i++) {
            sum += v[i], sumsq += v[i] * v[i], sabs += fabs(v[i]);
            if (fabs(v[i]) > maxabs) maxabs = fabs(v[i]);
        }
        /* Double accumulation of n terms against the reference's own: gamma_n of the sums. */
        double g = 2 * gamma_n((double)n, U64);
        NG_TEST(fabs(ng_sum(&x) - sum) <= g * sabs, "sum %s: %.17g vs %.17g", tn, ng_sum(&x), sum);
        NG_TEST(fabs(ng_sumsq(&x) - sumsq) <= g * sumsq, "sumsq %s: %.17g vs %.17g", tn,
                ng_sumsq(&x), sumsq);
        NG_TEST(ng_maxabs(&x) == maxabs, "maxabs %s: %g vs %g", tn, ng_maxabs(&x), maxabs);
        NG_TEST(ng_all_finite(&x) == 1, "all_finite %s of finite data", tn);
        /* Non-finite values at the first, a middle and the last position. */
        const int64_t where[3] = {0, n / 2 + 1, n - 1};
        for (int w = 0; w < 3; w++) {
            ng_tensor y = ng_tensor_1d(t, NG_CPU, n, "y");
            ng_tensor_copy(&y, &x);
            put(&y, where[w], -INFINITY);
            NG_TEST(ng_maxabs(&y) == INFINITY && !ng_all_finite(&y),
                    "-Inf at %lld (%s): maxabs %g, all_finite %d", (long long)where[w], tn,
                    ng_maxabs(&y), ng_all_finite(&y));
            put(&y, where[(w + 1) % 3], NAN);
            NG_TEST(isnan(ng_maxabs(&y)) && !ng_all_finite(&y),
                    "NaN at %lld with Inf (%s): maxabs %g, all_finite %d",
                    (long long)where[(w + 1) % 3], tn, ng_maxabs(&y), ng_all_finite(&y));
            ng_tensor_copy(&y, &x);
            put(&y, where[w], NAN);
            NG_TEST(isnan(ng_maxabs(&y)) && !ng_all_finite(&y) && isnan(ng_sum(&y)),
                    "NaN at %lld (%s): maxabs %g, all_finite %d, sum %g", (long long)where[w], tn,
                    ng_maxabs(&y), ng_all_finite(&y), ng_sum(&y));
            ng_tensor_free(&y);
        }
        free(v);
        ng_tensor_free(&x);
    }
}

/* ---- Usage errors -------------------------------------------------------------------------- */

static void test_errors(void) {
    ng_tensor A = ng_tensor_2d(NG_F32, NG_CPU, 4, 5, "lhs"),
              B = ng_tensor_2d(NG_F32, NG_CPU, 5, 6, "rhs");
    ng_tensor C = ng_tensor_2d(NG_F32, NG_CPU, 4, 7, "out"),
              C2 = ng_tensor_2d(NG_F32, NG_CPU, 4, 6, "out");
    ng_tensor B64 = ng_tensor_2d(NG_F64, NG_CPU, 5, 6, "rhs64");
    ng_tensor C16 = ng_tensor_2d(NG_F16, NG_CPU, 4, 6, "out16");
    ng_tensor Bdev = ng_tensor_wrap(B.data, NG_F32, NG_CUDA, 2, B.shape, "devrhs");
    ng_tensor I = ng_tensor_2d(NG_I32, NG_CPU, 4, 5, "ints");
    ng_tensor R = ng_tensor_2d(NG_F32, NG_CPU, 4, 5, "rect");
    ng_tensor A3 = ng_tensor_3d(NG_F32, NG_CPU, 2, 4, 5, "lhs3"),
              B3 = ng_tensor_3d(NG_F32, NG_CPU, 3, 5, 6, "rhs3");
    ng_tensor C3 = ng_tensor_3d(NG_F32, NG_CPU, 3, 4, 6, "out3");
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A, &B, 0, &C), "out");        /* C has the wrong shape */
    NG_TEST_ERROR(ng_gemm(1, 0, 1, &A, &B, 0, &C2), "lhs");       /* inner dims differ */
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A, &B64, 0, &C2), "rhs64");   /* mixed input types */
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A, &B, 0, &C16), "out16");    /* f16 C for f32 inputs */
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A, &Bdev, 0, &C2), "devrhs"); /* another device */
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A, &B3, 0, &C2), "2-D");      /* mixed ranks */
    NG_TEST_ERROR(ng_gemm(0, 0, 1, &A3, &B3, 0, &C3), "batch");   /* batch 2 vs 3 */
    NG_TEST_ERROR(ng_axpy(1, &A, &C), "out");
    NG_TEST_ERROR(ng_axpy(1, &A, &I), "ints");
    NG_TEST_ERROR(ng_add(&A, &R, &C), "out");
    NG_TEST_ERROR(ng_mul(&A, &Bdev, &R), "devrhs");
    NG_TEST_ERROR(ng_add(&A, &I, &R), "ints");
    NG_TEST_ERROR(ng_scale(2, &I), "ints");
    NG_TEST_ERROR(ng_cast(&C, &A), "out");
    NG_TEST_ERROR(ng_cast(&A, &Bdev), "devrhs");
    NG_TEST_ERROR(ng_add_diagonal(&R, 1), "rect");
    NG_TEST_ERROR(ng_sum(&I), "ints");
    NG_TEST_ERROR(ng_maxabs(&I), "ints");
    if (!ng_backend_cuda()) NG_TEST_ERROR(ng_fill(&Bdev, 1), "without CUDA");
    ng_tensor *all[] = {&A, &B, &C, &C2, &B64, &C16, &I, &R, &A3, &B3, &C3};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) ng_tensor_free(all[i]);
}

int main(void) {
    ng_test_seed();
    test_gemm();
    test_axpy_scale_binary();
    test_add_diagonal();
    test_fill();
    test_cast();
    test_all_half_patterns();
    test_reduce();
    test_errors();
    return ng_test_finish("test_ops");
}
