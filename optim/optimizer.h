/* The one optimizer interface that the trainer and checkpoints drive, whatever trains the model:
 * a chain of parts, outer first, ending in a base optimizer. The base (SGD, AdamW) updates the
 * weights from m->flat_grads; a part in front of it (a preconditioner such as K-FAC, a wrapper)
 * sees the step's passes through the layer observer and its hooks and rewrites the gradient before
 * the base steps. Also: the SGD and AdamW config, and global-norm gradient clipping. */
#ifndef NG_OPTIMIZER_H
#define NG_OPTIMIZER_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most state tensors a base optimizer here has (AdamW: exp_avg and exp_avg_sq). */
#define NG_OPTIM_MAX_STATE 2

typedef struct ng_optimizer ng_optimizer;
struct ng_comm;

/* The backward passes of a step, announced to the parts before each (ng_optimizer_pass). */
typedef enum {
    NG_PASS_SAMPLED = 0, /* on labels sampled from the model (ng_optimizer_sampled_backward) */
    NG_PASS_LOSS = 1,    /* on the training loss: the gradient the step uses */
} ng_pass;

/* What a part implements. Every hook may be NULL (nothing to do there); update only in a base. */
typedef struct ng_optimizer_ops {
    const char *kind;  /* "sgd", "adamw", "kfac" */
    const char *title; /* for messages: "SGD", "AdamW", "K-FAC" */
    const char *file;  /* checkpoint file stem of its state ("optimizer" for every base) */
    /* Before the step's forward: the step (skipped ones counted) and this rank's batch size. */
    void (*begin)(ng_optimizer *o, int64_t step, int64_t n_examples);
    /* 1: wants a backward on labels sampled from the model before the loss's backward. */
    int (*sampled_backward)(ng_optimizer *o);
    void (*pass)(ng_optimizer *o, ng_pass p);
    /* The factor the loss gradient of the following backward passes is multiplied by. */
    void (*set_loss_scale)(ng_optimizer *o, double s);
    /* After the loss's backward, before anything looks at the gradient (even on a skipped step). */
    void (*after_backward)(ng_optimizer *o);
    /* Rewrites m->flat_grads in place (outer parts first), for learning rate lr. */
    void (*precondition)(ng_optimizer *o, double lr);
    /* The base's weight update from m->flat_grads; the step counter is the interface's. */
    void (*update)(ng_optimizer *o, double lr);
    /* Fills up to cap names and tensors (either may be NULL) and returns the total count. */
    int (*state)(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap);
    /* 1 when this rank holds only its own shard of the state, with the rank and world. */
    int (*sharded)(const ng_optimizer *o, int *rank, int *world);
    void (*distribute)(ng_optimizer *o, struct ng_comm *c);
    /* Appends its metrics fields (", \"name\": value" each) to buf, from byte `at`; returns the
     * new length. */
    size_t (*metrics)(ng_optimizer *o, char *buf, size_t cap, size_t at);
    void (*destroy)(ng_optimizer *o); /* its own state; the interface frees the inner part */
} ng_optimizer_ops;

/* The part's common head: implementations embed it as their first member. */
struct ng_optimizer {
    const ng_optimizer_ops *ops;
    ng_optimizer *inner; /* the part this one is in front of; NULL in the base */
    ng_model *model;
    ng_observer *observer; /* the part's layer observer, NULL when it observes nothing */
    int64_t steps;         /* base: updates taken */
};

/* For implementations: fills the head. inner must be a chain over the same model. */
void ng_optimizer_init(ng_optimizer *o, const ng_optimizer_ops *ops, ng_model *m,
                       ng_optimizer *inner);

/* ---- driving a chain (the trainer) ---------------------------------------------------------- */
/* The observer to put in ctx.observer for the step's passes (NULL when no part observes; at most
 * one part of a chain does). */
ng_observer *ng_optimizer_observer(ng_optimizer *o);
/* A step in order: begin, forward; if sampled_backward: pass(SAMPLED) and that backward;
 * set_loss_scale, pass(LOSS), the loss's backward; after_backward; and unless the step is skipped
 * (non-finite), the caller's unscale and clipping, then ng_optimizer_step. */
void ng_optimizer_begin(ng_optimizer *o, int64_t step, int64_t n_examples);
int ng_optimizer_sampled_backward(ng_optimizer *o);
void ng_optimizer_pass(ng_optimizer *o, ng_pass p);
void ng_optimizer_set_loss_scale(ng_optimizer *o, double s);
void ng_optimizer_after_backward(ng_optimizer *o);
/* Every part preconditions (outer first), then the base updates with learning rate lr (finite,
 * >= 0; else a usage error naming optimizer.lr) from m->flat_grads, which it does not zero.
 * Base semantics (torch): SGD with dampening 0 whose momentum buffer starts as the first step's
 * gradient; AdamW with bias correction and eps added after sqrt(v_hat). Every element is computed
 * in double and rounded once into the model's dtype. */
void ng_optimizer_step(ng_optimizer *o, double lr);
/* Under mpirun, after building, on every rank: parts that spread their work over the ranks. */
void ng_optimizer_distribute(ng_optimizer *o, struct ng_comm *c);
/* Every part's metrics fields appended to buf (NUL-terminated, cut at cap); returns the length. */
size_t ng_optimizer_metrics(ng_optimizer *o, char *buf, size_t cap);
/* "kfac+sgd": the parts' kinds, outer first. */
void ng_optimizer_describe(const ng_optimizer *o, char *buf, size_t cap);
/* Frees every part of the chain. */
void ng_optimizer_free(ng_optimizer *o);

/* ---- state (checkpoints) -------------------------------------------------------------------- */
/* The parts, outer first, base last: fills up to cap and returns how many there are. */
int ng_optimizer_parts(ng_optimizer *o, ng_optimizer **parts, int cap);
/* One part's state tensors by name: "sgd.momentum" (none when momentum is 0), "adamw.exp_avg",
 * "adamw.exp_avg_sq", K-FAC's (kfac.h). Fills up to cap entries and returns how many it filled;
 * ng_optimizer_state_count says how many there are. The tensors belong to the part; copying into
 * them restores the state. The step count travels separately (get_step / set_step). */
int ng_optimizer_state(ng_optimizer *part, const char **names, ng_tensor **tensors, int cap);
int ng_optimizer_state_count(ng_optimizer *part);
/* 1 when this rank holds only its shard of the part's state (then rank and world are set). */
int ng_optimizer_sharded(const ng_optimizer *part, int *rank, int *world);
/* The base's updates taken: AdamW's bias correction uses step + 1, and SGD starts its buffer at
 * step 0. */
int64_t ng_optimizer_get_step(const ng_optimizer *o);
void ng_optimizer_set_step(ng_optimizer *o, int64_t step);

/* ---- the base optimizers -------------------------------------------------------------------- */
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

/* A base optimizer by c->name (sgd.c, adamw.c). State lives on the model's device in the model's
 * dtype, one flat [numel] buffer per state with the model's offsets, zero at the start. Weight
 * decay applies only to parameters with param->decay == 1 (not biases, norms, embeddings, as timm
 * groups them); the alignment gaps between parameters are never touched. A bad config is a usage
 * error naming the optimizer.* key. The model must be built (ng_model_build) and outlive the
 * optimizer. */
ng_optimizer *ng_optimizer_new(ng_model *m, const ng_optim_config *c);
/* Their tables, for registries that name a kind's title and checkpoint file. */
extern const ng_optimizer_ops ng_sgd_ops, ng_adamw_ops;

/* Global L2 norm of m->flat_grads. When max_norm > 0 the gradients are scaled by
 * max_norm / (norm + 1e-6) if that factor is below 1, as torch.nn.utils.clip_grad_norm_ does.
 * A non-finite norm leaves the gradients as they are (the step is the caller's to skip).
 * Returns the norm before clipping. */
double ng_clip_grad_norm(ng_model *m, double max_norm);

#ifdef __cplusplus
}
#endif
#endif
