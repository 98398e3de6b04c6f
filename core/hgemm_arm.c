/* ng_hgemm's Arm FP16 tile: 4 rows x 16 columns, each row's 16 fp16 sums in two float16x8
 * registers fed by fmla (by element), widened into eight float32x4 sums at the end of every
 * block. Built for armv8.2-a+fp16 whatever the rest of the build targets; core/hgemm.c runs it
 * only where the kernel reports HWCAP_ASIMDHP and HWCAP_FPHP. Columns past the last full 16
 * take the scalar fp16 instructions (fmadd h), the same arithmetic one lane at a time. */
#include "hgemm_kernels.h"

#include "hgemm.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define ARM_FP16 __attribute__((target("arch=armv8.2-a+fp16")))

ARM_FP16 static inline float16_t ld_h(const ng_f16 *p) {
    float16_t v;
    memcpy(&v, p, 2);
    return v;
}

ARM_FP16 static inline float16x8_t ld_h8(const ng_f16 *p) {
    float16x8_t v;
    memcpy(&v, p, 16);
    return v;
}

ARM_FP16 static void column_scalar(int64_t K, const ng_f16 *A, int64_t lda, int mr, const ng_f16 *B,
                                   int64_t ldb, int c, const ng_f16 *bias, ng_f16 *C, int64_t ldc) {
    for (int r = 0; r < mr; r++) {
        float acc = 0.0f;
        for (int64_t k0 = 0; k0 < K; k0 += NG_HGEMM_BLOCK) {
            int64_t k1 = k0 + NG_HGEMM_BLOCK < K ? k0 + NG_HGEMM_BLOCK : K;
            float16_t h = 0;
            for (int64_t k = k0; k < k1; k++)
                h = vfmah_f16(h, ld_h(A + r * lda + k), ld_h(B + k * ldb + c));
            acc = acc + (float)h;
        }
        if (bias) acc = acc + (float)ld_h(bias + c);
        float16_t out = (float16_t)acc;
        memcpy(C + r * ldc + c, &out, 2);
    }
}

ARM_FP16 static void tile(int64_t K, const ng_f16 *A, int64_t lda, int mr, const ng_f16 *B,
                          int64_t ldb, int nr, const ng_f16 *bias, ng_f16 *C, int64_t ldc) {
    if (nr < 16) {
        for (int c = 0; c < nr; c++) column_scalar(K, A, lda, mr, B, ldb, c, bias, C, ldc);
        return;
    }
    /* Rows past mr repeat the last real row; their sums are dropped. */
    const ng_f16 *a0 = A, *a1 = A + (mr > 1 ? 1 : 0) * lda;
    const ng_f16 *a2 = A + (mr > 2 ? 2 : mr - 1) * lda, *a3 = A + (mr > 3 ? 3 : mr - 1) * lda;
    float32x4_t s[4][4];
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < 4; q++) s[r][q] = vdupq_n_f32(0.0f);
    for (int64_t k0 = 0; k0 < K; k0 += NG_HGEMM_BLOCK) {
        int64_t k1 = k0 + NG_HGEMM_BLOCK < K ? k0 + NG_HGEMM_BLOCK : K;
        float16x8_t h00 = vdupq_n_f16(0), h01 = h00, h10 = h00, h11 = h00;
        float16x8_t h20 = h00, h21 = h00, h30 = h00, h31 = h00;
        for (int64_t k = k0; k < k1; k++) {
            float16x8_t b0 = ld_h8(B + k * ldb), b1 = ld_h8(B + k * ldb + 8);
            float16_t x0 = ld_h(a0 + k), x1 = ld_h(a1 + k), x2 = ld_h(a2 + k), x3 = ld_h(a3 + k);
            h00 = vfmaq_n_f16(h00, b0, x0), h01 = vfmaq_n_f16(h01, b1, x0);
            h10 = vfmaq_n_f16(h10, b0, x1), h11 = vfmaq_n_f16(h11, b1, x1);
            h20 = vfmaq_n_f16(h20, b0, x2), h21 = vfmaq_n_f16(h21, b1, x2);
            h30 = vfmaq_n_f16(h30, b0, x3), h31 = vfmaq_n_f16(h31, b1, x3);
        }
        float16x8_t h[4][2] = {{h00, h01}, {h10, h11}, {h20, h21}, {h30, h31}};
        for (int r = 0; r < 4; r++)
            for (int v = 0; v < 2; v++) {
                s[r][2 * v] = vaddq_f32(s[r][2 * v], vcvt_f32_f16(vget_low_f16(h[r][v])));
                s[r][2 * v + 1] = vaddq_f32(s[r][2 * v + 1], vcvt_high_f32_f16(h[r][v]));
            }
    }
    float32x4_t bq[4];
    if (bias) {
        float16x8_t b0 = ld_h8(bias), b1 = ld_h8(bias + 8);
        bq[0] = vcvt_f32_f16(vget_low_f16(b0)), bq[1] = vcvt_high_f32_f16(b0);
        bq[2] = vcvt_f32_f16(vget_low_f16(b1)), bq[3] = vcvt_high_f32_f16(b1);
    }
    for (int r = 0; r < mr; r++) {
        if (bias)
            for (int q = 0; q < 4; q++) s[r][q] = vaddq_f32(s[r][q], bq[q]);
        float16x8_t o0 = vcvt_high_f16_f32(vcvt_f16_f32(s[r][0]), s[r][1]);
        float16x8_t o1 = vcvt_high_f16_f32(vcvt_f16_f32(s[r][2]), s[r][3]);
        memcpy(C + r * ldc, &o0, 16);
        memcpy(C + r * ldc + 8, &o1, 16);
    }
}

const ng_hgemm_tile_fn ng_hgemm_tile_asimdhp = tile;
#else
const ng_hgemm_tile_fn ng_hgemm_tile_asimdhp = 0;
#endif
