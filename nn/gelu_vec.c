/* GELU (erf form) in f32 through glibc's vector math library. The scalar loop spends most of its
 * time in one erf (forward) or one erf and one exp (backward) per element; libmvec's AVX2
 * variants take four doubles per call. The arithmetic around them is the scalar loop's, in
 * double and in its order, rounded once to f32. libmvec's erf and exp are within 2 and 3 ulps
 * (double) of glibc's scalar ones where those are within 1, so a result can differ from the
 * scalar loop's in its last f32 bit where 1 + erf cancels (x below about -3, where the double
 * formula itself has lost most of its digits); no f32 result differed for |x| <= 3 in 20 million
 * samples. Every element, the array's tail included, goes through the same vector call, so the
 * bits do not depend on how the threads split the array. */
#include "nn/gelu_vec.h"

#include <math.h>
#include <string.h>

#include "core/threads.h"

#if defined(NG_HAVE_LIBMVEC) && defined(__x86_64__)
#include <immintrin.h>

/* libmvec's AVX2 entry points (glibc >= 2.35), by their vector ABI names. */
__attribute__((target("avx2"))) __m256d _ZGVdN4v_erf(__m256d x);
__attribute__((target("avx2"))) __m256d _ZGVdN4v_exp(__m256d x);

int ng_gelu_vec_ok(void) {
    return __builtin_cpu_supports("avx2");
}

/* Four elements: 0.5 x (1 + erf(x sqrt(1/2))). */
__attribute__((target("avx2"))) static void fwd4(const float *x, float *y) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x));
    __m256d e = _ZGVdN4v_erf(_mm256_mul_pd(v, _mm256_set1_pd(M_SQRT1_2)));
    __m256d r =
        _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), v), _mm256_add_pd(_mm256_set1_pd(1.0), e));
    _mm_storeu_ps(y, _mm256_cvtpd_ps(r));
}

/* Four elements: dy (0.5 (1 + erf(x sqrt(1/2))) + x exp(-0.5 x x) / sqrt(2 pi)). */
__attribute__((target("avx2"))) static void bwd4(const float *x, const float *dy, float *dx) {
    __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x)), g = _mm256_cvtps_pd(_mm_loadu_ps(dy));
    __m256d e = _ZGVdN4v_erf(_mm256_mul_pd(v, _mm256_set1_pd(M_SQRT1_2)));
    __m256d cdf = _mm256_mul_pd(_mm256_set1_pd(0.5), _mm256_add_pd(_mm256_set1_pd(1.0), e));
    __m256d ex = _ZGVdN4v_exp(_mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(-0.5), v), v));
    __m256d pdf = _mm256_mul_pd(ex, _mm256_set1_pd(0.5 * M_2_SQRTPI * M_SQRT1_2));
    __m256d d = _mm256_add_pd(cdf, _mm256_mul_pd(v, pdf));
    _mm_storeu_ps(dx, _mm256_cvtpd_ps(_mm256_mul_pd(g, d)));
}

void ng_gelu_vec_forward(const float *x, float *y, int64_t n) {
    int64_t full = n / 4;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t b = 0; b < full; b++) fwd4(x + 4 * b, y + 4 * b);
    if (n > 4 * full) { /* the tail, padded with zeros */
        float xs[4] = {0}, ys[4];
        memcpy(xs, x + 4 * full, (size_t)(n - 4 * full) * sizeof(float));
        fwd4(xs, ys);
        memcpy(y + 4 * full, ys, (size_t)(n - 4 * full) * sizeof(float));
    }
}

void ng_gelu_vec_backward(const float *x, const float *dy, float *dx, int64_t n) {
    int64_t full = n / 4;
#pragma omp parallel for schedule(static) if (n >= NG_OMP_MIN)
    for (int64_t b = 0; b < full; b++) bwd4(x + 4 * b, dy + 4 * b, dx + 4 * b);
    if (n > 4 * full) {
        float xs[4] = {0}, gs[4] = {0}, ds[4];
        size_t k = (size_t)(n - 4 * full) * sizeof(float);
        memcpy(xs, x + 4 * full, k);
        memcpy(gs, dy + 4 * full, k);
        bwd4(xs, gs, ds);
        memcpy(dx + 4 * full, ds, k);
    }
}

#else /* no libmvec: activation.c keeps its scalar loops */

int ng_gelu_vec_ok(void) {
    return 0;
}
void ng_gelu_vec_forward(const float *x, float *y, int64_t n) {
    (void)x, (void)y, (void)n;
}
void ng_gelu_vec_backward(const float *x, const float *dy, float *dx, int64_t n) {
    (void)x, (void)dy, (void)dx, (void)n;
}

#endif
