/* Dynamic loss scaling: the scale's schedule and the unscale-and-check of the f32 gradient. */
#include "optim/loss_scale.h"

#include <math.h>
#include <stdio.h>

#include "core/error.h"
#include "core/ops.h"

ng_loss_scale_config ng_loss_scale_defaults(ng_dtype compute) {
    return (ng_loss_scale_config){.dynamic = compute == NG_F16,
                                  .init_scale = 65536.0,
                                  .growth_factor = 2.0,
                                  .backoff_factor = 0.5,
                                  .growth_interval = 2000,
                                  .max_skips = 10}; /* train.max_skips's default */
}

void ng_loss_scaler_init(ng_loss_scaler *s, const ng_loss_scale_config *c) {
    NG_CHECK(isfinite(c->init_scale) && c->init_scale > 0,
             "precision.init_scale: %g must be finite and > 0", c->init_scale);
    NG_CHECK(isfinite(c->growth_factor) && c->growth_factor > 1,
             "precision.growth_factor: %g must be finite and > 1", c->growth_factor);
    NG_CHECK(c->backoff_factor > 0 && c->backoff_factor < 1,
             "precision.backoff_factor: %g is outside (0, 1)", c->backoff_factor);
    NG_CHECK(c->growth_interval >= 1, "precision.growth_interval: %lld must be >= 1",
             (long long)c->growth_interval);
    /* The trainer's one limit on skipped steps, whatever their cause, is train.max_skips. */
    NG_CHECK(c->max_skips >= 1, "train.max_skips: %lld must be >= 1", (long long)c->max_skips);
    *s = (ng_loss_scaler){.c = *c, .scale = c->dynamic ? c->init_scale : 1.0};
}

double ng_loss_scaler_scale(const ng_loss_scaler *s) {
    return s->scale;
}

ng_loss_scale_verdict ng_loss_scaler_update(ng_loss_scaler *s, int finite) {
    if (finite) {
        s->skips = 0;
        if (s->c.dynamic && ++s->clean_steps >= (double)s->c.growth_interval) {
            double grown = s->scale * s->c.growth_factor;
            /* Past f32's range the loss gradient itself would overflow: stay put. */
            if (isfinite((float)grown)) s->scale = grown;
            s->clean_steps = 0;
        }
        return NG_LOSS_SCALE_STEP;
    }
    s->clean_steps = 0;
    if (s->c.dynamic) s->scale *= s->c.backoff_factor;
    return ++s->skips >= (double)s->c.max_skips ? NG_LOSS_SCALE_ABORT : NG_LOSS_SCALE_SKIP;
}

ng_loss_scale_verdict ng_loss_scaler_unscale(ng_loss_scaler *s, ng_tensor *grads) {
    int finite = ng_all_finite(grads);
    /* Unscale before the update changes the scale: the gradient was made with the old one. */
    if (finite && s->scale != 1.0) ng_scale(1.0 / s->scale, grads);
    return ng_loss_scaler_update(s, finite);
}

const char *ng_loss_scaler_why(const ng_loss_scaler *s) {
    static _Thread_local char msg[160];
    snprintf(msg, sizeof msg,
             "%.0f steps in a row had non-finite gradients (loss scale now %g); train.max_skips "
             "is %lld",
             s->skips, s->scale, (long long)s->c.max_skips);
    return msg;
}

int ng_loss_scaler_state(ng_loss_scaler *s, const char **names, ng_tensor *tensors, int cap) {
    static const char *const n[3] = {"loss_scale.scale", "loss_scale.clean_steps",
                                     "loss_scale.skips"};
    double *v[3] = {&s->scale, &s->clean_steps, &s->skips};
    int k = 0;
    for (; k < 3 && k < cap; k++) {
        names[k] = n[k];
        tensors[k] = ng_tensor_wrap(v[k], NG_F64, NG_CPU, 1, (int64_t[]){1}, n[k]);
    }
    return k;
}
