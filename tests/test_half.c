/* fp16 and bf16 conversions (core/half.h) against references built here from the formats'
 * definitions: every 16-bit pattern decoded, and float rounding checked against "the nearest of
 * the two neighbouring values, ties to even" computed in double. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "core/half.h"
#include "testing.h"

/* A 16-bit format as a table of its non-negative finite values in pattern order (the patterns
 * are monotonic in value), with one extra entry: the infinity pattern valued at the next power
 * of two, the point rounding treats it as. */
typedef struct {
    const char *name;
    int inf;       /* pattern of +Inf = number of finite non-negative patterns */
    uint16_t qbit; /* quiet bit of a NaN */
    double *val;   /* inf + 1 entries */
    uint16_t (*from_f32)(float);
} format;

static uint16_t f16_from(float x) {
    return ng_f32_to_f16(x);
}
static uint16_t bf16_from(float x) {
    return ng_f32_to_bf16(x);
}

/* binary16: 5 exponent bits (bias 15), 10 mantissa bits. */
static double f16_decode(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* bfloat16: 8 exponent bits (bias 127), 7 mantissa bits. */
static double bf16_decode(uint16_t b) {
    int s = b >> 15, e = (b >> 7) & 0xff, m = b & 0x7f;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return s ? -v : v;
}

static format make_format(const char *name, int inf, uint16_t qbit, double (*dec)(uint16_t),
                          double inf_as, uint16_t (*from)(float)) {
    format f = {name, inf, qbit, malloc(sizeof(double) * (size_t)(inf + 1)), from};
    for (int i = 0; i < inf; i++) f.val[i] = dec((uint16_t)i);
    f.val[inf] = inf_as;
    return f;
}

static int is_nan16(const format *f, uint16_t h) {
    return (h & 0x7fff) > f->inf;
}

/* The reference rounding of a non-NaN float. The differences below are exact in double: the
 * neighbours and x lie within a factor of two of each other (Sterbenz), except when the lower
 * neighbour is 0, where a - 0 is exact and the other side's rounding keeps the order. */
static uint16_t ref_round(const format *f, float x) {
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (a >= f->val[f->inf]) return sign | (uint16_t)f->inf;
    int lo = 0, hi = f->inf - 1; /* largest pattern with val <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (f->val[mid] <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (f->val[lo] == a) return sign | (uint16_t)lo;
    double dlo = a - f->val[lo], dhi = f->val[lo + 1] - a;
    int r = dlo < dhi ? lo : dhi < dlo ? lo + 1 : (lo & 1 ? lo + 1 : lo);
    return sign | (uint16_t)r;
}

/* A running comparison of conversions against the reference over one set of inputs. */
typedef struct {
    const format *f;
    const char *set;
    long checked, bad;
} tally;

static void check(tally *t, float x, uint16_t expected) {
    uint16_t got = t->f->from_f32(x);
    t->checked++;
    if (got != expected) {
        if (t->bad < 8)
            fprintf(stderr, "  %s %s: x = %a (0x%08x) expected 0x%04x got 0x%04x\n", t->f->name,
                    t->set, x, ng_f32_bits(x), expected, got);
        t->bad++;
    }
}

static void check_ref(tally *t, float x) {
    check(t, x, ref_round(t->f, x));
}

static void finish(tally *t) {
    NG_TEST(t->bad == 0 && t->checked > 0, "%s from f32, %s: %ld of %ld wrong", t->f->name, t->set,
            t->bad, t->checked);
}

static uint32_t rand32(void) {
    return (uint32_t)((ng_test_uniform() + 1.0) * 2147483648.0);
}

/* Every pattern to f32 against the decoded value; NaN stays NaN. */
static void test_to_f32(const format *f, double (*dec)(uint16_t), float (*to)(uint16_t)) {
    long bad = 0, nans = 0;
    for (int i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        float got = to(h);
        double ref = dec(h);
        int ok = isnan(ref) ? isnan(got)
                            : ng_f32_bits(got) == ng_f32_bits((float)ref) && (double)got == ref;
        nans += isnan(ref) != 0;
        if (!ok && bad++ < 8)
            fprintf(stderr, "  %s 0x%04x -> f32: expected %a got %a\n", f->name, h, ref, got);
    }
    NG_TEST(bad == 0, "%s -> f32 over all 65536 patterns: %ld wrong", f->name, bad);
    NG_TEST(nans == 2 * (65536 / 2 - 1 - f->inf), "%s: NaN pattern count %ld", f->name, nans);
}

/* to f32 and back is the identity, except that NaN comes back quiet. */
static void test_round_trip(const format *f, float (*to)(uint16_t)) {
    long bad = 0;
    for (int i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i, exp = is_nan16(f, h) ? (uint16_t)(h | f->qbit) : h;
        uint16_t got = f->from_f32(to(h));
        if (got != exp && bad++ < 8)
            fprintf(stderr, "  %s round trip 0x%04x: expected 0x%04x got 0x%04x\n", f->name, h, exp,
                    got);
    }
    NG_TEST(bad == 0, "%s -> f32 -> %s over all patterns: %ld wrong", f->name, f->name, bad);
}

/* Every value, every midpoint of neighbours (ties to even, checked without the reference too),
 * and one f32 ulp either side of each midpoint, both signs. */
static void test_values_and_midpoints(const format *f) {
    tally tv = {f, "exact values", 0, 0}, tm = {f, "midpoints (ties to even)", 0, 0},
          tn = {f, "midpoints +- 1 ulp", 0, 0};
    for (int i = 0; i < f->inf; i++) {
        check(&tv, (float)f->val[i], (uint16_t)i);
        check(&tv, -(float)f->val[i], (uint16_t)(i | 0x8000));
        double mid = 0.5 * (f->val[i] + f->val[i + 1]);
        float m = (float)mid;
        if ((double)m != mid) {
            tm.bad++;
            fprintf(stderr, "  %s: midpoint %a is not a float\n", f->name, mid);
            continue;
        }
        uint16_t even = (uint16_t)(i & 1 ? i + 1 : i);
        check(&tm, m, even);
        check(&tm, -m, (uint16_t)(even | 0x8000));
        check(&tn, nextafterf(m, 0.0f), (uint16_t)i);
        check(&tn, -nextafterf(m, 0.0f), (uint16_t)(i | 0x8000));
        check(&tn, nextafterf(m, INFINITY), (uint16_t)(i + 1));
        check(&tn, -nextafterf(m, INFINITY), (uint16_t)((i + 1) | 0x8000));
    }
    finish(&tv);
    finish(&tm);
    finish(&tn);
}

/* Floats below the format's smallest normal, by bit pattern with a prime stride so all mantissa
 * bits vary. */
static void test_small(const format *f, uint32_t normal_min_bits) {
    tally t = {f, "subnormal range", 0, 0};
    for (uint32_t b = 0; b <= normal_min_bits; b += 613) {
        check_ref(&t, ng_bits_f32(b));
        check_ref(&t, ng_bits_f32(b | 0x80000000u));
    }
    finish(&t);
}

/* Random floats with exponents in [e_lo, e_hi] (the range where the format does something
 * other than flush or overflow, plus margins), random mantissas and signs; then raw bits. */
static void test_random(const format *f, int e_lo, int e_hi) {
    tally t = {f, "random floats", 0, 0}, tr = {f, "random bit patterns", 0, 0};
    for (int i = 0; i < 1000000; i++) {
        uint32_t e = (uint32_t)(e_lo + (int)(rand32() % (uint32_t)(e_hi - e_lo + 1)));
        uint32_t b = (rand32() & 0x807fffffu) | (e << 23);
        check_ref(&t, ng_bits_f32(b));
    }
    for (int i = 0; i < 200000; i++) {
        float x = ng_bits_f32(rand32());
        if (!isnan(x)) check_ref(&tr, x);
    }
    finish(&t);
    finish(&tr);
}

/* A NaN converts to a quiet NaN of the same sign, never to Inf, keeping the top payload bits. */
static void check_nan(const format *f, uint32_t bits, int mant_bits, long *bad) {
    uint16_t r = f->from_f32(ng_bits_f32(bits));
    uint16_t payload_mask = (uint16_t)((1u << mant_bits) - 1u) & (uint16_t)~f->qbit;
    uint16_t want_payload = (uint16_t)(bits >> (23 - mant_bits)) & payload_mask;
    int ok = is_nan16(f, r) && (r & f->qbit) && (r >> 15) == (bits >> 31) &&
             (r & payload_mask) == want_payload;
    if (!ok && (*bad)++ < 8)
        fprintf(stderr, "  %s from NaN 0x%08x gave 0x%04x\n", f->name, bits, r);
}

static void test_nan(const format *f, int mant_bits) {
    long bad = 0;
    /* payloads only below the kept bits: naive truncation would make these Inf */
    for (uint32_t m = 1; m < 0x10000u; m++) {
        check_nan(f, 0x7f800000u | m, mant_bits, &bad);
        check_nan(f, 0xff800000u | m, mant_bits, &bad);
    }
    for (int i = 0; i < 100000; i++) {
        uint32_t m = rand32() & 0x7fffffu;
        check_nan(f, 0x7f800000u | (rand32() & 0x80000000u) | (m ? m : 1u), mant_bits, &bad);
    }
    check_nan(f, 0x7fc00000u, mant_bits, &bad);
    check_nan(f, 0xffffffffu, mant_bits, &bad);
    NG_TEST(bad == 0, "%s from f32 NaNs: %ld wrong", f->name, bad);
}

static void test_f16_edges(void) {
    NG_TEST(ng_f32_to_f16(65519.99f) == 0x7bff, "65519.99 -> 65504");
    NG_TEST(ng_f32_to_f16(nextafterf(65520.0f, 0)) == 0x7bff, "just below 65520 -> 65504");
    NG_TEST(ng_f32_to_f16(65520.0f) == 0x7c00, "65520 -> Inf");
    NG_TEST(ng_f32_to_f16(-65520.0f) == 0xfc00, "-65520 -> -Inf");
    NG_TEST(ng_f32_to_f16(65504.0f) == 0x7bff, "65504 exact");
    NG_TEST(ng_f32_to_f16(FLT_MAX) == 0x7c00, "FLT_MAX -> Inf");
    NG_TEST(ng_f32_to_f16(INFINITY) == 0x7c00 && ng_f32_to_f16(-INFINITY) == 0xfc00, "Inf");
    NG_TEST(ng_f32_to_f16(ldexpf(1, -25)) == 0, "2^-25 (tie with 0) -> 0");
    NG_TEST(ng_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 1, "just above 2^-25 -> 2^-24");
    NG_TEST(ng_f32_to_f16(ldexpf(3, -25)) == 2, "3 * 2^-25 (tie) -> 2 * 2^-24 (even)");
    NG_TEST(ng_f32_to_f16(-0.0f) == 0x8000, "-0 keeps its sign");
    NG_TEST(ng_f32_to_f16(-1e-30f) == 0x8000, "tiny negative -> -0");
    NG_TEST(ng_f32_to_f16(ldexpf(1, -14)) == 0x0400, "smallest normal");
    NG_TEST(ng_f32_to_f16(nextafterf(ldexpf(1, -14), 0)) == 0x0400,
            "just below the smallest normal rounds up to it");
    NG_TEST(ng_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00, "1 + half ulp -> 1 (even)");
    NG_TEST(ng_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02, "1 + 3 half ulp -> 1 + 2 ulp");
    NG_TEST(ng_f32_to_f16(2047.5f) == 0x6800, "2047.5 rounds up across the exponent to 2048");
}

static void test_bf16_edges(void) {
    NG_TEST(ng_f32_to_bf16(FLT_MAX) == 0x7f80, "FLT_MAX -> Inf");
    NG_TEST(ng_f32_to_bf16(-FLT_MAX) == 0xff80, "-FLT_MAX -> -Inf");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x7f7f8000u)) == 0x7f80, "tie above bf16 max -> Inf");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x7f7f7fffu)) == 0x7f7f, "just below the tie -> max");
    NG_TEST(ng_f32_to_bf16(INFINITY) == 0x7f80 && ng_f32_to_bf16(-INFINITY) == 0xff80, "Inf");
    NG_TEST(ng_f32_to_bf16(-0.0f) == 0x8000, "-0 keeps its sign");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x3f808000u)) == 0x3f80, "1 + half ulp -> 1 (even)");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x3f818000u)) == 0x3f82, "odd + half ulp -> up (even)");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x00008000u)) == 0x0000, "subnormal tie -> 0 (even)");
    NG_TEST(ng_f32_to_bf16(ng_bits_f32(0x007fffffu)) == 0x0080, "largest subnormal -> min normal");
    NG_TEST(ng_bf16_to_f32(0x3f80) == 1.0f && ng_bf16_to_f32(0xc040) == -3.0f, "bf16 -> f32");
}

int main(void) {
    ng_test_seed();
    format f16 = make_format("f16", 0x7c00, 0x200, f16_decode, 65536.0, f16_from);
    format bf16 = make_format("bf16", 0x7f80, 0x40, bf16_decode, ldexp(1, 128), bf16_from);

    test_to_f32(&f16, f16_decode, ng_f16_to_f32);
    test_round_trip(&f16, ng_f16_to_f32);
    test_values_and_midpoints(&f16);
    test_small(&f16, 0x38800000u);
    test_random(&f16, 100, 143);
    test_nan(&f16, 10);
    test_f16_edges();

    test_to_f32(&bf16, bf16_decode, ng_bf16_to_f32);
    long shift_bad = 0;
    for (int i = 0; i < 65536; i++)
        shift_bad += ng_f32_bits(ng_bf16_to_f32((uint16_t)i)) != (uint32_t)i << 16;
    NG_TEST(shift_bad == 0, "bf16 -> f32 is the 16-bit shift for all patterns (%ld wrong)",
            shift_bad);
    test_round_trip(&bf16, ng_bf16_to_f32);
    test_values_and_midpoints(&bf16);
    test_small(&bf16, 0x00800000u);
    test_random(&bf16, 0, 254);
    test_nan(&bf16, 7);
    test_bf16_edges();

    free(f16.val);
    free(bf16.val);
    return ng_test_finish("test_half");
}
