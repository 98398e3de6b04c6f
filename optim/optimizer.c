/* The optimizer interface: driving a chain of parts (hooks outer first, the base's update last),
 * the step counter, state by part, and what SGD and AdamW share (config by name, flat state
 * buffers, the weight-decay mask); global-norm gradient clipping. */
#include "optim/optimizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "optim/update_kernels.h"

/* ---- the chain ---------------------------------------------------------------------------- */

void ng_optimizer_init(ng_optimizer *o, const ng_optimizer_ops *ops, ng_model *m,
                       ng_optimizer *inner) {
    NG_CHECK(m && m->flat_params.data, "optimizer: the model must be built before its optimizer");
    NG_CHECK(!inner || inner->model == m, "optimizer: %s in front of a part of another model",
             ops->kind);
    NG_CHECK(inner || ops->update, "optimizer: %s needs a base optimizer behind it", ops->kind);
    memset(o, 0, sizeof *o);
    o->ops = ops, o->model = m, o->inner = inner;
}

static ng_optimizer *base_of(ng_optimizer *o) {
    while (o->inner) o = o->inner;
    return o;
}

ng_observer *ng_optimizer_observer(ng_optimizer *o) {
    for (; o; o = o->inner)
        if (o->observer) return o->observer;
    return NULL;
}

void ng_optimizer_begin(ng_optimizer *o, int64_t step, int64_t n_examples) {
    NG_CHECK(step >= 0 && n_examples >= 1, "optimizer: step %lld of %lld examples", (long long)step,
             (long long)n_examples);
    for (; o; o = o->inner)
        if (o->ops->begin) o->ops->begin(o, step, n_examples);
}

int ng_optimizer_sampled_backward(ng_optimizer *o) {
    for (; o; o = o->inner)
        if (o->ops->sampled_backward && o->ops->sampled_backward(o)) return 1;
    return 0;
}

void ng_optimizer_pass(ng_optimizer *o, ng_pass p) {
    for (; o; o = o->inner)
        if (o->ops->pass) o->ops->pass(o, p);
}

void ng_optimizer_set_loss_scale(ng_optimizer *o, double s) {
    NG_CHECK(s > 0 && isfinite(s), "optimizer: loss scale %g must be finite and > 0", s);
    for (; o; o = o->inner)
        if (o->ops->set_loss_scale) o->ops->set_loss_scale(o, s);
}

void ng_optimizer_after_backward(ng_optimizer *o) {
    for (; o; o = o->inner)
        if (o->ops->after_backward) o->ops->after_backward(o);
}

void ng_optimizer_step(ng_optimizer *o, double lr) {
    NG_CHECK(isfinite(lr) && lr >= 0.0,
             "optimizer.lr: the learning rate %g must be finite and >= 0", lr);
    ng_optimizer *p = o;
    for (; p->inner; p = p->inner)
        if (p->ops->precondition) p->ops->precondition(p, lr);
    if (p->model->numel) p->ops->update(p, lr);
    p->steps++;
}

void ng_optimizer_distribute(ng_optimizer *o, struct ng_comm *c) {
    for (; o; o = o->inner)
        if (o->ops->distribute) o->ops->distribute(o, c);
}

size_t ng_optimizer_metrics(ng_optimizer *o, char *buf, size_t cap) {
    NG_CHECK(cap > 0, "optimizer: no room for metrics");
    size_t at = 0;
    buf[0] = 0;
    for (; o; o = o->inner)
        if (o->ops->metrics) at = o->ops->metrics(o, buf, cap, at);
    return at;
}

void ng_optimizer_describe(const ng_optimizer *o, char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = 0;
    for (; o && at < cap; o = o->inner) {
        int n = snprintf(buf + at, cap - at, "%s%s", at ? "+" : "", o->ops->kind);
        at += n > 0 ? (size_t)n : 0;
    }
}

void ng_optimizer_free(ng_optimizer *o) {
    while (o) {
        ng_optimizer *inner = o->inner;
        o->ops->destroy(o);
        o = inner;
    }
}

int ng_optimizer_parts(ng_optimizer *o, ng_optimizer **parts, int cap) {
    int n = 0;
    for (; o; o = o->inner, n++)
        if (n < cap) parts[n] = o;
    return n;
}

int ng_optimizer_state(ng_optimizer *part, const char **names, ng_tensor **tensors, int cap) {
    if (!part->ops->state || cap <= 0) return 0;
    int n = part->ops->state(part, names, tensors, cap);
    return n < cap ? n : cap;
}

int ng_optimizer_state_count(ng_optimizer *part) {
    return part->ops->state ? part->ops->state(part, NULL, NULL, 0) : 0;
}

int ng_optimizer_sharded(const ng_optimizer *part, int *rank, int *world) {
    return part->ops->sharded ? part->ops->sharded(part, rank, world) : 0;
}

int64_t ng_optimizer_get_step(const ng_optimizer *o) {
    while (o->inner) o = o->inner;
    return o->steps;
}

void ng_optimizer_set_step(ng_optimizer *o, int64_t step) {
    NG_CHECK(step >= 0, "optimizer: step count %lld must be >= 0", (long long)step);
    base_of(o)->steps = step;
}

/* ---- what SGD and AdamW share ------------------------------------------------------------- */

/* Built on the host once: per element, whether weight decay applies, or a gap to skip. */
static ng_tensor build_mask(const ng_model *m) {
    ng_tensor h = ng_tensor_1d(NG_U8, NG_CPU, m->numel, "decay mask");
    uint8_t *k = h.data;
    memset(k, NG_MASK_GAP, (size_t)m->numel);
    for (int i = 0; i < m->nparams; i++) {
        const ng_param *p = m->params[i].param;
        memset(k + m->params[i].offset, p->decay ? NG_MASK_DECAY : NG_MASK_NO_DECAY,
               (size_t)p->value.numel);
    }
    if (m->device == NG_CPU) return h;
    ng_tensor d = ng_tensor_to(&h, m->device, "decay mask");
    ng_tensor_free(&h);
    return d;
}

ng_first_order *ng_first_order_new(ng_model *m, const ng_optim_config *c,
                                   const ng_optimizer_ops *ops, const char *const *state_names,
                                   int nstate) {
    ng_first_order *o = calloc(1, sizeof *o);
    NG_CHECK(o, "out of host memory creating the optimizer");
    ng_optimizer_init(&o->head, ops, m, NULL);
    o->c = *c;
    o->c.name = ops->kind; /* the caller's string may not outlive us */
    for (int i = 0; i < nstate; i++) {
        o->state[i] = ng_tensor_1d(m->dtype, m->device, m->numel, state_names[i]);
        ng_fill(&o->state[i], 0.0);
        o->state_names[i] = state_names[i];
    }
    o->nstate = nstate;
    o->mask = build_mask(m);
    return o;
}

int ng_first_order_state(ng_optimizer *part, const char **names, ng_tensor **tensors, int cap) {
    ng_first_order *o = (ng_first_order *)part;
    for (int i = 0; i < o->nstate && i < cap; i++) {
        if (names) names[i] = o->state_names[i];
        if (tensors) tensors[i] = &o->state[i];
    }
    return o->nstate;
}

void ng_first_order_destroy(ng_optimizer *part) {
    ng_first_order *o = (ng_first_order *)part;
    for (int i = 0; i < o->nstate; i++) ng_tensor_free(&o->state[i]);
    ng_tensor_free(&o->mask);
    free(o);
}

/* The base optimizers by name: each kind's file adds its constructor here. */
static const struct {
    const char *name;
    ng_optimizer *(*make)(ng_model *m, const ng_optim_config *c);
} bases[] = {{"sgd", ng_sgd_new}, {"adamw", ng_adamw_new}};

ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c) {
    NG_CHECK(m && m->flat_params.data, "optimizer: the model must be built before its optimizer");
    NG_CHECK(c->name, "optimizer.name: missing (allowed: sgd, adamw)");
    for (size_t i = 0; i < sizeof bases / sizeof *bases; i++)
        if (!strcmp(c->name, bases[i].name)) return bases[i].make(m, c);
    ng_fail("optimizer.name: unknown optimizer '%s' (allowed: sgd, adamw)", c->name);
    return NULL;
}

double ng_clip_grad_norm(ng_model *m, double max_norm) {
    NG_CHECK(!isnan(max_norm), "clip_grad_norm: max_norm is NaN");
    double norm = sqrt(ng_sumsq(&m->flat_grads));
    if (max_norm > 0.0 && isfinite(norm)) {
        double coef = max_norm / (norm + 1e-6); /* torch's epsilon, kept for equal results */
        if (coef < 1.0) ng_scale(coef, &m->flat_grads);
    }
    return norm;
}
