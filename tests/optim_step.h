/* What the optimizer tests share: a small model with a layer K-FAC covers and one it does not,
 * and one training step through the optimizer interface as the trainer takes it. */
#ifndef NG_TEST_OPTIM_STEP_H
#define NG_TEST_OPTIM_STEP_H

#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/optimizer.h"

/* Linear in -> hidden, LayerNorm (not K-FAC-covered), ReLU, Linear hidden -> classes; arenas of
 * 4 MiB each. */
static inline ng_model *ng_test_optim_mlp(uint64_t seed, ng_device dev, ng_dtype dt, int64_t in,
                                          int64_t hidden, int64_t classes) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", in, hidden, 1));
    ng_layer_add_child(s, ng_layernorm("norm", hidden, 1e-5));
    ng_layer_add_child(s, ng_relu("act"));
    ng_layer_add_child(s, ng_linear("fc2", hidden, classes, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, dev, dt, seed, (size_t)1 << 22, (size_t)1 << 22);
    return m;
}

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
