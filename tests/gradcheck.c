/* Finite-difference and CPU/GPU twin checks for layers: see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/ops.h"
#include "nn/model.h"
#include "testing.h"

#define ARENA_BYTES ((size_t)64 << 20)

void (*ng_gradcheck_prepare)(ng_model *m);

void ng_gradcheck_set_running_stats(ng_model *m) {
    for (int i = 0; i + 1 < m->nbuffers; i += 2) {
        ng_tensor *mt = &m->buffers[i].buffer->value, *vt = &m->buffers[i + 1].buffer->value;
        ng_tensor mh = ng_tensor_new(NG_F64, NG_CPU, 1, mt->shape, "mean"),
                  vh = ng_tensor_new(NG_F64, NG_CPU, 1, vt->shape, "var");
        for (int64_t c = 0; c < mh.numel; c++) {
            ((double *)mh.data)[c] = 0.3 * sin(1.0 + (double)c);
            ((double *)vh.data)[c] = 0.5 + 0.25 * (double)c;
        }
        ng_tensor mc = ng_tensor_new(mt->dtype, NG_CPU, 1, mt->shape, "mean"),
                  vc = ng_tensor_new(vt->dtype, NG_CPU, 1, vt->shape, "var");
        ng_cast(&mc, &mh);
        ng_cast(&vc, &vh);
        ng_tensor_copy(mt, &mc);
        ng_tensor_copy(vt, &vc);
        ng_tensor_free(&mh), ng_tensor_free(&vh), ng_tensor_free(&mc), ng_tensor_free(&vc);
    }
}

static ng_model *build(ng_layer_maker make, ng_device dev, ng_dtype dt, uint64_t seed) {
    ng_model *m = ng_model_new(make());
    ng_model_build(m, dev, dt, seed, ARENA_BYTES, ARENA_BYTES);
    if (ng_gradcheck_prepare) ng_gradcheck_prepare(m);
    return m;
}

/* L = <dy, f(x)> with the model's current parameters; the arenas are reset around it. */
static double loss(ng_model *m, const ng_tensor *x, const ng_tensor *dy, int training) {
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, training, 7, 3);
    ng_tensor y = ng_model_forward(m, &ctx, x);
    ng_tensor p = ng_tensor_new(NG_F64, NG_CPU, y.ndim, y.shape, "y*dy");
    ng_mul(&y, dy, &p);
    double s = ng_sum(&p);
    ng_tensor_free(&p);
    return s;
}

static int compare(const char *what, const char *tensor, double num, double ana, double tol,
                   int64_t index) {
    double scale = fmax(1.0, fmax(fabs(num), fabs(ana)));
    if (fabs(num - ana) <= tol * scale) return 1;
    ng_test_fail("%s: d/d %s[%lld]: finite difference %.12g, backward %.12g", what, tensor,
                 (long long)index, num, ana);
    return 0;
}

/* Probes `n` random elements (all when the tensor is small) of t, perturbing in place. */
static int probe(const char *what, const char *name, ng_model *m, ng_tensor *t, const double *ana,
                 const ng_tensor *x, const ng_tensor *dy, ng_gradcheck_opts o) {
    int ok = 1, n = o.max_checks ? o.max_checks : 40;
    double h = o.h ? o.h : 1e-6, tol = o.tol ? o.tol : 1e-6;
    double *v = t->data;
    for (int c = 0; c < n && c < t->numel; c++) {
        int64_t i = t->numel <= n ? c : (int64_t)((ng_test_uniform() + 1.0) * 0.5 * t->numel);
        if (i >= t->numel) i = t->numel - 1;
        double keep = v[i];
        v[i] = keep + h;
        double lp = loss(m, x, dy, o.training);
        v[i] = keep - h;
        double lm = loss(m, x, dy, o.training);
        v[i] = keep;
        ok &= compare(what, name, (lp - lm) / (2 * h), ana[i], tol, i);
    }
    return ok;
}

int ng_gradcheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                 ng_gradcheck_opts o) {
    ng_model *m = build(make, NG_CPU, NG_F64, ng_test_seed());
    /* Random parameters rather than the initial ones: zero-initialised biases or unit norms
     * would hide terms of the gradient. */
    for (int i = 0; i < m->nparams; i++) ng_test_fill_uniform(&m->params[i].param->value, -1, 1);
    ng_tensor x = ng_tensor_new(NG_F64, NG_CPU, ndim, in_shape, "x");
    double lo = o.input_lo, hi = o.input_hi;
    if (lo == 0 && hi == 0) lo = -1, hi = 1;
    ng_test_fill_uniform(&x, lo, hi);
    int out_ndim;
    int64_t out_shape[NG_MAX_DIMS];
    ng_layer_out_shape(m->root, ndim, in_shape, &out_ndim, out_shape);
    ng_tensor dy = ng_tensor_new(NG_F64, NG_CPU, out_ndim, out_shape, "dy");
    ng_test_fill_uniform(&dy, -1, 1);

    /* Analytic gradients. */
    ng_model_reset_arenas(m);
    ng_model_zero_grad(m);
    ng_ctx ctx = ng_model_ctx(m, o.training, 7, 3);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    NG_TEST(y.ndim == out_ndim && !memcmp(y.shape, out_shape, sizeof(int64_t) * out_ndim),
            "%s: forward output shape matches out_shape", what);
    ng_tensor dx = ng_tensor_new(NG_F64, NG_CPU, ndim, in_shape, "dx");
    ng_test_poison(&dx);
    m->root->ops->backward(m->root, &ctx, &dy, o.no_input_grad ? NULL : &dx);
    double *grads = ng_test_to_f64(&m->flat_grads);

    int ok = 1;
    if (!o.no_input_grad) ok &= probe(what, "input", m, &x, dx.data, &x, &dy, o);
    for (int i = 0; i < m->nparams; i++) {
        ng_param_entry *e = &m->params[i];
        ok &= probe(what, e->param->name, m, &e->param->value, grads + e->offset, &x, &dy, o);
    }
    if (ok) ng_test_pass();
    free(grads);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m);
    return ok;
}

typedef struct {
    ng_tensor y;
    double *y64, *dx64, *grads64;
} twin_run;

static twin_run run_on(ng_model *m, const ng_tensor *xh, const ng_tensor *dyh, int training) {
    twin_run r;
    ng_tensor x = ng_tensor_to(xh, m->device, "x"), dy = ng_tensor_to(dyh, m->device, "dy");
    ng_tensor dx = ng_tensor_new(NG_F32, m->device, xh->ndim, xh->shape, "dx");
    ng_test_poison(&dx);
    ng_model_reset_arenas(m);
    ng_model_zero_grad(m);
    ng_ctx ctx = ng_model_ctx(m, training, 7, 3);
    r.y = ng_model_forward(m, &ctx, &x);
    r.y64 = ng_test_to_f64(&r.y);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    r.dx64 = ng_test_to_f64(&dx);
    r.grads64 = ng_test_to_f64(&m->flat_grads);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    return r;
}

int ng_twincheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                 int training, double tol) {
    if (!ng_test_have_gpu()) return 1;
    uint64_t seed = ng_test_seed();
    ng_model *mc = build(make, NG_CPU, NG_F32, seed), *mg = build(make, NG_CUDA, NG_F32, seed);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, ndim, in_shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    int out_ndim;
    int64_t out_shape[NG_MAX_DIMS];
    ng_layer_out_shape(mc->root, ndim, in_shape, &out_ndim, out_shape);
    ng_tensor dy = ng_tensor_new(NG_F32, NG_CPU, out_ndim, out_shape, "dy");
    ng_test_fill_uniform(&dy, -1, 1);
    twin_run c = run_on(mc, &x, &dy, training), g = run_on(mg, &x, &dy, training);
    char label[256];
    int ok = 1;
    snprintf(label, sizeof label, "%s: output cuda vs cpu", what);
    ok &= ng_test_rel_norm(label, c.y64, g.y64, c.y.numel, tol);
    snprintf(label, sizeof label, "%s: input grad cuda vs cpu", what);
    ok &= ng_test_rel_norm(label, c.dx64, g.dx64, x.numel, tol);
    for (int i = 0; i < mc->nparams; i++) {
        ng_param_entry *e = &mc->params[i];
        snprintf(label, sizeof label, "%s: grad %s cuda vs cpu", what, e->param->name);
        ok &= ng_test_rel_norm(label, c.grads64 + e->offset, g.grads64 + e->offset,
                               e->param->value.numel, tol);
    }
    free(c.y64), free(c.dx64), free(c.grads64), free(g.y64), free(g.dx64), free(g.grads64);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(mc);
    ng_model_free(mg);
    return ok;
}

void ng_test_forward_error(ng_layer *l, int ndim, const int64_t *shape, int training,
                           const char *needle) {
    ng_model *m = ng_model_new(l);
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 20, 1 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, ndim, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    ng_ctx ctx = ng_model_ctx(m, training, 1, 0);
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &x), needle);
    ng_tensor_free(&x);
    ng_model_free(m);
}
