/* The per-ISA tiles behind ng_hgemm (core/hgemm.c): each computes an mr x nr block of C
 * (mr <= NG_HGEMM_MR, nr <= its own width) with exactly the arithmetic core/hgemm.h spells out.
 * A points at the block's first row, B and bias at its first column, C at its first element. */
#ifndef NG_HGEMM_KERNELS_H
#define NG_HGEMM_KERNELS_H

#include <stdint.h>

#include "half.h"

#define NG_HGEMM_MR 4

typedef void (*ng_hgemm_tile_fn)(int64_t K, const ng_f16 *A, int64_t lda, int mr, const ng_f16 *B,
                                 int64_t ldb, int nr, const ng_f16 *bias, ng_f16 *C, int64_t ldc);

/* Arm FP16, 16 columns per tile; NULL unless built for aarch64. */
extern const ng_hgemm_tile_fn ng_hgemm_tile_asimdhp;
#define NG_HGEMM_NR_ASIMDHP 16
/* AVX512-FP16 needs a compiler that knows it (GCC 12, Clang 14). */
#if defined(__x86_64__) &&                                                                         \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && __GNUC__ >= 12))
#define NG_HGEMM_X86 1
#endif
/* AVX512-FP16, 32 columns per tile; NULL unless built for x86-64 by such a compiler. */
extern const ng_hgemm_tile_fn ng_hgemm_tile_avx512fp16;
#define NG_HGEMM_NR_AVX512FP16 32

#endif
