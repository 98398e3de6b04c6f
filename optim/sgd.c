/* SGD with momentum (torch.optim.SGD, dampening 0), Nesterov, and L2 or decoupled weight decay:
 * the config checks and the host scalars of one step. */
#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "optim/update_kernels.h"

void ng_sgd_check(const ng_optim_config *c) {
    /* Momentum 1 or more never forgets a gradient and diverges: refused early rather than late. */
    NG_CHECK(c->momentum >= 0.0 && c->momentum < 1.0, "optimizer.momentum: %g is outside [0, 1)",
             c->momentum);
    NG_CHECK(!c->nesterov || c->momentum > 0.0,
             "optimizer.nesterov: Nesterov momentum needs optimizer.momentum > 0");
    NG_CHECK(isfinite(c->weight_decay) && c->weight_decay >= 0.0,
             "optimizer.weight_decay: %g must be finite and >= 0", c->weight_decay);
}

void ng_sgd_update(const ng_optim_config *c, double lr, int64_t step, ng_tensor *p,
                   const ng_tensor *g, ng_tensor *buf, const ng_tensor *mask) {
    ng_sgd_args a = {.lr = lr,
                     .l2 = c->decoupled ? 0.0 : c->weight_decay,
                     .keep = c->decoupled ? 1.0 - lr * c->weight_decay : 1.0,
                     .momentum = c->momentum,
                     .nesterov = c->nesterov != 0,
                     .first = step == 0};
    NG_CHECK(a.momentum == 0.0 || buf, "sgd: momentum %g without a buffer", a.momentum);
    NG_DISPATCH(p, ng_optim_sgd_cpu(a, p, g, buf, mask), ng_optim_sgd_cuda(a, p, g, buf, mask));
}
