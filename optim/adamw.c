/* AdamW (torch.optim.AdamW, amsgrad off): a base optimizer of the interface, its config checks and
 * the host scalars of one step, bias corrections included. */
#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "optim/update_kernels.h"

static void check(const ng_optim_config *c) {
    NG_CHECK(c->beta1 >= 0.0 && c->beta1 < 1.0, "optimizer.beta1: %g is outside [0, 1)", c->beta1);
    NG_CHECK(c->beta2 >= 0.0 && c->beta2 < 1.0, "optimizer.beta2: %g is outside [0, 1)", c->beta2);
    /* torch allows eps = 0, but then a parameter whose gradient is still zero gets 0/0. */
    NG_CHECK(isfinite(c->eps) && c->eps > 0.0, "optimizer.eps: %g must be finite and > 0", c->eps);
    NG_CHECK(isfinite(c->weight_decay) && c->weight_decay >= 0.0,
             "optimizer.weight_decay: %g must be finite and >= 0", c->weight_decay);
}

static void update(ng_optimizer *part, double lr) {
    ng_first_order *o = (ng_first_order *)part;
    const ng_optim_config *c = &o->c;
    ng_model *md = part->model;
    ng_tensor *p = &md->flat_params, *g = &md->flat_grads, *m = &o->state[0], *v = &o->state[1],
              *mask = &o->mask;
    double t = (double)(part->steps + 1); /* torch increments its step before the update */
    double bc1 = 1.0 - pow(c->beta1, t), bc2 = 1.0 - pow(c->beta2, t);
    ng_adamw_args a = {.keep = 1.0 - lr * c->weight_decay,
                       .beta1 = c->beta1,
                       .one_minus_beta1 = 1.0 - c->beta1,
                       .beta2 = c->beta2,
                       .one_minus_beta2 = 1.0 - c->beta2,
                       .step_size = lr / bc1,
                       .bc2_sqrt = sqrt(bc2),
                       .eps = c->eps};
    NG_DISPATCH(p, ng_optim_adamw_cpu(a, p, g, m, v, mask),
                ng_optim_adamw_cuda(a, p, g, m, v, mask));
}

const ng_optimizer_ops ng_adamw_ops = {.kind = "adamw",
                                       .title = "AdamW",
                                       .file = "optimizer",
                                       .update = update,
                                       .state = ng_first_order_state,
                                       .destroy = ng_first_order_destroy};

ng_optimizer *ng_adamw_new(ng_model *m, const ng_optim_config *c) {
    check(c);
    static const char *const names[] = {"adamw.exp_avg", "adamw.exp_avg_sq"};
    return &ng_first_order_new(m, c, &ng_adamw_ops, names, 2)->head;
}
