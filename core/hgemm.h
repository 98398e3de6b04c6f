/* Native fp16 arithmetic for the CPU's half-precision inference: C = A B (+ bias) with A, B and C
 * in fp16, the products and their running sums computed in fp16 by the CPU's own fp16 fused
 * multiply-add (Arm FP16's fmla .8h, x86's AVX512-FP16 vfmadd231ph), chosen once at run time.
 * Where the CPU has neither, ng_hgemm_isa() says "none" and callers keep the f32 path (halves
 * widened by F16C, f32 arithmetic, core/half_vec.h).
 *
 * Each output element is computed as
 *   acc = 0 (f32); for each block of NG_HGEMM_BLOCK consecutive k:
 *       h = +0 (f16); for k in the block: h = fma16(A[m,k], B[k,n], h); acc = acc + f32(h)
 *   C[m,n] = f16(acc + bias[n])
 * fp16 sums run only NG_HGEMM_BLOCK terms long (an fp16 sum of K terms loses about K u16 of the
 * magnitudes, u16 = 2^-11, and can overflow at 65504 long before the result would); the block
 * sums meet in f32. The error against exact arithmetic is then at most
 *   gamma_B(u16) S + gamma_nb(u32) S' + u16 |C| (+ subnormal terms), S = sum_k |A[m,k] B[k,n]|,
 * which tests/test_hgemm.c checks. Every ISA, and the scalar model below (each fma16 formed in
 * double, exactly, then rounded once to fp16), gives the same bits for the same inputs: each
 * element has one order of operations whatever the ISA, tile or thread count. */
#ifndef NG_HGEMM_H
#define NG_HGEMM_H

#include <stdint.h>

#include "half.h"

#define NG_HGEMM_BLOCK 32

typedef enum {
    NG_HGEMM_NONE,       /* no native fp16 arithmetic: callers take the f32 path */
    NG_HGEMM_MODEL,      /* the scalar model of the same arithmetic (tests, and wiring checks on
                            CPUs without fp16 arithmetic) */
    NG_HGEMM_ASIMDHP,    /* Arm FP16 (HWCAP_ASIMDHP + HWCAP_FPHP): 8 fp16 lanes per fmla */
    NG_HGEMM_AVX512FP16, /* x86 AVX512-FP16: 32 fp16 lanes per vfmadd231ph */
} ng_hgemm_kind;

/* What runs: the CPU's fp16 arithmetic where it has some, else NG_HGEMM_NONE. NG_F16_NATIVE in
 * the environment overrides: 0 keeps it off (to compare against the f32 path), model runs the
 * scalar model (the same bits as any native kind, on any CPU, but slow: about 9 ns a
 * multiply-add on one core of the development VM; to check natgrad's use of it where no CPU at
 * hand has fp16 arithmetic); any other value is a usage
 * error naming the variable. Decided on the first call. */
ng_hgemm_kind ng_hgemm_kind_now(void);
/* Its name: "asimdhp", "avx512fp16", "model" or "none" (`natgrad info`, bench reports). */
const char *ng_hgemm_isa(void);
/* Forces a kind (tests): NG_HGEMM_MODEL runs anywhere; a native kind the CPU lacks is refused
 * with a usage error; NG_HGEMM_NONE turns it off; -1 returns to the CPU's choice. */
void ng_hgemm_force(int kind);
/* The kinds this CPU can run (NG_HGEMM_MODEL always): for tests to check each against the model. */
int ng_hgemm_supported(ng_hgemm_kind kind);

/* C[m, n] = f16(sum_k A[m, k] B[k, n] + bias[n]) for m < M, n < N, as above; A and B row-major
 * with leading dimensions lda >= K and ldb >= N, C with ldc >= N; bias may be NULL. A usage
 * error when the kind now is NG_HGEMM_NONE. Splits the output over NG_THREADS threads, never a
 * sum, so the bits do not depend on the thread count. */
void ng_hgemm(int64_t M, int64_t N, int64_t K, const ng_f16 *A, int64_t lda, const ng_f16 *B,
              int64_t ldb, const ng_f16 *bias, ng_f16 *C, int64_t ldc);

/* fp16 a*b + c rounded once (nearest even), the model's step; exposed for the tests. */
ng_f16 ng_hgemm_fma16(ng_f16 a, ng_f16 b, ng_f16 c);

#endif
