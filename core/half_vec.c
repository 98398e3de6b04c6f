/* Bulk half conversions: F16C's vcvtph2ps / vcvtps2ph for fp16 (IEEE round to nearest even,
 * subnormals kept, the same quiet-NaN payloads as core/half.h), AVX2 integer code for bf16. */
#include "half_vec.h"

#include <stdlib.h>
#include <string.h>

#include "half.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define NG_X86 1

__attribute__((target("avx2,f16c"))) static void f16_to_f32_x86(const ng_f16 *s, float *d,
                                                                int64_t n) {
    const __m128i abs_mask = _mm_set1_epi16(0x7fff), inf = _mm_set1_epi16(0x7c00);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + i));
        /* vcvtph2ps quiets a signalling NaN; core/half.h (and so the GPU) keeps its bits, so
         * eight values holding a NaN take the scalar code. */
        if (_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, abs_mask), inf)))
            for (int k = 0; k < 8; k++) d[i + k] = ng_f16_to_f32(s[i + k]);
        else
            _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) d[i] = ng_f16_to_f32(s[i]);
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_x86(const float *s, ng_f16 *d,
                                                                int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = ng_f32_to_f16(s[i]);
}

__attribute__((target("avx2"))) static void bf16_to_f32_x86(const ng_bf16 *s, float *d, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
        _mm256_storeu_si256((__m256i *)(d + i), _mm256_slli_epi32(w, 16));
    }
    for (; i < n; i++) d[i] = ng_bf16_to_f32(s[i]);
}

/* Round to nearest even by adding 0x7fff plus the kept lowest bit, as ng_f32_to_bf16; a NaN is
 * truncated and made quiet (0x40 in the upper half) instead, since the addition could carry it
 * into an infinity. */
__attribute__((target("avx2"))) static void f32_to_bf16_x86(const float *s, ng_bf16 *d, int64_t n) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i quiet = _mm256_set1_epi32(0x400000);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(s + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), one);
        __m256i rounded = _mm256_add_epi32(x, _mm256_add_epi32(bias, lsb));
        __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
        __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(x, quiet), nan);
        r = _mm256_srli_epi32(r, 16); /* eight 16-bit results in the low halves of the lanes */
        __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
        _mm_storeu_si128((__m128i *)(d + i), _mm_packus_epi32(lo, hi));
    }
    for (; i < n; i++) d[i] = ng_f32_to_bf16(s[i]);
}
#endif

static int mode = -1; /* -1: not chosen yet, 0: scalar, 1: x86 vector code */

static int vector(void) {
    if (mode < 0) {
        const char *e = getenv("NG_HALF_SCALAR");
        int want = !(e && !strcmp(e, "1"));
#ifdef NG_X86
        __builtin_cpu_init();
        mode = want && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#else
        (void)want;
        mode = 0;
#endif
    }
    return mode;
}

void ng_half_vec_force_scalar(int on) {
    mode = -1;
    if (on) mode = 0;
}

const char *ng_half_vec_isa(void) {
    return vector() ? "f16c+avx2" : "scalar";
}

void ng_half_to_f32(const void *src, ng_dtype t, float *dst, int64_t n) {
#ifdef NG_X86
    if (vector()) {
        if (t == NG_F16)
            f16_to_f32_x86(src, dst, n);
        else
            bf16_to_f32_x86(src, dst, n);
        return;
    }
#endif
    if (t == NG_F16)
        for (int64_t i = 0; i < n; i++) dst[i] = ng_f16_to_f32(((const ng_f16 *)src)[i]);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = ng_bf16_to_f32(((const ng_bf16 *)src)[i]);
}

void ng_half_from_f32(const float *src, ng_dtype t, void *dst, int64_t n) {
#ifdef NG_X86
    if (vector()) {
        if (t == NG_F16)
            f32_to_f16_x86(src, dst, n);
        else
            f32_to_bf16_x86(src, dst, n);
        return;
    }
#endif
    if (t == NG_F16)
        for (int64_t i = 0; i < n; i++) ((ng_f16 *)dst)[i] = ng_f32_to_f16(src[i]);
    else
        for (int64_t i = 0; i < n; i++) ((ng_bf16 *)dst)[i] = ng_f32_to_bf16(src[i]);
}
