/* CPU twins of the fused optimizer updates. */
#include <math.h>

#include "optim/update_kernels.h"

void ng_cpu_sgd(ng_tensor *p, const ng_tensor *g, ng_tensor *buf, const uint8_t *mask,
                ng_sgd_args a) {
    int64_t n = p->numel;
    if (p->dtype == NG_F64) {
        double *P = p->data, *B = buf ? buf->data : NULL;
        const double *G = g->data;
        double dummy = 0;
        for (int64_t i = 0; i < n; i++) {
            double *b = B ? &B[i] : &dummy;
            NG_SGD_ELEMENT(double, P[i], G[i], *b, mask[i], a);
        }
    } else {
        float *P = p->data, *B = buf ? buf->data : NULL;
        const float *G = g->data;
        float dummy = 0;
        for (int64_t i = 0; i < n; i++) {
            float *b = B ? &B[i] : &dummy;
            NG_SGD_ELEMENT(float, P[i], G[i], *b, mask[i], a);
        }
    }
}

void ng_cpu_adamw(ng_tensor *p, const ng_tensor *g, ng_tensor *m, ng_tensor *v, const uint8_t *mask,
                  ng_adamw_args a) {
    int64_t n = p->numel;
    if (p->dtype == NG_F64) {
        double *P = p->data, *M = m->data, *V = v->data;
        const double *G = g->data;
        for (int64_t i = 0; i < n; i++)
            NG_ADAMW_ELEMENT(double, sqrt, P[i], G[i], M[i], V[i], mask[i], a);
    } else {
        float *P = p->data, *M = m->data, *V = v->data;
        const float *G = g->data;
        for (int64_t i = 0; i < n; i++)
            NG_ADAMW_ELEMENT(float, sqrtf, P[i], G[i], M[i], V[i], mask[i], a);
    }
}
