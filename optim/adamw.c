/* AdamW (torch.optim.AdamW, amsgrad off): the config checks and the host scalars of one step,
 * bias corrections included. */
#include <math.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "optim/update_kernels.h"

void ng_adamw_check(const ng_optim_config *c) {
    NG_CHECK(c->beta1 >= 0.0 && c->beta1 < 1.0, "optimizer.beta1: %g is outside [0, 1)", c->beta1);
    NG_CHECK(c->beta2 >= 0.0 && c->beta2 < 1.0, "optimizer.beta2: %g is outside [0, 1)", c->beta2);
    /* torch allows eps = 0, but then a parameter whose gradient is still zero gets 0/0. */
    NG_CHECK(isfinite(c->eps) && c->eps > 0.0, "optimizer.eps: %g must be finite and > 0", c->eps);
    NG_CHECK(isfinite(c->weight_decay) && c->weight_decay >= 0.0,
             "optimizer.weight_decay: %g must be finite and >= 0", c->weight_decay);
}

void ng_adamw_update(const ng_optim_config *c, double lr, int64_t step, ng_tensor *p,
                     const ng_tensor *g, ng_tensor *m, ng_tensor *v, const ng_tensor *mask) {
    double t = (double)(step + 1); /* torch increments its step before the update */
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
