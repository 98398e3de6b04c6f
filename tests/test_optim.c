/* SGD and AdamW against a plain float64 re-implementation of torch's update rules on a small
 * Linear model (f64 and f32), fresh random parameters and gradients every step; AdamW's first
 * steps against numbers derived by hand; the weight-decay mask; state round trips through
 * ng_optimizer_state; global-norm clipping; bad configs naming their key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "testing.h"

#define U32 (1.0 / 16777216.0)         /* unit roundoff of f32, 2^-24 */
#define U64 (1.0 / 9007199254740992.0) /* f64, 2^-53 */
#define STEPS 5

/* fc1 and fc3 have biases (no decay), fc2 has none; every parameter is padded to 64 elements in
 * the flat buffers, so the gaps are exercised too. */
static ng_model *small_model(ng_dtype dt) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 7, 5, 1));
    ng_layer_add_child(s, ng_linear("fc2", 5, 6, 0));
    ng_layer_add_child(s, ng_linear("fc3", 6, 3, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, NG_CPU, dt, 7, 1 << 16, 1 << 16);
    return m;
}

static ng_optim_config sgd_config(double momentum, int nesterov, double wd, int decoupled) {
    return (ng_optim_config){.name = "sgd",
                             .momentum = momentum,
                             .nesterov = nesterov,
                             .weight_decay = wd,
                             .decoupled = decoupled};
}

static ng_optim_config adamw_config(double beta1, double beta2, double eps, double wd) {
    return (ng_optim_config){
        .name = "adamw", .beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = wd};
}

/* ---- the reference: torch.optim.SGD / AdamW written out per parameter, in double ------------ */

typedef struct {
    ng_optim_config c;
    int64_t step;
    int f32;               /* state is stored in f32, as torch stores it in the parameter dtype */
    double *buf, *ma, *va; /* [numel]: momentum, exp_avg, exp_avg_sq */
} ref_opt;

static double stored(const ref_opt *r, double x) {
    return r->f32 ? (double)(float)x : x;
}

static void ref_step(ref_opt *r, const ng_model *mdl, double lr, double *w, const double *g) {
    const ng_optim_config *c = &r->c;
    int adamw = !strcmp(c->name, "adamw");
    double t = (double)(r->step + 1);
    for (int p = 0; p < mdl->nparams; p++) {
        double wd = mdl->params[p].param->decay ? c->weight_decay : 0.0;
        int64_t off = mdl->params[p].offset, n = mdl->params[p].param->value.numel;
        for (int64_t i = off; i < off + n; i++) {
            if (adamw) {
                w[i] *= 1.0 - lr * wd;
                r->ma[i] = stored(r, c->beta1 * r->ma[i] + (1.0 - c->beta1) * g[i]);
                r->va[i] = stored(r, c->beta2 * r->va[i] + (1.0 - c->beta2) * g[i] * g[i]);
                double bc1 = 1.0 - pow(c->beta1, t), bc2 = 1.0 - pow(c->beta2, t);
                double denom = sqrt(r->va[i]) / sqrt(bc2) + c->eps;
                w[i] -= lr / bc1 * r->ma[i] / denom;
            } else {
                double d = g[i];
                if (!c->decoupled) d += wd * w[i];
                if (c->momentum != 0.0) {
                    r->buf[i] = stored(r, r->step == 0 ? d : c->momentum * r->buf[i] + d);
                    d = c->nesterov ? d + c->momentum * r->buf[i] : r->buf[i];
                }
                if (c->decoupled) w[i] -= lr * wd * w[i];
                w[i] -= lr * d;
            }
        }
    }
    r->step++;
}

static double maxabs(const double *x, int64_t n) {
    double a = 0;
    for (int64_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

/* STEPS updates against the reference; parameters, gradients and lr are drawn fresh each step
 * (over the whole flat buffers, gaps included: the gaps must come out unchanged) while the state
 * carries over. */
static void check_reference(const char *label, ng_optim_config c, ng_dtype dt) {
    ng_model *m = small_model(dt);
    ng_optimizer *o = ng_optimizer_new(m, &c);
    int64_t n = m->numel;
    ref_opt r = {.c = c,
                 .f32 = dt == NG_F32,
                 .buf = calloc((size_t)n, sizeof(double)),
                 .ma = calloc((size_t)n, sizeof(double)),
                 .va = calloc((size_t)n, sizeof(double))};
    const char *names[4];
    ng_tensor *st[4];
    int ns = ng_optimizer_state(o, names, st, 4);
    int adamw = !strcmp(c.name, "adamw");
    NG_TEST(ns == (adamw ? 2 : c.momentum != 0.0 ? 1 : 0), "%s: %d state tensors", label, ns);
    /* Both sides compute in double; the implementation then rounds each stored value once (2u
     * relative covers it). The order of the double operations differs: each side rounds at most
     * 6 operations on values below 5 in magnitude, so they differ by less than 32 * 2^-53 in
     * absolute terms, which matters where a new weight cancels to near 0. State is rounded to f32
     * on both sides from double results that agree to ~1e-16, so it differs by at most one f32
     * ulp of the largest state value, and a flipped ulp is carried on with factor momentum or
     * beta < 1: a few ulps over STEPS steps. */
    double u = dt == NG_F32 ? U32 : U64;
    for (int k = 0; k < STEPS; k++) {
        double lr = 0.15 + 0.1 * ng_test_uniform(); /* [0.05, 0.25) */
        ng_test_fill_uniform(&m->flat_params, -1, 1);
        ng_test_fill_uniform(&m->flat_grads, -1, 1);
        double *w = ng_test_to_f64(&m->flat_params), *g = ng_test_to_f64(&m->flat_grads);
        ref_step(&r, m, lr, w, g);
        ng_optimizer_step(o, lr);
        char what[160];
        snprintf(what, sizeof what, "%s %s step %d: parameters", label, ng_dtype_name(dt), k);
        double *gw = ng_test_to_f64(&m->flat_params), *gg = ng_test_to_f64(&m->flat_grads);
        ng_test_close(what, w, gw, n, 2 * u, 32 * U64);
        NG_TEST(!memcmp(g, gg, sizeof(double) * (size_t)n), "%s: gradients were changed", what);
        for (int s = 0; s < ns; s++) {
            const double *ref = adamw ? (s == 0 ? r.ma : r.va) : r.buf;
            double *got = ng_test_to_f64(st[s]);
            snprintf(what, sizeof what, "%s %s step %d: %s", label, ng_dtype_name(dt), k, names[s]);
            ng_test_close(what, ref, got, n, 2 * u, 2 * STEPS * u * maxabs(ref, n));
            free(got);
        }
        free(w), free(g), free(gw), free(gg);
    }
    NG_TEST(ng_optimizer_get_step(o) == STEPS, "%s: step count %lld", label,
            (long long)ng_optimizer_get_step(o));
    free(r.buf), free(r.ma), free(r.va);
    ng_optimizer_free(o);
    ng_model_free(m);
}

/* ---- AdamW's first two steps by hand -------------------------------------------------------- */

/* Every parameter starts at 1 with every gradient 0.5; lr 0.1, betas (0.9, 0.999), eps 1e-8.
 * Step 1: m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25, so the step is
 *   0.1 * 0.5 / (0.5 + 1e-8) = 0.1 / (1 + 2e-8) = 0.1 - 2e-9 + 4e-17
 * and w = 0.900000002 (less 4e-17); a decayed weight (wd 0.1) first shrinks
 * to 1 * (1 - 0.1 * 0.1) = 0.99, so w = 0.890000002.
 * Step 2 with the gradient -0.5: m = 0.9 * 0.05 - 0.05 = -0.005, bias correction 1 - 0.81 = 0.19,
 * m_hat = -1/38; v = 0.999 * 0.00025 + 0.00025 = 0.00049975 = 0.25 * 0.001999 and
 * 1 - 0.999^2 = 0.001999, so v_hat = 0.25 again. The step is 0.1 * (-1/38) / 0.5 / (1 + 2e-8)
 * = -0.005263157894736842 * (1 - 2e-8) = -0.0052631577894736842, so
 *   bias:   0.900000002 + 0.0052631577894736842 = 0.9052631597894736
 *   weight: 0.890000002 * 0.99 + 0.0052631577894736842 = 0.88110000198 + ... = 0.8863631597694736
 */
static void check_adamw_by_hand(void) {
    ng_model *m = small_model(NG_F64);
    ng_optim_config c = adamw_config(0.9, 0.999, 1e-8, 0.1);
    ng_optimizer *o = ng_optimizer_new(m, &c);
    const double *w = m->flat_params.data;
    ng_fill(&m->flat_params, 1.0);
    const double exp_w[2][2] = {{0.890000002, 0.900000002},
                                {0.8863631597694736, 0.9052631597894736}};
    for (int k = 0; k < 2; k++) {
        ng_fill(&m->flat_grads, k == 0 ? 0.5 : -0.5);
        ng_optimizer_step(o, 0.1);
        int bad = 0;
        for (int p = 0; p < m->nparams; p++) {
            int decay = m->params[p].param->decay;
            double e = exp_w[k][decay ? 0 : 1];
            for (int64_t i = 0; i < m->params[p].param->value.numel; i++) {
                double got = w[m->params[p].offset + i];
                if (!(fabs(got - e) <= 4e-16) && bad++ < 4)
                    fprintf(stderr,
                            "  adamw by hand, step %d, %s[%lld]: expected %.17g got %.17g\n", k + 1,
                            m->params[p].param->name, (long long)i, e, got);
            }
        }
        NG_TEST(!bad, "adamw by hand, step %d: %d elements differ", k + 1, bad);
    }
    ng_optimizer_free(o);
    ng_model_free(m);
}

/* ---- weight decay touches weights only ------------------------------------------------------ */

/* With zero gradients only decay moves anything: weights shrink by exactly (1 - lr * wd) (L2
 * SGD: w - lr * wd * w; SGDW and AdamW: w * (1 - lr * wd); AdamW's own step is 0 / (0 + eps) = 0),
 * biases stay bit for bit. */
static void check_decay_mask(ng_optim_config c, ng_dtype dt) {
    ng_model *m = small_model(dt);
    ng_optimizer *o = ng_optimizer_new(m, &c);
    double lr = 0.5, keep = 1.0 - lr * c.weight_decay;
    for (int k = 0; k < 2; k++) {
        ng_test_fill_uniform(&m->flat_params, -1, 1);
        ng_model_zero_grad(m);
        double *before = ng_test_to_f64(&m->flat_params);
        ng_optimizer_step(o, lr);
        double *after = ng_test_to_f64(&m->flat_params);
        int nw = 0, nb = 0, shrunk = 1;
        for (int p = 0; p < m->nparams; p++) {
            const ng_param *prm = m->params[p].param;
            int64_t off = m->params[p].offset, n = prm->value.numel;
            double *exp = malloc(sizeof(double) * (size_t)n);
            for (int64_t i = 0; i < n; i++) {
                double b = before[off + i];
                /* L2 SGD computes b - lr * (wd * b); the others b * keep: equal within rounding */
                exp[i] = prm->decay ? (c.decoupled || !strcmp(c.name, "adamw")
                                           ? b * keep
                                           : b - lr * (c.weight_decay * b))
                                    : b;
                if (prm->decay && !(fabs(after[off + i]) < fabs(b))) shrunk = 0;
            }
            char what[160];
            snprintf(what, sizeof what, "decay mask %s %s: %s", c.name, ng_dtype_name(dt),
                     prm->name);
            if (prm->decay) {
                ng_test_close(what, exp, after + off, n, dt == NG_F32 ? 2 * U32 : 4 * U64, 0);
                nw++;
            } else {
                NG_TEST(!memcmp(exp, after + off, sizeof(double) * (size_t)n),
                        "%s: a bias moved without a gradient", what);
                nb++;
            }
            free(exp);
        }
        NG_TEST(nw == 3 && nb == 2, "decay mask: %d weights, %d biases", nw, nb);
        NG_TEST(shrunk, "decay mask %s: some weight did not shrink", c.name);
        free(before), free(after);
    }
    ng_optimizer_free(o);
    ng_model_free(m);
}

/* ---- state round trip ----------------------------------------------------------------------- */

static void copy_state(ng_optimizer *to, ng_optimizer *from) {
    const char *na[4], *nb[4];
    ng_tensor *ta[4], *tb[4];
    int a = ng_optimizer_state(from, na, ta, 4), b = ng_optimizer_state(to, nb, tb, 4);
    NG_TEST(a == b, "state round trip: %d vs %d tensors", a, b);
    for (int i = 0; i < a && i < b; i++) {
        NG_TEST(!strcmp(na[i], nb[i]), "state round trip: %s vs %s", na[i], nb[i]);
        ng_tensor_copy(tb[i], ta[i]);
    }
}

/* Three steps on A; B gets A's weights, state and step count and must then take the same fourth
 * step bit for bit. C gets the same state but keeps step 0, which must change the result (SGD
 * restarts its buffer from the gradient, AdamW's bias correction starts over): the step count is
 * part of the state. */
static void check_round_trip(ng_optim_config c, const char *const *expect_names, int expect_n) {
    ng_model *ma = small_model(NG_F32), *mb = small_model(NG_F32), *mc = small_model(NG_F32);
    ng_optimizer *a = ng_optimizer_new(ma, &c), *b = ng_optimizer_new(mb, &c),
                 *oc = ng_optimizer_new(mc, &c);
    const char *names[4];
    ng_tensor *ts[4];
    int n = ng_optimizer_state(a, names, ts, 4);
    NG_TEST(n == expect_n, "%s: %d state tensors, expected %d", c.name, n, expect_n);
    for (int i = 0; i < n && i < expect_n; i++)
        NG_TEST(!strcmp(names[i], expect_names[i]) && ts[i]->numel == ma->numel &&
                    ts[i]->dtype == ma->dtype && ts[i]->device == ma->device,
                "%s: state %d is %s %s, expected %s", c.name, i, names[i], ng_tensor_desc(ts[i]),
                expect_names[i]);
    if (n > 1) NG_TEST(ng_optimizer_state(a, names, ts, 1) == 1, "state: cap 1 not respected");
    for (int k = 0; k < 3; k++) {
        ng_test_fill_uniform(&ma->flat_grads, -1, 1);
        ng_optimizer_step(a, 0.1);
    }
    NG_TEST(ng_optimizer_get_step(a) == 3, "step count %lld after 3 steps",
            (long long)ng_optimizer_get_step(a));
    copy_state(b, a);
    copy_state(oc, a);
    ng_tensor_copy(&mb->flat_params, &ma->flat_params);
    ng_tensor_copy(&mc->flat_params, &ma->flat_params);
    ng_optimizer_set_step(b, ng_optimizer_get_step(a));
    NG_TEST(ng_optimizer_get_step(b) == 3, "set_step: %lld", (long long)ng_optimizer_get_step(b));
    ng_test_fill_uniform(&ma->flat_grads, -1, 1);
    ng_tensor_copy(&mb->flat_grads, &ma->flat_grads);
    ng_tensor_copy(&mc->flat_grads, &ma->flat_grads);
    ng_optimizer_step(a, 0.1);
    ng_optimizer_step(b, 0.1);
    ng_optimizer_step(oc, 0.1);
    size_t bytes = ng_tensor_bytes(&ma->flat_params);
    NG_TEST(!memcmp(ma->flat_params.data, mb->flat_params.data, bytes),
            "%s: the restored optimizer took a different step", c.name);
    NG_TEST(memcmp(ma->flat_params.data, mc->flat_params.data, bytes),
            "%s: restoring the state without its step count changed nothing", c.name);
    ng_tensor *tb[4];
    ng_optimizer_state(a, names, ts, 4);
    ng_optimizer_state(b, names, tb, 4);
    for (int i = 0; i < n; i++)
        NG_TEST(!memcmp(ts[i]->data, tb[i]->data, ng_tensor_bytes(ts[i])),
                "%s: %s differs after the restored step", c.name, names[i]);
    ng_optimizer_free(a), ng_optimizer_free(b), ng_optimizer_free(oc);
    ng_model_free(ma), ng_model_free(mb), ng_model_free(mc);
}

/* ---- clipping ------------------------------------------------------------------------------- */

static void check_clip(ng_dtype dt) {
    ng_model *m = small_model(dt);
    int64_t n = m->numel;
    double u = dt == NG_F32 ? U32 : U64;
    ng_test_fill_uniform(&m->flat_grads, -1, 1);
    double *g = ng_test_to_f64(&m->flat_grads), ss = 0;
    for (int64_t i = 0; i < n; i++) ss += g[i] * g[i];
    double norm = sqrt(ss);
    /* The sum of n squares in double: relative error ~ n * 2^-53, far below 1e-12. */
    double r = ng_clip_grad_norm(m, 0.0);
    NG_TEST(fabs(r - norm) <= 1e-12 * norm, "clip %s: norm %.17g, expected %.17g",
            ng_dtype_name(dt), r, norm);
    double *same = ng_test_to_f64(&m->flat_grads);
    NG_TEST(!memcmp(g, same, sizeof(double) * (size_t)n), "clip %s: max_norm 0 changed grads",
            ng_dtype_name(dt));
    free(same);
    r = ng_clip_grad_norm(m, 2.0 * norm);
    same = ng_test_to_f64(&m->flat_grads);
    NG_TEST(fabs(r - norm) <= 1e-12 * norm && !memcmp(g, same, sizeof(double) * (size_t)n),
            "clip %s: a norm below max_norm changed the gradients", ng_dtype_name(dt));
    free(same);
    double max_norm = norm / 3.0, coef = max_norm / (norm + 1e-6);
    r = ng_clip_grad_norm(m, max_norm);
    NG_TEST(fabs(r - norm) <= 1e-12 * norm, "clip %s: returned %.17g, not the norm before %.17g",
            ng_dtype_name(dt), r, norm);
    double *exp = malloc(sizeof(double) * (size_t)n), *got = ng_test_to_f64(&m->flat_grads);
    for (int64_t i = 0; i < n; i++) exp[i] = g[i] * coef;
    /* One scaling, rounded once into the dtype (the factor itself may be rounded too). */
    ng_test_close(dt == NG_F32 ? "clip f32: scaled gradients" : "clip f64: scaled gradients", exp,
                  got, n, 3 * u, 0);
    double after = ng_clip_grad_norm(m, 0.0);
    NG_TEST(fabs(after - max_norm) <= 1e-5 * max_norm, "clip %s: norm after %.10g, expected %.10g",
            ng_dtype_name(dt), after, max_norm);
    free(g), free(exp), free(got);
    ng_model_free(m);
}

/* ---- bad configs ---------------------------------------------------------------------------- */

static void check_bad_configs(void) {
    ng_model *m = small_model(NG_F32);
    ng_optimizer *o = NULL;
    ng_optim_config c = sgd_config(0.9, 0, 0, 0);
    c.name = "lamb";
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.name");
    c = sgd_config(-0.1, 0, 0, 0);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.momentum");
    c = sgd_config(1.0, 0, 0, 0);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.momentum");
    c = sgd_config(0.0, 1, 0, 0);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.nesterov");
    c = sgd_config(0.9, 0, -1e-4, 0);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.weight_decay");
    c = adamw_config(0.9, 0.999, -1e-8, 0.01);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.eps");
    c = adamw_config(1.0, 0.999, 1e-8, 0.01);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.beta1");
    c = adamw_config(-0.1, 0.999, 1e-8, 0.01);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.beta1");
    c = adamw_config(0.9, 1.0, 1e-8, 0.01);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.beta2");
    c = adamw_config(0.9, NAN, 1e-8, 0.01);
    NG_TEST_ERROR(o = ng_optimizer_new(m, &c), "optimizer.beta2");
    c = adamw_config(0.9, 0.999, 1e-8, 0.01);
    o = ng_optimizer_new(m, &c);
    NG_TEST_ERROR(ng_optimizer_step(o, -0.1), "optimizer.lr");
    NG_TEST_ERROR(ng_optimizer_step(o, INFINITY), "optimizer.lr");
    NG_TEST(ng_optimizer_get_step(o) == 0, "a refused step counted");
    ng_optimizer_free(o);
    ng_model_free(m);
}

int main(void) {
    ng_test_seed();
    const ng_dtype dts[2] = {NG_F64, NG_F32};
    for (int d = 0; d < 2; d++) {
        ng_dtype dt = dts[d];
        check_reference("sgd", sgd_config(0, 0, 0, 0), dt);
        check_reference("sgd+l2", sgd_config(0, 0, 0.05, 0), dt);
        check_reference("sgd momentum", sgd_config(0.9, 0, 0, 0), dt);
        check_reference("sgd momentum+l2", sgd_config(0.9, 0, 0.05, 0), dt);
        check_reference("sgd nesterov+l2", sgd_config(0.9, 1, 0.05, 0), dt);
        check_reference("sgdw momentum", sgd_config(0.9, 0, 0.05, 1), dt);
        check_reference("sgdw nesterov", sgd_config(0.8, 1, 0.1, 1), dt);
        check_reference("adamw", adamw_config(0.9, 0.999, 1e-8, 0.05), dt);
        check_reference("adamw no decay", adamw_config(0.8, 0.99, 1e-6, 0.0), dt);
        check_decay_mask(sgd_config(0, 0, 0.1, 0), dt);
        check_decay_mask(sgd_config(0.9, 0, 0.1, 1), dt);
        check_decay_mask(adamw_config(0.9, 0.999, 1e-8, 0.1), dt);
        check_clip(dt);
    }
    check_adamw_by_hand();
    static const char *const sgd_names[] = {"sgd.momentum"};
    static const char *const adamw_names[] = {"adamw.exp_avg", "adamw.exp_avg_sq"};
    check_round_trip(sgd_config(0.9, 1, 0.01, 0), sgd_names, 1);
    check_round_trip(adamw_config(0.9, 0.999, 1e-8, 0.01), adamw_names, 2);
    check_bad_configs();
    return ng_test_finish("test_optim");
}
