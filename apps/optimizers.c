/* The optimizer kinds `natgrad train` knows: their config reading and checks, and the chain built
 * from them. */
#include "apps/optimizers.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "optim/kfac.h"
#include "optim/smoothing.h"

/* ---- noisy_kfac: the Noisy K-FAC part, and what it changes in K-FAC and the base ----------- */

static void read_noisy(const ng_optim_env *e, void *settings) {
    const ng_config *c = e->cfg;
    ng_noisy_kfac_config *n = settings;
    *n = (ng_noisy_kfac_config){.kl_weight = ng_cfg_float(c, "noisy.kl_weight"),
                                .prior_precision = ng_cfg_float(c, "noisy.prior_precision"),
                                .dataset_size = ng_cfg_int(c, "noisy.dataset_size"),
                                .eval_samples = ng_cfg_int(c, "noisy.eval_samples"),
                                .seed = (uint64_t)ng_cfg_int(c, "seed")};
    if (!n->dataset_size) n->dataset_size = e->train_examples;
    NG_CHECK(n->dataset_size >= 1,
             "noisy.dataset_size: the training set's size is not known here; set it (>= 1)");
    NG_CHECK(ng_cfg_bool(c, "kfac.enabled"),
             "noisy.enabled: Noisy K-FAC samples from K-FAC's factors; it needs kfac.enabled=true");
    NG_CHECK(!strcmp(ng_cfg_str(c, "kfac.inverse"), "eigen"),
             "noisy.enabled: Noisy K-FAC needs K-FAC's eigendecompositions (kfac.inverse=eigen)");
    NG_CHECK(ng_cfg_float(c, "kfac.grad_worker_fraction") == 1.0,
             "noisy.enabled: Noisy K-FAC needs K-FAC's eigendecompositions on every rank "
             "(kfac.grad_worker_fraction=1)");
    NG_CHECK(
        !ng_cfg_bool(c, "smoothing.enabled"),
        "noisy.enabled: Noisy K-FAC and smoothing.enabled both perturb the weights; choose one");
}

/* gamma_in = lambda eta / N when noisy.enabled, else 0: added to K-FAC's damping and to the base's
 * weight decay (optim/smoothing.h). */
static double noisy_gamma(const ng_optim_env *e) {
    if (!ng_cfg_bool(e->cfg, "noisy.enabled")) return 0;
    ng_noisy_kfac_config n;
    read_noisy(e, &n);
    return ng_noisy_kfac_gamma(&n);
}

static ng_optimizer *build_noisy(const void *settings, ng_model *m, ng_optimizer *inner) {
    return ng_noisy_kfac_new(m, settings, inner);
}

/* ---- sgd and adamw: the base optimizers, sharing the optimizer.* keys ---------------------- */

static void read_base(const ng_optim_env *e, void *settings) {
    const ng_config *c = e->cfg;
    ng_optim_config *o = settings;
    o->name = ng_cfg_str(c, "optimizer.name");
    o->momentum = ng_cfg_float(c, "optimizer.momentum");
    o->nesterov = ng_cfg_bool(c, "optimizer.nesterov");
    o->weight_decay = ng_cfg_float(c, "optimizer.weight_decay");
    o->decoupled = ng_cfg_bool(c, "optimizer.decoupled");
    o->beta1 = ng_cfg_float(c, "optimizer.beta1");
    o->beta2 = ng_cfg_float(c, "optimizer.beta2");
    o->eps = ng_cfg_float(c, "optimizer.eps");
    NG_CHECK(!o->nesterov || o->momentum > 0, "optimizer.nesterov: needs optimizer.momentum > 0");
    o->weight_decay += noisy_gamma(e); /* Noisy K-FAC's prior on the mean */
}

static ng_optimizer *build_base(const void *settings, ng_model *m, ng_optimizer *inner) {
    (void)inner;
    return ng_optimizer_new(m, settings);
}

/* ---- kfac: a preconditioner in front of SGD ----------------------------------------------- */

static void read_kfac(const ng_optim_env *e, void *settings) {
    const ng_config *c = e->cfg;
    ng_kfac_config *k = settings;
    *k = ng_kfac_default_config();
    k->fisher =
        strcmp(ng_cfg_str(c, "kfac.fisher"), "true") ? NG_KFAC_EMPIRICAL : NG_KFAC_TRUE_FISHER;
    k->factor_decay = ng_cfg_float(c, "kfac.factor_decay");
    k->factor_every = ng_cfg_int(c, "kfac.factor_every");
    k->inv_every = ng_cfg_int(c, "kfac.inv_every");
    k->damping = ng_cfg_float(c, "kfac.damping");
    k->damping_final = ng_cfg_float(c, "kfac.damping_final");
    k->damping_steps = ng_cfg_int(c, "kfac.damping_steps");
    if (k->damping_final == 0) k->damping_final = k->damping;
    double gin = noisy_gamma(e); /* Noisy K-FAC: gamma = gamma_ex + gamma_in */
    NG_CHECK(gin == 0 || strcmp(ng_cfg_str(c, "kfac.damping_units"), "kfac-pytorch"),
             "noisy.enabled: Noisy K-FAC adds lambda eta / N to K-FAC's damping in per-example "
             "units; it needs kfac.damping_units=per-example");
    k->damping += gin, k->damping_final += gin;
    k->damping_units = strcmp(ng_cfg_str(c, "kfac.damping_units"), "kfac-pytorch")
                           ? NG_KFAC_UNITS_PER_EXAMPLE
                           : NG_KFAC_UNITS_KFAC_PYTORCH;
    k->damping_mode = strcmp(ng_cfg_str(c, "kfac.damping_mode"), "sum") ? NG_KFAC_DAMP_FACTORED
                                                                        : NG_KFAC_DAMP_SUM;
    k->pi_damping = ng_cfg_bool(c, "kfac.pi_damping");
    k->inverse = strcmp(ng_cfg_str(c, "kfac.inverse"), "eigen") ? NG_KFAC_CHOLESKY : NG_KFAC_EIGEN;
    k->kl_clip = ng_cfg_float(c, "kfac.kl_clip");
    k->tokens = strcmp(ng_cfg_str(c, "kfac.tokens"), "expand") ? NG_KFAC_REDUCE : NG_KFAC_EXPAND;
    NG_CHECK(!(k->inverse == NG_KFAC_CHOLESKY && k->damping_mode == NG_KFAC_DAMP_SUM),
             "kfac.inverse: cholesky needs kfac.damping_mode=factored (the sum form needs the "
             "eigendecomposition)");
    k->grad_worker_fraction = ng_cfg_float(c, "kfac.grad_worker_fraction");
    NG_CHECK(
        !(k->fisher == NG_KFAC_TRUE_FISHER && strcmp(ng_cfg_str(c, "precision.compute"), "fp32")),
        "kfac.fisher: true samples labels from fp32 logits only; use precision.compute=fp32 "
        "or kfac.fisher=empirical");
}

static void check_world_kfac(const void *settings, int world) {
    ng_kfac_grad_workers(((const ng_kfac_config *)settings)->grad_worker_fraction, world);
}

static ng_optimizer *build_kfac(const void *settings, ng_model *m, ng_optimizer *inner) {
    return ng_kfac_optimizer_new(m, settings, inner);
}

/* ---- smoothing: a wrapper in front of any chain ------------------------------------------- */

static void read_smoothing(const ng_optim_env *e, void *settings) {
    const ng_config *c = e->cfg;
    ng_smoothing_config *s = settings;
    const char *sched = ng_cfg_str(c, "smoothing.schedule"),
               *noise = ng_cfg_str(c, "smoothing.noise");
    *s = (ng_smoothing_config){.noise = !strcmp(noise, "uniform")  ? NG_SMOOTH_UNIFORM
                                        : !strcmp(noise, "fisher") ? NG_SMOOTH_FISHER
                                                                   : NG_SMOOTH_GAUSSIAN,
                               .fisher_damping = ng_cfg_float(c, "smoothing.fisher_damping"),
                               .amplitude = ng_cfg_float(c, "smoothing.amplitude"),
                               .schedule = !strcmp(sched, "linear")   ? NG_SMOOTH_LINEAR
                                           : !strcmp(sched, "cosine") ? NG_SMOOTH_COSINE
                                                                      : NG_SMOOTH_CONSTANT,
                               .decay_steps = ng_cfg_int(c, "smoothing.decay_steps"),
                               .scale_by_weight = ng_cfg_bool(c, "smoothing.scale_by_weight"),
                               .layers = strcmp(ng_cfg_str(c, "smoothing.layers"), "kfac")
                                             ? NG_SMOOTH_ALL
                                             : NG_SMOOTH_KFAC_LAYERS,
                               .seed = (uint64_t)ng_cfg_int(c, "seed")};
    if (!s->decay_steps) s->decay_steps = e->steps;
    if (s->noise == NG_SMOOTH_FISHER) { /* checked before the run directory exists */
        NG_CHECK(ng_cfg_bool(c, "kfac.enabled"),
                 "smoothing.noise: fisher draws from K-FAC's factors; it needs kfac.enabled=true");
        NG_CHECK(!strcmp(ng_cfg_str(c, "kfac.inverse"), "eigen"),
                 "smoothing.noise: fisher needs K-FAC's eigendecompositions (kfac.inverse=eigen)");
        NG_CHECK(ng_cfg_float(c, "kfac.grad_worker_fraction") == 1.0,
                 "smoothing.noise: fisher needs K-FAC's eigendecompositions on every rank "
                 "(kfac.grad_worker_fraction=1)");
    }
}

static ng_optimizer *build_smoothing(const void *settings, ng_model *m, ng_optimizer *inner) {
    return ng_smoothing_new(m, settings, inner);
}

/* ---- the registry: front parts outer first, then the bases -------------------------------- */

static const ng_optim_kind kinds[] = {
    {"noisy_kfac", &ng_noisy_kfac_ops, "noisy.enabled", "sgd", sizeof(ng_noisy_kfac_config),
     read_noisy, NULL, build_noisy},
    {"smoothing", &ng_smoothing_ops, "smoothing.enabled", NULL, sizeof(ng_smoothing_config),
     read_smoothing, NULL, build_smoothing},
    /* K-FAC preconditions SGD only: AdamW's per-element scaling would undo its preconditioning. */
    {"kfac", &ng_kfac_ops, "kfac.enabled", "sgd", sizeof(ng_kfac_config), read_kfac,
     check_world_kfac, build_kfac},
    {"sgd", &ng_sgd_ops, NULL, NULL, sizeof(ng_optim_config), read_base, NULL, build_base},
    {"adamw", &ng_adamw_ops, NULL, NULL, sizeof(ng_optim_config), read_base, NULL, build_base},
};
static const int nkinds = sizeof kinds / sizeof *kinds;

/* Whether `name` is one of the '|'-separated names in `list`. */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *s = list; s && *s;) {
        const char *e = strchr(s, '|');
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len == n && !strncmp(s, name, n)) return 1;
        s = e ? e + 1 : NULL;
    }
    return 0;
}

void ng_optim_plan_read(ng_optim_plan *p, const ng_optim_env *e) {
    const ng_config *c = e->cfg;
    memset(p, 0, sizeof *p);
    const char *base = ng_cfg_str(c, "optimizer.name");
    const ng_optim_kind *b = NULL;
    for (int i = 0; i < nkinds; i++)
        if (!kinds[i].enable_key && !strcmp(kinds[i].name, base)) b = &kinds[i];
    NG_CHECK(b, "optimizer.name: no base optimizer '%s' is registered", base);
    for (int i = 0; i <= nkinds; i++) {
        const ng_optim_kind *k = i < nkinds ? &kinds[i] : b;
        if (i < nkinds && (!k->enable_key || !ng_cfg_bool(c, k->enable_key))) continue;
        NG_CHECK(!k->bases || listed(k->bases, base),
                 "%s: %s works in front of %s (optimizer.name), not %s", k->enable_key,
                 k->ops->title, k->bases, base);
        NG_CHECK(p->n < NG_OPTIM_MAX_PARTS, "optimizer: more than %d parts", NG_OPTIM_MAX_PARTS);
        void *s = calloc(1, k->size);
        NG_CHECK(s, "out of host memory reading the optimizer config");
        p->kind[p->n] = k, p->settings[p->n++] = s;
        k->read(e, s);
    }
}

void ng_optim_plan_check_world(const ng_optim_plan *p, int world) {
    for (int i = 0; i < p->n; i++)
        if (p->kind[i]->check_world) p->kind[i]->check_world(p->settings[i], world);
}

ng_optimizer *ng_optim_plan_build(const ng_optim_plan *p, ng_model *m, struct ng_comm *comm) {
    ng_optimizer *o = NULL;
    for (int i = p->n - 1; i >= 0; i--) o = p->kind[i]->build(p->settings[i], m, o);
    if (comm) ng_optimizer_distribute(o, comm);
    return o;
}

void ng_optim_plan_free(ng_optim_plan *p) {
    for (int i = 0; i < p->n; i++) free(p->settings[i]);
    memset(p, 0, sizeof *p);
}

const ng_optim_kind *ng_optim_kind_of_file(const char *file) {
    for (int i = 0; i < nkinds; i++)
        if (kinds[i].enable_key && !strcmp(kinds[i].ops->file, file)) return &kinds[i];
    return NULL;
}
