/* One training step through the optimizer interface, as the trainer takes it, for the optimizer
 * tests: begin, forward with the optimizer's observer, the loss gradient, backward, after the
 * backward, the update. */
#ifndef NG_TEST_OPTIM_STEP_H
#define NG_TEST_OPTIM_STEP_H

#include "nn/loss.h"
#include "nn/model.h"
#include "optim/optimizer.h"

static inline void ng_test_optim_step(ng_model *m, ng_optimizer *o, const ng_tensor *x,
                                      const ng_tensor *y, int64_t step, double lr) {
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 5, (uint64_t)step);
    ctx.observer = ng_optimizer_observer(o);
    ng_optimizer_begin(o, step, x->shape[0]);
    ng_tensor logits = ng_model_forward(m, &ctx, x);
    ng_tensor d = ng_arena_tensor(&m->grads, logits.dtype, logits.ndim, logits.shape, "d");
    ng_optimizer_pass(o, NG_PASS_LOSS);
    ng_softmax_xent(&logits, y, 0.0, &d, NULL);
    ng_model_zero_grad(m);
    ng_model_backward(m, &ctx, &d);
    ng_optimizer_after_backward(o);
    ng_optimizer_step(o, lr);
}

#endif
