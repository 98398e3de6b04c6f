/* First-order optimizers over the model's flat buffers: SGD (momentum, Nesterov, L2 or decoupled
 * weight decay) and AdamW, with PyTorch's update rules; global-norm gradient clipping. K-FAC
 * preconditions the gradients before these step (optim/kfac.h). */
#ifndef NG_OPTIMIZER_H
#define NG_OPTIMIZER_H

#include "nn/model.h"

typedef struct {
    const char *name;         /* "sgd" or "adamw" */
    double momentum;          /* sgd */
    int nesterov;             /* sgd */
    double beta1, beta2, eps; /* adamw */
    double weight_decay;
    int decoupled; /* sgd: 0 = L2 (wd * w added to the gradient before momentum, as torch SGD),
                    * 1 = decoupled (w -= lr * wd * w, SGDW); adamw is always decoupled */
} ng_optim_config;

typedef struct ng_optimizer ng_optimizer;

/* State lives on the model's device in its dtype, one flat buffer per state with the model's
 * offsets. Weight decay applies only to parameters with decay == 1 (not biases, norms,
 * embeddings). A bad config is a usage error naming the optimizer.* key. */
ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c);
/* One update with learning rate lr from m->flat_grads (which it does not zero). */
void ng_optimizer_step(ng_optimizer *o, double lr);
/* State tensors by name for checkpoints ("sgd.momentum", "adamw.exp_avg", "adamw.exp_avg_sq"). */
int ng_optimizer_state(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap);
int64_t ng_optimizer_get_step(const ng_optimizer *o);
void ng_optimizer_set_step(ng_optimizer *o, int64_t step);
void ng_optimizer_free(ng_optimizer *o);

/* Global L2 norm of the gradients; above max_norm > 0 they are scaled by max_norm/(norm+1e-6)
 * as torch.nn.utils.clip_grad_norm_. Returns the norm before clipping. */
double ng_clip_grad_norm(ng_model *m, double max_norm);

#endif
