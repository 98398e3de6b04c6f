/* SGD with momentum (torch.optim.SGD, dampening 0), Nesterov, and L2 or decoupled weight decay: a
 * base optimizer of the interface, its config checks and the host scalars of one step. */
#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "optim/update_kernels.h"

static void check(const ng_optim_config *c) {
    /* Momentum 1 or more never forgets a gradient and diverges: refused early rather than late. */
    NG_CHECK(c->momentum >= 0.0 && c->momentum < 1.0, "optimizer.momentum: %g is outside [0, 1)",
             c->momentum);
    NG_CHECK(!c->nesterov || c->momentum > 0.0,
             "optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0");
    NG_CHECK(isfinite(c->weight_decay) && c->weight_decay >= 0.0,
             "optimizer.weight_decay: %g must be finite and >= 0", c->weight_decay);
}

static void update(ng_optimizer *part, double lr) {
    ng_first_order *o = (ng_first_order *)part;
    const ng_optim_config *c = &o->c;
    ng_model *m = part->model;
    ng_tensor *p = &m->flat_params, *g = &m->flat_grads, *buf = o->nstate ? &o->state[0] : NULL,
              *mask = &o->mask;
    ng_sgd_args a = {.lr = lr,
                     .l2 = c->decoupled ? 0.0 : c->weight_decay,
                     .keep = c->decoupled ? 1.0 - lr * c->weight_decay : 1.0,
                     .momentum = c->momentum,
                     .nesterov = c->nesterov != 0,
                     .first = part->steps == 0};
    NG_CHECK(a.momentum == 0.0 || buf, "sgd: momentum %g without a buffer", a.momentum);
    NG_DISPATCH(p, ng_optim_sgd_cpu(a, p, g, buf, mask), ng_optim_sgd_cuda(a, p, g, buf, mask));
}

const ng_optimizer_ops ng_sgd_ops = {.kind = "sgd",
                                     .title = "SGD",
                                     .file = "optimizer",
                                     .update = update,
                                     .state = ng_first_order_state,
                                     .destroy = ng_first_order_destroy};

ng_optimizer *ng_sgd_new(ng_model *m, const ng_optim_config *c) {
    check(c);
    static const char *const names[] = {"sgd.momentum"};
    return &ng_first_order_new(m, c, &ng_sgd_ops, names, c->momentum != 0.0)->head;
}
