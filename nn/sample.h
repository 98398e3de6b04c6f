/* Sampling labels from a model's predictive distribution (for K-FAC's true Fisher: a backward
 * pass on labels drawn from the model instead of the data's labels), bit-identical on CPU and
 * GPU. */
#ifndef NG_SAMPLE_H
#define NG_SAMPLE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/rng.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* labels[n] ~ Categorical(softmax(logits[n, :])) for logits [N, C] (f32 or f64) and labels i32
 * [N] on the same device.
 *
 * The rule, shared by the CPU and CUDA twins: row n takes the uniform u = ng_rng_u01(w) in (0, 1]
 * (24 bits) of the Philox word w that an RNG fill of `key` gives element n (block n/4, word n%4,
 * core/rng.h). In double: m = max_j l_j, e_j = exp(l_j - m) by ng_sample_exp below, Z = e_0 + ...
 * + e_{C-1} summed in order, and the label is the first j whose running sum e_0 + ... + e_j
 * reaches u Z (inverse CDF). Since the last running sum is Z itself and u <= 1, a label always
 * exists, and a class with e_j = 0 is never drawn. Probabilities are resolved to 2^-24. A row
 * with NaN or +Inf logits (or all -Inf) gets label 0. The next draw of the same stream should
 * start at key.offset + ng_rng_blocks(N). */
void ng_sample_categorical(const ng_tensor *logits, ng_rng_key key, ng_tensor *labels);

/* ---- the per-row rule, shared by sample.c and sample_cuda.cu -------------------------------- */

/* exp(x) for x <= 0, from IEEE operations alone (+, *, fma, floor, exponent bits), so the host
 * and the device round identically; libm's exp and CUDA's differ in the last bit now and then.
 * x = k ln2 + r, |r| <= ln2/2, exp(r) by its Taylor series to r^13 (truncation ~4e-18), then
 * times 2^k. Every product that feeds a sum is an explicit fma, so no compiler can fuse
 * differently on either side. x <= -708 gives 0 (exp(-708) ~ 3e-308, far below what a 2^-24
 * uniform can resolve). */
static inline NG_HOSTDEV double ng_sample_exp(double x) {
    if (!(x > -708.0)) return 0.0;
    double k = floor(fma(x, 0x1.71547652b82fep+0, 0.5)); /* round(x / ln2), in [-1022, 0] */
    double r = fma(-k, 0x1.62e42fefa39efp-1, x);         /* - k ln2, in two parts */
    r = fma(-k, 0x1.abc9e3b39803fp-56, r);
    double p = 0x1.6124613a86d09p-33; /* 1/13! */
    p = fma(p, r, 0x1.1eed8eff8d898p-29);
    p = fma(p, r, 0x1.ae64567f544e4p-26);
    p = fma(p, r, 0x1.27e4fb7789f5cp-22);
    p = fma(p, r, 0x1.71de3a556c734p-19);
    p = fma(p, r, 0x1.a01a01a01a01ap-16);
    p = fma(p, r, 0x1.a01a01a01a01ap-13);
    p = fma(p, r, 0x1.6c16c16c16c17p-10);
    p = fma(p, r, 0x1.1111111111111p-7);
    p = fma(p, r, 0x1.5555555555555p-5);
    p = fma(p, r, 0x1.5555555555555p-3);
    p = fma(p, r, 0.5);
    p = fma(p, r, 1.0);
    p = fma(p, r, 1.0);
    uint64_t bits = (uint64_t)(int64_t)(k + 1023.0) << 52;
    double scale;
    memcpy(&scale, &bits, 8);
    return p * scale;
}

/* Logit j of a row of f32 (is_f64 = 0) or f64 values, in double. */
static inline NG_HOSTDEV double ng_sample_logit(const void *row, int is_f64, int64_t j) {
    return is_f64 ? ((const double *)row)[j] : (double)((const float *)row)[j];
}

/* The label of one row of C logits for the uniform u in (0, 1]. */
static inline NG_HOSTDEV int32_t ng_sample_row(const void *row, int is_f64, int64_t C, double u) {
    double m = -INFINITY;
    for (int64_t j = 0; j < C; j++) {
        double v = ng_sample_logit(row, is_f64, j);
        if (v != v || v == INFINITY) return 0;
        if (v > m) m = v;
    }
    if (m == -INFINITY) return 0;
    double z = 0.0;
    for (int64_t j = 0; j < C; j++) z += ng_sample_exp(ng_sample_logit(row, is_f64, j) - m);
    double t = u * z, cum = 0.0;
    for (int64_t j = 0; j < C; j++) {
        cum += ng_sample_exp(ng_sample_logit(row, is_f64, j) - m);
        if (cum >= t) return (int32_t)j;
    }
    return (int32_t)(C - 1); /* not reached: the last running sum is z */
}

/* The uniform of row n under key. */
static inline NG_HOSTDEV double ng_sample_u01(ng_rng_key key, int64_t n) {
    uint32_t w[4];
    ng_rng_block(key, (uint64_t)n / 4, w);
    return (double)ng_rng_u01(w[n % 4]);
}

/* CUDA twin (sample_cuda.cu; CUDA builds only). */
void ng_sample_categorical_cuda(const ng_tensor *logits, ng_rng_key key, ng_tensor *labels);

#ifdef __cplusplus
}
#endif
#endif
