/* ng_hgemm (core/hgemm.h), native fp16 arithmetic: the scalar model's fma16 rounds to the nearest
 * fp16 (checked by the rounding property, and against the CPU's own fp16 fma where it has one);
 * the model's GEMM stays within the error bound core/hgemm.h derives, against exact sums in
 * double; every native tile this CPU runs gives the model's bits on random shapes with partial
 * tiles, strides and bias, at any thread count; and the fp32 meeting of block sums keeps a sum an
 * fp16 accumulator would stall on. Needs nothing but core/error.c and the hgemm files, so
 * tests/hgemm_cross.sh builds it for aarch64 and runs it under qemu (with and without FP16).
 * NG_HGEMM_EXPECT=<isa> makes the CPU's choice a checked property (the cross script uses it). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hgemm.h"
#include "core/hgemm_kernels.h"
#include "testing.h"

#if defined(__aarch64__)
#include <arm_neon.h>

__attribute__((target("arch=armv8.2-a+fp16"))) static ng_f16 hw_fma16(ng_f16 a, ng_f16 b,
                                                                      ng_f16 c) {
    float16_t fa, fb, fc, fr;
    ng_f16 r;
    memcpy(&fa, &a, 2), memcpy(&fb, &b, 2), memcpy(&fc, &c, 2);
    fr = vfmah_f16(fc, fa, fb);
    memcpy(&r, &fr, 2);
    return r;
}
#endif

static double h2d(ng_f16 h) {
    return (double)ng_f16_to_f32(h);
}

/* A random finite fp16 of magnitude about 2^lo .. 2^hi (subnormals included when lo < -14). */
static ng_f16 rand_f16(int lo, int hi) {
    double v = ng_test_uniform() * ldexp(1.0, ng_test_int(lo, hi));
    return ng_f32_to_f16((float)v);
}

static ng_f16 next_up(ng_f16 h) { /* the next fp16 towards +inf (h finite, not +max) */
    if (h == 0x8000) return 0x0001;
    return (h & 0x8000) ? (ng_f16)(h - 1) : (ng_f16)(h + 1);
}

static ng_f16 next_down(ng_f16 h) {
    if (h == 0x0000) return 0x8001;
    return (h & 0x8000) ? (ng_f16)(h + 1) : (ng_f16)(h - 1);
}

/* The model's fma16 is the nearest fp16 to a*b + c (ties to even), shown by comparing with both
 * neighbours; a*b + c is exact in double for the exponent ranges drawn here. */
static void test_fma16_nearest(void) {
    int bad = 0;
    for (int t = 0; t < 200000; t++) {
        ng_f16 a = rand_f16(-12, 7), b = rand_f16(-12, 7), c = rand_f16(-26, 14);
        double v = h2d(a) * h2d(b) + h2d(c);
        if (fabs(v) >= 65504.0) continue;
        ng_f16 r = ng_hgemm_fma16(a, b, c);
        double er = fabs(h2d(r) - v);
        double eu = fabs(h2d(next_up(r)) - v), ed = fabs(h2d(next_down(r)) - v);
        int ok = er < eu && er < ed;
        if (er == eu || er == ed) ok = (r & 1) == 0; /* a tie: the even significand */
        if (!ok && bad++ < 5)
            fprintf(stderr, "  fma16(%#06x, %#06x, %#06x) = %#06x, exact %.17g\n", a, b, c, r, v);
    }
    NG_TEST(!bad, "fma16 model: %d of 200000 results not the nearest fp16", bad);
#if defined(__aarch64__)
    if (ng_hgemm_supported(NG_HGEMM_ASIMDHP)) { /* against the CPU's own fmadd h, any finite bits */
        int diff = 0;
        for (int t = 0; t < 200000; t++) {
            ng_f16 a = (ng_f16)ng_test_int(0, 0xffff), b = (ng_f16)ng_test_int(0, 0xffff),
                   c = (ng_f16)ng_test_int(0, 0xffff);
            if ((a & 0x7c00) == 0x7c00 || (b & 0x7c00) == 0x7c00 || (c & 0x7c00) == 0x7c00)
                continue;
            ng_f16 r = ng_hgemm_fma16(a, b, c), hw = hw_fma16(a, b, c);
            if (r != hw && ((r & 0x7fff) <= 0x7c00 || (hw & 0x7fff) <= 0x7c00) && diff++ < 5)
                fprintf(stderr, "  fma16(%#06x, %#06x, %#06x): model %#06x, fmadd h %#06x\n", a, b,
                        c, r, hw);
        }
        NG_TEST(!diff, "fma16 model: %d of 200000 results differ from the CPU's fmadd h", diff);
    }
#endif
}

typedef struct {
    int64_t M, N, K, lda, ldb, ldc;
    int bias;
    ng_f16 *A, *B, *b, *C;
} gemm_case;

static void case_new(gemm_case *g) {
    g->M = ng_test_int(1, 13), g->N = ng_test_int(1, 70);
    int pick = ng_test_int(0, 3); /* around block multiples, or anywhere */
    g->K = pick == 0   ? ng_test_int(0, 3)
           : pick == 1 ? NG_HGEMM_BLOCK * ng_test_int(1, 4) + ng_test_int(-1, 1)
                       : ng_test_int(1, 300);
    g->lda = g->K + ng_test_int(0, 3), g->ldb = g->N + ng_test_int(0, 5);
    g->ldc = g->N + ng_test_int(0, 5);
    g->bias = ng_test_int(0, 1);
    int ea = ng_test_int(-8, 2), eb = ng_test_int(-8, 2); /* scales: subnormal products too */
    g->A = malloc(sizeof(ng_f16) * (size_t)(g->M * g->lda + 1));
    g->B = malloc(sizeof(ng_f16) * (size_t)(g->K * g->ldb + 1));
    g->b = malloc(sizeof(ng_f16) * (size_t)g->N);
    g->C = malloc(sizeof(ng_f16) * (size_t)(g->M * g->ldc));
    for (int64_t i = 0; i < g->M * g->lda; i++) g->A[i] = rand_f16(ea - 4, ea);
    for (int64_t i = 0; i < g->K * g->ldb; i++) g->B[i] = rand_f16(eb - 4, eb);
    for (int64_t i = 0; i < g->N; i++) g->b[i] = rand_f16(-2, 2);
}

static void case_free(gemm_case *g) {
    free(g->A), free(g->B), free(g->b), free(g->C);
}

/* Runs the kind now into a fresh C poisoned with 0xfbff (-65504) so unwritten padding shows. */
static ng_f16 *run(const gemm_case *g) {
    ng_f16 *C = malloc(sizeof(ng_f16) * (size_t)(g->M * g->ldc));
    for (int64_t i = 0; i < g->M * g->ldc; i++) C[i] = 0xfbff;
    ng_hgemm(g->M, g->N, g->K, g->A, g->lda, g->B, g->ldb, g->bias ? g->b : NULL, C, g->ldc);
    return C;
}

static double gamma_n(double n, double u) {
    return n * u / (1 - n * u);
}

/* The model's results within core/hgemm.h's bound of the exact sums, padding untouched. */
static int check_bound(const gemm_case *g, const ng_f16 *C, const char *what) {
    const double u16 = ldexp(1, -11), u32 = ldexp(1, -24), sub = ldexp(1, -25);
    int64_t nb = (g->K + NG_HGEMM_BLOCK - 1) / NG_HGEMM_BLOCK;
    double gb = gamma_n(g->K < NG_HGEMM_BLOCK ? (double)g->K : NG_HGEMM_BLOCK, u16);
    int bad = 0;
    for (int64_t m = 0; m < g->M; m++)
        for (int64_t n = 0; n < g->ldc; n++) {
            ng_f16 got = C[m * g->ldc + n];
            if (n >= g->N) {
                if (got != 0xfbff && bad++ < 5)
                    fprintf(stderr, "  padding [%lld,%lld] written\n", (long long)m, (long long)n);
                continue;
            }
            double ref = 0, S = 0, bias = g->bias ? h2d(g->b[n]) : 0;
            for (int64_t k = 0; k < g->K; k++) {
                double p = h2d(g->A[m * g->lda + k]) * h2d(g->B[k * g->ldb + n]);
                ref += p, S += fabs(p);
            }
            ref += bias;
            double e1 =
                gb * S + (double)g->K * sub +
                gamma_n((double)nb + 1, u32) * ((1 + gb) * S + (double)g->K * sub + fabs(bias));
            double tol = e1 + u16 * (fabs(ref) + e1) + sub +
                         gamma_n((double)g->K + 1, ldexp(1, -53)) * (S + fabs(bias));
            if (!(fabs(h2d(got) - ref) <= tol) && bad++ < 5)
                fprintf(stderr, "  %s [%lld,%lld] (K %lld): exact %.9g got %.9g, bound %.3g\n",
                        what, (long long)m, (long long)n, (long long)g->K, ref, h2d(got), tol);
        }
    return bad;
}

static const char *kind_name(int k) {
    static const char *names[] = {"none", "model", "asimdhp", "avx512fp16"};
    return names[k];
}

static void test_gemm(void) {
    int natives[2] = {NG_HGEMM_ASIMDHP, NG_HGEMM_AVX512FP16}, cases = 300;
    int bound_bad = 0, bits_bad[2] = {0, 0}, thread_bad = 0;
    int threads = omp_get_max_threads() > 1 ? omp_get_max_threads() : 1;
    for (int t = 0; t < cases; t++) {
        gemm_case g;
        case_new(&g);
        ng_hgemm_force(NG_HGEMM_MODEL);
        omp_set_num_threads(1);
        ng_f16 *model = run(&g);
        bound_bad += check_bound(&g, model, "model");
        for (int i = 0; i < 2; i++) {
            if (!ng_hgemm_supported(natives[i])) continue;
            ng_hgemm_force(natives[i]);
            for (int th = 1; th <= 3; th += 2) { /* one thread, then three (tiles split) */
                omp_set_num_threads(th);
                ng_f16 *C = run(&g);
                int differs = memcmp(C, model, sizeof(ng_f16) * (size_t)(g.M * g.ldc)) != 0;
                if (differs && bits_bad[i]++ < 3)
                    for (int64_t e = 0; e < g.M * g.ldc; e++)
                        if (C[e] != model[e]) {
                            fprintf(stderr,
                                    "  %s M %lld N %lld K %lld (%d threads): [%lld] model %#06x "
                                    "got %#06x\n",
                                    kind_name(natives[i]), (long long)g.M, (long long)g.N,
                                    (long long)g.K, th, (long long)e, model[e], C[e]);
                            break;
                        }
                free(C);
                if (differs) break; /* one count per case */
            }
        }
        ng_hgemm_force(NG_HGEMM_MODEL);
        omp_set_num_threads(3);
        ng_f16 *C3 = run(&g);
        if (memcmp(C3, model, sizeof(ng_f16) * (size_t)(g.M * g.ldc))) thread_bad++;
        free(C3), free(model);
        case_free(&g);
    }
    omp_set_num_threads(threads);
    ng_hgemm_force(-1);
    NG_TEST(!bound_bad, "model GEMM: %d elements outside the error bound in %d cases", bound_bad,
            cases);
    NG_TEST(!thread_bad, "model GEMM: %d of %d cases changed bits at 3 threads", thread_bad, cases);
    for (int i = 0; i < 2; i++) {
        if (!ng_hgemm_supported(natives[i])) {
            printf("  %s: not on this CPU, not run\n", kind_name(natives[i]));
            continue;
        }
        printf("  %s: held to the model's bits in %d cases at 1 and 3 threads\n",
               kind_name(natives[i]), cases);
        NG_TEST(!bits_bad[i], "%s: %d of %d cases differ from the model", kind_name(natives[i]),
                bits_bad[i], cases);
    }
}

/* 4096 products of 1: an fp16 accumulator stalls at 2048 (2048 + 1 rounds back to even); block
 * sums of 32 meet in f32 and give 4096 exactly, in every kind this CPU runs. */
static void test_long_sum(void) {
    int64_t K = 4096;
    ng_f16 *A = malloc(sizeof(ng_f16) * (size_t)K), *B = malloc(sizeof(ng_f16) * (size_t)K * 17);
    for (int64_t i = 0; i < K; i++) A[i] = 0x3c00;
    for (int64_t i = 0; i < K * 17; i++) B[i] = 0x3c00;
    for (int k = NG_HGEMM_MODEL; k <= NG_HGEMM_AVX512FP16; k++) {
        if (!ng_hgemm_supported(k)) continue;
        ng_hgemm_force(k);
        ng_f16 C[17];
        ng_hgemm(1, 17, K, A, K, B, 17, NULL, C, 17);
        int ok = 1;
        for (int n = 0; n < 17; n++) ok &= h2d(C[n]) == 4096.0;
        NG_TEST(ok, "%s: a sum of 4096 ones gave %g, not 4096", kind_name(k), h2d(C[0]));
    }
    ng_hgemm_force(-1);
    free(A), free(B);
}

static void test_errors(void) {
    if (!ng_hgemm_supported(NG_HGEMM_ASIMDHP))
        NG_TEST_ERROR(ng_hgemm_force(NG_HGEMM_ASIMDHP), "this CPU has no Arm FP16");
    if (!ng_hgemm_supported(NG_HGEMM_AVX512FP16))
        NG_TEST_ERROR(ng_hgemm_force(NG_HGEMM_AVX512FP16), "this CPU has no AVX512-FP16");
    ng_hgemm_force(NG_HGEMM_NONE);
    ng_f16 a = 0x3c00, c;
    NG_TEST_ERROR(ng_hgemm(1, 1, 1, &a, 1, &a, 1, NULL, &c, 1), "no native fp16 arithmetic");
    ng_hgemm_force(NG_HGEMM_MODEL);
    NG_TEST_ERROR(ng_hgemm(1, 2, 1, &a, 1, &a, 1, NULL, &c, 1), "bad shape");
    ng_hgemm_force(-1);
}

int main(void) {
    ng_test_seed();
    const char *expect = getenv("NG_HGEMM_EXPECT");
    printf("  this CPU: %s\n", ng_hgemm_isa());
    if (expect)
        NG_TEST(!strcmp(expect, ng_hgemm_isa()), "the CPU's choice is %s, expected %s",
                ng_hgemm_isa(), expect);
    test_fma16_nearest();
    test_gemm();
    test_long_sum();
    test_errors();
    return ng_test_finish("test_hgemm");
}
