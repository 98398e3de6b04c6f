/* The loss-smoothing wrapper: perturb at begin, restore after the backward, from a kept copy of
 * the weights so that the restore is exact whatever the rounding of w + eps. */
#include "optim/smoothing.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "comm/comm.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/rng.h"
#include "optim/kfac.h"

enum { NOT_FISHER = -1, FISHER_BIAS = -2 };

typedef struct {
    ng_optimizer head;
    ng_smoothing_config c;
    int *perturbed;  /* per model parameter: 1 when it gets noise */
    ng_tensor saved; /* [numel] the weights before this step's perturbation */
    ng_tensor
        noise; /* [largest perturbed parameter, or out x da of a fisher layer] scratch for z */
    /* fisher noise */
    ng_kfac *kfac;   /* of the K-FAC part behind the wrapper */
    int *layer;      /* per model parameter: the K-FAC layer whose weight it is, FISHER_BIAS for
                        that layer's bias (it follows the weight), else NOT_FISHER */
    ng_tensor work;  /* [largest out x da] */
    ng_tensor roots; /* [largest out + largest da] 1/sqrt(d + g) of G then A, model's device */
    ng_tensor host;  /* the same on the host */
    int64_t step;    /* of the last begin */
    int on;          /* the weights are perturbed now */
    int shaped;      /* fisher: the layers whose eps was Fisher-shaped at the last begin */
    int noisy;       /* the Noisy K-FAC part: no isotropic fallback, no noise at amplitude 0 */
    int64_t eval_samples; /* noisy: weight samples averaged at evaluation */
} smoothing;

double ng_smoothing_amplitude(const ng_smoothing_config *c, int64_t step) {
    if (c->schedule == NG_SMOOTH_CONSTANT) return c->amplitude;
    double t = step <= 0 ? 0.0 : step >= c->decay_steps ? 1.0 : (double)step / c->decay_steps;
    if (c->schedule == NG_SMOOTH_LINEAR) return c->amplitude * (1.0 - t);
    return c->amplitude * 0.5 * (1.0 + cos(M_PI * t));
}

/* x[i] = 1 / sqrt(max(x[i], 0) + g) on a host tensor of the model's float type. */
static void inverse_roots(ng_tensor *x, double g) {
    for (int64_t i = 0; i < x->numel; i++) {
        if (x->dtype == NG_F64) {
            double *v = x->data;
            v[i] = 1.0 / sqrt(fmax(v[i], 0.0) + g);
        } else {
            float *v = x->data;
            v[i] = (float)(1.0 / sqrt(fmax((double)v[i], 0.0) + g));
        }
    }
}

/* Adds alpha QG diag(rG) Z diag(rA) QA^T to K-FAC layer j's weight [out, in] and its bias (the
 * last column of [out, da]); Z [out, da] from `key`. */
static void fisher_layer(smoothing *s, int j, double alpha, double g, ng_rng_key key,
                         const ng_tensor *QA, const ng_tensor *dA, const ng_tensor *QG,
                         const ng_tensor *dG) {
    ng_layer *l = ng_kfac_layer_at(s->kfac, j);
    int64_t out = QG->shape[0], da = QA->shape[0], in = l->params[0].value.numel / out;
    ng_tensor Z = ng_tensor_view(&s->noise, 0, 2, (int64_t[]){out, da}, "smoothing noise");
    ng_tensor Y = ng_tensor_view(&s->work, 0, 2, (int64_t[]){out, da}, "smoothing fisher noise");
    ng_rng_normal(&Z, key, 0.0, 1.0);
    ng_tensor hg = ng_tensor_view(&s->host, 0, 1, (int64_t[]){out}, "smoothing G roots"),
              ha = ng_tensor_view(&s->host, out, 1, (int64_t[]){da}, "smoothing A roots");
    ng_tensor_copy(&hg, dG);
    ng_tensor_copy(&ha, dA);
    inverse_roots(&hg, g);
    inverse_roots(&ha, g);
    ng_tensor rg = ng_tensor_view(&s->roots, 0, 2, (int64_t[]){out, 1}, "smoothing G roots"),
              ra = ng_tensor_view(&s->roots, out, 2, (int64_t[]){1, da}, "smoothing A roots");
    ng_tensor_copy(&rg, &hg);
    ng_tensor_copy(&ra, &ha);
    ng_gemm(0, 0, alpha, &rg, &ra, 0.0, &Y); /* Y = alpha rG rA^T */
    ng_mul(&Z, &Y, &Z);
    ng_gemm(0, 0, 1.0, QG, &Z, 0.0, &Y); /* Y = alpha QG (rG rA^T .* Z) */
    /* eps = Y QA^T: its first `in` columns from QA's first `in` rows, the bias column from the
     * last row; added in place, no [out, da] copy of eps. */
    ng_tensor W = ng_tensor_reshape(&l->params[0].value, 2, (int64_t[]){out, in});
    ng_tensor QAw = ng_tensor_view(QA, 0, 2, (int64_t[]){in, da}, "smoothing QA rows");
    ng_gemm(0, 1, 1.0, &Y, &QAw, 1.0, &W);
    if (da > in) {
        ng_tensor b = ng_tensor_reshape(&l->params[1].value, 2, (int64_t[]){out, 1});
        ng_tensor QAb = ng_tensor_view(QA, in * da, 2, (int64_t[]){1, da}, "smoothing QA bias row");
        ng_gemm(0, 1, 1.0, &Y, &QAb, 1.0, &b);
    }
}

/* Saves the weights and adds eps drawn from `key` with amplitude a and (fisher) damping g. */
static void perturb(smoothing *s, ng_rng_key key, double a, double g) {
    ng_model *m = s->head.model;
    ng_copy(&s->saved, &m->flat_params);
    s->shaped = 0;
    s->on = 1;
    if (s->noisy && a == 0) return; /* Noisy K-FAC with lambda = 0: the mean weights, exactly */
    for (int i = 0; i < m->nparams; i++) {
        if (!s->perturbed[i]) continue;
        ng_tensor *w = &m->params[i].param->value;
        ng_tensor wf = ng_tensor_reshape(w, 1, (int64_t[]){w->numel});
        ng_tensor z = ng_tensor_view(&s->noise, 0, 1, (int64_t[]){w->numel}, "smoothing noise");
        double scale = s->c.scale_by_weight ? sqrt(ng_sumsq(w) / (double)w->numel) : 1.0;
        int j = s->kfac ? s->layer[i] : NOT_FISHER;
        ng_tensor QA, dA, QG, dG;
        int eig = j >= 0 ? ng_kfac_eigen(s->kfac, j, &QA, &dA, &QG, &dG) : 0;
        NG_CHECK(eig >= 0,
                 "%s: fisher needs K-FAC's eigendecompositions on every rank; this "
                 "rank does not hold %s's (set kfac.grad_worker_fraction=1)",
                 s->noisy ? "noisy.enabled" : "smoothing.noise",
                 m->params[i].layer ? m->params[i].layer->name : m->params[i].param->name);
        if (eig > 0 || (s->noisy && j != NOT_FISHER)) {
            /* the weight and the bias that follows it, from the weight's offset; Noisy K-FAC
             * leaves a layer without an eigendecomposition yet at its mean */
            if (eig > 0) fisher_layer(s, j, a * scale, g, key, &QA, &dA, &QG, &dG), s->shaped++;
            key.offset += ng_rng_blocks(w->numel);
            if (i + 1 < m->nparams && s->layer[i + 1] == FISHER_BIAS)
                key.offset += ng_rng_blocks(m->params[++i].param->value.numel);
            continue;
        }
        if (s->noisy) { /* a parameter K-FAC does not cover: Noisy K-FAC leaves it at its mean */
            key.offset += ng_rng_blocks(w->numel);
            continue;
        }
        if (s->c.noise != NG_SMOOTH_UNIFORM) /* gaussian, and fisher's isotropic fallback */
            ng_rng_normal(&z, key, 0.0, 1.0);
        else
            ng_rng_uniform(&z, key, -1.0, 1.0);
        key.offset += ng_rng_blocks(w->numel); /* the next parameter's draws do not overlap */
        ng_axpy(a * scale, &z, &wf);
    }
    ng_model_refresh_compute(m); /* the forward's half copy sees w + eps */
}

static void begin(ng_optimizer *o, int64_t step, int64_t n) {
    smoothing *s = (smoothing *)o;
    NG_CHECK(!s->on,
             "smoothing: begin of step %lld while step %lld's perturbation is still in "
             "place (no after_backward)",
             (long long)step, (long long)s->step);
    s->step = step;
    double a = ng_smoothing_amplitude(&s->c, step);
    ng_rng_key key = {.seed = s->c.seed,
                      .stream = NG_STREAM_SMOOTHING + (uint64_t)s->c.rank,
                      .offset = (uint64_t)step << 32};
    double g = 0;
    if (s->kfac && !(s->noisy && a == 0))
        g = s->c.fisher_damping > 0 ? s->c.fisher_damping
                                    : sqrt(ng_kfac_damping_for(s->kfac, step, n));
    perturb(s, key, a, g);
}

static void after_backward(ng_optimizer *o) {
    smoothing *s = (smoothing *)o;
    if (!s->on) return;
    ng_copy(&o->model->flat_params, &s->saved);
    ng_model_refresh_compute(o->model); /* a skipped step must leave the half copy of w too */
    s->on = 0;
}

static smoothing *noisy_part(ng_optimizer *o) {
    NG_CHECK(o && o->ops == &ng_noisy_kfac_ops, "noisy: %s is not the Noisy K-FAC part",
             o ? o->ops->title : "(none)");
    return (smoothing *)o;
}

ng_optimizer *ng_noisy_kfac_find(ng_optimizer *chain) {
    for (ng_optimizer *p = chain; p; p = p->inner)
        if (p->ops == &ng_noisy_kfac_ops) return p;
    return NULL;
}

int64_t ng_noisy_kfac_eval_samples(ng_optimizer *o) {
    return noisy_part(o)->eval_samples;
}

void ng_noisy_kfac_sample(ng_optimizer *o, int64_t k) {
    smoothing *s = noisy_part(o);
    NG_CHECK(!s->on, "noisy: sample %lld drawn while a perturbation is in place", (long long)k);
    ng_rng_key key = {
        .seed = s->c.seed, .stream = NG_STREAM_NOISY_EVAL, .offset = (uint64_t)k << 32};
    perturb(s, key, s->c.amplitude, s->c.fisher_damping);
}

void ng_noisy_kfac_restore(ng_optimizer *o) {
    after_backward(&noisy_part(o)->head);
}

static void distribute(ng_optimizer *o, struct ng_comm *c) {
    ((smoothing *)o)->c.rank = ng_comm_rank(c);
}

static size_t metrics(ng_optimizer *o, char *buf, size_t cap, size_t at) {
    smoothing *s = (smoothing *)o;
    int n;
    if (s->noisy) {
        n = snprintf(buf + at, cap - at, ", \"noisy_std\": %.9g, \"noisy_layers\": %d",
                     s->c.amplitude, s->shaped);
        return n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
    }
    n = snprintf(buf + at, cap - at, ", \"smoothing_amplitude\": %.9g",
                 ng_smoothing_amplitude(&s->c, s->step));
    at = n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
    if (!s->kfac) return at;
    n = snprintf(buf + at, cap - at, ", \"smoothing_fisher_layers\": %d", s->shaped);
    return n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
}

static void destroy(ng_optimizer *o) {
    smoothing *s = (smoothing *)o;
    ng_tensor_free(&s->saved);
    ng_tensor *ts[] = {&s->noise, &s->work, &s->roots, &s->host};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++)
        if (ts[i]->data) ng_tensor_free(ts[i]);
    free(s->perturbed);
    free(s->layer);
    free(s);
}

const ng_optimizer_ops ng_smoothing_ops = {.kind = "smoothing",
                                           .title = "loss smoothing",
                                           .file = "smoothing",
                                           .begin = begin,
                                           .after_backward = after_backward,
                                           .distribute = distribute,
                                           .metrics = metrics,
                                           .destroy = destroy};

const ng_optimizer_ops ng_noisy_kfac_ops = {.kind = "noisy_kfac",
                                            .title = "Noisy K-FAC",
                                            .file = "noisy_kfac",
                                            .begin = begin,
                                            .after_backward = after_backward,
                                            .distribute = distribute,
                                            .metrics = metrics,
                                            .destroy = destroy};

static ng_optimizer *create(ng_model *m, const ng_smoothing_config *c, ng_optimizer *inner,
                            const ng_optimizer_ops *ops);

ng_optimizer *ng_smoothing_new(ng_model *m, const ng_smoothing_config *c, ng_optimizer *inner) {
    return create(m, c, inner, &ng_smoothing_ops);
}

ng_smoothing_config ng_noisy_kfac_smoothing(const ng_noisy_kfac_config *c) {
    double r = c->dataset_size > 0 ? c->kl_weight / (double)c->dataset_size : 0;
    return (ng_smoothing_config){.noise = NG_SMOOTH_FISHER,
                                 .amplitude = sqrt(r),
                                 .schedule = NG_SMOOTH_CONSTANT,
                                 .layers = NG_SMOOTH_KFAC_LAYERS,
                                 .seed = c->seed,
                                 .rank = c->rank,
                                 .fisher_damping = sqrt(r * c->prior_precision)};
}

double ng_noisy_kfac_gamma(const ng_noisy_kfac_config *c) {
    return c->kl_weight * c->prior_precision / (double)c->dataset_size;
}

ng_optimizer *ng_noisy_kfac_new(ng_model *m, const ng_noisy_kfac_config *c, ng_optimizer *inner) {
    NG_CHECK(isfinite(c->kl_weight) && c->kl_weight >= 0,
             "noisy.kl_weight: %g must be finite and >= 0", c->kl_weight);
    NG_CHECK(isfinite(c->prior_precision) && c->prior_precision > 0,
             "noisy.prior_precision: %g must be finite and > 0", c->prior_precision);
    NG_CHECK(c->dataset_size >= 1, "noisy.dataset_size: %lld must be >= 1",
             (long long)c->dataset_size);
    NG_CHECK(c->eval_samples >= 1, "noisy.eval_samples: %lld must be >= 1",
             (long long)c->eval_samples);
    ng_smoothing_config sc = ng_noisy_kfac_smoothing(c);
    ng_optimizer *o = create(m, &sc, inner, &ng_noisy_kfac_ops);
    ((smoothing *)o)->noisy = 1;
    ((smoothing *)o)->eval_samples = c->eval_samples;
    return o;
}

static ng_optimizer *create(ng_model *m, const ng_smoothing_config *c, ng_optimizer *inner,
                            const ng_optimizer_ops *ops) {
    const char *key = ops == &ng_noisy_kfac_ops ? "noisy.enabled" : "smoothing.noise";
    NG_CHECK(inner, "%s: %s wraps an optimizer; none given", key, ops->title);
    NG_CHECK(c->noise == NG_SMOOTH_GAUSSIAN || c->noise == NG_SMOOTH_UNIFORM ||
                 c->noise == NG_SMOOTH_FISHER,
             "smoothing.noise: %d is not one of gaussian (%d), uniform (%d), fisher (%d)", c->noise,
             NG_SMOOTH_GAUSSIAN, NG_SMOOTH_UNIFORM, NG_SMOOTH_FISHER);
    NG_CHECK(isfinite(c->fisher_damping) && c->fisher_damping >= 0,
             "smoothing.fisher_damping: %g must be finite and >= 0 (0 = from K-FAC's damping)",
             c->fisher_damping);
    ng_kfac *kfac = NULL;
    if (c->noise == NG_SMOOTH_FISHER) {
        for (ng_optimizer *p = inner; p && !kfac; p = p->inner)
            if (p->ops == &ng_kfac_ops) kfac = ng_kfac_of(p);
        NG_CHECK(kfac,
                 "%s: fisher noise draws from K-FAC's factors; it needs K-FAC behind the "
                 "wrapper (kfac.enabled=true)",
                 key);
        NG_CHECK(ng_kfac_config_of(kfac)->inverse == NG_KFAC_EIGEN,
                 "%s: fisher noise needs K-FAC's eigendecompositions (kfac.inverse=eigen)", key);
        NG_CHECK(m->dtype == NG_F32 || m->dtype == NG_F64,
                 "%s: fisher noise needs f32 or f64 weights, not %s", key, ng_dtype_name(m->dtype));
    }
    NG_CHECK(isfinite(c->amplitude) && c->amplitude >= 0,
             "smoothing.amplitude: %g must be finite and >= 0", c->amplitude);
    NG_CHECK(c->schedule >= NG_SMOOTH_CONSTANT && c->schedule <= NG_SMOOTH_COSINE,
             "smoothing.schedule: %d is not one of constant (%d), linear (%d), cosine (%d)",
             c->schedule, NG_SMOOTH_CONSTANT, NG_SMOOTH_LINEAR, NG_SMOOTH_COSINE);
    NG_CHECK(c->schedule == NG_SMOOTH_CONSTANT || c->decay_steps >= 1,
             "smoothing.decay_steps: %lld must be >= 1 for a decaying schedule",
             (long long)c->decay_steps);
    NG_CHECK(c->layers == NG_SMOOTH_ALL || c->layers == NG_SMOOTH_KFAC_LAYERS,
             "smoothing.layers: %d is not one of all (%d), kfac (%d)", c->layers, NG_SMOOTH_ALL,
             NG_SMOOTH_KFAC_LAYERS);
    NG_CHECK(c->rank >= 0, "smoothing: rank %d", c->rank);
    int *perturbed = calloc((size_t)m->nparams + 1, sizeof *perturbed),
        *layer = calloc((size_t)m->nparams + 1, sizeof *layer);
    NG_CHECK(perturbed && layer, "out of host memory creating loss smoothing");
    int64_t largest = 0, largest_fisher = 0, largest_out = 0, largest_da = 0;
    for (int i = 0; i < m->nparams; i++) {
        const ng_layer *l = m->params[i].layer;
        perturbed[i] = c->layers == NG_SMOOTH_ALL || (l && l->capture);
        layer[i] = NOT_FISHER;
        int64_t n = m->params[i].param->value.numel;
        if (perturbed[i] && n > largest) largest = n;
    }
    for (int j = 0; kfac && j < ng_kfac_layers(kfac); j++) {
        ng_layer *l = ng_kfac_layer_at(kfac, j);
        ng_tensor A, G;
        ng_kfac_factors(kfac, j, NULL, &A, &G);
        int64_t out = G.shape[0], da = A.shape[0], in = l->params[0].value.numel / out;
        int w = -1;
        for (int i = 0; i < m->nparams && w < 0; i++)
            if (m->params[i].param == &l->params[0]) w = i;
        int bias = da > in;
        /* an invariant of the model's parameter order, which the key offsets rely on */
        if (w < 0 || !perturbed[w] ||
            (bias && (w + 1 >= m->nparams || !perturbed[w + 1] ||
                      m->params[w + 1].param != &l->params[1]))) {
            free(perturbed), free(layer);
            ng_fail("%s: fisher: K-FAC layer %s's weight%s not a perturbed "
                    "parameter of the model in order",
                    key, l->name, bias ? " and bias are" : " is");
        }
        layer[w] = j;
        if (bias) layer[w + 1] = FISHER_BIAS;
        if (out * da > largest_fisher) largest_fisher = out * da;
        if (out > largest_out) largest_out = out;
        if (da > largest_da) largest_da = da;
    }
    smoothing *s = calloc(1, sizeof *s);
    if (!s) free(perturbed), free(layer);
    NG_CHECK(s, "out of host memory creating loss smoothing");
    ng_optimizer_init(&s->head, ops, m, inner);
    s->c = *c;
    s->perturbed = perturbed;
    s->layer = layer;
    s->kfac = kfac;
    s->saved = ng_tensor_1d(m->dtype, m->device, m->numel, "smoothing saved weights");
    if (largest_fisher > largest) largest = largest_fisher;
    if (largest) s->noise = ng_tensor_1d(m->dtype, m->device, largest, "smoothing noise");
    if (largest_fisher) {
        s->work = ng_tensor_1d(m->dtype, m->device, largest_fisher, "smoothing fisher noise");
        s->roots = ng_tensor_1d(m->dtype, m->device, largest_out + largest_da, "smoothing roots");
        s->host = ng_tensor_1d(m->dtype, NG_CPU, largest_out + largest_da, "smoothing roots");
    }
    return &s->head;
}
