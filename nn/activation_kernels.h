/* Internal to nn/ (activation.c, loss.c, layernorm.c and the other layers that meet half types, and
 * their CUDA twins): the C-callable CUDA entry points of activations and losses,
 * host element access for the CPU loops, and (in .cu files) the shared device helpers. */
#ifndef NG_ACTIVATION_KERNELS_H
#define NG_ACTIVATION_KERNELS_H

#include <math.h>
#include <stdint.h>

#include "core/half.h"
#include "core/rng.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Callers have checked shapes, dtypes and devices: these only compute. */
typedef enum { NG_ACT_RELU = 0, NG_ACT_GELU_ERF, NG_ACT_GELU_TANH } ng_act_kind;

/* sqrt(2/pi) and the cubic coefficient of the tanh GELU (torch's constants). */
#define NG_GELU_TANH_C 0.7978845608028654
#define NG_GELU_TANH_K 0.044715

/* y = f(x) and dx = f'(x) dy, element-wise (y may alias x, dx may alias dy): the CPU twins in
 * activation.c (the layers there and the fused batch norm + ReLU call them) and the CUDA ones. */
void ng_cpu_act_forward(ng_act_kind k, const ng_tensor *x, ng_tensor *y);
void ng_cpu_act_backward(ng_act_kind k, const ng_tensor *x, const ng_tensor *dy, ng_tensor *dx);
void ng_cuda_act_forward(ng_act_kind k, const ng_tensor *x, ng_tensor *y);
void ng_cuda_act_backward(ng_act_kind k, const ng_tensor *x, const ng_tensor *dy, ng_tensor *dx);
/* y_i = x_i * scale where u_i <= keep (u_i the Philox uniform of element i under `key`, as in
 * ng_rng_bernoulli), else 0. The product is taken in double on both twins, so they agree bit for
 * bit. Serves forward (x) and backward (dy) alike. */
void ng_cuda_dropout(const ng_tensor *x, ng_tensor *y, ng_rng_key key, double keep, double scale);
/* Row softmax over rows of `cols` contiguous elements (y may alias x; dx may alias dy). */
void ng_cuda_softmax_rows(const ng_tensor *x, ng_tensor *y, int64_t cols);
void ng_cuda_softmax_rows_backward(const ng_tensor *y, const ng_tensor *dy, ng_tensor *dx,
                                   int64_t cols);

/* What the CUDA cross-entropy hands back to the host. */
typedef struct {
    double loss_sum;   /* sum over rows of each row's loss (the caller divides by N) */
    int64_t correct;   /* rows whose first argmax equals the label */
    int64_t bad_row;   /* first row whose label is outside [0, C), or -1 */
    int64_t bad_label; /* that label */
} ng_xent_result;

/* Cross-entropy over logits [rows, cols] with i32 labels; dlogits (may be NULL) gets
 * (p - target) * grad_scale. Synchronises. */
ng_xent_result ng_cuda_softmax_xent(const ng_tensor *logits, const ng_tensor *labels, double eps,
                                    ng_tensor *dlogits, double grad_scale);
/* sum((y - t)^2); dy (may be NULL) gets 2 (y - t) * grad_scale. Synchronises. */
double ng_cuda_mse(const ng_tensor *y, const ng_tensor *t, ng_tensor *dy, double grad_scale);

#ifdef __cplusplus
}
#endif

#ifndef __CUDACC__
/* Host element access for the CPU twins: they compute in double for every float dtype and round
 * once on store (f16/bf16 through float, as ng_cast does). */
static inline double ng_act_ld(const void *p, ng_dtype dt, int64_t i) {
    switch (dt) {
        case NG_F32:
            return ((const float *)p)[i];
        case NG_F64:
            return ((const double *)p)[i];
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)p)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)p)[i]);
        default:
            return NAN;
    }
}

static inline void ng_act_st(void *p, ng_dtype dt, int64_t i, double v) {
    switch (dt) {
        case NG_F32:
            ((float *)p)[i] = (float)v;
            break;
        case NG_F64:
            ((double *)p)[i] = v;
            break;
        case NG_F16:
            ((ng_f16 *)p)[i] = ng_f32_to_f16((float)v);
            break;
        case NG_BF16:
            ((ng_bf16 *)p)[i] = ng_f32_to_bf16((float)v);
            break;
        default:
            break;
    }
}
#else
/* Device side. Storage types: float, double, and two 16-bit wrappers so that f16 and bf16 (both
 * uint16_t underneath) pick different conversions. Arithmetic runs in ng_acc<T>::type: double
 * for double, float for the rest. */
struct ng_half16 {
    uint16_t bits;
};
struct ng_bhalf16 {
    uint16_t bits;
};

template <typename T>
struct ng_acc {
    typedef float type;
};
template <>
struct ng_acc<double> {
    typedef double type;
};

static __device__ __forceinline__ float ng_ld(const float *p, int64_t i) {
    return p[i];
}
static __device__ __forceinline__ double ng_ld(const double *p, int64_t i) {
    return p[i];
}
static __device__ __forceinline__ float ng_ld(const ng_half16 *p, int64_t i) {
    return ng_f16_to_f32(p[i].bits);
}
static __device__ __forceinline__ float ng_ld(const ng_bhalf16 *p, int64_t i) {
    return ng_bf16_to_f32(p[i].bits);
}
static __device__ __forceinline__ void ng_st(float *p, int64_t i, float v) {
    p[i] = v;
}
static __device__ __forceinline__ void ng_st(double *p, int64_t i, double v) {
    p[i] = v;
}
static __device__ __forceinline__ void ng_st(ng_half16 *p, int64_t i, float v) {
    p[i].bits = ng_f32_to_f16(v);
}
static __device__ __forceinline__ void ng_st(ng_bhalf16 *p, int64_t i, float v) {
    p[i].bits = ng_f32_to_bf16(v);
}
/* Stores a double result with one rounding (double -> float -> half for 16-bit types, which is
 * what the CPU twin does too). */
static __device__ __forceinline__ void ng_st_d(float *p, int64_t i, double v) {
    p[i] = (float)v;
}
static __device__ __forceinline__ void ng_st_d(double *p, int64_t i, double v) {
    p[i] = v;
}
static __device__ __forceinline__ void ng_st_d(ng_half16 *p, int64_t i, double v) {
    p[i].bits = ng_f32_to_f16((float)v);
}
static __device__ __forceinline__ void ng_st_d(ng_bhalf16 *p, int64_t i, double v) {
    p[i].bits = ng_f32_to_bf16((float)v);
}

static __device__ __forceinline__ float ng_exp(float v) {
    return expf(v);
}
static __device__ __forceinline__ double ng_exp(double v) {
    return exp(v);
}
static __device__ __forceinline__ float ng_log(float v) {
    return logf(v);
}
static __device__ __forceinline__ double ng_log(double v) {
    return log(v);
}

/* Warp-wide sum and max by butterfly shuffles: every lane ends with the result. The whole warp
 * must be converged at the call. fmax drops NaN as the CPU's "v > m" scan does. */
template <typename A>
static __device__ __forceinline__ A ng_warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
template <typename A>
static __device__ __forceinline__ A ng_warp_max(A v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Runs the statement with T bound to the storage type of dtype `dt` (a float dtype). */
#define NG_ACT_FLOAT_SWITCH(dt, what, ...)                                                         \
    do {                                                                                           \
        switch (dt) {                                                                              \
            case NG_F32: {                                                                         \
                typedef float T;                                                                   \
                __VA_ARGS__;                                                                       \
                break;                                                                             \
            }                                                                                      \
            case NG_F64: {                                                                         \
                typedef double T;                                                                  \
                __VA_ARGS__;                                                                       \
                break;                                                                             \
            }                                                                                      \
            case NG_F16: {                                                                         \
                typedef ng_half16 T;                                                               \
                __VA_ARGS__;                                                                       \
                break;                                                                             \
            }                                                                                      \
            case NG_BF16: {                                                                        \
                typedef ng_bhalf16 T;                                                              \
                __VA_ARGS__;                                                                       \
                break;                                                                             \
            }                                                                                      \
            default:                                                                               \
                ng_fail("%s: %s is not a floating type", what, ng_dtype_name(dt));                 \
        }                                                                                          \
    } while (0)

/* Threads per block of every kernel here: 8 warps. */
#define NG_ACT_THREADS 256
#endif

#endif
