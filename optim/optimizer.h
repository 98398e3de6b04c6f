/* First-order optimizers over the model's flat buffers: SGD (momentum, Nesterov, L2 or decoupled
 * weight decay) and AdamW with PyTorch's update rules, and global-norm gradient clipping. */
#ifndef NG_OPTIMIZER_H
#define NG_OPTIMIZER_H

#include <stdint.h>

#include "nn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most state tensors any optimizer here has (AdamW: exp_avg and exp_avg_sq). */
#define NG_OPTIM_MAX_STATE 2

typedef struct ng_optimizer ng_optimizer;

typedef struct {
    const char *name;         /* "sgd", "adamw" */
    double momentum;          /* sgd: in [0, 1); 0 keeps no buffer */
    int nesterov;             /* sgd: needs momentum > 0 */
    double beta1, beta2, eps; /* adamw: betas in [0, 1), eps > 0 (torch: 0.9, 0.999, 1e-8) */
    double weight_decay;      /* >= 0 */
    /* sgd: 0 = L2 (wd * w added to the gradient before momentum, torch.optim.SGD), 1 = decoupled
     * (w -= lr * wd * w before the gradient step, SGDW). adamw is always decoupled, as
     * torch.optim.AdamW (w -= lr * wd * w), and ignores this field. */
    int decoupled;
} ng_optim_config;

/* State lives on the model's device in the model's dtype, one flat [numel] buffer per state with
 * the model's offsets, zero at the start. Weight decay applies only to parameters with
 * param->decay == 1 (not biases, norms, embeddings, as timm groups them); the alignment gaps
 * between parameters are never touched. A bad config is a usage error naming the optimizer.*
 * key. The model must be built (ng_model_build) and outlive the optimizer. */
ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c);
/* One update with learning rate lr (finite, >= 0; else a usage error naming optimizer.lr) from
 * m->flat_grads, which it does not zero. torch semantics: SGD with dampening 0 whose momentum
 * buffer starts as the first step's gradient; AdamW with bias correction and eps added after
 * sqrt(v_hat). Every element is computed in double and rounded once into the model's dtype. */
void ng_optimizer_step(ng_optimizer *o, double lr);
/* The state tensors by name for checkpoints: "sgd.momentum" (none when momentum is 0) or
 * "adamw.exp_avg", "adamw.exp_avg_sq". Fills up to cap entries (at most NG_OPTIM_MAX_STATE
 * exist) and returns how many it filled. The tensors belong to the optimizer; copying into them
 * restores the state. The step count travels separately (get_step / set_step). */
int ng_optimizer_state(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap);
/* Steps taken: AdamW's bias correction uses step + 1, and SGD starts its buffer at step 0. */
int64_t ng_optimizer_get_step(const ng_optimizer *o);
void ng_optimizer_set_step(ng_optimizer *o, int64_t step);
void ng_optimizer_free(ng_optimizer *o);

/* Global L2 norm of m->flat_grads. When max_norm > 0 the gradients are scaled by
 * max_norm / (norm + 1e-6) if that factor is below 1, as torch.nn.utils.clip_grad_norm_ does.
 * A non-finite norm leaves the gradients as they are (the step is the caller's to skip).
 * Returns the norm before clipping. */
double ng_clip_grad_norm(ng_model *m, double max_norm);

#ifdef __cplusplus
}
#endif
#endif
