/* The bulk half conversions (core/half_vec.h) against the scalar ones of core/half.h, bit for bit:
 * every fp16 and bf16 pattern widened; floats rounded at every midpoint between neighbouring
 * half values and one ulp either side, every NaN class, a stride through all 2^32 float patterns
 * and random ones; odd lengths so the vector body and the scalar tail both run. */
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "core/half_vec.h"
#include "testing.h"

static uint32_t rng_state;
static uint32_t rand32(void) { /* xorshift, seeded from the test seed */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

/* Narrows floats[0..n) with the bulk code at a random offset and length split, against scalar. */
static long narrow_mismatches(const float *x, int64_t n, ng_dtype t) {
    uint16_t *got = malloc((size_t)n * 2);
    int64_t cut = n ? (int64_t)(rand32() % (uint32_t)n) : 0; /* two calls: tails mid-stream */
    ng_half_from_f32(x, t, got, cut);
    ng_half_from_f32(x + cut, t, got + cut, n - cut);
    long bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t want = t == NG_F16 ? ng_f32_to_f16(x[i]) : ng_f32_to_bf16(x[i]);
        if (got[i] != want && bad++ < 5)
            fprintf(stderr, "  %s: %08x -> %04x, scalar %04x\n", ng_dtype_name(t),
                    ng_f32_bits(x[i]), got[i], want);
    }
    free(got);
    return bad;
}

static void test_widen(ng_dtype t) {
    uint16_t *h = malloc(65537 * 2);
    float *f = malloc(65537 * sizeof(float));
    for (int i = 0; i < 65537; i++) h[i] = (uint16_t)(i + 12345);
    ng_half_to_f32(h, t, f, 65537); /* 65537: not a multiple of 8 */
    long bad = 0;
    for (int i = 0; i < 65537; i++) {
        float want = t == NG_F16 ? ng_f16_to_f32(h[i]) : ng_bf16_to_f32(h[i]);
        bad += ng_f32_bits(f[i]) != ng_f32_bits(want);
    }
    NG_TEST(bad == 0, "%s -> f32, every pattern: %ld differ from the scalar code", ng_dtype_name(t),
            bad);
    free(h), free(f);
}

/* Every half value's midpoint to its successor, and one float ulp below and above it. */
static void test_midpoints(ng_dtype t) {
    float *x = malloc(65536 * 6 * sizeof(float));
    int64_t n = 0;
    for (uint32_t i = 0; i < 0x7c00u || (t == NG_BF16 && i < 0x7f80u); i++) {
        float a = t == NG_F16 ? ng_f16_to_f32((uint16_t)i) : ng_bf16_to_f32((uint16_t)i);
        float b =
            t == NG_F16 ? ng_f16_to_f32((uint16_t)(i + 1)) : ng_bf16_to_f32((uint16_t)(i + 1));
        float m = (float)(0.5 * ((double)a + (double)b));
        for (int s = 0; s < 2; s++) {
            float sign = s ? -1.0f : 1.0f;
            x[n++] = sign * m;
            x[n++] = sign * ng_bits_f32(ng_f32_bits(m) - 1);
            x[n++] = sign * ng_bits_f32(ng_f32_bits(m) + 1);
        }
    }
    long bad = narrow_mismatches(x, n, t);
    NG_TEST(bad == 0, "f32 -> %s at %lld midpoints and their neighbours: %ld differ",
            ng_dtype_name(t), (long long)n, bad);
    free(x);
}

/* A prime stride through all 2^32 patterns (NaNs, infinities, subnormals, overflow included),
 * then random patterns and the special values. */
static void test_patterns(ng_dtype t) {
    int64_t n = (int64_t)(0x100000000ull / 4099) + 1;
    float *x = malloc((size_t)n * sizeof(float));
    uint32_t start = rand32() % 4099;
    for (int64_t i = 0; i < n; i++) x[i] = ng_bits_f32((uint32_t)(start + (uint64_t)i * 4099));
    long bad = narrow_mismatches(x, n, t);
    for (int64_t i = 0; i < n; i++) x[i] = ng_bits_f32(rand32());
    bad += narrow_mismatches(x, n, t);
    const uint32_t special[] = {0x7f800000u, 0xff800000u, 0x7f800001u, 0x7fc00000u, 0xffffffffu,
                                0x7fbfffffu, 0x477ff000u, 0x477fefffu, 0x33000000u, 0x33000001u,
                                0x7f7fffffu, 0x00000001u, 0x80000000u, 0x387fe000u, 0x38800000u};
    int ns = (int)(sizeof special / sizeof *special);
    for (int i = 0; i < ns; i++) x[i] = ng_bits_f32(special[i]);
    bad += narrow_mismatches(x, ns, t);
    NG_TEST(bad == 0, "f32 -> %s, %lld strided + %lld random patterns and %d specials: %ld differ",
            ng_dtype_name(t), (long long)n, (long long)n, ns, bad);
    free(x);
}

int main(void) {
    rng_state = (uint32_t)ng_test_seed() | 1u;
    const char *isa = ng_half_vec_isa();
    printf("bulk conversions: %s\n", isa);
    for (int pass = 0; pass < 2; pass++) { /* the CPU's best code, then the scalar fallback */
        ng_half_vec_force_scalar(pass);
        ng_dtype types[2] = {NG_F16, NG_BF16};
        for (int k = 0; k < 2; k++) {
            test_widen(types[k]);
            test_midpoints(types[k]);
            test_patterns(types[k]);
        }
    }
    ng_half_vec_force_scalar(0);
    return ng_test_finish("test_half_vec");
}
