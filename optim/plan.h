/* Optimizer and K-FAC memory predicted from the model's shapes (natgrad plan, and the trainer's
 * own report of predicted against measured). Each figure follows the allocations of the module it
 * predicts; tests/test_plan_run.sh holds the sum to the measured peak of real runs. */
#ifndef NG_OPTIM_PLAN_H
#define NG_OPTIM_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "nn/layer.h"
#include "optim/kfac.h"
#include "optim/optimizer.h"

/* The optimizer's state for numel flat parameters in dtype es bytes: its state buffers and the
 * one-byte weight-decay mask. */
size_t ng_optimizer_plan_bytes(const ng_optim_config *c, int64_t numel, size_t es);

/* K-FAC's memory, gathered from the layers a planned forward shows it (the sim's capture hook):
 * `state` is the factors, their step sums and the inverses of every Linear and Conv layer;
 * `scratch` the device scratch its captures, inverse updates and preconditioning grow to, in the
 * order a step asks for it. */
typedef struct ng_kfac_planner ng_kfac_planner;
ng_kfac_planner *ng_kfac_planner_new(const ng_kfac_config *c, ng_dtype master, ng_device dev);
/* The capture hook: pass it with the planner as self to ng_plan_train_step_observed. */
void ng_kfac_planner_capture(void *self, const ng_layer *l, int ndim, const int64_t *in,
                             ng_dtype dt);
size_t ng_kfac_planner_state(const ng_kfac_planner *p);
size_t ng_kfac_planner_scratch(const ng_kfac_planner *p);
/* The largest request K-FAC's inverse updates make of the shared CUDA workspace (0 unless the
 * device is CUDA): the eigendecompositions (small factors of one side batched, as on step 0, when
 * every layer is due) or the damped factors' Cholesky inverses, and the finiteness checks of the
 * factors. Every layer's factors count, so under distributed K-FAC, where a rank inverts only the
 * layers it owns, this is an upper bound of a rank's (exact for the rank owning the largest). The
 * damped inverse's eigendecomposition fallback (an indefinite factor plus damping, which a
 * healthy run does not meet) is not counted. *estimated is set when the solvers' part is
 * LAPACK's estimate (no GPU here to ask cuSOLVER; core/linalg.h). *solver (when not NULL): the
 * solvers' largest request alone (cuSOLVER's share, with the linear algebra's own pieces). */
size_t ng_kfac_planner_cuda_workspace(const ng_kfac_planner *p, int *estimated, size_t *solver);
void ng_kfac_planner_free(ng_kfac_planner *p);

#endif
