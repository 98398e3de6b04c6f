/* The K-FAC object: config checks, layer registration, the observer, the step's order (fold,
 * inverses, preconditioning, KL clip), checkpoint state and scratch. The maths of factors and
 * of preconditioning live in kfac_factors.c and kfac_precondition.c. */
#include "optim/kfac.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "core/memory.h"
#include "core/ops.h"
#include "nn/linear.h"
#include "optim/kfac_kernels.h"

#define DEFAULT_CHUNK_BYTES NG_KFAC_CHUNK_BYTES

ng_kfac_config ng_kfac_default_config(void) {
    return (ng_kfac_config){.factor_decay = 0.95,
                            .factor_every = 1,
                            .inv_every = 1,
                            .damping = 0.001,
                            .damping_final = 0.001,
                            .damping_steps = 0,
                            .damping_mode = NG_KFAC_DAMP_SUM,
                            .pi_damping = 0,
                            .inverse = NG_KFAC_EIGEN,
                            .kl_clip = 0.001,
                            .tokens = NG_KFAC_EXPAND,
                            .damping_units = NG_KFAC_UNITS_PER_EXAMPLE,
                            .fisher = NG_KFAC_EMPIRICAL,
                            .grad_worker_fraction = 1.0};
}

double ng_kfac_damping(const ng_kfac_config *c, int64_t step) {
    if (c->damping_steps <= 0) return c->damping;
    double t = step <= 0                  ? 0.0
               : step >= c->damping_steps ? 1.0
                                          : (double)step / (double)c->damping_steps;
    return c->damping * pow(c->damping_final / c->damping, t);
}

double ng_kfac_damping_for(const ng_kfac *k, int64_t step, int64_t n_examples) {
    double gamma = ng_kfac_damping(&k->c, step);
    if (k->c.damping_units == NG_KFAC_UNITS_PER_EXAMPLE) return gamma;
    /* kfac-pytorch's G is 1/N^2 of ours (kfac.h): its gamma means N^2 gamma here. */
    NG_CHECK(n_examples >= 1,
             "kfac.damping_units: kfac-pytorch units need the batch of ng_kfac_begin");
    return gamma * (double)n_examples * (double)n_examples;
}

double ng_kfac_step_damping(const ng_kfac *k, int64_t step) {
    return ng_kfac_damping_for(k, step, k->N);
}

static void check_config(const ng_kfac_config *c) {
    NG_CHECK(c->factor_decay >= 0 && c->factor_decay < 1, "kfac.factor_decay: %g must be in [0, 1)",
             c->factor_decay);
    NG_CHECK(c->factor_every >= 1, "kfac.factor_every: %lld must be >= 1",
             (long long)c->factor_every);
    NG_CHECK(c->inv_every >= 1, "kfac.inv_every: %lld must be >= 1", (long long)c->inv_every);
    NG_CHECK(c->damping > 0 && isfinite(c->damping), "kfac.damping: %g must be > 0", c->damping);
    NG_CHECK(c->damping_steps >= 0, "kfac.damping_steps: %lld must be >= 0",
             (long long)c->damping_steps);
    NG_CHECK(c->damping_steps == 0 || (c->damping_final > 0 && isfinite(c->damping_final)),
             "kfac.damping_final: %g must be > 0 when kfac.damping_steps is set", c->damping_final);
    NG_CHECK(c->damping_mode == NG_KFAC_DAMP_FACTORED || c->damping_mode == NG_KFAC_DAMP_SUM,
             "kfac.damping_mode: %d is not one of factored (%d), sum (%d)", c->damping_mode,
             NG_KFAC_DAMP_FACTORED, NG_KFAC_DAMP_SUM);
    NG_CHECK(c->inverse == NG_KFAC_EIGEN || c->inverse == NG_KFAC_CHOLESKY,
             "kfac.inverse: %d is not one of eigen (%d), cholesky (%d)", c->inverse, NG_KFAC_EIGEN,
             NG_KFAC_CHOLESKY);
    NG_CHECK(!(c->inverse == NG_KFAC_CHOLESKY && c->damping_mode == NG_KFAC_DAMP_SUM),
             "kfac.inverse: cholesky needs kfac.damping_mode factored; sum damping "
             "(A kron G + gamma I) has no Kronecker-factored inverse, use eigen");
    NG_CHECK(c->kl_clip >= 0 && isfinite(c->kl_clip), "kfac.kl_clip: %g must be >= 0 (0 = off)",
             c->kl_clip);
    NG_CHECK(c->damping_units == NG_KFAC_UNITS_PER_EXAMPLE ||
                 c->damping_units == NG_KFAC_UNITS_KFAC_PYTORCH,
             "kfac.damping_units: %d is not one of per-example (%d), kfac-pytorch (%d)",
             c->damping_units, NG_KFAC_UNITS_PER_EXAMPLE, NG_KFAC_UNITS_KFAC_PYTORCH);
    NG_CHECK(c->tokens == NG_KFAC_EXPAND || c->tokens == NG_KFAC_REDUCE,
             "kfac.tokens: %d is not one of expand (%d), reduce (%d)", c->tokens, NG_KFAC_EXPAND,
             NG_KFAC_REDUCE);
}

/* ---- scratch ------------------------------------------------------------------------------ */

void *ng_kfac_scratch(ng_kfac *k, size_t bytes) {
    if (bytes > k->scratch_bytes) {
        ng_sync(k->m->device); /* queued work may still read the old buffer */
        if (k->scratch) ng_free(k->m->device, k->scratch, k->scratch_bytes);
        k->scratch_bytes = bytes + bytes / 4;
        ng_mem_category was = ng_mem_set_category(NG_MEM_WORKSPACE);
        k->scratch = ng_alloc(k->m->device, k->scratch_bytes);
        ng_mem_set_category(was);
    }
    return k->scratch;
}

static int dtype_slot(ng_dtype dt) {
    switch (dt) {
        case NG_F32:
            return 0;
        case NG_F64:
            return 1;
        case NG_F16:
            return 2;
        case NG_BF16:
            return 3;
        default:
            ng_fail("kfac: activations of type %s cannot feed factors", ng_dtype_name(dt));
            return 0;
    }
}

ng_tensor ng_kfac_ones(ng_kfac *k, ng_dtype dt, int64_t n) {
    ng_tensor *o = &k->ones[dtype_slot(dt)];
    if (o->numel < n) {
        ng_sync(k->m->device);
        if (o->data) ng_tensor_free(o);
        *o = ng_tensor_1d(dt, k->m->device, n + n / 4 + 16, "kfac ones");
        ng_fill(o, 1.0);
    }
    return ng_tensor_view(o, 0, 2, (int64_t[]){n, 1}, "kfac ones");
}

/* ---- registration ------------------------------------------------------------------------- */

static ng_tensor zeros(const ng_model *m, int ndim, const int64_t *shape, const char *name) {
    ng_tensor t = ng_tensor_new(m->dtype, m->device, ndim, shape, name);
    ng_fill(&t, 0.0);
    return t;
}

/* Filled in place: the state tensors' names point into the layer's slot, which never moves. */
static void add_layer(ng_kfac *k, ng_layer *l) {
    ng_kfac_layer *L = &k->layers[k->n];
    memset(L, 0, sizeof *L);
    L->layer = l;
    if (!strcmp(l->ops->kind, "linear")) {
        L->kind = NG_KFAC_LINEAR;
        ng_linear_dims(l, &L->in, &L->out, &L->bias);
    } else if (!strcmp(l->ops->kind, "conv")) {
        L->kind = NG_KFAC_CONV;
        L->geom = ng_conv_geometry(l);
        L->in = L->geom.in_ch * L->geom.kernel[0] * L->geom.kernel[1] * L->geom.kernel[2];
        L->out = L->geom.out_ch;
        L->bias = L->geom.bias;
    } else {
        NG_WARN("kfac: layer %s (%s) offers capture but is neither linear nor conv; it keeps its "
                "plain gradient",
                l->name, l->ops->kind);
        return;
    }
    NG_CHECK(l->nparams >= 1 + L->bias && l->params[0].value.numel == L->in * L->out,
             "kfac: layer %s has no [%lld, %lld] weight", l->name, (long long)L->out,
             (long long)L->in);
    L->da = L->in + L->bias;
    static const char *suffix[9] = {"kfac_A",  "kfac_G",    "kfac_QA",   "kfac_dA",  "kfac_QG",
                                    "kfac_dG", "kfac_Ainv", "kfac_Ginv", "kfac_meta"};
    for (int i = 0; i < 9; i++)
        snprintf(L->names[i], sizeof L->names[i], "%s.%s", l->name, suffix[i]);
    ng_model *m = k->m;
    int64_t da = L->da, o = L->out;
    L->A = zeros(m, 2, (int64_t[]){da, da}, L->names[0]);
    L->G = zeros(m, 2, (int64_t[]){o, o}, L->names[1]);
    L->S = ng_tensor_new(m->dtype, m->device, 2, (int64_t[]){L->in, L->in}, "kfac A sum");
    if (L->bias) L->s = ng_tensor_new(m->dtype, m->device, 2, (int64_t[]){L->in, 1}, "kfac A sum");
    L->B = ng_tensor_new(m->dtype, m->device, 2, (int64_t[]){o, o}, "kfac G sum");
    if (k->c.inverse == NG_KFAC_EIGEN) {
        L->QA = zeros(m, 2, (int64_t[]){da, da}, L->names[2]);
        L->dA = zeros(m, 1, (int64_t[]){da}, L->names[3]);
        L->QG = zeros(m, 2, (int64_t[]){o, o}, L->names[4]);
        L->dG = zeros(m, 1, (int64_t[]){o}, L->names[5]);
    } else {
        L->Ainv = zeros(m, 2, (int64_t[]){da, da}, L->names[6]);
        L->Ginv = zeros(m, 2, (int64_t[]){o, o}, L->names[7]);
    }
    L->meta = ng_tensor_1d(NG_F64, NG_CPU, NG_KFAC_META_N, L->names[8]);
    double *meta = L->meta.data;
    for (int i = 0; i < NG_KFAC_META_N; i++) meta[i] = 0;
    meta[NG_KFAC_META_PI] = 1.0;
    k->n++;
}

static int count_capture(ng_layer *l) {
    int n = l->capture != 0;
    for (int i = 0; i < l->nchildren; i++) n += count_capture(l->children[i]);
    return n;
}

static void walk(ng_kfac *k, ng_layer *l) {
    if (l->index + 1 > k->nindex) k->nindex = l->index + 1;
    if (l->capture) add_layer(k, l);
    for (int i = 0; i < l->nchildren; i++) walk(k, l->children[i]);
}

/* ---- the observer ------------------------------------------------------------------------- */

static ng_kfac_layer *slot(ng_kfac *k, const ng_layer *l) {
    if (!l || l->index < 0 || l->index >= k->nindex) return NULL;
    int i = k->slot_of[l->index];
    return i >= 0 && k->layers[i].layer == l ? &k->layers[i] : NULL;
}

static void obs_input(void *self, ng_layer *l, const ng_tensor *x) {
    ng_kfac *k = self;
    ng_kfac_layer *L = k->cap_a ? slot(k, l) : NULL;
    if (L) ng_kfac_capture_a(k, L, x);
}

static void obs_output_grad(void *self, ng_layer *l, const ng_tensor *dy) {
    ng_kfac *k = self;
    ng_kfac_layer *L = k->cap_g ? slot(k, l) : NULL;
    if (L) ng_kfac_capture_g(k, L, dy);
}

/* ---- public ------------------------------------------------------------------------------- */

ng_kfac *ng_kfac_new(ng_model *m, const ng_kfac_config *c) {
    NG_CHECK(m && m->flat_grads.data, "kfac: the model must be built before K-FAC");
    NG_CHECK(c, "kfac: no config");
    check_config(c);
    ng_mem_category was = ng_mem_set_category(NG_MEM_KFAC);
    ng_kfac *k = calloc(1, sizeof *k);
    NG_CHECK(k, "out of host memory creating K-FAC");
    k->m = m;
    k->c = *c;
    if (c->damping_steps == 0) k->c.damping_final = c->damping;
    k->chunk_bytes = DEFAULT_CHUNK_BYTES;
    k->batch_small = 1;
    k->loss_scale = 1.0;
    k->batch_step = INT64_MIN;
    int cap = count_capture(m->root);
    k->layers = calloc((size_t)(cap ? cap : 1), sizeof *k->layers);
    NG_CHECK(k->layers, "out of host memory registering K-FAC layers");
    walk(k, m->root);
    k->slot_of = malloc(sizeof *k->slot_of * (size_t)(k->nindex ? k->nindex : 1));
    NG_CHECK(k->slot_of, "out of host memory creating K-FAC");
    for (int i = 0; i < k->nindex; i++) k->slot_of[i] = -1;
    for (int i = 0; i < k->n; i++) k->slot_of[k->layers[i].layer->index] = i;
    k->obs = (ng_observer){.self = k, .input = obs_input, .output_grad = obs_output_grad};
    ng_mem_set_category(was);
    return k;
}

void ng_kfac_free(ng_kfac *k) {
    if (!k) return;
    ng_kfac_dist_free(k);
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        ng_tensor *ts[] = {&L->A,  &L->G,  &L->S,  &L->s,    &L->B,    &L->QA,
                           &L->dA, &L->QG, &L->dG, &L->Ainv, &L->Ginv, &L->meta};
        for (size_t j = 0; j < sizeof ts / sizeof *ts; j++)
            if (ts[j]->data) ng_tensor_free(ts[j]);
    }
    for (int i = 0; i < 4; i++)
        if (k->ones[i].data) ng_tensor_free(&k->ones[i]);
    if (k->scratch) ng_free(k->m->device, k->scratch, k->scratch_bytes);
    free(k->layers);
    free(k->slot_of);
    free(k);
}

ng_observer *ng_kfac_observer(ng_kfac *k) {
    return &k->obs;
}

void ng_kfac_begin(ng_kfac *k, int64_t step, int64_t n_examples, int capture_a, int capture_g) {
    NG_CHECK(n_examples >= 1, "kfac: n_examples %lld must be >= 1", (long long)n_examples);
    NG_CHECK(step >= 0, "kfac: step %lld must be >= 0", (long long)step);
    if (step != k->batch_step) {
        for (int i = 0; i < k->n; i++) {
            k->layers[i].na = k->layers[i].ng = 0;
            k->layers[i].corner = 0;
        }
        k->batch_step = step;
    }
    int on = step % k->c.factor_every == 0;
    k->N = n_examples;
    k->cap_a = on && capture_a;
    k->cap_g = on && capture_g;
}

void ng_kfac_step(ng_kfac *k, int64_t step, double lr) {
    NG_CHECK(isfinite(lr) && lr >= 0, "kfac: learning rate %g must be >= 0", lr);
    if (step == k->batch_step) {
        if (k->dist) ng_kfac_dist_reduce_factors(k);
        for (int i = 0; i < k->n; i++) ng_kfac_fold_layer(k, &k->layers[i]);
    }
    k->batch_step = INT64_MIN;
    k->cap_a = k->cap_g = 0;

    double gamma = ng_kfac_step_damping(k, step);
    int inv_now = step % k->c.inv_every == 0;
    /* due: the layers whose inverses are updated this step (the same on every rank); mine: those
     * this rank computes. */
    int *due = calloc((size_t)k->n + 1, sizeof *due),
        *mine = calloc((size_t)k->n + 1, sizeof *mine);
    NG_CHECK(due && mine, "out of host memory in K-FAC");
    for (int i = 0; i < k->n; i++) {
        double *meta = k->layers[i].meta.data;
        due[i] =
            meta[NG_KFAC_META_A] && meta[NG_KFAC_META_G] && (inv_now || !meta[NG_KFAC_META_INV]);
        mine[i] = due[i] && ng_kfac_dist_owns(k, i);
    }
    ng_kfac_small_eigh(k, mine);
    for (int i = 0; i < k->n; i++)
        if (mine[i]) ng_kfac_update_inverse(k, &k->layers[i], gamma);
    ng_kfac_small_eigh_done(k);
    if (k->dist) ng_kfac_dist_share_inverses(k, due);
    free(due), free(mine);

    int clip = k->c.kl_clip > 0;
    double vg = 0;
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        L->preconditioned = ((double *)L->meta.data)[NG_KFAC_META_INV] != 0;
        if (!L->preconditioned || !ng_kfac_dist_preconditions(k, i)) continue;
        double dot = ng_kfac_precondition_layer(k, L, gamma, clip);
        if (ng_kfac_dist_owns(k, i)) vg += dot; /* each layer counted once over the ranks */
    }
    if (k->dist) vg = ng_kfac_dist_share_grads(k, vg);
    if (!clip) return;
    double denom = lr * lr * fabs(vg);
    double nu = denom > 0 ? sqrt(k->c.kl_clip / denom) : 1.0;
    if (!(nu < 1.0)) return; /* also keeps NaN out */
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        if (!L->preconditioned) continue;
        ng_scale(nu, &L->layer->params[0].grad);
        if (L->bias) ng_scale(nu, &L->layer->params[1].grad);
    }
}

int ng_kfac_state(ng_kfac *k, const char **names, ng_tensor **tensors, int cap) {
    int n = 0;
    for (int i = 0; i < k->n; i++) {
        ng_kfac_layer *L = &k->layers[i];
        ng_tensor *ts[9] = {&L->A,  &L->G,    &L->QA,   &L->dA,  &L->QG,
                            &L->dG, &L->Ainv, &L->Ginv, &L->meta};
        for (int j = 0; j < 9; j++) {
            if (!ts[j]->data) continue;
            if (n < cap) {
                if (names) names[n] = L->names[j];
                if (tensors) tensors[n] = ts[j];
            }
            n++;
        }
    }
    return n;
}

int ng_kfac_layers(const ng_kfac *k) {
    return k->n;
}

void ng_kfac_factors(const ng_kfac *k, int i, const char **name, ng_tensor *A, ng_tensor *G) {
    NG_CHECK(i >= 0 && i < k->n, "kfac: layer %d of %d", i, k->n);
    const ng_kfac_layer *L = &k->layers[i];
    if (name) *name = L->layer->name;
    if (A) *A = L->A;
    if (G) *G = L->G;
}

ng_layer *ng_kfac_layer_at(const ng_kfac *k, int i) {
    NG_CHECK(i >= 0 && i < k->n, "kfac: layer %d of %d", i, k->n);
    return k->layers[i].layer;
}

const ng_kfac_config *ng_kfac_config_of(const ng_kfac *k) {
    return &k->c;
}

int ng_kfac_eigen(const ng_kfac *k, int i, ng_tensor *QA, ng_tensor *dA, ng_tensor *QG,
                  ng_tensor *dG) {
    NG_CHECK(i >= 0 && i < k->n, "kfac: layer %d of %d", i, k->n);
    const ng_kfac_layer *L = &k->layers[i];
    if (k->c.inverse != NG_KFAC_EIGEN || !((const double *)L->meta.data)[NG_KFAC_META_INV])
        return 0;
    if (!L->QA.data || !L->dA.data || !L->QG.data || !L->dG.data) return -1;
    *QA = L->QA, *dA = L->dA, *QG = L->QG, *dG = L->dG;
    return 1;
}

void ng_kfac_set_loss_scale(ng_kfac *k, double s) {
    NG_CHECK(s > 0 && isfinite(s), "kfac: loss scale %g must be finite and > 0", s);
    k->loss_scale = s;
}

void ng_kfac_set_batch_small(ng_kfac *k, int on) {
    k->batch_small = on;
}

void ng_kfac_set_chunk_bytes(ng_kfac *k, size_t bytes) {
    NG_CHECK(bytes > 0, "kfac: chunk size must be > 0 bytes");
    k->chunk_bytes = bytes;
}
