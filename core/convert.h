/* Conversions between all dtypes, compiled for host and device and shared by the CPU and CUDA
 * twins of the casts, so both agree bit for bit. Internal to core (and comm/'s reductions).
 * Every dtype widens to double exactly, so any cast is "widen, then round once". NaN payloads
 * are moved by hand because hardware differs on them (x86 keeps them, GPUs may not). */
#ifndef NG_CONVERT_H
#define NG_CONVERT_H

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"
#include "half.h"

static inline NG_HOSTDEV double cv_f32_to_f64(float f) {
    uint32_t u = ng_f32_bits(f);
    if ((u & 0x7fffffffu) <= 0x7f800000u) return (double)f;
    uint64_t b =
        (uint64_t)(u & 0x80000000u) << 32 | 0x7ff8000000000000ull | (uint64_t)(u & 0x7fffffu) << 29;
    double d;
    memcpy(&d, &b, 8);
    return d;
}

static inline NG_HOSTDEV float cv_f64_to_f32(double d) {
    if (d == d) return (float)d;
    uint64_t b;
    memcpy(&b, &d, 8);
    return ng_bits_f32(((uint32_t)(b >> 32) & 0x80000000u) | 0x7fc00000u |
                       ((uint32_t)(b >> 29) & 0x3fffffu));
}

/* f64 -> f32 rounded to odd (truncate, then set the last bit when inexact). Rounding that again
 * to f16 or bf16 gives the correctly rounded result, which plain rounding through f32 does not
 * (a value just above a half-way point can land on it and then round to even). */
static inline NG_HOSTDEV float cv_f64_to_f32_odd(double d) {
    float f = cv_f64_to_f32(d);
    double back = (double)f;
    if (d != d || back == d) return f;
    uint32_t u = ng_f32_bits(f);
    if (fabs(back) > fabs(d)) u--; /* one step toward zero: the truncated value */
    return ng_bits_f32(u | 1u);
}

/* Floating to integer truncates toward zero like C, and is defined where C is not: NaN gives 0
 * and out-of-range values saturate (i32 at INT32_MIN/MAX, u8 at 0/255). Integer to integer
 * saturates the same way, since it goes through double. */
static inline NG_HOSTDEV int32_t cv_f64_to_i32(double d) {
    if (d != d) return 0;
    if (d <= -2147483648.0) return INT32_MIN;
    if (d >= 2147483647.0) return INT32_MAX;
    return (int32_t)d;
}

static inline NG_HOSTDEV uint8_t cv_f64_to_u8(double d) {
    if (!(d > 0.0)) return 0; /* NaN too */
    if (d >= 255.0) return 255;
    return (uint8_t)d;
}

static inline NG_HOSTDEV double cv_load(const void *p, ng_dtype t, int64_t i) {
    switch (t) {
        case NG_F32:
            return cv_f32_to_f64(((const float *)p)[i]);
        case NG_F64:
            return ((const double *)p)[i];
        case NG_F16:
            return cv_f32_to_f64(ng_f16_to_f32(((const ng_f16 *)p)[i]));
        case NG_BF16:
            return cv_f32_to_f64(ng_bf16_to_f32(((const ng_bf16 *)p)[i]));
        case NG_I32:
            return (double)((const int32_t *)p)[i];
        case NG_U8:
            return (double)((const uint8_t *)p)[i];
        default:
            return 0.0;
    }
}

static inline NG_HOSTDEV void cv_store(void *p, ng_dtype t, int64_t i, double v) {
    switch (t) {
        case NG_F32:
            ((float *)p)[i] = cv_f64_to_f32(v);
            break;
        case NG_F64:
            ((double *)p)[i] = v;
            break;
        case NG_F16:
            ((ng_f16 *)p)[i] = ng_f32_to_f16(cv_f64_to_f32_odd(v));
            break;
        case NG_BF16:
            ((ng_bf16 *)p)[i] = ng_f32_to_bf16(cv_f64_to_f32_odd(v));
            break;
        case NG_I32:
            ((int32_t *)p)[i] = cv_f64_to_i32(v);
            break;
        case NG_U8:
            ((uint8_t *)p)[i] = cv_f64_to_u8(v);
            break;
        default:
            break;
    }
}

/* The bits of v converted to t, as cv_store would write them, in the low bytes (little-endian).
 * A union, not a pointer cast, so the compiler's aliasing rules hold. */
static inline NG_HOSTDEV uint64_t cv_bits(ng_dtype t, double v) {
    union {
        uint64_t u;
        double d;
        float f;
        uint16_t h;
        int32_t i;
        uint8_t b;
    } e;
    e.u = 0;
    switch (t) {
        case NG_F32:
            e.f = cv_f64_to_f32(v);
            break;
        case NG_F64:
            e.d = v;
            break;
        case NG_F16:
            e.h = ng_f32_to_f16(cv_f64_to_f32_odd(v));
            break;
        case NG_BF16:
            e.h = ng_f32_to_bf16(cv_f64_to_f32_odd(v));
            break;
        case NG_I32:
            e.i = cv_f64_to_i32(v);
            break;
        case NG_U8:
            e.b = cv_f64_to_u8(v);
            break;
        default:
            break;
    }
    return e.u;
}

/* f32, f16 and bf16 all widen to f32 exactly: casts among them need no double. */
static inline NG_HOSTDEV int cv_is_f32_family(ng_dtype t) {
    return t == NG_F32 || t == NG_F16 || t == NG_BF16;
}

static inline NG_HOSTDEV float cv_load_f32(const void *p, ng_dtype t, int64_t i) {
    switch (t) {
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)p)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)p)[i]);
        default:
            return ((const float *)p)[i];
    }
}

static inline NG_HOSTDEV void cv_store_f32(void *p, ng_dtype t, int64_t i, float v) {
    switch (t) {
        case NG_F16:
            ((ng_f16 *)p)[i] = ng_f32_to_f16(v);
            break;
        case NG_BF16:
            ((ng_bf16 *)p)[i] = ng_f32_to_bf16(v);
            break;
        default:
            ((float *)p)[i] = v;
            break;
    }
}

#endif
