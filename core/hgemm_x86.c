/* ng_hgemm's AVX512-FP16 tile: 4 rows x 32 columns, each row's 32 fp16 sums in one zmm fed by
 * vfmadd231ph against a broadcast A value, widened (vcvtph2ps, exact) into two zmm of f32 sums at
 * the end of every block; partial tiles mask their loads and stores. Built with the ISA as a
 * function target whatever the rest of the build targets; core/hgemm.c runs it only where CPUID
 * reports AVX512-FP16. No CPU natgrad has been tested on has AVX512-FP16 (Sapphire Rapids and
 * later Xeons do): tests/test_hgemm.c holds it bit for bit to the scalar model wherever one does;
 * the Arm tile has run that test under qemu-aarch64. */
#include "hgemm_kernels.h"

#include "hgemm.h"

#ifdef NG_HGEMM_X86
#include <immintrin.h>

#define X86_FP16 __attribute__((target("avx512fp16,avx512bw,avx512vl,avx512dq,avx512f")))

X86_FP16 static void tile(int64_t K, const ng_f16 *A, int64_t lda, int mr, const ng_f16 *B,
                          int64_t ldb, int nr, const ng_f16 *bias, ng_f16 *C, int64_t ldc) {
    const __mmask32 cols = nr >= 32 ? 0xffffffffu : ((1u << nr) - 1);
    const ng_f16 *a[4];
    for (int r = 0; r < 4; r++) a[r] = A + (r < mr ? r : mr - 1) * lda; /* extra rows dropped */
    __m512 s[4][2];
    for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
    for (int64_t k0 = 0; k0 < K; k0 += NG_HGEMM_BLOCK) {
        int64_t k1 = k0 + NG_HGEMM_BLOCK < K ? k0 + NG_HGEMM_BLOCK : K;
        __m512h h0 = _mm512_setzero_ph(), h1 = h0, h2 = h0, h3 = h0;
        for (int64_t k = k0; k < k1; k++) {
            __m512h b = _mm512_castsi512_ph(_mm512_maskz_loadu_epi16(cols, B + k * ldb));
            h0 = _mm512_fmadd_ph(_mm512_castsi512_ph(_mm512_set1_epi16((short)a[0][k])), b, h0);
            h1 = _mm512_fmadd_ph(_mm512_castsi512_ph(_mm512_set1_epi16((short)a[1][k])), b, h1);
            h2 = _mm512_fmadd_ph(_mm512_castsi512_ph(_mm512_set1_epi16((short)a[2][k])), b, h2);
            h3 = _mm512_fmadd_ph(_mm512_castsi512_ph(_mm512_set1_epi16((short)a[3][k])), b, h3);
        }
        __m512h h[4] = {h0, h1, h2, h3};
        for (int r = 0; r < 4; r++) {
            __m512i bits = _mm512_castph_si512(h[r]);
            s[r][0] = _mm512_add_ps(s[r][0], _mm512_cvtph_ps(_mm512_castsi512_si256(bits)));
            s[r][1] = _mm512_add_ps(s[r][1], _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bits, 1)));
        }
    }
    __m512 b0 = _mm512_setzero_ps(), b1 = b0;
    if (bias) {
        __m512i bb = _mm512_maskz_loadu_epi16(cols, bias);
        b0 = _mm512_cvtph_ps(_mm512_castsi512_si256(bb));
        b1 = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(bb, 1));
    }
    for (int r = 0; r < mr; r++) {
        __m512 lo = bias ? _mm512_add_ps(s[r][0], b0) : s[r][0];
        __m512 hi = bias ? _mm512_add_ps(s[r][1], b1) : s[r][1];
        __m256i olo = _mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256i ohi = _mm512_cvtps_ph(hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512i o = _mm512_inserti64x4(_mm512_castsi256_si512(olo), ohi, 1);
        _mm512_mask_storeu_epi16(C + r * ldc, cols, o);
    }
}

const ng_hgemm_tile_fn ng_hgemm_tile_avx512fp16 = tile;
#else
const ng_hgemm_tile_fn ng_hgemm_tile_avx512fp16 = 0;
#endif
