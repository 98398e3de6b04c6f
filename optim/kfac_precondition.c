/* K-FAC's inverse updates (eigendecompositions or damped Cholesky inverses, with the last good
 * ones kept when a factor misbehaves) and the preconditioning of one layer's gradient. */
#include <math.h>

#include "core/error.h"
#include "core/linalg.h"
#include "core/log.h"
#include "core/ops.h"
#include "optim/kfac_kernels.h"

/* Hands out aligned pieces of the K-FAC scratch buffer in order. */
typedef struct {
    char *base;
    size_t used;
} carver;

static ng_tensor carve(carver *c, const ng_kfac *k, int ndim, const int64_t *shape,
                       const char *name) {
    ng_tensor t = ng_tensor_wrap(c->base + c->used, k->m->dtype, k->m->device, ndim, shape, name);
    c->used += ng_kfac_aligned(ng_tensor_bytes(&t));
    return t;
}

static double trace(ng_tensor *A, ng_tensor *diag) {
    ng_kfac_diag(A, diag);
    return ng_sum(diag);
}

/* pi of factored Tikhonov damping (Martens & Grosse 2015, section 6.3): the ratio of the
 * factors' average eigenvalues, 1 when either is not positive (a layer that saw no signal). */
static double pi_of(ng_kfac *k, ng_kfac_layer *L, ng_tensor *diag_a, ng_tensor *diag_g) {
    if (!k->c.pi_damping || k->c.damping_mode != NG_KFAC_DAMP_FACTORED) return 1.0;
    double ta = trace(&L->A, diag_a) / (double)L->da, tg = trace(&L->G, diag_g) / (double)L->out;
    if (!(ta > 0) || !(tg > 0) || !isfinite(ta) || !isfinite(tg)) return 1.0;
    return sqrt(ta / tg);
}

void ng_kfac_update_inverse(ng_kfac *k, ng_kfac_layer *L, double gamma) {
    double *meta = L->meta.data;
    const char *name = L->layer->name;
    if (!ng_all_finite(&L->A) || !ng_all_finite(&L->G)) {
        NG_WARN("kfac: layer %s: running factors are not finite; skipping its inverse update "
                "(%s)",
                name, meta[NG_KFAC_META_INV] ? "the last good one stays" : "gradient stays plain");
        return;
    }
    int64_t da = L->da, o = L->out;
    size_t es = ng_dtype_size(k->m->dtype);
    size_t need = ng_kfac_aligned((size_t)(da * da) * es) + ng_kfac_aligned((size_t)da * es) +
                  ng_kfac_aligned((size_t)(o * o) * es) + ng_kfac_aligned((size_t)o * es);
    carver c = {ng_kfac_scratch(k, need), 0};
    ng_tensor qa = carve(&c, k, 2, (int64_t[]){da, da}, "kfac new QA");
    ng_tensor wa = carve(&c, k, 1, (int64_t[]){da}, "kfac new dA");
    ng_tensor qg = carve(&c, k, 2, (int64_t[]){o, o}, "kfac new QG");
    ng_tensor wg = carve(&c, k, 1, (int64_t[]){o}, "kfac new dG");
    double pi = pi_of(k, L, &wa, &wg);
    ng_status sa, sg;
    if (k->c.inverse == NG_KFAC_EIGEN) {
        sa = L->pre_a ? (ng_copy(&qa, &L->pre_qa), ng_copy(&wa, &L->pre_wa), NG_OK)
                      : ng_eigh(&L->A, &wa, &qa);
        sg = sa != NG_OK ? NG_OK
             : L->pre_g  ? (ng_copy(&qg, &L->pre_qg), ng_copy(&wg, &L->pre_wg), NG_OK)
                         : ng_eigh(&L->G, &wg, &qg);
    } else {
        double root = sqrt(gamma);
        sa = ng_damped_inverse(&L->A, pi * root, &qa, NULL);
        sg = sa == NG_OK ? ng_damped_inverse(&L->G, root / pi, &qg, NULL) : NG_OK;
    }
    if (sa != NG_OK || sg != NG_OK) {
        NG_WARN("kfac: layer %s: %s of factor %s failed (%s); skipping its inverse update (%s)",
                name, k->c.inverse == NG_KFAC_EIGEN ? "eigendecomposition" : "damped inverse",
                sa != NG_OK ? "A" : "G", ng_status_name(sa != NG_OK ? sa : sg),
                meta[NG_KFAC_META_INV] ? "the last good one stays" : "gradient stays plain");
        return;
    }
    if (k->c.inverse == NG_KFAC_EIGEN) {
        ng_copy(&L->QA, &qa);
        ng_copy(&L->dA, &wa);
        ng_copy(&L->QG, &qg);
        ng_copy(&L->dG, &wg);
    } else {
        ng_copy(&L->Ainv, &qa);
        ng_copy(&L->Ginv, &qg);
    }
    meta[NG_KFAC_META_INV] = 1;
    meta[NG_KFAC_META_PI] = pi;
}

double ng_kfac_precondition_layer(ng_kfac *k, ng_kfac_layer *L, double gamma, int want_dot) {
    ng_layer *l = L->layer;
    int64_t da = L->da, o = L->out, in = L->in;
    size_t es = ng_dtype_size(k->m->dtype), mat = ng_kfac_aligned((size_t)(o * da) * es);
    carver c = {ng_kfac_scratch(k, 3 * mat), 0};
    ng_tensor wgrad = ng_tensor_reshape(&l->params[0].grad, 2, (int64_t[]){o, in});
    ng_tensor V = wgrad;
    if (L->bias) { /* [dW, db] as one [out, in + 1] matrix */
        V = carve(&c, k, 2, (int64_t[]){o, da}, "kfac gradient");
        ng_kfac_copy2d(k->m->device, V.data, da, wgrad.data, in, o, in, es);
        ng_kfac_copy2d(k->m->device, (char *)V.data + (size_t)in * es, da, l->params[1].grad.data,
                       1, o, 1, es);
    }
    ng_tensor T1 = carve(&c, k, 2, (int64_t[]){o, da}, "kfac work");
    ng_tensor T2 = carve(&c, k, 2, (int64_t[]){o, da}, "kfac work");
    if (k->c.inverse == NG_KFAC_EIGEN) {
        double pi = ((double *)L->meta.data)[NG_KFAC_META_PI], root = sqrt(gamma);
        ng_gemm(1, 0, 1.0, &L->QG, &V, 0.0, &T1);
        ng_gemm(0, 0, 1.0, &T1, &L->QA, 0.0, &T2);
        ng_kfac_eig_divide(&T2, &L->dG, &L->dA, k->c.damping_mode == NG_KFAC_DAMP_SUM, root / pi,
                           pi * root, gamma);
        ng_gemm(0, 0, 1.0, &L->QG, &T2, 0.0, &T1);
        ng_gemm(0, 1, 1.0, &T1, &L->QA, 0.0, &T2);
    } else {
        ng_gemm(0, 0, 1.0, &L->Ginv, &V, 0.0, &T1);
        ng_gemm(0, 0, 1.0, &T1, &L->Ainv, 0.0, &T2);
    }
    double dot = 0;
    if (want_dot) {
        ng_mul(&T2, &V, &T1);
        dot = ng_sum(&T1);
    }
    if (L->bias) {
        ng_kfac_copy2d(k->m->device, wgrad.data, in, T2.data, da, o, in, es);
        ng_kfac_copy2d(k->m->device, l->params[1].grad.data, 1, (char *)T2.data + (size_t)in * es,
                       da, o, 1, es);
    } else {
        ng_copy(&wgrad, &T2);
    }
    return dot;
}

/* The factor `which` (0: A, 1: G) of layer L and its side. */
static ng_tensor *factor(ng_kfac_layer *L, int which) {
    return which ? &L->G : &L->A;
}

void ng_kfac_small_eigh(ng_kfac *k, const int *due) {
    for (int i = 0; i < k->n; i++) k->layers[i].pre_a = k->layers[i].pre_g = 0;
    if (!k->batch_small || k->c.inverse != NG_KFAC_EIGEN) return;
    for (int64_t side = 1; side <= NG_KFAC_SMALL; side++) {
        int count = 0;
        for (int i = 0; i < k->n; i++)
            for (int w = 0; w < 2; w++)
                count += due[i] && factor(&k->layers[i], w)->shape[0] == side;
        if (count < 2) continue; /* one factor gains nothing from batching */
        ng_device dev = k->m->device;
        ng_dtype dt = k->m->dtype;
        ng_tensor batch = ng_tensor_3d(dt, dev, count, side, side, "kfac small factors");
        k->small_q[side] = ng_tensor_3d(dt, dev, count, side, side, "kfac small eigenvectors");
        k->small_w[side] = ng_tensor_2d(dt, dev, count, side, "kfac small eigenvalues");
        int64_t shape2[2] = {side, side}, shape1[1] = {side};
        int j = 0;
        for (int i = 0; i < k->n; i++)
            for (int w = 0; w < 2; w++) {
                ng_tensor *F = factor(&k->layers[i], w);
                if (!due[i] || F->shape[0] != side) continue;
                ng_tensor slot = ng_tensor_view(&batch, j * side * side, 2, shape2, F->name);
                ng_copy(&slot, F);
                j++;
            }
        /* A failed entry comes back as NaN, the others stay good: sorted out per entry below. */
        ng_eigh(&batch, &k->small_w[side], &k->small_q[side]);
        ng_tensor_free(&batch);
        j = 0;
        for (int i = 0; i < k->n; i++)
            for (int w = 0; w < 2; w++) {
                ng_kfac_layer *L = &k->layers[i];
                if (!due[i] || factor(L, w)->shape[0] != side) continue;
                ng_tensor q = ng_tensor_view(&k->small_q[side], j * side * side, 2, shape2, "q");
                ng_tensor e = ng_tensor_view(&k->small_w[side], j * side, 1, shape1, "w");
                j++;
                if (!ng_all_finite(&e)) continue;
                if (w) {
                    L->pre_g = 1, L->pre_qg = q, L->pre_wg = e;
                } else {
                    L->pre_a = 1, L->pre_qa = q, L->pre_wa = e;
                }
            }
    }
}

void ng_kfac_small_eigh_done(ng_kfac *k) {
    for (int side = 0; side <= NG_KFAC_SMALL; side++) {
        ng_tensor_free(&k->small_q[side]);
        ng_tensor_free(&k->small_w[side]);
    }
    for (int i = 0; i < k->n; i++) k->layers[i].pre_a = k->layers[i].pre_g = 0;
}
