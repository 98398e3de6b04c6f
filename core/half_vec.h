/* Bulk fp16/bf16 <-> f32 conversions for the CPU: the scalar code of core/half.h, eight values at
 * a time with F16C (fp16) or AVX2 (bf16) where the CPU has them, chosen once at run time. The
 * results are bit for bit those of ng_f32_to_f16 / ng_f16_to_f32 / ng_f32_to_bf16 /
 * ng_bf16_to_f32 (tests/test_half.c checks every fp16 pattern and the rounding boundaries), so
 * the CPU twins round exactly as the GPU stores whichever path runs. */
#ifndef NG_HALF_VEC_H
#define NG_HALF_VEC_H

#include <stdint.h>

#include "dtype.h"

/* dst[i] = src[i] widened, for t in {NG_F16, NG_BF16}. */
void ng_half_to_f32(const void *src, ng_dtype t, float *dst, int64_t n);
/* dst[i] = src[i] rounded to nearest even, for t in {NG_F16, NG_BF16}. */
void ng_half_from_f32(const float *src, ng_dtype t, void *dst, int64_t n);
/* Which code runs: "f16c+avx2", or "scalar" where the CPU lacks them or NG_HALF_SCALAR=1 is set
 * (to compare the two, as the tests and `natgrad bench --per-layer` do). */
const char *ng_half_vec_isa(void);
/* Forces the scalar code on (1) or back to the CPU's best (0); for tests and benches. */
void ng_half_vec_force_scalar(int on);

#endif
