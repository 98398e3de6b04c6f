/* Loss smoothing (Naganuma & Yokota, CCGrid 2019; SmoothOut, Wen et al. 2018): a wrapper part of
 * the optimizer interface in front of any chain. It trains on the smoothed objective
 * E_eps[L(w + eps)]: at each step's begin every rank adds its own perturbation eps to the weights,
 * forward and backward run at w + eps, after the backward the weights are put back bit for bit
 * (a copy of w is kept), and the parts behind it step w with that gradient. Across ranks the
 * averaged gradient is a Monte-Carlo estimate over as many samples as there are ranks.
 *
 * eps of each perturbed parameter p at step t on rank r: a(t) * s_p * z, with z drawn by Philox
 * keyed (seed, stream NG_STREAM_SMOOTHING + r, offset t << 32 + the blocks of the parameters
 * before p), so a resumed run draws what an uninterrupted one would, and no two ranks draw alike:
 *   z ~ N(0, 1) (gaussian) or U(-1, 1] (uniform);
 *   s_p = 1, or with scale_by_weight the RMS of p at the step, ||p|| / sqrt(numel p) (relative
 *   noise per parameter, as SmoothOut's per-layer scaling);
 *   a(t) = amplitude x 1 (constant), x (1 - t/T) (linear), x (1 + cos(pi t/T)) / 2 (cosine),
 *   t clamped to T = decay_steps.
 * Which parameters: all of the model, or those of the layers K-FAC covers (Linear, Conv: the
 * layers offering the observer interface).
 *
 * Fisher-shaped noise (NG_SMOOTH_FISHER; needs a K-FAC part behind the wrapper, kfac.inverse
 * eigen, and every rank holding the eigendecompositions, grad-worker fraction 1): for a layer K-FAC
 * covers, with weight W [out, in] and its bias as the last column of [out, da], da = in (+1), as
 * in K-FAC's A, eps is matrix-normal,
 *   vec(eps) ~ N(0, a(t)^2 s^2 (A + gI)^-1 kron (G + gI)^-1),  s = 1 or the weight's RMS,
 * drawn from K-FAC's eigendecompositions as of its last inverse update (eigenvalues clamped at 0,
 * as K-FAC does): eps = a s QG diag(1/sqrt(dG + g)) Z diag(1/sqrt(dA + g)) QA^T with Z [out, da]
 * iid N(0, 1) at the weight's key offset (the bias's blocks follow the weight's, so the draws of
 * the layer do not overlap any other parameter's). That is a s (G + gI)^-1/2 Z' (A + gI)^-1/2
 * with Z' = QG^T Z QA, which is iid N(0, 1) too (rotation invariance), without forming the
 * inverse roots. g = fisher_damping, or when that is 0 the square root of K-FAC's gamma at the
 * step (ng_kfac_damping_for: units and schedule included), the per-factor damping of K-FAC's
 * factored mode without pi, so (A + gI) kron (G + gI) contains A kron G + gamma I. A covered layer
 * without an eigendecomposition yet (the steps before its first inverse update) gets isotropic
 * gaussian noise of the same amplitude, a(t) s_p z, drawn exactly as NG_SMOOTH_GAUSSIAN draws;
 * so do the parameters K-FAC does not cover (with layers all). */
#ifndef NG_SMOOTHING_H
#define NG_SMOOTHING_H

#include <stdint.h>

#include "optim/optimizer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The Philox stream of the perturbations; the rank is added. */
#define NG_STREAM_SMOOTHING (UINT64_C(0x534D4F4F) << 32)

enum { NG_SMOOTH_GAUSSIAN = 0, NG_SMOOTH_UNIFORM = 1, NG_SMOOTH_FISHER = 2 };
enum { NG_SMOOTH_CONSTANT = 0, NG_SMOOTH_LINEAR = 1, NG_SMOOTH_COSINE = 2 };
enum { NG_SMOOTH_ALL = 0, NG_SMOOTH_KFAC_LAYERS = 1 };

typedef struct {
    int noise;             /* NG_SMOOTH_GAUSSIAN (std a), _UNIFORM (in [-a, a]) or _FISHER */
    double amplitude;      /* a >= 0, finite; 0 is the identity */
    int schedule;          /* NG_SMOOTH_CONSTANT, _LINEAR or _COSINE */
    int64_t decay_steps;   /* T >= 1 of linear and cosine */
    int scale_by_weight;   /* 1: times each parameter's RMS */
    int layers;            /* NG_SMOOTH_ALL or NG_SMOOTH_KFAC_LAYERS */
    uint64_t seed;         /* the run's seed */
    int rank;              /* this rank's draws; ng_optimizer_distribute sets it from the ranks */
    double fisher_damping; /* fisher: g >= 0 added to A and G; 0 = sqrt of K-FAC's gamma */
} ng_smoothing_config;

extern const ng_optimizer_ops ng_smoothing_ops;

/* a(t) of the config. */
double ng_smoothing_amplitude(const ng_smoothing_config *c, int64_t step);

/* The wrapper in front of `inner` (owned from then on; on an error it stays the caller's). A bad
 * config is a usage error naming the smoothing.* key (fisher noise without a K-FAC part in
 * `inner`, or with K-FAC's Cholesky inverses: smoothing.noise). Its state is none (eps is a
 * function of the key and, for fisher noise, of K-FAC's state); metrics: "smoothing_amplitude",
 * a(t) of the step, and with fisher noise "smoothing_fisher_layers", how many layers drew
 * Fisher-shaped eps (the others of K-FAC's: isotropic, no eigendecomposition yet). Keeps a copy of
 * the flat parameters (one more [numel] buffer), and a noise buffer of the largest perturbed
 * parameter; fisher noise: of the largest out x da of the covered layers, and a second one as
 * large. */
ng_optimizer *ng_smoothing_new(ng_model *m, const ng_smoothing_config *c, ng_optimizer *inner);

/* ---- Noisy K-FAC (Zhang, Sun, Duvenaud & Grosse, ICML 2018, "Noisy Natural Gradient as
 * Variational Inference", section 3.3 / algorithm 2) -------------------------------------------
 * Variational inference with a matrix-variate Gaussian posterior q(W) = MN(W; M, Sigma) per layer
 * K-FAC covers, prior N(0, eta^-1 I) (eta: the prior PRECISION; the paper's eta is the prior
 * variance, so its gamma_in = lambda / (N eta_paper) is lambda eta / N here), KL weight lambda,
 * N training examples. With the paper's A (input factor) and S (our G, output-gradient factor),
 * both of per-example statistics as K-FAC keeps them, and
 *   gamma_in = lambda eta / N,   g = sqrt(gamma_in),
 * each step each rank r samples, for every covered layer (W [out, in], bias as the last column of
 * [out, da]),
 *   vec(eps) ~ N(0, (lambda / N) (A + g I)^-1 kron (G + g I)^-1),   W = M + eps,
 * which is the paper's Sigma = (lambda/N) [A_gamma_in^-1 kron S_gamma_in^-1] with its factored
 * damping (pi = 1). It is the Fisher-shaped noise of the smoothing wrapper above with amplitude
 * a = sqrt(lambda / N), s = 1, fisher_damping g, layers kfac and a constant schedule: the same
 * code draws it (ng_noisy_kfac_new builds that wrapper under its own kind), from K-FAC's
 * eigendecompositions as of its last inverse update, Philox (seed, NG_STREAM_SMOOTHING + r,
 * step << 32), and restores M bit for bit after the backward. Unlike smoothing, a covered layer
 * without an eigendecomposition yet (before K-FAC's first inverse update) and every parameter
 * K-FAC does not cover stay at the mean (eps = 0), and lambda = 0 is the mean exactly.
 * The mean's update (apps/optimizers.c does this from the noisy.* keys): K-FAC's damping becomes
 * kfac.damping + gamma_in (the paper's gamma = gamma_in + gamma_ex, gamma_ex = kfac.damping, in
 * K-FAC's per-example units), and the prior's gradient (lambda/N) eta M is the base optimizer's
 * weight decay: optimizer.weight_decay + gamma_in (SGD's L2 term, added to the preconditioned
 * gradient, so it is not itself preconditioned as in the paper's V; not on biases and norms).
 * State: none (eps is a function of the key and K-FAC's state). Metrics "noisy_std"
 * (sqrt(lambda/N)) and "noisy_layers" (layers sampled at the last begin). */
typedef struct {
    double kl_weight;       /* lambda >= 0 */
    double prior_precision; /* eta > 0 */
    int64_t dataset_size;   /* N >= 1 */
    int64_t eval_samples;   /* K >= 1 weight samples averaged at evaluation */
    uint64_t seed;
    int rank;
} ng_noisy_kfac_config;

/* The Philox stream of evaluation samples (sample k at offset k << 32; the same on every rank). */
#define NG_STREAM_NOISY_EVAL (UINT64_C(0x4E4F4953) << 32)

extern const ng_optimizer_ops ng_noisy_kfac_ops;

/* The smoothing config Noisy K-FAC's noise is (see above). */
ng_smoothing_config ng_noisy_kfac_smoothing(const ng_noisy_kfac_config *c);
/* gamma_in = lambda eta / N. */
double ng_noisy_kfac_gamma(const ng_noisy_kfac_config *c);
/* The part in front of `inner` (which must hold K-FAC with eigendecompositions); usage errors name
 * the noisy.* key. */
ng_optimizer *ng_noisy_kfac_new(ng_model *m, const ng_noisy_kfac_config *c, ng_optimizer *inner);
/* The Noisy K-FAC part of a chain, or NULL. */
ng_optimizer *ng_noisy_kfac_find(ng_optimizer *chain);
int64_t ng_noisy_kfac_eval_samples(ng_optimizer *noisy);
/* Evaluation: puts weight sample k (stream NG_STREAM_NOISY_EVAL, the step's posterior) in place of
 * the mean; ng_noisy_kfac_restore puts the mean back bit for bit. */
void ng_noisy_kfac_sample(ng_optimizer *noisy, int64_t k);
void ng_noisy_kfac_restore(ng_optimizer *noisy);

#ifdef __cplusplus
}
#endif
#endif
