/* Public RNG fills: checks and dispatch; the per-element rule lives in rng.h. */
#include "rng.h"

#include "backend.h"
#include "error.h"

static void fill(const char *op, ng_tensor *t, ng_rng_dist dist, ng_rng_key k, double p0,
                 double p1) {
    NG_CHECK(ng_dtype_is_float(t->dtype), "%s: '%s' is %s; a floating type is needed", op,
             ng_tensor_name(t), ng_tensor_desc(t));
    const ng_backend *be = ng_backend_for(t->device, op);
    if (t->numel) be->rng_fill(t, dist, k, p0, p1);
}

void ng_rng_uniform(ng_tensor *t, ng_rng_key k, double lo, double hi) {
    fill("ng_rng_uniform", t, NG_DIST_UNIFORM, k, lo, hi);
}

void ng_rng_normal(ng_tensor *t, ng_rng_key k, double mean, double std) {
    NG_CHECK(std >= 0, "ng_rng_normal: std %g must be >= 0", std);
    fill("ng_rng_normal", t, NG_DIST_NORMAL, k, mean, std);
}

void ng_rng_bernoulli(ng_tensor *t, ng_rng_key k, double p) {
    NG_CHECK(p >= 0 && p <= 1, "ng_rng_bernoulli: p %g must be in [0,1]", p);
    fill("ng_rng_bernoulli", t, NG_DIST_BERNOULLI, k, p, 0);
}
