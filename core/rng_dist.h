/* The value of each element of an RNG fill, shared by the CPU and CUDA fills so that both give
 * the same bits. Internal to core (rng_cpu.c, rng_cuda.cu and the RNG tests).
 *
 * The rule, for every dtype: the element's value v is computed in double from its Philox word(s)
 * (layout in rng.h), then stored as v (f64), (float)v (f32), or the f16/bf16 rounding of
 * (float)v (f16, bf16). So an f32 fill is exactly the f64 fill of the same key rounded to float,
 * and an f16/bf16 fill is exactly the f32 fill rounded again.
 *   uniform:   u = ng_rng_u01(word) in (0,1] (24 bits), v = fma(hi - lo, u, lo)
 *   normal:    Box-Muller on u1, u2 = ng_rng_u01 of a word pair: z = sqrt(-2 ln u1) * (cos, sin)
 *              of 2 pi u2, v = fma(std, z, mean). |z| <= sqrt(48 ln 2) = 5.77 since u1 >= 2^-24.
 *   bernoulli: v = 1 if u <= p else 0. With u in (0,1] this is exact: P(v = 1) = floor(p 2^24)
 *              / 2^24, so p = 0 never and p = 1 always gives 1 ("u < p" would lose 2^-24).
 *
 * Why this is bit-identical on both sides: libm's log/cos/sin and CUDA's differ in the last
 * bits, and a 1-ulp difference in double still flips the rounding to float for about one
 * element in 10^8. So log and sincos are our own, built only from IEEE operations that every
 * conforming implementation rounds the same way (+, -, *, /, sqrt, fma, float<->double). The one
 * hazard left is the compiler fusing a*b+c into an fma on one side only (nvcc does by default,
 * gcc does with -mfma). Hence every product that feeds a sum is an explicit fma() here, and no
 * other product is added to anything (m * 0.5 - 1 below is exact, fused or not), so there is
 * nothing left to fuse. Keep it that way when editing. */
#ifndef NG_RNG_DIST_H
#define NG_RNG_DIST_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "rng.h"

/* log(u) for u = ng_rng_u01(w): u = 2^e m with m in [sqrt(1/2), sqrt(2)), then
 * log m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172, by its series to s^21 (truncation ~1e-19
 * relative). Within 1 ulp of the true log over all 2^24 inputs (checked exhaustively against
 * long double libm while writing it; test_rng samples 1e6). */
static inline NG_HOSTDEV double ng_rng_log_u01(uint32_t w) {
    double u = (double)ng_rng_u01(w); /* k 2^-24, k in [1, 2^24]: a normal double */
    uint64_t bits;
    memcpy(&bits, &u, 8);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
    double m;
    memcpy(&m, &bits, 8);
    if (m > 0x1.6a09e667f3bcdp+0) { /* sqrt(2) */
        m = m * 0.5;                /* exact */
        e++;
    }
    double f = m - 1.0; /* exact (Sterbenz) */
    double s = f / (2.0 + f), s2 = s * s;
    double p = 0x1.8618618618618p-5;      /* 1/21 */
    p = fma(p, s2, 0x1.af286bca1af28p-5); /* 1/19 */
    p = fma(p, s2, 0x1.e1e1e1e1e1e1ep-5); /* 1/17 */
    p = fma(p, s2, 0x1.1111111111111p-4); /* 1/15 */
    p = fma(p, s2, 0x1.3b13b13b13b14p-4); /* 1/13 */
    p = fma(p, s2, 0x1.745d1745d1746p-4); /* 1/11 */
    p = fma(p, s2, 0x1.c71c71c71c71cp-4); /* 1/9 */
    p = fma(p, s2, 0x1.2492492492492p-3); /* 1/7 */
    p = fma(p, s2, 0x1.999999999999ap-3); /* 1/5 */
    p = fma(p, s2, 0x1.5555555555555p-2); /* 1/3 */
    double two_s = 2.0 * s, t = s2 * p;
    double log_m = fma(two_s, t, two_s);
    return fma((double)e, 0x1.62e42fefa39efp-1, log_m); /* + e ln 2 */
}

/* cos and sin of 2 pi u for u = ng_rng_u01(w) = k 2^-24. The quadrant comes exactly from the
 * integer k, leaving |x| <= pi/4 for Taylor series to x^20 (truncation ~1e-22). Within 2^-53
 * of the true values over all 2^24 inputs (checked as the log above). */
static inline NG_HOSTDEV void ng_rng_sincos_2pi_u01(uint32_t w, double *c, double *s) {
    uint32_t j = ((w >> 8) + 1u) & 0xffffffu; /* k mod 2^24: 2 pi u mod 2 pi in units of 2^-24 */
    uint32_t q = j >> 22;                     /* quadrant: 2^22 units are pi/2 */
    int32_t r = (int32_t)(j & 0x3fffffu);
    if (r > (1 << 21)) { /* past pi/4: measure from the next quadrant */
        r -= 1 << 22;
        q = (q + 1) & 3u;
    }
    double x = (double)r * 0x1.921fb54442d18p-22; /* r * 2pi / 2^24 */
    double x2 = x * x, x3 = x2 * x;
    double ps = -0x1.2f49b46814157p-57;       /* -1/19! */
    ps = fma(ps, x2, 0x1.952c77030ad4ap-49);  /* 1/17! */
    ps = fma(ps, x2, -0x1.ae7f3e733b81fp-41); /* -1/15! */
    ps = fma(ps, x2, 0x1.6124613a86d09p-33);  /* 1/13! */
    ps = fma(ps, x2, -0x1.ae64567f544e4p-26); /* -1/11! */
    ps = fma(ps, x2, 0x1.71de3a556c734p-19);  /* 1/9! */
    ps = fma(ps, x2, -0x1.a01a01a01a01ap-13); /* -1/7! */
    ps = fma(ps, x2, 0x1.1111111111111p-7);   /* 1/5! */
    ps = fma(ps, x2, -0x1.5555555555555p-3);  /* -1/3! */
    double sn = fma(x3, ps, x);
    double pc = 0x1.e542ba4020225p-62;        /* 1/20! */
    pc = fma(pc, x2, -0x1.6827863b97d97p-53); /* -1/18! */
    pc = fma(pc, x2, 0x1.ae7f3e733b81fp-45);  /* 1/16! */
    pc = fma(pc, x2, -0x1.93974a8c07c9dp-37); /* -1/14! */
    pc = fma(pc, x2, 0x1.1eed8eff8d898p-29);  /* 1/12! */
    pc = fma(pc, x2, -0x1.27e4fb7789f5cp-22); /* -1/10! */
    pc = fma(pc, x2, 0x1.a01a01a01a01ap-16);  /* 1/8! */
    pc = fma(pc, x2, -0x1.6c16c16c16c17p-10); /* -1/6! */
    pc = fma(pc, x2, 0x1.5555555555555p-5);   /* 1/4! */
    pc = fma(pc, x2, -0.5);                   /* -1/2! */
    double cs = fma(x2, pc, 1.0);
    switch (q) {
        case 0:
            *c = cs, *s = sn;
            break;
        case 1:
            *c = -sn, *s = cs;
            break;
        case 2:
            *c = -cs, *s = -sn;
            break;
        default:
            *c = sn, *s = -cs;
            break;
    }
}

/* Two standard normals from the word pair (wa, wb): z[0] = r cos, z[1] = r sin. */
static inline NG_HOSTDEV void ng_rng_normal_pair(uint32_t wa, uint32_t wb, double z[2]) {
    double r = sqrt(-2.0 * ng_rng_log_u01(wa)), c, s;
    ng_rng_sincos_2pi_u01(wb, &c, &s);
    z[0] = r * c;
    z[1] = r * s;
}

/* The four values of one block (elements 4b .. 4b+3) in double. */
static inline NG_HOSTDEV void ng_rng_block_values(ng_rng_dist dist, const uint32_t w[4], double p0,
                                                  double p1, double v[4]) {
    if (dist == NG_DIST_NORMAL) { /* p0 = mean, p1 = std */
        double z[4];
        ng_rng_normal_pair(w[0], w[1], z);
        ng_rng_normal_pair(w[2], w[3], z + 2);
        for (int j = 0; j < 4; j++) v[j] = fma(p1, z[j], p0);
    } else if (dist == NG_DIST_BERNOULLI) { /* p0 = p */
        for (int j = 0; j < 4; j++) v[j] = (double)ng_rng_u01(w[j]) <= p0 ? 1.0 : 0.0;
    } else { /* uniform: p0 = lo, p1 = hi */
        double range = p1 - p0;
        for (int j = 0; j < 4; j++) v[j] = fma(range, (double)ng_rng_u01(w[j]), p0);
    }
}

#endif
