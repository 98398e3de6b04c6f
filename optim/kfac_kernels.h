/* Internal to optim/kfac*.c and optim/kfac_cuda.cu: K-FAC's per-layer state, shared by the
 * factor, inverse and preconditioning files, and the small element-wise kernels that core has no
 * op for (CPU twins in kfac_cpu.c, CUDA twins in kfac_cuda.cu, chosen by device). */
#ifndef NG_KFAC_KERNELS_H
#define NG_KFAC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element-wise kernels: callers have checked dtypes (f32/f64), devices and shapes ----------
 */

/* F = V (first) or F = keep * F + w * V, where V [d,d] is S [K,K] when s is NULL, else the
 * bordered matrix [[S, s], [s^T, corner]] with s [K] and d = K + 1. Computed in double. */
void ng_kfac_fold(ng_tensor *F, const ng_tensor *S, const ng_tensor *s, double corner, double keep,
                  double w, int first);
/* T [m,n] element-wise divided by the damped eigenvalue products: with dG [m] and dA [n] clamped
 * at 0, factored: (dG_i + gG)(dA_j + gA); sum: dG_i dA_j + gamma. Computed in double. */
void ng_kfac_eig_divide(ng_tensor *T, const ng_tensor *dG, const ng_tensor *dA, int sum_mode,
                        double gG, double gA, double gamma);
/* d[i] = A[i,i] for A [n,n]. */
void ng_kfac_diag(const ng_tensor *A, ng_tensor *d);
/* rows x cols elements of size es from src (row length src_ld) to dst (row length dst_ld), both
 * on `dev`. */
void ng_kfac_copy2d(ng_device dev, void *dst, int64_t dst_ld, const void *src, int64_t src_ld,
                    int64_t rows, int64_t cols, size_t es);

/* The CUDA twins (CUDA builds only). */
void ng_kfac_fold_cuda(ng_tensor *F, const ng_tensor *S, const ng_tensor *s, double corner,
                       double keep, double w, int first);
void ng_kfac_eig_divide_cuda(ng_tensor *T, const ng_tensor *dG, const ng_tensor *dA, int sum_mode,
                             double gG, double gA, double gamma);
void ng_kfac_diag_cuda(const ng_tensor *A, ng_tensor *d);
void ng_kfac_copy2d_cuda(void *dst, int64_t dst_ld, const void *src, int64_t src_ld, int64_t rows,
                         int64_t cols, size_t es);

#ifdef __cplusplus
}
#endif

/* ---- the state shared by kfac.c, kfac_factors.c and kfac_precondition.c (host C only) -------- */
#ifndef __CUDACC__
#include "nn/conv.h"
#include "nn/model.h"
#include "optim/kfac.h"

enum { NG_KFAC_LINEAR = 0, NG_KFAC_CONV = 1 };
/* Slots of a layer's meta tensor (f64, host), saved with the state so a resume restores them. */
/* Factors of at most this side are eigendecomposed together, one batched call per side: on
 * the GPU that is cuSOLVER's syevjBatched (its limit is 32), instead of one launch-bound Xsyevd
 * per factor (e.g. the 16x16 G factors of a 16-channel 3D-CNN). */
#define NG_KFAC_SMALL 32

enum { NG_KFAC_META_A = 0, NG_KFAC_META_G, NG_KFAC_META_INV, NG_KFAC_META_PI, NG_KFAC_META_N };

typedef struct {
    ng_layer *layer;
    int kind;
    int64_t in, out; /* weight viewed as [out, in]; a conv's in = C * prod(kernel) */
    int bias;
    int64_t da; /* in + bias */
    ng_conv_geom geom;
    ng_tensor A, G;           /* running factors [da,da], [out,out] */
    ng_tensor S, s, B;        /* this step's sums: S [in,in], s [in,1] (bias), B [out,out] for G */
    double corner;            /* this step's bias-bias entry of A */
    int na, ng;               /* passes that contributed to S and B this step */
    ng_tensor QA, dA, QG, dG; /* eigen: A = QA diag(dA) QA^T, G likewise */
    ng_tensor Ainv, Ginv;     /* Cholesky: damped inverses */
    ng_tensor meta;           /* f64 host [NG_KFAC_META_N] */
    int preconditioned;       /* this step, for the KL clip */
    /* Eigenpairs of a small factor computed ahead in a batched call (ng_kfac_small_eigh), used
     * by the next ng_kfac_update_inverse instead of its own ng_eigh; views, valid that step. */
    int pre_a, pre_g;
    ng_tensor pre_qa, pre_wa, pre_qg, pre_wg;
    char names[9][112]; /* state names */
} ng_kfac_layer;

struct ng_kfac {
    ng_model *m;
    ng_kfac_config c;
    ng_kfac_layer *layers;
    int n;
    int *slot_of; /* layer->index -> registered slot, or -1 */
    int nindex;
    ng_observer obs;
    int64_t batch_step, N;
    double loss_scale; /* the backward's dy carry this factor (mixed precision); G removes it */
    int cap_a, cap_g;
    size_t chunk_bytes;
    void *scratch; /* device scratch for captures and preconditioning, grown on demand */
    size_t scratch_bytes;
    ng_tensor ones[4]; /* a ones vector per float dtype (f32, f64, f16, bf16), grown on demand */
    int batch_small;   /* group factors of side <= NG_KFAC_SMALL into batched eigh calls */
    ng_tensor small_q[NG_KFAC_SMALL + 1], small_w[NG_KFAC_SMALL + 1]; /* per side, that step */
    struct ng_kfac_dist *dist; /* NULL: one process (kfac_dist.c) */
};

/* Scratch pieces carved from one buffer start at multiples of this, aligned for cuBLAS. */
/* The most bytes a conv layer's patch rows take at once when A is formed. */
#define NG_KFAC_CHUNK_BYTES ((size_t)64 << 20)
static inline size_t ng_kfac_aligned(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}
/* Device scratch of at least `bytes`; valid until the next call. */
void *ng_kfac_scratch(ng_kfac *k, size_t bytes);
/* A [n,1] tensor of ones in dtype dt on the model's device. */
ng_tensor ng_kfac_ones(ng_kfac *k, ng_dtype dt, int64_t n);

/* kfac_factors.c: the observer's work and the fold into running averages. */
void ng_kfac_capture_a(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *x);
void ng_kfac_capture_g(ng_kfac *k, ng_kfac_layer *L, const ng_tensor *dy);
void ng_kfac_fold_layer(ng_kfac *k, ng_kfac_layer *L);

/* kfac_precondition.c */
void ng_kfac_update_inverse(ng_kfac *k, ng_kfac_layer *L, double gamma);
/* Before the inverse updates of a step (eigen mode): the small factors of the layers flagged in
 * `due` in batched ng_eigh calls grouped by side; sets the layers' pre_* views. Entries whose
 * decomposition failed are left to the per-layer path, which reports them. */
void ng_kfac_small_eigh(ng_kfac *k, const int *due);
/* Frees the batched results of the step. */
void ng_kfac_small_eigh_done(ng_kfac *k);
/* Preconditions the layer's gradient in place; returns <dW', dW> when want_dot, else 0. */
double ng_kfac_precondition_layer(ng_kfac *k, ng_kfac_layer *L, double gamma, int want_dot);

/* kfac_dist.c: the collectives of distributed K-FAC (all no-ops' callers check k->dist). */
typedef struct ng_kfac_dist ng_kfac_dist;
void ng_kfac_dist_free(ng_kfac *k);
/* Whether this rank computes layer i's inverses / preconditions its gradient (1 when alone). */
int ng_kfac_dist_owns(const ng_kfac *k, int i);
int ng_kfac_dist_preconditions(const ng_kfac *k, int i);
void ng_kfac_dist_reduce_factors(ng_kfac *k);
void ng_kfac_dist_share_inverses(ng_kfac *k, const int *due);
double ng_kfac_dist_share_grads(ng_kfac *k, double vg_owned);
#endif

#endif
