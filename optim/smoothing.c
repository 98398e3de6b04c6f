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

typedef struct {
    ng_optimizer head;
    ng_smoothing_config c;
    int *perturbed;  /* per model parameter: 1 when it gets noise */
    ng_tensor saved; /* [numel] the weights before this step's perturbation */
    ng_tensor noise; /* [largest perturbed parameter] scratch for z */
    int64_t step;    /* of the last begin */
    int on;          /* the weights are perturbed now */
} smoothing;

double ng_smoothing_amplitude(const ng_smoothing_config *c, int64_t step) {
    if (c->schedule == NG_SMOOTH_CONSTANT) return c->amplitude;
    double t = step <= 0 ? 0.0 : step >= c->decay_steps ? 1.0 : (double)step / c->decay_steps;
    if (c->schedule == NG_SMOOTH_LINEAR) return c->amplitude * (1.0 - t);
    return c->amplitude * 0.5 * (1.0 + cos(M_PI * t));
}

static void begin(ng_optimizer *o, int64_t step, int64_t n) {
    (void)n;
    smoothing *s = (smoothing *)o;
    ng_model *m = o->model;
    NG_CHECK(!s->on,
             "smoothing: begin of step %lld while step %lld's perturbation is still in "
             "place (no after_backward)",
             (long long)step, (long long)s->step);
    s->step = step;
    double a = ng_smoothing_amplitude(&s->c, step);
    ng_copy(&s->saved, &m->flat_params);
    ng_rng_key key = {.seed = s->c.seed,
                      .stream = NG_STREAM_SMOOTHING + (uint64_t)s->c.rank,
                      .offset = (uint64_t)step << 32};
    for (int i = 0; i < m->nparams; i++) {
        if (!s->perturbed[i]) continue;
        ng_tensor *w = &m->params[i].param->value;
        ng_tensor wf = ng_tensor_reshape(w, 1, (int64_t[]){w->numel});
        ng_tensor z = ng_tensor_view(&s->noise, 0, 1, (int64_t[]){w->numel}, "smoothing noise");
        double scale = s->c.scale_by_weight ? sqrt(ng_sumsq(w) / (double)w->numel) : 1.0;
        if (s->c.noise == NG_SMOOTH_GAUSSIAN)
            ng_rng_normal(&z, key, 0.0, 1.0);
        else
            ng_rng_uniform(&z, key, -1.0, 1.0);
        key.offset += ng_rng_blocks(w->numel); /* the next parameter's draws do not overlap */
        ng_axpy(a * scale, &z, &wf);
    }
    ng_model_refresh_compute(m); /* the forward's half copy sees w + eps */
    s->on = 1;
}

static void after_backward(ng_optimizer *o) {
    smoothing *s = (smoothing *)o;
    if (!s->on) return;
    ng_copy(&o->model->flat_params, &s->saved);
    ng_model_refresh_compute(o->model); /* a skipped step must leave the half copy of w too */
    s->on = 0;
}

static void distribute(ng_optimizer *o, struct ng_comm *c) {
    ((smoothing *)o)->c.rank = ng_comm_rank(c);
}

static size_t metrics(ng_optimizer *o, char *buf, size_t cap, size_t at) {
    smoothing *s = (smoothing *)o;
    int n = snprintf(buf + at, cap - at, ", \"smoothing_amplitude\": %.9g",
                     ng_smoothing_amplitude(&s->c, s->step));
    return n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
}

static void destroy(ng_optimizer *o) {
    smoothing *s = (smoothing *)o;
    ng_tensor_free(&s->saved);
    if (s->noise.data) ng_tensor_free(&s->noise);
    free(s->perturbed);
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

ng_optimizer *ng_smoothing_new(ng_model *m, const ng_smoothing_config *c, ng_optimizer *inner) {
    NG_CHECK(inner, "smoothing: loss smoothing wraps an optimizer; none given");
    NG_CHECK(c->noise == NG_SMOOTH_GAUSSIAN || c->noise == NG_SMOOTH_UNIFORM,
             "smoothing.noise: %d is not one of gaussian (%d), uniform (%d)", c->noise,
             NG_SMOOTH_GAUSSIAN, NG_SMOOTH_UNIFORM);
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
    smoothing *s = calloc(1, sizeof *s);
    int *perturbed = calloc((size_t)m->nparams + 1, sizeof *perturbed);
    NG_CHECK(s && perturbed, "out of host memory creating loss smoothing");
    ng_optimizer_init(&s->head, &ng_smoothing_ops, m, inner);
    s->c = *c;
    s->perturbed = perturbed;
    int64_t largest = 0;
    for (int i = 0; i < m->nparams; i++) {
        const ng_layer *l = m->params[i].layer;
        s->perturbed[i] = c->layers == NG_SMOOTH_ALL || (l && l->capture);
        int64_t n = m->params[i].param->value.numel;
        if (s->perturbed[i] && n > largest) largest = n;
    }
    s->saved = ng_tensor_1d(m->dtype, m->device, m->numel, "smoothing saved weights");
    if (largest) s->noise = ng_tensor_1d(m->dtype, m->device, largest, "smoothing noise");
    return &s->head;
}
