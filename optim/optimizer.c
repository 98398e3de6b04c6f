/* The optimizer object: config checks, state buffers and the weight-decay mask on the model's
 * device, the step counter, and global-norm gradient clipping. */
#include "optim/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "optim/update_kernels.h"

typedef enum { KIND_SGD, KIND_ADAMW } optim_kind;

struct ng_optimizer {
    ng_model *model;
    ng_optim_config c;
    optim_kind kind;
    int64_t step;
    ng_tensor state[NG_OPTIM_MAX_STATE]; /* sgd: momentum; adamw: exp_avg, exp_avg_sq */
    const char *state_names[NG_OPTIM_MAX_STATE];
    int nstate;
    ng_tensor mask; /* u8 [numel], NG_MASK_* per flat element */
};

static void add_state(ng_optimizer *o, const char *name) {
    ng_model *m = o->model;
    ng_tensor t = ng_tensor_1d(m->dtype, m->device, m->numel, name);
    ng_fill(&t, 0.0);
    o->state_names[o->nstate] = name;
    o->state[o->nstate++] = t;
}

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

ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c) {
    NG_CHECK(m && m->flat_params.data, "optimizer: the model must be built before its optimizer");
    NG_CHECK(c->name, "optimizer.name: missing (allowed: sgd, adamw)");
    optim_kind kind = KIND_SGD;
    if (!strcmp(c->name, "sgd")) {
        kind = KIND_SGD;
        ng_sgd_check(c);
    } else if (!strcmp(c->name, "adamw")) {
        kind = KIND_ADAMW;
        ng_adamw_check(c);
    } else {
        ng_fail("optimizer.name: unknown optimizer '%s' (allowed: sgd, adamw)", c->name);
        return NULL;
    }
    ng_optimizer *o = calloc(1, sizeof *o);
    NG_CHECK(o, "out of host memory creating the optimizer");
    o->model = m;
    o->c = *c;
    o->c.name = kind == KIND_SGD ? "sgd" : "adamw"; /* the caller's string may not outlive us */
    o->kind = kind;
    if (kind == KIND_SGD && c->momentum != 0.0) add_state(o, "sgd.momentum");
    if (kind == KIND_ADAMW) {
        add_state(o, "adamw.exp_avg");
        add_state(o, "adamw.exp_avg_sq");
    }
    o->mask = build_mask(m);
    return o;
}

void ng_optimizer_step(ng_optimizer *o, double lr) {
    NG_CHECK(isfinite(lr) && lr >= 0.0,
             "optimizer.lr: the learning rate %g must be finite and >= 0", lr);
    ng_model *m = o->model;
    if (m->numel == 0) {
        o->step++;
        return;
    }
    if (o->kind == KIND_SGD)
        ng_sgd_update(&o->c, lr, o->step, &m->flat_params, &m->flat_grads,
                      o->nstate ? &o->state[0] : NULL, &o->mask);
    else
        ng_adamw_update(&o->c, lr, o->step, &m->flat_params, &m->flat_grads, &o->state[0],
                        &o->state[1], &o->mask);
    o->step++;
}

int ng_optimizer_state(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap) {
    int n = 0;
    for (; n < o->nstate && n < cap; n++) {
        names[n] = o->state_names[n];
        tensors[n] = &o->state[n];
    }
    return n;
}

int64_t ng_optimizer_get_step(const ng_optimizer *o) {
    return o->step;
}

void ng_optimizer_set_step(ng_optimizer *o, int64_t step) {
    NG_CHECK(step >= 0, "optimizer: step count %lld must be >= 0", (long long)step);
    o->step = step;
}

void ng_optimizer_free(ng_optimizer *o) {
    if (!o) return;
    for (int i = 0; i < o->nstate; i++) ng_tensor_free(&o->state[i]);
    ng_tensor_free(&o->mask);
    free(o);
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
