/* The registry of optimizer kinds that `natgrad train` builds from its config: each kind's config
 * keys, how they are read and checked, and how the part is built. A run's optimizer is a chain:
 * the base named by optimizer.name, with every enabled front part (a preconditioner or wrapper)
 * in front of it in the registry's order. A new optimizer is its file in optim/ plus its rows
 * below and its entry in optimizers.c. */
#ifndef NG_APPS_OPTIMIZERS_H
#define NG_APPS_OPTIMIZERS_H

#include "apps/config.h"
#include "optim/optimizer.h"

/* The config keys of every optimizer kind, as rows of the train schema (train_config.c): key,
 * type, default, range ("1, 0": unbounded), choices, help. */
// clang-format off
#define NG_OPTIM_CFG_ROWS \
    {"optimizer.name", NG_CFG_CHOICE, "sgd", 1, 0, "sgd|adamw", \
     "base optimizer"}, \
    {"optimizer.lr", NG_CFG_FLOAT, "0.1", 0, 1e6, NULL, \
     "peak learning rate"}, \
    {"optimizer.momentum", NG_CFG_FLOAT, "0.9", 0, 1, NULL, \
     "sgd momentum"}, \
    {"optimizer.nesterov", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "sgd Nesterov momentum"}, \
    {"optimizer.weight_decay", NG_CFG_FLOAT, "0", 0, 10, NULL, \
     "weight decay (not on biases and norms)"}, \
    {"optimizer.decoupled", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "sgd: decoupled weight decay (SGDW) instead of L2"}, \
    {"optimizer.beta1", NG_CFG_FLOAT, "0.9", 0, 0.999999, NULL, \
     "adamw beta1"}, \
    {"optimizer.beta2", NG_CFG_FLOAT, "0.999", 0, 0.999999999, NULL, \
     "adamw beta2"}, \
    {"optimizer.eps", NG_CFG_FLOAT, "1e-8", 1e-30, 1, NULL, \
     "adamw epsilon"}, \
    {"kfac.enabled", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "precondition the gradients with K-FAC before the optimizer steps"}, \
    {"kfac.fisher", NG_CFG_CHOICE, "empirical", 1, 0, "empirical|true", \
     "G from the data's labels, or from labels sampled from the model (one extra backward)"}, \
    {"kfac.factor_decay", NG_CFG_FLOAT, "0.95", 0, 0.999999, NULL, \
     "running-average weight of the old factors"}, \
    {"kfac.factor_every", NG_CFG_INT, "10", 1, 1e9, NULL, \
     "steps between factor updates"}, \
    {"kfac.inv_every", NG_CFG_INT, "100", 1, 1e9, NULL, \
     "steps between eigendecompositions / inverses"}, \
    {"kfac.damping", NG_CFG_FLOAT, "0.001", 1e-12, 1e6, NULL, \
     "Tikhonov damping gamma"}, \
    {"kfac.damping_final", NG_CFG_FLOAT, "0", 0, 1e6, NULL, \
     "damping reached after damping_steps (geometric); 0 = constant"}, \
    {"kfac.damping_steps", NG_CFG_INT, "0", 0, 1e12, NULL, \
     "steps of the damping schedule"}, \
    {"kfac.damping_units", NG_CFG_CHOICE, "per-example", 1, 0, "per-example|kfac-pytorch", \
     "per-example: gamma next to G of per-example gradients (batch-independent); kfac-" \
     "pytorch: gamma as kfac-pytorch sets it, applied as N^2 gamma (N: batch per rank)"}, \
    {"kfac.damping_mode", NG_CFG_CHOICE, "sum", 1, 0, "sum|factored", \
     "sum: (A kron G + gamma I)^-1 (kfac-pytorch); factored: (G + gG I)^-1 dW (A + gA I)^-1"}, \
    {"kfac.pi_damping", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "factored mode: split gamma between A and G by pi"}, \
    {"kfac.inverse", NG_CFG_CHOICE, "eigen", 1, 0, "eigen|cholesky", \
     "eigendecomposition, or damped Cholesky inverses (factored only)"}, \
    {"kfac.kl_clip", NG_CFG_FLOAT, "0.001", 0, 1e6, NULL, \
     "KL clipping of the preconditioned step (0 = off)"}, \
    {"kfac.tokens", NG_CFG_CHOICE, "expand", 1, 0, "expand|reduce", \
     "Linear layers on token sequences: KFAC-expand or KFAC-reduce"}, \
    {"smoothing.enabled", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "loss smoothing: forward and backward at w + eps, a fresh eps per step and rank, then " \
     "the optimizer steps w"}, \
    {"smoothing.noise", NG_CFG_CHOICE, "gaussian", 1, 0, "gaussian|uniform|fisher", \
     "eps ~ N(0, a^2), uniform in [-a, a] (SmoothOut), or fisher: matrix-normal with covariance " \
     "a^2 (A + gI)^-1 kron (G + gI)^-1 from K-FAC's factors (needs kfac.enabled)"}, \
    {"smoothing.fisher_damping", NG_CFG_FLOAT, "0", 0, 1e6, NULL, \
     "fisher noise: g added to A and G; 0 = sqrt of K-FAC's gamma at the step (per factor)"}, \
    {"smoothing.amplitude", NG_CFG_FLOAT, "0.01", 0, 1e3, NULL, \
     "a: the noise's std (gaussian) or half-width (uniform); 0 = no smoothing"}, \
    {"smoothing.schedule", NG_CFG_CHOICE, "constant", 1, 0, "constant|linear|cosine", \
     "a over the steps: constant, linear decay or cosine to 0 at smoothing.decay_steps"}, \
    {"smoothing.decay_steps", NG_CFG_INT, "0", 0, 1e12, NULL, \
     "steps of the linear / cosine decay; 0 = the run's steps"}, \
    {"smoothing.scale_by_weight", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "scale a by each parameter's RMS (relative noise per layer)"}, \
    {"smoothing.layers", NG_CFG_CHOICE, "all", 1, 0, "all|kfac", \
     "perturb every parameter, or only those of the layers K-FAC covers (Linear, Conv)"}, \
    {"noisy.enabled", NG_CFG_BOOL, "false", 1, 0, NULL, \
     "Noisy K-FAC (Zhang et al. 2018): forward and backward at a weight sample of the " \
     "matrix-normal posterior from K-FAC's factors, per step and rank; needs kfac.enabled"}, \
    {"noisy.kl_weight", NG_CFG_FLOAT, "1", 0, 1e6, NULL, \
     "lambda: the KL term's weight; the posterior covariance is (lambda/N)(A+gI)^-1 kron " \
     "(G+gI)^-1, g = sqrt(lambda eta / N)"}, \
    {"noisy.prior_precision", NG_CFG_FLOAT, "1", 1e-12, 1e12, NULL, \
     "eta: precision of the N(0, 1/eta) prior; adds lambda eta / N to kfac.damping and to " \
     "optimizer.weight_decay"}, \
    {"noisy.dataset_size", NG_CFG_INT, "0", 0, 1e15, NULL, \
     "N in lambda/N; 0 = the training set's size"}, \
    {"noisy.eval_samples", NG_CFG_INT, "1", 1, 10000, NULL, \
     "weight samples whose softmax probabilities are averaged at evaluation; 1 = the mean"}, \
    {"kfac.grad_worker_fraction", NG_CFG_FLOAT, "1", 1e-9, 1, NULL, \
     "under mpirun: share of ranks holding each layer's inverses (KAISA); 1 = all (inverses " \
     "broadcast), 1/world = the owner only (preconditioned gradients broadcast)"}
// clang-format on

/* What a kind's config reading may need besides its keys. */
typedef struct {
    const ng_config *cfg;
    int64_t steps;          /* the run's optimizer steps (train.steps, or from train.epochs) */
    int64_t train_examples; /* the training set's size (noisy.dataset_size's default); 0: unknown */
} ng_optim_env;

/* One kind. A base is chosen by optimizer.name == name; a front part by its BOOL enable key. */
typedef struct {
    const char *name;            /* "sgd", "adamw", "kfac" */
    const ng_optimizer_ops *ops; /* its title and checkpoint file */
    const char *enable_key;      /* NULL for a base */
    const char *bases;           /* front parts: "sgd", "sgd|adamw": the bases it may precede */
    size_t size;                 /* bytes of its settings */
    /* Reads its keys into settings and checks them; usage errors name the key. */
    void (*read)(const ng_optim_env *e, void *settings);
    /* What depends on the number of ranks, checked before the run directory exists (NULL: none). */
    void (*check_world)(const void *settings, int world);
    ng_optimizer *(*build)(const void *settings, ng_model *m, ng_optimizer *inner);
} ng_optim_kind;

#define NG_OPTIM_MAX_PARTS 8

/* A run's chain read from its config: parts outer first, the base last. */
typedef struct {
    int n;
    const ng_optim_kind *kind[NG_OPTIM_MAX_PARTS];
    void *settings[NG_OPTIM_MAX_PARTS];
} ng_optim_plan;

/* Reads and checks every key of the chosen kinds (usage errors name the key). */
void ng_optim_plan_read(ng_optim_plan *p, const ng_optim_env *e);
void ng_optim_plan_check_world(const ng_optim_plan *p, int world);
/* Builds the chain on a built model and, under mpirun (comm of several ranks), distributes it. */
struct ng_comm;
ng_optimizer *ng_optim_plan_build(const ng_optim_plan *p, ng_model *m, struct ng_comm *comm);
void ng_optim_plan_free(ng_optim_plan *p);
/* The registered kind whose state goes to checkpoint file stem `file` and that a config turns on
 * with a key (a front part), or NULL: for messages about a checkpoint this run cannot use. */
const ng_optim_kind *ng_optim_kind_of_file(const char *file);

#endif
