/* K-FAC (Martens & Grosse 2015; KFC for convolutions, Grosse & Martens 2016) as a gradient
 * preconditioner in the style of kfac-pytorch (KAISA): it rewrites the gradients of Linear and Conv
 * layers in the model's flat gradient buffer, then a first-order optimizer (SGD) steps.
 *
 * Factors of one layer with weight W [out, in] (a conv's weight viewed as [out, C*prod(kernel)],
 * the patch-embed projection's 4-D weight as [out, in]): N is the n_examples of ng_kfac_begin;
 * the loss is a mean over the N examples, so g = N * dy is the per-example loss gradient w.r.t.
 * the layer's output; a is the layer's input row extended by a trailing 1 when the layer has a
 * bias, and the layer's gradient matrix is [out, in(+1)] with the bias gradient as last column.
 *   Linear on [N, in] (R = 1) and on tokens [N*T rows] with NG_KFAC_EXPAND (R = rows / N):
 *     A = 1/(N R) sum_{n,r} a_{n,r} a_{n,r}^T          G = 1/N sum_{n,r} g_{n,r} g_{n,r}^T
 *   Linear with NG_KFAC_REDUCE (Eschenhagen et al. 2023): abar_n = mean_r a_{n,r} (its bias entry
 *   stays 1), gsum_n = sum_r g_{n,r}:
 *     A = 1/N sum_n abar_n abar_n^T                    G = 1/N sum_n gsum_n gsum_n^T
 *   Conv (always expand-like, R = P output positions): a_{n,p} is the patch row of ng_im2col (+1),
 *   g_{n,p} the [out] vector of dy at position p:
 *     A = 1/(N P) sum_{n,p} a a^T                      G = 1/N sum_{n,p} g g^T
 * For R = 1 every form is standard K-FAC: A = E[a a^T], G = E[g g^T].
 *
 * Damping units. G is built from per-example gradients g = N dy, so it does not shrink as the
 * batch grows, and neither does the gamma that is meaningful next to it: natgrad's damping is in
 * these per-example units (the default, kfac.damping_units: per-example). kfac-pytorch builds G
 * from dy itself, the gradient of the mean loss: G_kp = 1/rows sum dy dy^T (A the same as here).
 * So for a Linear layer on [N, in] inputs G = N^2 G_kp, hence (A kron G + gamma I)^-1 =
 * N^-2 (A kron G_kp + gamma / N^2 I)^-1: natgrad's gamma means what kfac-pytorch's gamma / N^2
 * means, and with gamma = N^2 gamma_kp the preconditioned gradient is kfac-pytorch's divided by
 * N^2 (its direction is the same; lr and kl_clip, which see its length, do not carry over).
 * With damping_units NG_KFAC_UNITS_KFAC_PYTORCH the configured damping (and damping_final) is
 * kfac-pytorch's and ng_kfac_step applies gamma = N^2 x damping, N = this rank's batch (under
 * data parallelism kfac-pytorch's dy is that of the rank's own mean loss too). The conversion is
 * exact for Linear layers on [N, in]; kfac-pytorch scales other layers differently: Linear on
 * tokens (R rows per example) G = N^2 R G_kp, convolutions (P output positions; kfac-pytorch
 * divides patches and output gradients by P) A = P^2 A_kp and G = N^2 P^3 G_kp, so there one
 * gamma corresponds to kfac-pytorch's gamma / (N^2 R) or / (N^2 P^5), which N^2 does not
 * cover. In the factored mode with pi_damping the same gamma = N^2 gamma_kp corresponds (pi
 * takes the other factor N); without pi no single gamma corresponds.
 *
 * Batch factors and passes: a step's batch factor is the SUM of the contributions of every pass
 * captured since the step's ng_kfac_begin calls began (each normalised as above with its own
 * rows and the begin's N). So G over several backward passes of one forward adds up, which is
 * what a Gauss-Newton factor needs (one backward per column of the loss Hessian's square root),
 * and a pass must cover the whole batch of N examples. Running averages then follow
 *   F = decay F + (1 - decay) F_batch, the first update setting F = F_batch,
 * for A and G separately (a factor with no contribution in a step keeps its value).
 *
 * Preconditioning of dW [out, in(+1)] with gamma = the scheduled damping:
 *   NG_KFAC_DAMP_FACTORED: dW' = (G + gG I)^-1 dW (A + gA I)^-1, gA = pi sqrt(gamma),
 *     gG = sqrt(gamma) / pi, pi = sqrt((tr A / dim A) / (tr G / dim G)) with pi_damping (1 when a
 *     trace is not positive), else pi = 1. Eigen path: QG [(QG^T dW QA) ./ ((dG + gG)(dA + gA)^T)]
 *     QA^T; Cholesky path: damped inverses from ng_damped_inverse.
 *   NG_KFAC_DAMP_SUM (kfac-pytorch): dW' = QG [(QG^T dW QA) ./ (dG dA^T + gamma)] QA^T, i.e.
 *     (A kron G + gamma I)^-1 vec(dW).
 * Eigenvalues below 0 (round-off of a semi-definite factor) count as 0, as kfac-pytorch clamps
 * them. pi is taken from the factors when the inverses are computed. The eigen path applies the
 * damping of the current step; the Cholesky path bakes the damping of its last inverse update in.
 * KL clip (kfac-pytorch): with kl_clip > 0, every preconditioned gradient is scaled by
 *   nu = min(1, sqrt(kl_clip / (lr^2 |sum_layers <dW', dW>|))) (bias included; nu = 1 when the
 *   sum or lr is 0). Layers without an inverse yet keep their plain gradient and do not count.
 *
 * Numerical trouble never reaches the gradients: a non-finite batch factor is not folded in, a
 * non-finite running factor or a failed eigendecomposition / inverse skips that layer's inverse
 * update; each case logs a warning naming the layer, and the last good inverse stays in use (none
 * yet: the layer's gradient stays plain).
 *
 * Everything runs on the model's device in the model's dtype; factor GEMMs go through ng_gemm,
 * eigendecompositions through ng_eigh (one call per factor, or one batched call for all factors
 * of the same side <= 32). */
#ifndef NG_KFAC_H
#define NG_KFAC_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { NG_KFAC_DAMP_FACTORED = 0, NG_KFAC_DAMP_SUM = 1 };
enum { NG_KFAC_EIGEN = 0, NG_KFAC_CHOLESKY = 1 };
enum { NG_KFAC_EXPAND = 0, NG_KFAC_REDUCE = 1 };
enum { NG_KFAC_EMPIRICAL = 0, NG_KFAC_TRUE_FISHER = 1 };
enum { NG_KFAC_UNITS_PER_EXAMPLE = 0, NG_KFAC_UNITS_KFAC_PYTORCH = 1 };

typedef struct {
    double factor_decay;             /* running average weight of the old factor, in [0, 1) */
    int64_t factor_every, inv_every; /* steps between factor updates / inverse updates (>= 1) */
    double damping;                  /* Tikhonov gamma > 0 */
    double damping_final;            /* with damping_steps > 0: gamma goes geometrically from */
    int64_t damping_steps;           /* damping to damping_final over that many steps */
    int damping_mode;                /* NG_KFAC_DAMP_FACTORED or NG_KFAC_DAMP_SUM */
    int pi_damping;                  /* factored mode: split gamma by pi (else pi = 1) */
    int inverse;                     /* NG_KFAC_EIGEN or NG_KFAC_CHOLESKY (factored only) */
    double kl_clip;                  /* 0 = off */
    int tokens;                      /* NG_KFAC_EXPAND or NG_KFAC_REDUCE */
    int damping_units; /* NG_KFAC_UNITS_PER_EXAMPLE (damping as is) or _KFAC_PYTORCH (x N^2) */
    /* Used by the optimizer part (ng_kfac_optimizer_new), not by ng_kfac_new: */
    int fisher;                  /* NG_KFAC_EMPIRICAL or NG_KFAC_TRUE_FISHER (kfac_optimizer.c) */
    double grad_worker_fraction; /* ng_kfac_distribute's, in (0, 1] */
} ng_kfac_config;

/* kfac-pytorch's defaults: decay 0.95, factor and inverse updates every step, damping 0.001
 * (constant), sum damping, eigen, kl_clip 0.001, expand; empirical Fisher, grad-worker fraction
 * 1. */
ng_kfac_config ng_kfac_default_config(void);

/* gamma at `step`: damping * (damping_final / damping)^(min(step, damping_steps) / damping_steps),
 * or damping when damping_steps is 0. */
double ng_kfac_damping(const ng_kfac_config *c, int64_t step);

typedef struct ng_kfac ng_kfac;

/* The gamma ng_kfac_step applies at `step`: ng_kfac_damping of its config, times N^2 (N: the
 * n_examples of the last ng_kfac_begin, this rank's batch) in kfac-pytorch units. */
double ng_kfac_step_damping(const ng_kfac *k, int64_t step);
/* The same for a step of n_examples on this rank, whatever the last begin was (a part in front of
 * K-FAC asks before K-FAC's begin). */
double ng_kfac_damping_for(const ng_kfac *k, int64_t step, int64_t n_examples);

/* Registers every layer of the built model with l->capture (Linear, Conv 2d/3d, the patch-embed
 * projection), keeping their names; all other parameters keep their plain gradient. A bad config
 * is a usage error naming the kfac.* field. */
ng_kfac *ng_kfac_new(ng_model *m, const ng_kfac_config *c);
void ng_kfac_free(ng_kfac *k);

/* The observer to put in ctx.observer for passes whose captures should feed the factors. */
ng_observer *ng_kfac_observer(ng_kfac *k);
/* Before a step's passes: N = n_examples of the batch, and what the following passes feed
 * (capture_a: inputs in forward, capture_g: output gradients in backward). Captures happen only
 * when step % factor_every == 0. A begin with a new step drops contributions of an earlier step
 * that was never stepped (e.g. a step the loss scaler skipped).
 * Empirical Fisher: begin(step, N, 1, 1), forward, backward. True Fisher: begin(step, N, 1, 0),
 * forward; begin(step, N, 0, 1), backward on labels sampled from the model (ng_sample_categorical),
 * zero the gradients; begin(step, N, 0, 0), the real backward. */
void ng_kfac_begin(ng_kfac *k, int64_t step, int64_t n_examples, int capture_a, int capture_g);
/* After backward: folds this step's batch factors into the running averages (if captured),
 * recomputes eigendecompositions / inverses when step % inv_every == 0 (or a layer has none yet),
 * preconditions the registered layers' gradients in m->flat_grads in place and applies the KL
 * clip with lr. */
void ng_kfac_step(ng_kfac *k, int64_t step, double lr);

/* Checkpoint state, per layer in registration order: "<layer>.kfac_A", "<layer>.kfac_G", then
 * "<layer>.kfac_QA", "<layer>.kfac_dA", "<layer>.kfac_QG", "<layer>.kfac_dG" (eigen) or
 * "<layer>.kfac_Ainv", "<layer>.kfac_Ginv" (Cholesky), then "<layer>.kfac_meta" (f64 on the host:
 * [A ready, G ready, inverse ready, pi]). Factors and inverses are on the model's device in its
 * dtype. Fills up to cap entries and returns the total count (call with cap 0 to size arrays).
 * Writing into the returned tensors (a resume) restores the state exactly. */
int ng_kfac_state(ng_kfac *k, const char **names, ng_tensor **tensors, int cap);

/* Distributed K-FAC over the ranks of c (NULL or one rank: nothing changes), called by every
 * rank after ng_kfac_new with the same model. Then each factor step all-reduces (averages) every
 * layer's batch factors in one call, so with equal local batches the factors are those of the
 * global batch; each layer's eigendecompositions / inverses are computed by one owner (greedy
 * LPT on da^3 + out^3); grad_worker_fraction f (KAISA) sets how many ranks, g = f * world (a
 * divisor of the world), hold a layer's inverses and precondition its gradient: f = 1 broadcasts
 * the inverses to every rank (more memory, no gradient broadcast), f = 1/world keeps them on the
 * owner, which broadcasts the preconditioned gradient (least memory). Ranks that are not a
 * layer's grad workers free its inverse tensors (ng_kfac_state then lists only what this rank
 * holds). The caller averages the gradients over the ranks before ng_kfac_step. The result
 * equals one process's K-FAC on the global batch within float rounding. */
struct ng_comm;
void ng_kfac_distribute(ng_kfac *k, struct ng_comm *c, double grad_worker_fraction);
/* g = grad_worker_fraction x world, the grad workers per layer; a usage error naming
 * kfac.grad_worker_fraction unless g is a whole number that divides the world. */
int ng_kfac_grad_workers(double grad_worker_fraction, int world);
/* The rank that computes layer i's inverses (0 in one process). */
int ng_kfac_owner(const ng_kfac *k, int i);
/* 1 when this rank's state (ng_kfac_state) is its own shard, not the whole (grad-worker fraction
 * below 1), with this rank and the world size; 0 when every rank holds all of it. */
int ng_kfac_sharded(const ng_kfac *k, int *rank, int *world);

/* For tests and logs: number of registered layers, and layer i's name and running factors
 * (views; A [in(+1), in(+1)], G [out, out]). */
int ng_kfac_layers(const ng_kfac *k);
void ng_kfac_factors(const ng_kfac *k, int i, const char **name, ng_tensor *A, ng_tensor *G);
/* Layer i's layer: its weight is params[0], its bias (when A has the bias row) params[1]. */
ng_layer *ng_kfac_layer_at(const ng_kfac *k, int i);
/* The config K-FAC runs with (damping_final filled in). */
const ng_kfac_config *ng_kfac_config_of(const ng_kfac *k);
/* Layer i's eigendecomposition as of its last inverse update (views): A = QA diag(dA) QA^T,
 * G = QG diag(dG) QG^T, eigenvalues as ng_eigh returned them (not clamped). Returns 1 when there
 * is one, 0 when there is none yet (no inverse update so far, or kfac.inverse cholesky) and -1
 * when the layer has one but this rank does not hold it (a grad-worker fraction below 1). */
int ng_kfac_eigen(const ng_kfac *k, int i, ng_tensor *QA, ng_tensor *dA, ng_tensor *QG,
                  ng_tensor *dG);

/* The factor the loss gradient of the following backward passes is multiplied by (the dynamic
 * loss scale of mixed precision): G is computed from dy / s, so the factors do not depend on
 * it. 1 by default. */
void ng_kfac_set_loss_scale(ng_kfac *k, double s);

/* The most bytes of patch rows a conv's A factor expands at once (default 64 MiB), so that a
 * 512^3 volume never materialises all of its patches. Tests make it small to force chunks. */
void ng_kfac_set_chunk_bytes(ng_kfac *k, size_t bytes);
/* Whether factors of side <= 32 of one step are eigendecomposed together in batched calls (on by
 * default; cuSOLVER syevjBatched on the GPU). Tests turn it off to compare the two paths. */
void ng_kfac_set_batch_small(ng_kfac *k, int on);

/* K-FAC as a part of the optimizer interface (optimizer.h), in front of `inner` (which it owns
 * from then on; on an error it stays the caller's): its observer feeds the factors in the step's
 * passes, the loss scale reaches G, and it preconditions the gradient (ng_kfac_step with the step
 * of the last begin) before inner steps. With c->fisher NG_KFAC_TRUE_FISHER it asks for the sampled
 * backward, whose output gradients alone feed G. Its state is ng_kfac_state's, in checkpoint file
 * "kfac" (sharded when ng_kfac_sharded says so); distributing it calls ng_kfac_distribute with
 * c->grad_worker_fraction. Metrics: "kfac_damping", the gamma of the step. */
struct ng_optimizer;
struct ng_optimizer_ops;
extern const struct ng_optimizer_ops ng_kfac_ops;
struct ng_optimizer *ng_kfac_optimizer_new(ng_model *m, const ng_kfac_config *c,
                                           struct ng_optimizer *inner);
/* The K-FAC object of such a part (for tests and logs). */
ng_kfac *ng_kfac_of(struct ng_optimizer *part);

#ifdef __cplusplus
}
#endif
#endif
