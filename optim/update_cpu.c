/* CPU twins of the fused optimizer updates: one plain loop per optimizer and storage type over
 * the whole flat buffer, with the element formulas of update_kernels.h. */
#include "optim/update_kernels.h"

#include "core/error.h"

#define SGD_LOOP(T, F32)                                                                           \
    do {                                                                                           \
        T *P = p->data, *B = buf ? buf->data : NULL;                                               \
        const T *G = g->data;                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                          \
            if (K[i] == NG_MASK_GAP) continue;                                                     \
            double b = B ? (double)B[i] : 0.0;                                                     \
            double w =                                                                             \
                ng_sgd_element(a, K[i] == NG_MASK_DECAY, (double)P[i], (double)G[i], &b, F32);     \
            if (B) B[i] = (T)b;                                                                    \
            P[i] = (T)w;                                                                           \
        }                                                                                          \
    } while (0)

void ng_optim_sgd_cpu(ng_sgd_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *buf,
                      const ng_tensor *mask) {
    const uint8_t *K = mask->data;
    int64_t n = p->numel;
    if (p->dtype == NG_F64)
        SGD_LOOP(double, 0);
    else if (p->dtype == NG_F32)
        SGD_LOOP(float, 1);
    else
        ng_fail("sgd: parameters are %s, expected f32 or f64", ng_dtype_name(p->dtype));
}

#define ADAMW_LOOP(T, F32)                                                                         \
    do {                                                                                           \
        T *P = p->data, *M = m->data, *V = v->data;                                                \
        const T *G = g->data;                                                                      \
        for (int64_t i = 0; i < n; i++) {                                                          \
            if (K[i] == NG_MASK_GAP) continue;                                                     \
            double mi = (double)M[i], vi = (double)V[i];                                           \
            double w = ng_adamw_element(a, K[i] == NG_MASK_DECAY, (double)P[i], (double)G[i], &mi, \
                                        &vi, F32);                                                 \
            M[i] = (T)mi;                                                                          \
            V[i] = (T)vi;                                                                          \
            P[i] = (T)w;                                                                           \
        }                                                                                          \
    } while (0)

void ng_optim_adamw_cpu(ng_adamw_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *m,
                        ng_tensor *v, const ng_tensor *mask) {
    const uint8_t *K = mask->data;
    int64_t n = p->numel;
    if (p->dtype == NG_F64)
        ADAMW_LOOP(double, 0);
    else if (p->dtype == NG_F32)
        ADAMW_LOOP(float, 1);
    else
        ng_fail("adamw: parameters are %s, expected f32 or f64", ng_dtype_name(p->dtype));
}
