/* fp16 and bf16 storage types and their conversions, round-to-nearest-even, NaN kept quiet.
 * The same inline code runs on the host and in CUDA kernels, so both agree bit for bit. */
#ifndef NG_HALF_H
#define NG_HALF_H

#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define NG_HOSTDEV __host__ __device__
#else
#define NG_HOSTDEV
#endif

typedef uint16_t ng_f16;  /* IEEE 754 binary16 bits */
typedef uint16_t ng_bf16; /* bfloat16 bits: the upper half of a float32 */

static inline NG_HOSTDEV uint32_t ng_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline NG_HOSTDEV float ng_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline NG_HOSTDEV ng_f16 ng_f32_to_f16(float f) {
    uint32_t x = ng_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) /* Inf stays Inf; NaN keeps its top payload bits and is made quiet */
        return (ng_f16)(sign | 0x7c00u | (a > 0x7f800000u ? 0x200u | ((a >> 13) & 0x3ffu) : 0u));
    if (a >= 0x477ff000u) return (ng_f16)(sign | 0x7c00u); /* at or past 65520 rounds to Inf */
    if (a < 0x38800000u) {                                 /* below 2^-14: fp16 subnormal */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e; /* value in units of 2^-24 is m >> shift */
        if (shift > 24) return (ng_f16)sign;
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (ng_f16)(sign | r);
    }
    uint32_t r = (a - 0x38000000u) >> 13, rem = a & 0x1fffu; /* rebias 127 -> 15 */
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;  /* a carry moves the exponent up */
    return (ng_f16)(sign | r);
}

static inline NG_HOSTDEV float ng_f16_to_f32(ng_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) {
        if (m == 0) return ng_bits_f32(sign);
        e = 113; /* normalise the subnormal */
        while (!(m & 0x400u)) {
            m <<= 1;
            e--;
        }
        return ng_bits_f32(sign | (e << 23) | ((m & 0x3ffu) << 13));
    }
    if (e == 31) return ng_bits_f32(sign | 0x7f800000u | (m << 13));
    return ng_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

static inline NG_HOSTDEV ng_bf16 ng_f32_to_bf16(float f) {
    uint32_t x = ng_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (ng_bf16)((x >> 16) | 0x40u);
    return (ng_bf16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline NG_HOSTDEV float ng_bf16_to_f32(ng_bf16 b) {
    return ng_bits_f32((uint32_t)b << 16);
}

#endif
