/* SGD and AdamW: state buffers, the weight-decay mask, dispatch to the fused updates. */
#include "optim/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/ops.h"
#include "optim/update_kernels.h"

struct ng_optimizer {
    ng_optim_config c;
    int adamw;
    ng_model *m;
    int64_t step;
    ng_tensor s1, s2; /* sgd: momentum; adamw: exp_avg, exp_avg_sq */
    ng_tensor mask;   /* u8 [numel]: 1 where weight decay applies */
};

static ng_tensor state(ng_model *m, const char *name) {
    ng_tensor t = ng_tensor_1d(m->dtype, m->device, m->numel, name);
    ng_fill(&t, 0.0);
    return t;
}

ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c) {
    int adamw = !strcmp(c->name, "adamw");
    NG_CHECK(adamw || !strcmp(c->name, "sgd"), "optimizer.name: '%s' is not one of sgd|adamw",
             c->name);
    NG_CHECK(c->weight_decay >= 0, "optimizer.weight_decay: %g must be >= 0", c->weight_decay);
    if (adamw) {
        NG_CHECK(c->beta1 >= 0 && c->beta1 < 1, "optimizer.beta1: %g is outside [0, 1)", c->beta1);
        NG_CHECK(c->beta2 >= 0 && c->beta2 < 1, "optimizer.beta2: %g is outside [0, 1)", c->beta2);
        NG_CHECK(c->eps > 0, "optimizer.eps: %g must be > 0", c->eps);
    } else {
        NG_CHECK(c->momentum >= 0 && c->momentum < 1, "optimizer.momentum: %g is outside [0, 1)",
                 c->momentum);
        NG_CHECK(!c->nesterov || c->momentum > 0, "optimizer.nesterov: needs momentum > 0");
    }
    ng_optimizer *o = calloc(1, sizeof *o);
    o->c = *c, o->adamw = adamw, o->m = m;
    if (adamw) {
        o->s1 = state(m, "adamw.exp_avg");
        o->s2 = state(m, "adamw.exp_avg_sq");
    } else if (c->momentum > 0) {
        o->s1 = state(m, "sgd.momentum");
    }
    ng_tensor mh = ng_tensor_1d(NG_U8, NG_CPU, m->numel, "decay mask");
    memset(mh.data, 0, (size_t)m->numel);
    for (int i = 0; i < m->nparams; i++)
        if (m->params[i].param->decay)
            memset((uint8_t *)mh.data + m->params[i].offset, 1,
                   (size_t)m->params[i].param->value.numel);
    o->mask = ng_tensor_to(&mh, m->device, "decay mask");
    ng_tensor_free(&mh);
    return o;
}

void ng_optimizer_step(ng_optimizer *o, double lr) {
    ng_model *m = o->m;
    NG_CHECK(lr >= 0 && isfinite(lr), "optimizer: learning rate %g must be finite and >= 0", lr);
    const uint8_t *mask = o->mask.data;
    if (o->adamw) {
        double t = (double)(o->step + 1);
        ng_adamw_args a = {lr,
                           o->c.beta1,
                           o->c.beta2,
                           o->c.eps,
                           o->c.weight_decay,
                           1 - pow(o->c.beta1, t),
                           1 - pow(o->c.beta2, t)};
        NG_DISPATCH(&m->flat_params,
                    ng_cpu_adamw(&m->flat_params, &m->flat_grads, &o->s1, &o->s2, mask, a),
                    ng_cuda_adamw(&m->flat_params, &m->flat_grads, &o->s1, &o->s2, mask, a));
    } else {
        ng_sgd_args a = {
            lr, o->c.momentum, o->c.weight_decay, o->c.nesterov, o->c.decoupled, o->step == 0};
        ng_tensor *buf = o->c.momentum > 0 ? &o->s1 : NULL;
        NG_DISPATCH(&m->flat_params, ng_cpu_sgd(&m->flat_params, &m->flat_grads, buf, mask, a),
                    ng_cuda_sgd(&m->flat_params, &m->flat_grads, buf, mask, a));
    }
    o->step++;
}

int ng_optimizer_state(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap) {
    int n = 0;
    if (o->s1.data && n < cap) names[n] = o->s1.name, tensors[n++] = &o->s1;
    if (o->s2.data && n < cap) names[n] = o->s2.name, tensors[n++] = &o->s2;
    return n;
}

int64_t ng_optimizer_get_step(const ng_optimizer *o) {
    return o->step;
}
void ng_optimizer_set_step(ng_optimizer *o, int64_t step) {
    o->step = step;
}

void ng_optimizer_free(ng_optimizer *o) {
    if (!o) return;
    ng_tensor_free(&o->s1);
    ng_tensor_free(&o->s2);
    ng_tensor_free(&o->mask);
    free(o);
}

double ng_clip_grad_norm(ng_model *m, double max_norm) {
    double norm = sqrt(ng_sumsq(&m->flat_grads));
    if (max_norm > 0 && norm > max_norm) ng_scale(max_norm / (norm + 1e-6), &m->flat_grads);
    return norm;
}
