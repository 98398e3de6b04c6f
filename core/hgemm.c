/* ng_hgemm's dispatch, its scalar model and the driver that splits C into tiles. */
#include "hgemm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hgemm_kernels.h"
#include "threads.h"

#if defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

/* d rounded once to fp16, nearest even, where d holds an fp16 a*b + c exactly: a*b has at most
 * 22 significant bits and c 11, both multiples of 2^-48 below 2^33, so their sum fits double's 53
 * unless one term is too small to reach the fp16 rounding point, and then the larger one decides
 * (c is an fp16 value, never a tie; a product's tie is kept). d goes to float rounded to odd
 * (truncated, the last bit set when anything was cut off), which keeps 24 >= 11 + 2 bits, so the
 * nearest-even rounding to fp16 that follows is the one rounding of d (the classic round-to-odd
 * argument), with a float conversion and a few integer operations. */
static ng_f16 round_f16(double d) {
    float f = (float)d; /* nearest even */
    if ((double)f != d && d == d) {
        if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
        f = ng_bits_f32(ng_f32_bits(f) | 1u);
    }
    return ng_f32_to_f16(f);
}

ng_f16 ng_hgemm_fma16(ng_f16 a, ng_f16 b, ng_f16 c) {
    double p = (double)ng_f16_to_f32(a) * (double)ng_f16_to_f32(b); /* exact */
    /* an exact zero sum of opposite-signed terms is +0 in round-to-nearest, as in double */
    return round_f16(p + (double)ng_f16_to_f32(c));
}

/* The model tile: core/hgemm.h's arithmetic spelled out one element at a time. */
static void tile_model(int64_t K, const ng_f16 *A, int64_t lda, int mr, const ng_f16 *B,
                       int64_t ldb, int nr, const ng_f16 *bias, ng_f16 *C, int64_t ldc) {
    for (int r = 0; r < mr; r++)
        for (int c = 0; c < nr; c++) {
            float acc = 0.0f;
            for (int64_t k0 = 0; k0 < K; k0 += NG_HGEMM_BLOCK) {
                int64_t k1 = k0 + NG_HGEMM_BLOCK < K ? k0 + NG_HGEMM_BLOCK : K;
                ng_f16 h = 0;
                for (int64_t k = k0; k < k1; k++)
                    h = ng_hgemm_fma16(A[r * lda + k], B[k * ldb + c], h);
                acc = acc + ng_f16_to_f32(h);
            }
            if (bias) acc = acc + ng_f16_to_f32(bias[c]);
            C[r * ldc + c] = ng_f32_to_f16(acc);
        }
}

static int cpu_has(ng_hgemm_kind kind) {
    switch (kind) {
        case NG_HGEMM_NONE:
        case NG_HGEMM_MODEL:
            return 1;
        case NG_HGEMM_ASIMDHP:
#if defined(__aarch64__) && defined(__linux__)
            return ng_hgemm_tile_asimdhp && (getauxval(AT_HWCAP) & HWCAP_ASIMDHP) &&
                   (getauxval(AT_HWCAP) & HWCAP_FPHP);
#else
            return 0;
#endif
        case NG_HGEMM_AVX512FP16:
#ifdef NG_HGEMM_X86
            __builtin_cpu_init();
            return ng_hgemm_tile_avx512fp16 && __builtin_cpu_supports("avx512fp16") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#else
            return 0;
#endif
    }
    return 0;
}

int ng_hgemm_supported(ng_hgemm_kind kind) {
    return cpu_has(kind);
}

static int chosen = -1;

ng_hgemm_kind ng_hgemm_kind_now(void) {
    if (chosen < 0) {
        const char *e = getenv("NG_F16_NATIVE");
        chosen = NG_HGEMM_NONE;
        if (e && !strcmp(e, "model")) {
            chosen = NG_HGEMM_MODEL;
        } else {
            NG_CHECK(!e || !strcmp(e, "0") || !strcmp(e, "1"),
                     "NG_F16_NATIVE=%s: expected 0 (off), 1 (the CPU's fp16 arithmetic, the "
                     "default) or model (its scalar model, slow)",
                     e);
            if (e && !strcmp(e, "0")) return (ng_hgemm_kind)chosen;
            if (cpu_has(NG_HGEMM_ASIMDHP))
                chosen = NG_HGEMM_ASIMDHP;
            else if (cpu_has(NG_HGEMM_AVX512FP16))
                chosen = NG_HGEMM_AVX512FP16;
        }
    }
    return (ng_hgemm_kind)chosen;
}

const char *ng_hgemm_isa(void) {
    static const char *names[] = {"none", "model", "asimdhp", "avx512fp16"};
    return names[ng_hgemm_kind_now()];
}

void ng_hgemm_force(int kind) {
    NG_CHECK(kind >= -1 && kind <= NG_HGEMM_AVX512FP16, "ng_hgemm_force: no kind %d", kind);
    NG_CHECK(kind < 0 || cpu_has((ng_hgemm_kind)kind),
             "ng_hgemm_force: this CPU has no %s arithmetic",
             kind == NG_HGEMM_ASIMDHP ? "Arm FP16" : "AVX512-FP16");
    chosen = kind;
}

void ng_hgemm(int64_t M, int64_t N, int64_t K, const ng_f16 *A, int64_t lda, const ng_f16 *B,
              int64_t ldb, const ng_f16 *bias, ng_f16 *C, int64_t ldc) {
    ng_hgemm_tile_fn tile = NULL;
    int nr = 0;
    switch (ng_hgemm_kind_now()) {
        case NG_HGEMM_NONE:
            break;
        case NG_HGEMM_MODEL:
            tile = tile_model, nr = 16;
            break;
        case NG_HGEMM_ASIMDHP:
            tile = ng_hgemm_tile_asimdhp, nr = NG_HGEMM_NR_ASIMDHP;
            break;
        case NG_HGEMM_AVX512FP16:
            tile = ng_hgemm_tile_avx512fp16, nr = NG_HGEMM_NR_AVX512FP16;
            break;
    }
    NG_CHECK(tile, "ng_hgemm: this CPU has no native fp16 arithmetic (ng_hgemm_isa() is \"none\")");
    NG_CHECK(M >= 0 && N >= 0 && K >= 0 && lda >= K && ldb >= N && ldc >= N,
             "ng_hgemm: bad shape M=%lld N=%lld K=%lld lda=%lld ldb=%lld ldc=%lld", (long long)M,
             (long long)N, (long long)K, (long long)lda, (long long)ldb, (long long)ldc);
    int64_t mt = (M + NG_HGEMM_MR - 1) / NG_HGEMM_MR, nt = (N + nr - 1) / nr;
    /* Consecutive tiles share a column panel of B, so a thread's static chunk reads each panel
     * from its cache while it walks down A. */
#pragma omp parallel for schedule(static) if (M * N * (K + 1) >= NG_OMP_MIN)
    for (int64_t t = 0; t < mt * nt; t++) {
        int64_t i = (t % mt) * NG_HGEMM_MR, j = (t / mt) * nr;
        int mr = (int)(M - i < NG_HGEMM_MR ? M - i : NG_HGEMM_MR);
        int nrr = (int)(N - j < nr ? N - j : nr);
        tile(K, A + i * lda, lda, mr, B + j, ldb, nrr, bias ? bias + j : NULL, C + i * ldc + j,
             ldc);
    }
}
