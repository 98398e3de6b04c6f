/* Dynamic loss scaling for f16 training: the loss gradient is multiplied by a power of two so
 * that small activation gradients stay representable, and the scale adapts to overflow. */
#ifndef NG_LOSS_SCALE_H
#define NG_LOSS_SCALE_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int dynamic;             /* 1: scale, grow and back off (f16); 0: scale stays 1 (bf16, f32) */
    double init_scale;       /* > 0; torch.amp's 2^16 */
    double growth_factor;    /* > 1 */
    double backoff_factor;   /* in (0, 1) */
    int64_t growth_interval; /* >= 1 clean steps in a row before the scale grows */
    int64_t max_skips;       /* >= 1 skipped steps in a row that end the run */
} ng_loss_scale_config;

/* The state: small enough to copy, and every field a checkpoint needs is in ng_loss_scaler_state.
 * Counters are kept as doubles (exact below 2^53) so the whole state is one dtype. */
typedef struct {
    ng_loss_scale_config c;
    double scale;       /* what the loss gradient is multiplied by this step */
    double clean_steps; /* finite steps since the scale last changed */
    double skips;       /* skipped steps in a row */
} ng_loss_scaler;

/* What the caller does with this step's gradients. */
typedef enum {
    NG_LOSS_SCALE_STEP = 0, /* finite: gradients are unscaled in place; take the optimizer step */
    NG_LOSS_SCALE_SKIP,     /* non-finite: leave weights and optimizer state alone this step */
    NG_LOSS_SCALE_ABORT,    /* max_skips skips in a row: stop the run (ng_loss_scaler_why) */
} ng_loss_scale_verdict;

/* The defaults for a compute dtype: dynamic from 2^16, x2 every 2000 clean steps, x0.5 on
 * overflow, 20 skips in a row end the run for f16; no scaling for bf16, f32 and f64 (their
 * range is f32's, so gradients neither overflow nor underflow from the format). */
ng_loss_scale_config ng_loss_scale_defaults(ng_dtype compute);
/* Checks the config (a usage error naming the precision.* key) and starts the state. */
void ng_loss_scaler_init(ng_loss_scaler *s, const ng_loss_scale_config *c);
/* The factor to multiply the loss (its gradient) by this step. */
double ng_loss_scaler_scale(const ng_loss_scaler *s);
/* After backward has left scale * gradient in `grads` (the f32 master gradient): if every element
 * is finite, multiplies grads by 1/scale (exact: the scale is a power of two when the factors
 * are), counts a clean step and grows the scale after growth_interval of them; otherwise backs
 * off, leaves grads alone and answers SKIP, or ABORT once max_skips skips come in a row. */
ng_loss_scale_verdict ng_loss_scaler_unscale(ng_loss_scaler *s, ng_tensor *grads);
/* The scale update alone, for callers that learnt finiteness elsewhere (e.g. all ranks agreed on
 * it); ng_loss_scaler_unscale calls it. */
ng_loss_scale_verdict ng_loss_scaler_update(ng_loss_scaler *s, int finite);
/* A sentence for the ABORT message: how many skips, and the scale reached. */
const char *ng_loss_scaler_why(const ng_loss_scaler *s);
/* The state as named f64 host tensors [1] for checkpoints: "loss_scale.scale",
 * "loss_scale.clean_steps", "loss_scale.skips". The tensors wrap the scaler's own fields, so
 * copying into them restores it. Fills up to cap entries; returns how many (3). */
int ng_loss_scaler_state(ng_loss_scaler *s, const char **names, ng_tensor *tensors, int cap);

#ifdef __cplusplus
}
#endif
#endif
