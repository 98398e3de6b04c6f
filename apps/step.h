/* The passes of one training step through the optimizer interface, shared by `natgrad train` and
 * `natgrad bench --step`, so the benchmark times what training runs: the optimizer's observer on
 * the forward, its sampled-label backward when it wants one (the true Fisher), the loss's backward
 * with its loss scale, and its after-backward hook. What follows (the finite check, clipping, the
 * optimizer's step) stays with the caller. */
#ifndef NG_STEP_H
#define NG_STEP_H

#include <stdint.h>

#include "nn/model.h"
#include "optim/optimizer.h"

typedef struct {
    uint64_t seed;       /* the run's seed: the sampled labels' Philox key */
    int64_t step;        /* training step (skipped ones counted) */
    double smoothing;    /* label smoothing of the loss */
    double scale;        /* loss scale (1: none) */
    ng_grad_hook *ready; /* told as gradients become final during the loss's backward, or NULL */
    double backward_at;  /* out: ng_now() when the loss's backward started */
    int64_t correct;     /* out: correct predictions in the batch */
} ng_step_passes;

/* Forward of x on ctx (whose rng and training mode the caller set), then the backward passes;
 * leaves the loss's gradient (times p->scale) in m->flat_grads and returns the loss. */
double ng_step_run_passes(ng_model *m, ng_optimizer *opt, ng_ctx *ctx, const ng_tensor *x,
                          const ng_tensor *y, ng_step_passes *p);

#endif
