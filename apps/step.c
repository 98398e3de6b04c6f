/* The passes of a training step (apps/step.h). */
#include "apps/step.h"

#include "apps/clock.h"
#include "nn/loss.h"
#include "nn/sample.h"

/* The Philox stream of the true Fisher's sampled labels (offset: step << 32). */
#define NG_STREAM_FISHER (UINT64_C(0x46495348) << 32)

double ng_step_run_passes(ng_model *m, ng_optimizer *opt, ng_ctx *ctx, const ng_tensor *x,
                          const ng_tensor *y, ng_step_passes *p) {
    int64_t n = x->shape[0];
    ctx->observer = ng_optimizer_observer(opt);
    ng_optimizer_begin(opt, p->step, n);
    ng_tensor logits = ng_model_forward(m, ctx, x);
    ng_tensor dlogits =
        ng_arena_tensor(&m->grads, logits.dtype, logits.ndim, logits.shape, "dlogits");
    if (ng_optimizer_sampled_backward(opt)) {
        /* E.g. K-FAC's true Fisher: a backward on labels drawn from the model, whose parameter
         * gradients are then dropped. */
        ng_tensor sampled = ng_arena_tensor(&m->grads, NG_I32, 1, (int64_t[]){n}, "sampled");
        ng_sample_categorical(&logits,
                              (ng_rng_key){.seed = p->seed,
                                           .stream = NG_STREAM_FISHER,
                                           .offset = (uint64_t)p->step << 32},
                              &sampled);
        ng_softmax_xent(&logits, &sampled, 0.0, &dlogits, NULL);
        ng_optimizer_pass(opt, NG_PASS_SAMPLED);
        ng_model_zero_grad(m);
        ctx->retain = 1; /* the forward serves the backward below too */
        ng_model_backward(m, ctx, &dlogits);
        ctx->retain = 0;
    }
    ng_optimizer_pass(opt, NG_PASS_LOSS);
    /* The loss gradient is multiplied by the loss scale (fp16), so small gradients survive the
     * half-precision backward; the optimizer's parts divide it out of what they gather (K-FAC's
     * G), the caller out of the gradient. */
    ng_optimizer_set_loss_scale(opt, p->scale);
    p->correct = 0;
    double loss = ng_softmax_xent_scaled(&logits, y, p->smoothing, p->scale, &dlogits, &p->correct);
    ng_model_zero_grad(m);
    ctx->grad_ready = p->ready;
    p->backward_at = ng_now();
    ng_model_backward(m, ctx, &dlogits);
    ctx->grad_ready = NULL;
    ng_optimizer_after_backward(opt);
    return loss;
}
