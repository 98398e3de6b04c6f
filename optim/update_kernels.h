/* Internal to optim/: the fused SGD and AdamW updates, with their per-element formulas written
 * once for the host (update_cpu.c) and the device (update_cuda.cu), so both twins round alike. */
#ifndef NG_UPDATE_KERNELS_H
#define NG_UPDATE_KERNELS_H

#include <math.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The u8 mask the optimizer keeps per flat element. Gaps between parameters (model.h aligns every
 * parameter) are skipped, so they stay zero whatever lands in the gradient buffer there. */
enum { NG_MASK_NO_DECAY = 0, NG_MASK_DECAY = 1, NG_MASK_GAP = 2 };

/* Host-side scalars of one SGD step, computed once in double. */
typedef struct {
    double lr;
    double l2;       /* added to the gradient as l2 * w on decayed elements (0 when decoupled) */
    double keep;     /* decoupled decay: w *= keep = 1 - lr * wd on decayed elements (else 1) */
    double momentum; /* 0: no buffer */
    int nesterov;
    int first; /* the buffer starts as the gradient (torch's first step, dampening 0) */
} ng_sgd_args;

/* Host-side scalars of one AdamW step (torch.optim.AdamW, amsgrad off). */
typedef struct {
    double keep; /* 1 - lr * wd on decayed elements */
    double beta1, one_minus_beta1, beta2, one_minus_beta2;
    double step_size; /* lr / (1 - beta1^t) */
    double bc2_sqrt;  /* sqrt(1 - beta2^t) */
    double eps;
} ng_adamw_args;

/* Tensors are flat and of one float dtype (f32 or f64), all on one device, checked by the caller;
 * buf may be NULL when momentum is 0. mask is u8 of the same length. */
void ng_optim_sgd_cpu(ng_sgd_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *buf,
                      const ng_tensor *mask);
void ng_optim_adamw_cpu(ng_adamw_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *m,
                        ng_tensor *v, const ng_tensor *mask);
void ng_optim_sgd_cuda(ng_sgd_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *buf,
                       const ng_tensor *mask);
void ng_optim_adamw_cuda(ng_adamw_args a, ng_tensor *p, const ng_tensor *g, ng_tensor *m,
                         ng_tensor *v, const ng_tensor *mask);

#ifdef __cplusplus
}
#endif

#ifndef __CUDACC__
#include "optim/optimizer.h"
/* What SGD and AdamW share (optimizer.c): the interface head, the config, flat state buffers with
 * the model's offsets and the weight-decay mask. */
typedef struct {
    ng_optimizer head;
    ng_optim_config c;
    ng_tensor state[NG_OPTIM_MAX_STATE];
    const char *state_names[NG_OPTIM_MAX_STATE];
    int nstate;
    ng_tensor mask; /* u8 [numel], NG_MASK_* per flat element */
} ng_first_order;
ng_first_order *ng_first_order_new(ng_model *m, const ng_optim_config *c,
                                   const ng_optimizer_ops *ops, const char *const *state_names,
                                   int nstate);
int ng_first_order_state(ng_optimizer *part, const char **names, ng_tensor **tensors, int cap);
void ng_first_order_destroy(ng_optimizer *part);
/* sgd.c and adamw.c: the constructors, which check the config (usage errors naming the
 * optimizer.* key). */
ng_optimizer *ng_sgd_new(ng_model *m, const ng_optim_config *c);
ng_optimizer *ng_adamw_new(ng_model *m, const ng_optim_config *c);
#endif

/* ---- the element formulas, host and device ------------------------------------------------- */
/* Both twins compute in double whatever the storage type and round once on store; state (momentum,
 * exp_avg, exp_avg_sq) is rounded to the storage type before it is used, as torch uses the stored
 * tensor. On the device every operation is an explicitly rounded intrinsic, so nvcc cannot fuse
 * a*b+c into an FMA that the host (built with -ffp-contract=off) would not: the twins agree bit
 * for bit. */
#ifdef __CUDACC__
#define NG_OPTIM_HD static __host__ __device__ __forceinline__
#else
#define NG_OPTIM_HD static inline
#endif

NG_OPTIM_HD double ng_om(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    return a * b;
#endif
}
NG_OPTIM_HD double ng_oa(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    return a + b;
#endif
}
NG_OPTIM_HD double ng_os(double a, double b) {
#ifdef __CUDA_ARCH__
    return __dsub_rn(a, b);
#else
    return a - b;
#endif
}
NG_OPTIM_HD double ng_od(double a, double b) {
#ifdef __CUDA_ARCH__
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}
NG_OPTIM_HD double ng_osqrt(double a) {
#ifdef __CUDA_ARCH__
    return __dsqrt_rn(a);
#else
    return sqrt(a);
#endif
}
/* The value a store into the state tensor keeps. */
NG_OPTIM_HD double ng_oround(double x, int f32) {
    return f32 ? (double)(float)x : x;
}

/* One SGD element: returns the new weight; *b is the momentum buffer (read unless a.first, written
 * when a.momentum != 0), already rounded to the storage type. */
NG_OPTIM_HD double ng_sgd_element(ng_sgd_args a, int decay, double w, double g, double *b,
                                  int f32) {
    if (decay && a.l2 != 0.0) g = ng_oa(g, ng_om(a.l2, w)); /* torch: grad + wd * param */
    if (decay && a.keep != 1.0) w = ng_om(w, a.keep);
    if (a.momentum != 0.0) {
        double nb = a.first ? g : ng_oa(ng_om(a.momentum, *b), g);
        nb = ng_oround(nb, f32);
        *b = nb;
        g = a.nesterov ? ng_oa(g, ng_om(a.momentum, nb)) : nb;
    }
    return ng_os(w, ng_om(a.lr, g));
}

/* One AdamW element: returns the new weight and updates *m, *v (rounded to the storage type). */
NG_OPTIM_HD double ng_adamw_element(ng_adamw_args a, int decay, double w, double g, double *m,
                                    double *v, int f32) {
    if (decay && a.keep != 1.0) w = ng_om(w, a.keep);
    double nm = ng_oround(ng_oa(ng_om(a.beta1, *m), ng_om(a.one_minus_beta1, g)), f32);
    double nv = ng_oround(ng_oa(ng_om(a.beta2, *v), ng_om(ng_om(a.one_minus_beta2, g), g)), f32);
    *m = nm;
    *v = nv;
    double denom = ng_oa(ng_od(ng_osqrt(nv), a.bc2_sqrt), a.eps);
    return ng_os(w, ng_om(a.step_size, ng_od(nm, denom)));
}

#endif
