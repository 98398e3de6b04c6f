/* Philox4x32-10 and the CPU RNG fills: published known answers, the per-element layout of
 * core/rng.h, the value rule of core/rng_dist.h (against libm in long double), the dtype
 * rounding chain, statistics of 1e6 draws, and usage errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/half.h"
#include "core/rng.h"
#include "core/rng_dist.h"
#include "rng_pinned.h"
#include "testing.h"

#define PI_L 3.141592653589793238462643383279502884L

static uint32_t rand32(void) {
    return (uint32_t)((ng_test_uniform() + 1.0) * 2147483648.0);
}
static uint64_t rand64(void) {
    return (uint64_t)rand32() << 32 | rand32();
}
static int64_t rand_int(int64_t lo, int64_t hi) {
    return lo + (int64_t)(rand32() % (uint64_t)(hi - lo + 1));
}

static ng_rng_key rand_key(void) {
    ng_rng_key k = {rand64(), rand64(), rand64()};
    return k;
}

/* Word i%4 of block i/4: the layout rule of rng.h, computed directly. */
static uint32_t word_of(ng_rng_key k, int64_t i) {
    uint32_t w[4];
    ng_rng_block(k, (uint64_t)(i / 4), w);
    return w[i % 4];
}

static double load(const ng_tensor *t, int64_t i) {
    switch (t->dtype) {
        case NG_F64:
            return ((const double *)t->data)[i];
        case NG_F32:
            return ((const float *)t->data)[i];
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)t->data)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)t->data)[i]);
        default:
            return NAN;
    }
}

/* Element-wise bit equality of got[0..n) and exp[eoff..eoff+n), printing the first mismatches. */
static int same_bits(const char *what, const ng_tensor *exp, int64_t eoff, const ng_tensor *got,
                     int64_t n) {
    size_t es = ng_dtype_size(got->dtype);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (memcmp((const char *)exp->data + (size_t)(eoff + i) * es,
                   (const char *)got->data + (size_t)i * es, es)) {
            if (bad < 8)
                fprintf(stderr, "  %s: [%lld] expected %.10g got %.10g\n", what, (long long)i,
                        load(exp, eoff + i), load(got, i));
            bad++;
        }
    }
    NG_TEST(bad == 0, "%s: %lld of %lld elements differ", what, (long long)bad, (long long)n);
    return bad == 0;
}

static void fill(ng_tensor *t, ng_rng_dist d, ng_rng_key k, double p0, double p1) {
    ng_test_poison(t);
    if (d == NG_DIST_UNIFORM) ng_rng_uniform(t, k, p0, p1);
    if (d == NG_DIST_NORMAL) ng_rng_normal(t, k, p0, p1);
    if (d == NG_DIST_BERNOULLI) ng_rng_bernoulli(t, k, p0);
}

static const char *dist_name[] = {"uniform", "normal", "bernoulli"};

/* Random parameters for a distribution: lo/hi as multiples of 1/16 so hi - lo is exact. */
static void rand_params(ng_rng_dist d, double *p0, double *p1) {
    if (d == NG_DIST_UNIFORM) {
        *p0 = (double)rand_int(-64, 16) / 16;
        *p1 = *p0 + (double)rand_int(1, 80) / 16;
    } else if (d == NG_DIST_NORMAL) {
        *p0 = 4 * ng_test_uniform();
        *p1 = 0.1 + 3 * (ng_test_uniform() + 1);
    } else {
        *p0 = 0.05 + 0.45 * (ng_test_uniform() + 1);
        *p1 = 0;
    }
}

/* Random123's kat_vectors, philox4x32 R=10: counter, key, answer. */
static void test_known_answers(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int v = 0; v < 3; v++) {
        uint32_t out[4];
        ng_philox4x32_10(kat[v], kat[v] + 4, out);
        NG_TEST(!memcmp(out, kat[v] + 6, sizeof out),
                "philox4x32-10 vector %d: got %08x %08x %08x %08x", v, out[0], out[1], out[2],
                out[3]);
    }
    /* The same vectors through ng_rng_block: offset+block fills counter words 0-1, stream 2-3,
     * seed the key, low halves first. */
    uint32_t out[4];
    ng_rng_key k = {0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a80ull};
    ng_rng_block(k, 8, out);
    NG_TEST(!memcmp(out, kat[2] + 6, sizeof out), "ng_rng_block maps seed/stream/offset+block");
    ng_rng_key ones = {~0ull, ~0ull, ~0ull - 5};
    ng_rng_block(ones, 5, out);
    NG_TEST(!memcmp(out, kat[1] + 6, sizeof out), "ng_rng_block with all-ones key");
}

/* ulps of x in double, for error bounds. */
static double ulp(double x) {
    return x == 0 ? 0 : ldexp(1, ilogb(x) - 52);
}

/* The portable log and sincos of rng_dist.h against long double libm, on the edges and 1e6
 * random words: they decide the normals' values, so they must be accurate, not only equal
 * on both devices. Bounds: log within 4 ulp, cos/sin within 2^-52 (two ulp of 1). */
static void test_log_sincos(void) {
    double worst_log = 0, worst_sc = 0;
    int64_t bad = 0;
    for (int i = 0; i < 1000000 + 64; i++) {
        uint32_t w;
        if (i < 16)
            w = (uint32_t)i << 8 | (uint32_t)i; /* k = 1 .. 16: u near 0 */
        else if (i < 32)
            w = 0xffffffffu - ((uint32_t)(i - 16) << 8); /* u near 1 */
        else if (i < 64)
            w = ((uint32_t)(i - 32) << 21) - 256u * (uint32_t)(i & 1); /* octant edges */
        else
            w = rand32();
        long double u = ng_rng_u01(w);
        double lg = ng_rng_log_u01(w), lref = (double)logl(u);
        double elog = fabs(lg - lref), tol = 4 * ulp(lref);
        double c, s, cref = (double)cosl(2 * PI_L * u), sref = (double)sinl(2 * PI_L * u);
        ng_rng_sincos_2pi_u01(w, &c, &s);
        double esc = fmax(fabs(c - cref), fabs(s - sref));
        if (lref != 0 && elog / ulp(lref) > worst_log) worst_log = elog / ulp(lref);
        if (esc > worst_sc) worst_sc = esc;
        if (elog > tol || esc > 0x1p-52) {
            if (bad < 8)
                fprintf(stderr, "  w=%08x: log %a vs %a, cos %a vs %a, sin %a vs %a\n", w, lg, lref,
                        c, cref, s, sref);
            bad++;
        }
    }
    printf("portable log: worst %.2f ulp; sincos: worst %.3g absolute\n", worst_log, worst_sc);
    NG_TEST(bad == 0, "log/sincos of u01 against long double libm: %lld bad", (long long)bad);
}

/* Each element from its own word: uniform, normal and bernoulli against direct computation. */
static void test_layout(void) {
    int64_t n = rand_int(900, 1100);
    ng_rng_key k = rand_key();
    k.offset = 0xffffffffull - (uint64_t)rand_int(0, 200); /* counter word 0 wraps mid-fill */
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CPU, n, "t");
    ng_tensor t64 = ng_tensor_1d(NG_F64, NG_CPU, n, "t64");
    double *e = malloc(sizeof(double) * (size_t)n);

    /* lo + 8u is exact in double, so this needs no fma to be exact */
    fill(&t, NG_DIST_UNIFORM, k, -2, 6);
    for (int64_t i = 0; i < n; i++) e[i] = (float)(-2 + 8.0 * ng_rng_u01(word_of(k, i)));
    double *g = ng_test_to_f64(&t);
    ng_test_close("uniform(-2,6) element i from word i%4 of block i/4", e, g, n, 0, 0);
    free(g);

    fill(&t, NG_DIST_UNIFORM, k, 0, 1);
    for (int64_t i = 0; i < n; i++) e[i] = ng_rng_u01(word_of(k, i));
    g = ng_test_to_f64(&t);
    ng_test_close("uniform(0,1) is ng_rng_u01 exactly", e, g, n, 0, 0);
    free(g);

    double lo, hi;
    rand_params(NG_DIST_UNIFORM, &lo, &hi);
    lo += ng_test_uniform() / 1024; /* not exact any more: the documented fma decides */
    fill(&t64, NG_DIST_UNIFORM, k, lo, hi);
    for (int64_t i = 0; i < n; i++) e[i] = fma(hi - lo, ng_rng_u01(word_of(k, i)), lo);
    g = ng_test_to_f64(&t64);
    ng_test_close("uniform f64 = fma(hi - lo, u, lo)", e, g, n, 0, 0);
    free(g);

    /* Box-Muller pairs: words (0,1) -> elements 4b, 4b+1 as r cos, r sin; (2,3) -> 4b+2, 4b+3 */
    double mean, sd;
    rand_params(NG_DIST_NORMAL, &mean, &sd);
    fill(&t64, NG_DIST_NORMAL, k, mean, sd);
    for (int64_t i = 0; i < n; i++) {
        uint32_t w[4];
        ng_rng_block(k, (uint64_t)(i / 4), w);
        int pair = (int)(i % 4) / 2, second = (int)(i % 2);
        long double u1 = ng_rng_u01(w[2 * pair]), u2 = ng_rng_u01(w[2 * pair + 1]);
        long double r = sqrtl(-2 * logl(u1)), th = 2 * PI_L * u2;
        e[i] = (double)(mean + sd * r * (second ? sinl(th) : cosl(th)));
    }
    g = ng_test_to_f64(&t64);
    /* r to a few ulp, cos/sin to 2^-52: |dz| < 6 * 2^-50; then one rounding of the result */
    ng_test_close("normal f64 = mean + std * Box-Muller(words)", e, g, n, 0x1p-51, sd * 0x1p-47);
    free(g);

    double p = 0.05 + 0.45 * (ng_test_uniform() + 1);
    fill(&t, NG_DIST_BERNOULLI, k, p, 0);
    for (int64_t i = 0; i < n; i++) e[i] = ng_rng_u01(word_of(k, i)) <= p ? 1 : 0;
    g = ng_test_to_f64(&t);
    ng_test_close("bernoulli element i = (u_i <= p)", e, g, n, 0, 0);
    free(g);

    /* u in (0,1] and "u <= p": p equal to an element's u gives 1 there, just below gives 0 */
    int64_t i = rand_int(0, n - 1);
    double ui = ng_rng_u01(word_of(k, i));
    fill(&t, NG_DIST_BERNOULLI, k, ui, 0);
    NG_TEST(((float *)t.data)[i] == 1, "bernoulli(p = u_i) gives 1 at i (u <= p)");
    fill(&t, NG_DIST_BERNOULLI, k, nextafter(ui, 0), 0);
    NG_TEST(((float *)t.data)[i] == 0, "bernoulli(p just below u_i) gives 0 at i");

    free(e);
    ng_tensor_free(&t);
    ng_tensor_free(&t64);
}

/* A fill at offset o is the tail of a fill from offset 0, shifted by 4o elements; a fill of n
 * is the first n of any longer fill; the same key gives the same bits twice. */
static void test_offsets(void) {
    for (int d = 0; d < 3; d++) {
        char what[128];
        double p0, p1;
        rand_params((ng_rng_dist)d, &p0, &p1);
        ng_rng_key k = rand_key();
        int64_t n = rand_int(500, 1000) | 1, o = rand_int(1, 50);
        ng_tensor a = ng_tensor_1d(NG_F32, NG_CPU, n + 4 * o, "a");
        ng_tensor b = ng_tensor_1d(NG_F32, NG_CPU, n, "b");
        fill(&a, (ng_rng_dist)d, k, p0, p1);
        ng_rng_key ko = k;
        ko.offset += (uint64_t)o;
        fill(&b, (ng_rng_dist)d, ko, p0, p1);
        snprintf(what, sizeof what, "%s at offset +%lld = long fill shifted by %lld", dist_name[d],
                 (long long)o, (long long)(4 * o));
        same_bits(what, &a, 4 * o, &b, n);
        for (int64_t m = 1; m <= 7; m++) {
            ng_tensor s = ng_tensor_1d(NG_F32, NG_CPU, m, "short");
            fill(&s, (ng_rng_dist)d, k, p0, p1);
            snprintf(what, sizeof what, "%s fill of %lld = prefix of a longer fill", dist_name[d],
                     (long long)m);
            same_bits(what, &a, 0, &s, m);
            ng_tensor_free(&s);
        }
        fill(&b, (ng_rng_dist)d, k, p0, p1);
        snprintf(what, sizeof what, "%s: the same key twice gives the same bits", dist_name[d]);
        same_bits(what, &a, 0, &b, n);
        ng_tensor_free(&a);
        ng_tensor_free(&b);
    }
}

/* Changing any of seed, stream or offset, in either 32-bit half, gives other numbers. */
static void test_keys_differ(void) {
    const int64_t n = 10000;
    ng_rng_key k = rand_key();
    ng_tensor a = ng_tensor_1d(NG_F32, NG_CPU, n, "a"), b = ng_tensor_1d(NG_F32, NG_CPU, n, "b");
    fill(&a, NG_DIST_UNIFORM, k, 0, 1);
    const char *names[6] = {"seed lo",   "seed hi",   "stream lo",
                            "stream hi", "offset lo", "offset hi"};
    for (int v = 0; v < 6; v++) {
        ng_rng_key k2 = k;
        uint64_t flip = 1ull << (v % 2 ? 32 + rand_int(0, 31) : rand_int(0, 31));
        if (v < 2)
            k2.seed ^= flip;
        else if (v < 4)
            k2.stream ^= flip;
        else
            k2.offset += v == 4 ? (uint64_t)n : 1ull << 32; /* past the first fill's blocks */
        fill(&b, NG_DIST_UNIFORM, k2, 0, 1);
        int64_t eq = 0;
        for (int64_t i = 0; i < n; i++) eq += ((float *)a.data)[i] == ((float *)b.data)[i];
        /* equal by chance with probability 2^-24 each */
        NG_TEST(eq <= 3, "changing the %s gives different numbers (%lld of %lld equal)", names[v],
                (long long)eq, (long long)n);
    }
    ng_tensor_free(&a);
    ng_tensor_free(&b);
}

/* f32 is the f64 fill rounded to float; f16 and bf16 are the f32 fill rounded again. */
static void test_dtypes(void) {
    for (int d = 0; d < 3; d++) {
        double p0, p1;
        rand_params((ng_rng_dist)d, &p0, &p1);
        ng_rng_key k = rand_key();
        int64_t n = rand_int(5000, 10000);
        ng_tensor t64 = ng_tensor_1d(NG_F64, NG_CPU, n, "f64"),
                  t32 = ng_tensor_1d(NG_F32, NG_CPU, n, "f32"),
                  t16 = ng_tensor_1d(NG_F16, NG_CPU, n, "f16"),
                  tb = ng_tensor_1d(NG_BF16, NG_CPU, n, "bf16");
        ng_tensor e32 = ng_tensor_1d(NG_F32, NG_CPU, n, "e32"),
                  e16 = ng_tensor_1d(NG_F16, NG_CPU, n, "e16"),
                  eb = ng_tensor_1d(NG_BF16, NG_CPU, n, "ebf16");
        fill(&t64, (ng_rng_dist)d, k, p0, p1);
        fill(&t32, (ng_rng_dist)d, k, p0, p1);
        fill(&t16, (ng_rng_dist)d, k, p0, p1);
        fill(&tb, (ng_rng_dist)d, k, p0, p1);
        for (int64_t i = 0; i < n; i++) {
            float f = (float)((double *)t64.data)[i];
            ((float *)e32.data)[i] = f;
            ((ng_f16 *)e16.data)[i] = ng_f32_to_f16(((float *)t32.data)[i]);
            ((ng_bf16 *)eb.data)[i] = ng_f32_to_bf16(((float *)t32.data)[i]);
        }
        char what[96];
        snprintf(what, sizeof what, "%s f32 = (float) f64 fill", dist_name[d]);
        same_bits(what, &e32, 0, &t32, n);
        snprintf(what, sizeof what, "%s f16 = f16(f32 fill)", dist_name[d]);
        same_bits(what, &e16, 0, &t16, n);
        snprintf(what, sizeof what, "%s bf16 = bf16(f32 fill)", dist_name[d]);
        same_bits(what, &eb, 0, &tb, n);
        ng_tensor *all[] = {&t64, &t32, &t16, &tb, &e32, &e16, &eb};
        for (int j = 0; j < 7; j++) ng_tensor_free(all[j]);
    }
}

/* Moments of 1e6 draws within 5 sigma of their sampling error. */
static void test_statistics(void) {
    const int64_t n = 1000000;
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CPU, n, "t");
    ng_tensor t64 = ng_tensor_1d(NG_F64, NG_CPU, n, "t64");
    double *x;

    /* uniform: mean (lo+hi)/2 +- 5 sqrt(var/n), var w^2/12 +- 5 w^2 sqrt((1/80 - 1/144)/n) */
    double lo, hi;
    rand_params(NG_DIST_UNIFORM, &lo, &hi);
    double w = hi - lo;
    fill(&t64, NG_DIST_UNIFORM, rand_key(), lo, hi);
    x = ng_test_to_f64(&t64);
    double s1 = 0, s2 = 0;
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        out += !(x[i] > lo && x[i] <= hi);
        s1 += x[i];
    }
    double mean = s1 / n;
    for (int64_t i = 0; i < n; i++) s2 += (x[i] - mean) * (x[i] - mean);
    double var = s2 / (n - 1);
    NG_TEST(out == 0, "uniform(%g,%g) f64: %lld of %lld outside (lo, hi]", lo, hi, (long long)out,
            (long long)n);
    NG_TEST(fabs(mean - (lo + hi) / 2) <= 5 * w * sqrt(1.0 / 12 / n),
            "uniform(%g,%g) mean %.6f vs %.6f", lo, hi, mean, (lo + hi) / 2);
    NG_TEST(fabs(var - w * w / 12) <= 5 * w * w * sqrt((1.0 / 80 - 1.0 / 144) / n),
            "uniform(%g,%g) variance %.6f vs %.6f", lo, hi, var, w * w / 12);
    free(x);
    /* in f32 rounding may land on lo itself, never outside [lo, hi] */
    fill(&t, NG_DIST_UNIFORM, rand_key(), lo, hi);
    x = ng_test_to_f64(&t);
    out = 0;
    for (int64_t i = 0; i < n; i++) out += !(x[i] >= lo && x[i] <= hi);
    NG_TEST(out == 0, "uniform(%g,%g) f32: %lld outside [lo, hi]", lo, hi, (long long)out);
    free(x);
    fill(&t, NG_DIST_UNIFORM, rand_key(), 0, 1);
    x = ng_test_to_f64(&t);
    out = 0;
    for (int64_t i = 0; i < n; i++) out += !(x[i] > 0 && x[i] <= 1);
    NG_TEST(out == 0, "uniform(0,1) f32: %lld outside (0, 1]", (long long)out);
    free(x);

    /* normal: standardised moments; E z^k for k=1..4 is 0,1,0,3 with variances 1,2,15,96 */
    double m, sd;
    rand_params(NG_DIST_NORMAL, &m, &sd);
    fill(&t64, NG_DIST_NORMAL, rand_key(), m, sd);
    x = ng_test_to_f64(&t64);
    double mo[5] = {0}, lag1 = 0, lag2 = 0, zmax = 0;
    int64_t below1 = 0;
    for (int64_t i = 0; i < n; i++) {
        double z = (x[i] - m) / sd, zk = 1;
        for (int k = 1; k <= 4; k++) mo[k] += (zk *= z);
        below1 += z < 1;
        zmax = fmax(zmax, fabs(z));
        if (i + 1 < n) lag1 += z * (x[i + 1] - m) / sd;
        if (i + 2 < n) lag2 += z * (x[i + 2] - m) / sd;
    }
    for (int k = 1; k <= 4; k++) mo[k] /= n;
    lag1 /= n - 1;
    lag2 /= n - 2;
    double rn = sqrt((double)n), phi1 = 0.8413447460685429;
    NG_TEST(fabs(mo[1]) <= 5 / rn, "normal(%g,%g): mean of z %.5f", m, sd, mo[1]);
    NG_TEST(fabs(mo[2] - 1) <= 5 * sqrt(2.0) / rn, "normal: E z^2 %.5f", mo[2]);
    NG_TEST(fabs(mo[3]) <= 5 * sqrt(15.0) / rn, "normal: E z^3 %.5f", mo[3]);
    NG_TEST(fabs(mo[4] - 3) <= 5 * sqrt(96.0) / rn, "normal: E z^4 %.5f", mo[4]);
    NG_TEST(fabs((double)below1 / n - phi1) <= 5 * sqrt(phi1 * (1 - phi1) / n),
            "normal: P(z < 1) %.5f vs %.5f", (double)below1 / n, phi1);
    /* neighbours share a Box-Muller pair (lag 1) or a block (lag 2): still uncorrelated */
    NG_TEST(fabs(lag1) <= 5 / rn && fabs(lag2) <= 5 / rn, "normal: lag-1/2 correlation %.5f %.5f",
            lag1, lag2);
    NG_TEST(zmax <= sqrt(48 * log(2.0)) + 1e-9 && zmax > 4, "normal: max |z| %.3f", zmax);
    free(x);

    /* bernoulli: rate p +- 5 sqrt(p(1-p)/n), values only 0 and 1, exact at p = 0 and 1 */
    double p, dummy;
    rand_params(NG_DIST_BERNOULLI, &p, &dummy);
    fill(&t, NG_DIST_BERNOULLI, rand_key(), p, 0);
    x = ng_test_to_f64(&t);
    int64_t ones = 0, other = 0;
    for (int64_t i = 0; i < n; i++) {
        ones += x[i] == 1;
        other += x[i] != 0 && x[i] != 1;
    }
    NG_TEST(other == 0, "bernoulli: %lld values not 0 or 1", (long long)other);
    NG_TEST(fabs((double)ones / n - p) <= 5 * sqrt(p * (1 - p) / n), "bernoulli(%g): rate %.5f", p,
            (double)ones / n);
    free(x);
    for (int e = 0; e <= 1; e++) {
        fill(&t, NG_DIST_BERNOULLI, rand_key(), e, 0);
        x = ng_test_to_f64(&t);
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; i++) wrong += x[i] != e;
        NG_TEST(wrong == 0, "bernoulli(%d): %lld values differ from %d", e, (long long)wrong, e);
        free(x);
    }
    ng_tensor_free(&t);
    ng_tensor_free(&t64);
}

/* Pinned values, produced by this implementation once the checks above passed: a change of
 * the stream, or a compiler fusing or rounding differently on this host, shows here. The same
 * values are pinned for the GPU in test_rng_gpu. */
static void test_pinned(void) {
    ng_rng_key k = rng_pinned_key;
    const uint32_t(*golden)[6] = rng_pinned_bits;
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CPU, 6, "pinned");
    for (int d = 0; d < 3; d++) {
        fill(&t, (ng_rng_dist)d, k, d == 2 ? 0.5 : -1, 2);
        int bad = 0;
        for (int i = 0; i < 6; i++) bad += ng_f32_bits(((float *)t.data)[i]) != golden[d][i];
        NG_TEST(!bad, "%s: pinned values of key {20240601, 3, 7} changed", dist_name[d]);
    }
    ng_tensor_free(&t);
}

static void test_errors(void) {
    ng_rng_key k = {1, 2, 3};
    ng_tensor i32 = ng_tensor_1d(NG_I32, NG_CPU, 8, "ints");
    ng_tensor u8 = ng_tensor_1d(NG_U8, NG_CPU, 8, "bytes");
    ng_tensor f = ng_tensor_1d(NG_F32, NG_CPU, 8, "f");
    NG_TEST_ERROR(ng_rng_uniform(&i32, k, 0, 1), "floating");
    NG_TEST_ERROR(ng_rng_normal(&u8, k, 0, 1), "floating");
    NG_TEST_ERROR(ng_rng_bernoulli(&i32, k, 0.5), "ints");
    NG_TEST_ERROR(ng_rng_normal(&f, k, 0, -1), "std");
    NG_TEST_ERROR(ng_rng_bernoulli(&f, k, 1.5), "[0,1]");
    NG_TEST_ERROR(ng_rng_bernoulli(&f, k, -0.01), "[0,1]");
    NG_TEST_ERROR(ng_rng_bernoulli(&f, k, NAN), "[0,1]");
    ng_tensor_free(&i32);
    ng_tensor_free(&u8);
    ng_tensor_free(&f);
}

int main(void) {
    ng_test_seed();
    test_known_answers();
    test_log_sincos();
    test_layout();
    test_offsets();
    test_keys_differ();
    test_dtypes();
    test_statistics();
    test_pinned();
    test_errors();
    return ng_test_finish("test_rng");
}
