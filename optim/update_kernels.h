/* The per-element optimizer updates, shared by the CPU twin (update_cpu.c) and the CUDA twin
 * (update_cuda.cu) so both compute the same formulas. Internal to optim. */
#ifndef NG_UPDATE_KERNELS_H
#define NG_UPDATE_KERNELS_H

#include <math.h>
#include <stdint.h>

#include "core/half.h"
#include "core/tensor.h"

typedef struct {
    double lr, momentum, wd;
    int nesterov, decoupled, first; /* first: the momentum buffer starts as the gradient */
} ng_sgd_args;

typedef struct {
    double lr, beta1, beta2, eps, wd, bc1, bc2; /* bc = 1 - beta^t */
} ng_adamw_args;

/* SGD on one element; T is float or double. `decay` is the element's weight-decay mask. */
#define NG_SGD_ELEMENT(T, p, g, buf, decay, a)                                                     \
    do {                                                                                           \
        T wd_ = (decay) ? (T)(a).wd : (T)0;                                                        \
        T d_ = (g);                                                                                \
        if (!(a).decoupled) d_ = d_ + wd_ * (p);                                                   \
        if ((a).momentum != 0) {                                                                   \
            T b_ = (a).first ? d_ : (T)(a).momentum * (buf) + d_;                                  \
            (buf) = b_;                                                                            \
            d_ = (a).nesterov ? d_ + (T)(a).momentum * b_ : b_;                                    \
        }                                                                                          \
        if ((a).decoupled) (p) = (p) - (T)(a).lr * wd_ * (p);                                      \
        (p) = (p) - (T)(a).lr * d_;                                                                \
    } while (0)

/* AdamW on one element (torch.optim.AdamW). */
#define NG_ADAMW_ELEMENT(T, SQRT, p, g, m, v, decay, a)                                            \
    do {                                                                                           \
        if (decay) (p) = (p) * ((T)1 - (T)(a).lr * (T)(a).wd);                                     \
        (m) = (T)(a).beta1 * (m) + ((T)1 - (T)(a).beta1) * (g);                                    \
        (v) = (T)(a).beta2 * (v) + ((T)1 - (T)(a).beta2) * (g) * (g);                              \
        T denom_ = SQRT(v) / (T)sqrt((a).bc2) + (T)(a).eps;                                        \
        (p) = (p) - (T)((a).lr / (a).bc1) * (m) / denom_;                                          \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
void ng_cpu_sgd(ng_tensor *p, const ng_tensor *g, ng_tensor *buf, const uint8_t *mask,
                ng_sgd_args a);
void ng_cpu_adamw(ng_tensor *p, const ng_tensor *g, ng_tensor *m, ng_tensor *v, const uint8_t *mask,
                  ng_adamw_args a);
void ng_cuda_sgd(ng_tensor *p, const ng_tensor *g, ng_tensor *buf, const uint8_t *mask,
                 ng_sgd_args a);
void ng_cuda_adamw(ng_tensor *p, const ng_tensor *g, ng_tensor *m, ng_tensor *v,
                   const uint8_t *mask, ng_adamw_args a);
#ifdef __cplusplus
}
#endif

#endif
