/* Finite-difference and CPU/GPU twin checks for layers: see gradcheck.h. */
#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/ops.h"
#include "nn/activation.h"
#include "nn/batchnorm.h"
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

/* dt f32/f64 builds a plain model; f16/bf16 a mixed one with f32 masters. */
static ng_model *build(ng_layer_maker make, ng_device dev, ng_dtype dt, uint64_t seed) {
    ng_model *m = ng_model_new(make());
    if (dt == NG_F16 || dt == NG_BF16)
        ng_model_build_mixed(m, dev, dt, seed, ARENA_BYTES, ARENA_BYTES);
    else
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

/* The central difference of L at element i of v with step h. */
static double central(ng_model *m, double *v, int64_t i, double h, const ng_tensor *x,
                      const ng_tensor *dy, int training) {
    double keep = v[i];
    v[i] = keep + h;
    double lp = loss(m, x, dy, training);
    v[i] = keep - h;
    double lm = loss(m, x, dy, training);
    v[i] = keep;
    return (lp - lm) / (2 * h);
}

/* Probes `n` random elements (all when the tensor is small) of t, perturbing in place.
 * A ReLU or a max-pooling window whose winner changes inside [-h, h] is a kink of L: the central
 * difference then mixes two slopes and no tolerance covers it. A mismatch is therefore measured
 * again with steps h/10 and h/100: a kink crossed by the larger step is (almost always) outside
 * the smaller one, where the difference matches the backward again, while a wrong backward stays
 * wrong at every step. Only the first step's mismatch is reported. */
static int probe(const char *what, const char *name, ng_model *m, ng_tensor *t, const double *ana,
                 const ng_tensor *x, const ng_tensor *dy, ng_gradcheck_opts o) {
    int ok = 1, n = o.max_checks ? o.max_checks : 40;
    double h = o.h ? o.h : 1e-6, tol = o.tol ? o.tol : 1e-6;
    double *v = t->data;
    for (int c = 0; c < n && c < t->numel; c++) {
        int64_t i = t->numel <= n ? c : (int64_t)((ng_test_uniform() + 1.0) * 0.5 * t->numel);
        if (i >= t->numel) i = t->numel - 1;
        double num = central(m, v, i, h, x, dy, o.training);
        int matched = 0;
        for (double d = 10; !matched && d <= 100 &&
                            fabs(num - ana[i]) > tol * fmax(1.0, fmax(fabs(num), fabs(ana[i])));
             d *= 10) {
            double fine = central(m, v, i, h / d, x, dy, o.training);
            matched = fabs(fine - ana[i]) <= tol * fmax(1.0, fmax(fabs(fine), fabs(ana[i])));
        }
        ok &= matched || compare(what, name, num, ana[i], tol, i);
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
    /* On the host the caller's tensors are used as they are: layers keep views of their input,
     * and ng_mixedcheck looks at them after the run. */
    int copy = m->device != xh->device;
    ng_tensor x = copy ? ng_tensor_to(xh, m->device, "x") : *xh;
    ng_tensor dy = copy ? ng_tensor_to(dyh, m->device, "dy") : *dyh;
    ng_tensor dx = ng_tensor_new(xh->dtype, m->device, xh->ndim, xh->shape, "dx");
    ng_test_poison(&dx);
    ng_model_reset_arenas(m);
    ng_model_zero_grad(m);
    ng_ctx ctx = ng_model_ctx(m, training, 7, 3);
    r.y = ng_model_forward(m, &ctx, &x);
    r.y64 = ng_test_to_f64(&r.y);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    r.dx64 = ng_test_to_f64(&dx);
    r.grads64 = ng_test_to_f64(&m->flat_grads);
    if (copy) ng_tensor_free(&x), ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    return r;
}

double ng_unit_roundoff(ng_dtype dt) {
    switch (dt) {
        case NG_F16:
            return 0x1p-11;
        case NG_BF16:
            return 0x1p-8;
        case NG_F64:
            return 0x1p-53;
        default:
            return 0x1p-24;
    }
}

double ng_mixed_tol(ng_dtype dt, int n, int64_t k) {
    return 2.0 * n * ng_unit_roundoff(dt) + (double)k * 0x1p-24;
}

/* 1 when every ReLU of the two layer trees (the same architecture) saw its inputs on the same
 * side of 0 in the last forward. A ReLU that switched in one run and not in the other is a jump
 * of the gradient (a kink of the function), not a rounding error, so no format tolerance covers
 * it: the mixed check draws new inputs instead. */
static int same_relu_sides(const ng_layer *a, const ng_layer *b) {
    int relu = !strcmp(a->ops->kind, "relu"), fused = !strcmp(a->ops->kind, "batchnorm_relu");
    if (relu || fused) {
        /* a ReLU's input, or the fused batch norm + ReLU's output: > 0 on the same side */
        const ng_tensor *xa = relu ? ng_activation_input(a) : ng_batchnorm_relu_output(a),
                        *xb = relu ? ng_activation_input(b) : ng_batchnorm_relu_output(b);
        if (!xa || !xb || xa->numel != xb->numel) return 0;
        double *va = ng_test_to_f64(xa), *vb = ng_test_to_f64(xb);
        int64_t i = 0;
        while (i < xa->numel && (va[i] > 0) == (vb[i] > 0)) i++;
        free(va), free(vb);
        if (i < xa->numel) return 0;
    }
    for (int i = 0; i < a->nchildren && i < b->nchildren; i++)
        if (!same_relu_sides(a->children[i], b->children[i])) return 0;
    return 1;
}

/* The observer of kink_free: each Linear or Conv input of a forward, as 1 where it is exactly 0
 * and 0 elsewhere, one after the other. A ReLU output consumed by such a layer is 0 where the
 * ReLU cut; any other input is exactly 0 with probability 0. */
typedef struct {
    uint8_t *zero;
    int64_t n, cap;
} zero_log;

static void log_input(void *self, ng_layer *l, const ng_tensor *x) {
    (void)l;
    zero_log *z = self;
    double *v = ng_test_to_f64(x);
    if (z->n + x->numel > z->cap) {
        z->cap = 2 * (z->n + x->numel);
        z->zero = realloc(z->zero, (size_t)z->cap);
        NG_CHECK(z->zero, "kink check: out of host memory");
    }
    for (int64_t i = 0; i < x->numel; i++) z->zero[z->n + i] = v[i] == 0;
    z->n += x->numel;
    free(v);
}

static void no_grad(void *self, ng_layer *l, const ng_tensor *dy) {
    (void)self, (void)l, (void)dy;
}

/* 1 when the two models' ReLUs see x on the same sides of 0. After a backward some of that is
 * gone (a checkpointed segment's replay skips its last output, the arena reuses the rest, a
 * recomputed block moves its output over its input), so a forward that keeps everything (retain)
 * recomputes it, the same values as the checked run's since a replay repeats its forward bit for
 * bit; what a recomputed block still overwrites, the next layer saw first, and an observer
 * records every Linear and Conv input as the layer takes it. */
static int kink_free(ng_model *a, ng_model *b, const ng_tensor *xh, int training) {
    const ng_tensor *xs[2] = {xh, xh};
    ng_model *ms[2] = {a, b};
    ng_tensor moved[2];
    zero_log logs[2] = {{0}, {0}};
    for (int i = 0; i < 2; i++) {
        if (ms[i]->device != xh->device) { /* the CUDA twin (same dtype) */
            moved[i] = ng_tensor_to(xh, ms[i]->device, "x");
            xs[i] = &moved[i];
        } else if (ms[i]->compute_dtype != xh->dtype) { /* the mixed check's reference */
            moved[i] = ng_tensor_new(ms[i]->compute_dtype, xh->device, xh->ndim, xh->shape, "x");
            ng_cast(&moved[i], xh);
            xs[i] = &moved[i];
        }
        ng_model_reset_arenas(ms[i]);
        ng_ctx ctx = ng_model_ctx(ms[i], training, 7, 3);
        ng_observer obs = {&logs[i], log_input, no_grad};
        ctx.retain = 1;
        ctx.observer = &obs;
        ng_model_forward(ms[i], &ctx, xs[i]);
    }
    /* memcmp wants real pointers even for no bytes, and a model without kinks logged none. */
    int same = same_relu_sides(a->root, b->root) && logs[0].n == logs[1].n &&
               (!logs[0].n || !memcmp(logs[0].zero, logs[1].zero, (size_t)logs[0].n));
    for (int i = 0; i < 2; i++) {
        if (xs[i] != xh) ng_tensor_free(&moved[i]);
        free(logs[i].zero);
    }
    return same;
}

static double norm2(const double *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

/* ||got - ref|| <= tol max(||ref||, floor); prints every error under NG_TEST_VERBOSE. */
static int close_mixed(const char *label, const double *ref, const double *got, int64_t n,
                       double floor, double tol) {
    double d = 0;
    for (int64_t i = 0; i < n; i++) d += (got[i] - ref[i]) * (got[i] - ref[i]);
    double den = norm2(ref, n) > floor ? norm2(ref, n) : floor;
    double rel = sqrt(d) / (den > 0 ? den : 1.0);
    if (getenv("NG_TEST_VERBOSE"))
        printf("%s: relative error %.3g (tolerance %.3g)\n", label, rel, tol);
    NG_TEST(rel <= tol, "%s: relative error %g > %g", label, rel, tol);
    return rel <= tol;
}

/* Output, input gradient and every parameter gradient of two runs, normwise; a parameter is
 * judged against its share of the whole gradient,
 * sqrt(numel / total) ||all gradients||, when its own gradient is smaller: a conv bias followed
 * by batch norm has a true gradient of 0, and its rounding noise has nothing of its own to be
 * relative to. */
/* output_only: the forward output alone (an evaluation: its backward is not what is checked). */
static int compare_mixed(const char *what, const char *vs, const ng_model *m, twin_run a,
                         twin_run b, int64_t x_numel, double tol, int output_only) {
    char label[256];
    int ok = 1;
    snprintf(label, sizeof label, "%s: output %s", what, vs);
    ok &= close_mixed(label, a.y64, b.y64, a.y.numel, 0, tol);
    if (!output_only) {
        snprintf(label, sizeof label, "%s: input grad %s", what, vs);
        ok &= close_mixed(label, a.dx64, b.dx64, x_numel, 0, tol);
        double all = norm2(a.grads64, m->numel);
        for (int i = 0; i < m->nparams; i++) {
            ng_param_entry *e = &m->params[i];
            int64_t n = e->param->value.numel;
            snprintf(label, sizeof label, "%s: grad %s %s", what, e->param->name, vs);
            ok &= close_mixed(label, a.grads64 + e->offset, b.grads64 + e->offset, n,
                              sqrt((double)n / (double)m->count) * all, tol);
        }
    }
    free(a.y64), free(a.dx64), free(a.grads64), free(b.y64), free(b.dx64), free(b.grads64);
    return ok;
}

static void free_run(twin_run r) {
    free(r.y64), free(r.dx64), free(r.grads64);
}

/* Same seed, same inputs, one model per device, compared as compare_mixed does: a conv bias in
 * front of batch norm has a true gradient of 0, so each twin's is rounding noise of its own
 * summation order, and only the share floor makes the comparison mean something. Inputs that
 * put a ReLU's input on different sides of 0 on the two devices are redrawn (a kink, not a
 * rounding error), as in ng_mixedcheck. */
static int twincheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                     int training, ng_dtype dt, double tol) {
    if (!ng_test_have_gpu()) return 1;
    uint64_t seed = ng_test_seed();
    ng_model *mc = build(make, NG_CPU, dt, seed), *mg = build(make, NG_CUDA, dt, seed);
    ng_tensor x = ng_tensor_new(dt, NG_CPU, ndim, in_shape, "x");
    int out_ndim;
    int64_t out_shape[NG_MAX_DIMS];
    ng_layer_out_shape(mc->root, ndim, in_shape, &out_ndim, out_shape);
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, out_ndim, out_shape, "dy");
    int ok = 0, tries = 0;
    for (; tries < 20; tries++) {
        ng_test_fill_uniform(&x, -1, 1);
        ng_test_fill_uniform(&dy, -1, 1);
        /* Running statistics move in training: both runs start from the same ones. */
        if (mc->buffer_numel) ng_tensor_copy(&mg->flat_buffers, &mc->flat_buffers);
        twin_run c = run_on(mc, &x, &dy, training), g = run_on(mg, &x, &dy, training);
        if (!kink_free(mc, mg, &x, training)) {
            free_run(c), free_run(g);
            continue;
        }
        ok = compare_mixed(what, "cuda vs cpu", mc, c, g, x.numel, tol, 0);
        break;
    }
    NG_TEST(tries < 20, "%s: a ReLU switched between CPU and CUDA on 20 inputs in a row", what);
    if (tries) printf("%s: %d inputs redrawn (a ReLU switched between the devices)\n", what, tries);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(mc);
    ng_model_free(mg);
    return ok;
}

int ng_twincheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                 int training, double tol) {
    return twincheck(what, make, ndim, in_shape, training, NG_F32, tol);
}

int ng_twincheck_mixed(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                       int training, ng_dtype compute, double tol) {
    return twincheck(what, make, ndim, in_shape, training, compute, tol);
}

static int mixedcheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                      int training, ng_dtype compute, ng_dtype ref, double tol, int output_only) {
    uint64_t seed = ng_test_seed();
    ng_model *mm = build(make, NG_CPU, compute, seed), *mr = build(make, NG_CPU, ref, seed);
    /* Masters rounded to the compute dtype first, so that both runs start from the same numbers
     * and the comparison sees only the rounding of the computation itself. */
    ng_cast(&mm->flat_params, &mm->flat_compute);
    ng_model_refresh_compute(mm);
    ng_cast(&mr->flat_params, &mm->flat_params);
    if (mr->buffer_numel) ng_cast(&mr->flat_buffers, &mm->flat_buffers);
    int out_ndim;
    int64_t out_shape[NG_MAX_DIMS];
    ng_layer_out_shape(mm->root, ndim, in_shape, &out_ndim, out_shape);
    ng_tensor xm = ng_tensor_new(compute, NG_CPU, ndim, in_shape, "x");
    ng_tensor xr = ng_tensor_new(ref, NG_CPU, ndim, in_shape, "x");
    ng_tensor dym = ng_tensor_new(compute, NG_CPU, out_ndim, out_shape, "dy");
    ng_tensor dyr = ng_tensor_new(ref, NG_CPU, out_ndim, out_shape, "dy");
    char vs[64];
    snprintf(vs, sizeof vs, "%s vs %s", ng_dtype_name(compute), ng_dtype_name(ref));
    int ok = 0, tries = 0;
    for (; tries < 20; tries++) {
        ng_test_fill_uniform(&xm, -1, 1);
        ng_cast(&xr, &xm);
        ng_test_fill_uniform(&dym, -1, 1);
        ng_cast(&dyr, &dym);
        /* Running statistics move in training: both runs start from the same ones. */
        if (mr->buffer_numel) ng_cast(&mr->flat_buffers, &mm->flat_buffers);
        twin_run a = run_on(mr, &xr, &dyr, training), b = run_on(mm, &xm, &dym, training);
        if (!kink_free(mr, mm, &xm, training)) {
            free_run(a), free_run(b);
            continue;
        }
        ok = compare_mixed(what, vs, mm, a, b, xm.numel, tol, output_only);
        NG_TEST(b.y.dtype == compute, "%s: output is %s, not %s", what, ng_dtype_name(b.y.dtype),
                ng_dtype_name(compute));
        break;
    }
    NG_TEST(tries < 20, "%s: a ReLU switched between the %s runs on 20 inputs in a row", what, vs);
    if (tries) printf("%s %s: %d inputs redrawn (a ReLU switched)\n", what, vs, tries);
    ng_tensor_free(&xm), ng_tensor_free(&xr), ng_tensor_free(&dym), ng_tensor_free(&dyr);
    ng_model_free(mm);
    ng_model_free(mr);
    return ok;
}

int ng_mixedcheck(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                  int training, ng_dtype compute, ng_dtype ref, double tol) {
    return mixedcheck(what, make, ndim, in_shape, training, compute, ref, tol, 0);
}

int ng_mixedcheck_eval(const char *what, ng_layer_maker make, int ndim, const int64_t *in_shape,
                       ng_dtype compute, ng_dtype ref, double tol) {
    return mixedcheck(what, make, ndim, in_shape, 0, compute, ref, tol, 1);
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

int ng_test_same_after_eviction(ng_model *m, int64_t c, int64_t h, int64_t w) {
    double *first[6] = {0};
    int same = 1;
    for (int round = 0; round < 2; round++)
        for (int64_t n = 1; n <= 6; n++) { /* six shapes, four slots */
            ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){n, c, h, w}, "x");
            for (int64_t i = 0; i < x.numel; i++) ((float *)x.data)[i] = (float)((i * 37) % 11) - 5;
            ng_model_reset_arenas(m);
            ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
            ng_tensor y = ng_model_forward(m, &ctx, &x);
            double *yd = ng_test_to_f64(&y); /* exact from f32, NaN payloads apart */
            if (!round) {
                first[n - 1] = yd;
            } else {
                same &= !memcmp(yd, first[n - 1], sizeof(double) * (size_t)y.numel);
                free(yd);
            }
            ng_tensor_free(&x);
        }
    for (int i = 0; i < 6; i++) free(first[i]);
    return same;
}

ng_layer_run ng_test_layer_run(ng_layer *(*make)(void), ng_dtype dt, uint64_t seed,
                               const ng_tensor *xh, const ng_tensor *dyh, int absolute, int passes,
                               int need_dx, size_t arena_bytes) {
    ng_model *m = ng_model_new(make());
    if (dt == NG_F16 || dt == NG_BF16) /* f32 masters, half compute */
        ng_model_build_mixed(m, NG_CPU, dt, seed, arena_bytes, arena_bytes);
    else
        ng_model_build(m, NG_CPU, dt, seed, arena_bytes, arena_bytes);
    if (absolute)
        for (int i = 0; i < m->nparams; i++) {
            ng_tensor *v = &m->params[i].param->value;
            for (int64_t j = 0; j < v->numel; j++)
                ((double *)v->data)[j] = fabs(((double *)v->data)[j]);
        }
    ng_tensor x = ng_tensor_new(dt, NG_CPU, xh->ndim, xh->shape, "x");
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, dyh->ndim, dyh->shape, "dy");
    ng_cast(&x, xh), ng_cast(&dy, dyh);
    ng_tensor dx = ng_tensor_new(dt, NG_CPU, x.ndim, x.shape, "dx");
    ng_test_poison(&dx);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.retain = 1;
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    for (int p = 0; p < passes; p++)
        m->root->ops->backward(m->root, &ctx, &dy, need_dx ? &dx : NULL);
    ng_layer_run r = {ng_test_to_f64(&y),
                      need_dx ? ng_test_to_f64(&dx) : NULL,
                      ng_test_to_f64(&m->flat_grads),
                      y.numel,
                      need_dx ? dx.numel : 0,
                      m->numel};
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dx);
    ng_model_free(m);
    return r;
}

void ng_layer_run_free(ng_layer_run *p) {
    free(p->y), free(p->dx), free(p->g);
}

ng_tensor ng_test_abs(const ng_tensor *t, const char *name) {
    ng_tensor a = ng_tensor_new(NG_F64, NG_CPU, t->ndim, t->shape, name);
    for (int64_t i = 0; i < t->numel; i++)
        ((double *)a.data)[i] = fabs(((const double *)t->data)[i]);
    return a;
}
