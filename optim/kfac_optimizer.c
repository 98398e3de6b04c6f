/* K-FAC as a part of the optimizer interface: a preconditioner in front of a base optimizer, as
 * kfac-pytorch is used (K-FAC rewrites the gradient, SGD steps). It maps the step's hooks onto
 * ng_kfac_begin / ng_kfac_step and names its checkpoint file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/error.h"
#include "optim/kfac.h"
#include "optim/optimizer.h"

typedef struct {
    ng_optimizer head;
    ng_kfac *k;
    int true_fisher;
    double fraction;
    int64_t step, n; /* of the last begin */
} kfac_part;

static void begin(ng_optimizer *o, int64_t step, int64_t n) {
    kfac_part *p = (kfac_part *)o;
    p->step = step, p->n = n;
    /* Inputs feed A in the forward; G comes from the loss's backward (empirical Fisher) or from
     * the sampled one (true Fisher). */
    ng_kfac_begin(p->k, step, n, 1, !p->true_fisher);
}

static int sampled_backward(ng_optimizer *o) {
    return ((kfac_part *)o)->true_fisher;
}

static void pass(ng_optimizer *o, ng_pass which) {
    kfac_part *p = (kfac_part *)o;
    if (which == NG_PASS_SAMPLED)
        ng_kfac_begin(p->k, p->step, p->n, 0, 1);
    else if (p->true_fisher) /* the loss's backward feeds nothing: G came from the samples */
        ng_kfac_begin(p->k, p->step, p->n, 0, 0);
}

static void set_loss_scale(ng_optimizer *o, double s) {
    ng_kfac_set_loss_scale(((kfac_part *)o)->k, s);
}

static void precondition(ng_optimizer *o, double lr) {
    kfac_part *p = (kfac_part *)o;
    ng_kfac_step(p->k, p->step, lr);
}

static int state(ng_optimizer *o, const char **names, ng_tensor **tensors, int cap) {
    return ng_kfac_state(((kfac_part *)o)->k, names, tensors, cap);
}

static int sharded(const ng_optimizer *o, int *rank, int *world) {
    return ng_kfac_sharded(((const kfac_part *)o)->k, rank, world);
}

static void distribute(ng_optimizer *o, struct ng_comm *c) {
    kfac_part *p = (kfac_part *)o;
    ng_kfac_distribute(p->k, c, p->fraction);
}

static size_t metrics(ng_optimizer *o, char *buf, size_t cap, size_t at) {
    kfac_part *p = (kfac_part *)o;
    int n = snprintf(buf + at, cap - at, ", \"kfac_damping\": %.9g",
                     ng_kfac_step_damping(p->k, p->step));
    return n > 0 && (size_t)n < cap - at ? at + (size_t)n : at;
}

static void destroy(ng_optimizer *o) {
    kfac_part *p = (kfac_part *)o;
    ng_kfac_free(p->k);
    free(p);
}

const ng_optimizer_ops ng_kfac_ops = {.kind = "kfac",
                                      .title = "K-FAC",
                                      .file = "kfac",
                                      .begin = begin,
                                      .sampled_backward = sampled_backward,
                                      .pass = pass,
                                      .set_loss_scale = set_loss_scale,
                                      .precondition = precondition,
                                      .state = state,
                                      .sharded = sharded,
                                      .distribute = distribute,
                                      .metrics = metrics,
                                      .destroy = destroy};

ng_optimizer *ng_kfac_optimizer_new(ng_model *m, const ng_kfac_config *c, ng_optimizer *inner) {
    NG_CHECK(inner, "kfac: K-FAC preconditions for a base optimizer; none given");
    NG_CHECK(c->fisher == NG_KFAC_EMPIRICAL || c->fisher == NG_KFAC_TRUE_FISHER,
             "kfac.fisher: %d is not one of empirical (%d), true (%d)", c->fisher,
             NG_KFAC_EMPIRICAL, NG_KFAC_TRUE_FISHER);
    NG_CHECK(c->grad_worker_fraction > 0 && c->grad_worker_fraction <= 1,
             "kfac.grad_worker_fraction: %g is outside (0, 1]", c->grad_worker_fraction);
    ng_kfac *k = ng_kfac_new(m, c);
    kfac_part *p = calloc(1, sizeof *p);
    NG_CHECK(p, "out of host memory creating K-FAC");
    ng_optimizer_init(&p->head, &ng_kfac_ops, m, inner);
    p->k = k;
    p->head.observer = ng_kfac_observer(p->k);
    p->true_fisher = c->fisher == NG_KFAC_TRUE_FISHER;
    p->fraction = c->grad_worker_fraction;
    return &p->head;
}

ng_kfac *ng_kfac_of(ng_optimizer *part) {
    NG_CHECK(part && part->ops == &ng_kfac_ops, "kfac: %s is not a K-FAC part",
             part ? part->ops->kind : "NULL");
    return ((kfac_part *)part)->k;
}
