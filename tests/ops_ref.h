/* Dense-op test helpers used by both tests/test_ops.c (CPU against f64 loops) and its CUDA twin
 * tests/test_ops_gpu.c: unit roundoffs, the GEMM case with its inputs and f64 reference, and
 * exact element writes. */
#ifndef NG_TESTS_OPS_REF_H
#define NG_TESTS_OPS_REF_H

#include <math.h>
#include <stdint.h>

#include "core/half.h"
#include "core/ops.h"
#include "testing.h"

#define U32 (1.0 / 16777216.0)         /* unit roundoff of f32, 2^-24 */
#define U64 (1.0 / 9007199254740992.0) /* f64, 2^-53 */
#define U16 (1.0 / 2048.0)             /* f16, 2^-11 */
#define UBF (1.0 / 256.0)              /* bf16, 2^-8 */
#define F16_TINY (1.0 / 33554432.0)    /* half the f16 subnormal spacing, 2^-25 */

static const ng_dtype float_types[4] = {NG_F32, NG_F64, NG_F16, NG_BF16};

/* Unit roundoff of storing into t, and the absolute error floor of its subnormals. */
static inline double unit(ng_dtype t) {
    return t == NG_F64 ? U64 : t == NG_F16 ? U16 : t == NG_BF16 ? UBF : U32;
}
static inline double tiny(ng_dtype t) {
    return t == NG_F16 ? F16_TINY : 0.0;
}

/* gamma_n = n u / (1 - n u): the bound on n successive roundings (Higham, Lemma 3.1). */
static inline double gamma_n(double n, double u) {
    return n * u / (1.0 - n * u);
}

/* Writes v into element i of a CPU tensor; v must be exact in its type. */
static inline void put(ng_tensor *t, int64_t i, double v) {
    switch (t->dtype) {
        case NG_F32:
            ((float *)t->data)[i] = (float)v;
            break;
        case NG_F64:
            ((double *)t->data)[i] = v;
            break;
        case NG_F16:
            ((ng_f16 *)t->data)[i] = ng_f32_to_f16((float)v);
            break;
        case NG_BF16:
            ((ng_bf16 *)t->data)[i] = ng_f32_to_bf16((float)v);
            break;
        case NG_I32:
            ((int32_t *)t->data)[i] = (int32_t)v;
            break;
        case NG_U8:
            ((uint8_t *)t->data)[i] = (uint8_t)v;
            break;
        default:
            break;
    }
}

/* ---- GEMM ---------------------------------------------------------------------------------- */

typedef struct {
    int ta, tb;
    int64_t m, n, k;
    int64_t batch, ba, bb; /* batch 0: 2-D tensors; ba/bb: batch of A/B (1 broadcasts) */
    ng_dtype in, out;
    double alpha, beta;
} gemm_case;

/* How a case's operands are stored: rank, batch of C, A and B (1 for 2-D), and the rows and
 * columns of A and B as stored (before the transposes). */
typedef struct {
    int nd;
    int64_t bt, ba, bb;
    int64_t ar, ac, br, bc;
} gemm_dims;

static inline gemm_dims gemm_case_dims(const gemm_case *c) {
    gemm_dims d;
    d.nd = c->batch ? 3 : 2;
    d.bt = c->batch ? c->batch : 1, d.ba = c->batch ? c->ba : 1, d.bb = c->batch ? c->bb : 1;
    d.ar = c->ta ? c->k : c->m, d.ac = c->ta ? c->m : c->k;
    d.br = c->tb ? c->n : c->k, d.bc = c->tb ? c->k : c->n;
    return d;
}

/* Fresh host operands for a case: A and B uniform in [-1, 1], and C too when beta != 0; returns
 * how they are stored. */
static inline gemm_dims gemm_case_inputs(const gemm_case *c, ng_tensor *A, ng_tensor *B,
                                         ng_tensor *C) {
    gemm_dims dims = gemm_case_dims(c), *d = &dims;
    int64_t sa[3] = {d->ba, d->ar, d->ac}, sb[3] = {d->bb, d->br, d->bc},
            sc[3] = {d->bt, c->m, c->n};
    *A = ng_tensor_new(c->in, NG_CPU, d->nd, sa + 3 - d->nd, "lhs");
    *B = ng_tensor_new(c->in, NG_CPU, d->nd, sb + 3 - d->nd, "rhs");
    *C = ng_tensor_new(c->out, NG_CPU, d->nd, sc + 3 - d->nd, "out");
    ng_test_fill_uniform(A, -1, 1);
    ng_test_fill_uniform(B, -1, 1);
    if (c->beta != 0)
        ng_test_fill_uniform(C, -1, 1);
    else
        ng_test_poison(C); /* beta == 0 must not read C: its NaN must not reach the result */
    return dims;
}

/* Entry (i, j) of op(A) op(B) in batch p, in f64 from the stored operands a and b, with the sum
 * of the products' magnitudes in *mag (what the rounding error bounds scale with). */
static inline double gemm_ref_entry(const gemm_case *c, const gemm_dims *d, const double *a,
                                    const double *b, int64_t p, int64_t i, int64_t j, double *mag) {
    const double *ap = a + (d->ba > 1 ? p : 0) * d->ar * d->ac;
    const double *bp = b + (d->bb > 1 ? p : 0) * d->br * d->bc;
    double s = 0, m = 0;
    for (int64_t l = 0; l < c->k; l++) {
        double x = c->ta ? ap[l * d->ac + i] : ap[i * d->ac + l];
        double y = c->tb ? bp[j * d->bc + l] : bp[l * d->bc + j];
        s += x * y;
        m += fabs(x * y);
    }
    *mag = m;
    return s;
}

/* Shapes [m, n, k] every GEMM test covers: degenerate, small and odd, and big enough to leave
 * remainders in any blocking. */
static const int64_t gemm_sizes[3][3] = {{1, 1, 1}, {3, 5, 7}, {513, 257, 129}};
/* Batch of A and B in batched cases: both full, or one shared by the batch (stride 0). */
static const int64_t gemm_batches[3][2] = {{3, 3}, {1, 3}, {3, 1}};

/* The f32 cases both twins run: every size and transpose, beta 0 (C poisoned) and beta != 0,
 * alpha != 1 and = 1; then batch 3 with every batch layout. */
static inline void gemm_f32_cases(void (*run)(const gemm_case *)) {
    for (int s = 0; s < 3; s++)
        for (int t = 0; t < 4; t++) {
            const int64_t *sz = gemm_sizes[s];
            gemm_case c = {t & 1, t >> 1, sz[0], sz[1], sz[2], 0, 0, 0, NG_F32, NG_F32, 0.75, 0.0};
            run(&c);
            c.beta = -0.5;
            c.alpha = t == 3 ? 1.0 : -1.25;
            run(&c);
        }
    for (int v = 0; v < 3; v++)
        for (int t = 0; t < 4; t++) {
            const int64_t *bab = gemm_batches[v];
            gemm_case c = {t & 1,  t >> 1, 17,     23,     31,   3,
                           bab[0], bab[1], NG_F32, NG_F32, 0.75, t & 1 ? -0.5 : 0.0};
            run(&c);
        }
}

#endif
