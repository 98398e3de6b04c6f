/* The gradient-ready hook: during backward every parameter of every model is reported exactly
 * once, and at the moment it is reported its gradient already holds its final value for the pass
 * (data-parallel training starts reducing it then). Checkpointed segments included. */
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/model.h"
#include "nn/models.h"
#include "testing.h"

typedef struct {
    ng_model *m;
    int *seen;     /* reports per parameter entry */
    double **snap; /* each parameter's gradient at its report */
    int order_errors;
} watch;

static void on_ready(void *self, const ng_layer *l) {
    watch *w = self;
    for (int p = 0; p < l->nparams; p++)
        for (int i = 0; i < w->m->nparams; i++)
            if (w->m->params[i].param == &l->params[p]) {
                w->seen[i]++;
                free(w->snap[i]);
                w->snap[i] = ng_test_to_f64(&l->params[p].grad);
            }
}

static void check_arch(const char *what, const ng_arch *a, int batch) {
    ng_model *m = ng_model_new(ng_arch_build(a));
    ng_model_build(m, NG_CPU, NG_F32, ng_test_seed(), 64 << 20, 32 << 20);
    int64_t shape[NG_MAX_DIMS] = {batch};
    int nd = ng_arch_input_shape(a, shape + 1) + 1;
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, nd, shape, "input");
    ng_test_fill_uniform(&x, -1, 1);
    watch w = {m, calloc((size_t)m->nparams, sizeof(int)),
               calloc((size_t)m->nparams, sizeof(double *)), 0};
    ng_grad_hook hook = {&w, on_ready};
    ng_model_zero_grad(m);
    /* Two passes: gradients accumulate, and each pass reports every parameter once more. */
    for (int pass = 0; pass < 2; pass++) {
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 7, (uint64_t)pass);
        ctx.grad_ready = &hook;
        ng_tensor y = ng_model_forward(m, &ctx, &x);
        ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dy");
        ng_test_fill_uniform(&dy, -1, 1);
        ng_model_backward(m, &ctx, &dy);
        int once = 1, final = 1;
        for (int i = 0; i < m->nparams; i++) {
            once &= w.seen[i] == pass + 1;
            double *g = ng_test_to_f64(&m->params[i].param->grad);
            int64_t n = m->params[i].param->grad.numel;
            if (w.snap[i] && memcmp(g, w.snap[i], (size_t)n * sizeof(double))) {
                if (final)
                    ng_test_fail("%s pass %d: %s changed after it was reported ready", what, pass,
                                 m->params[i].param->name);
                final = 0;
            }
            free(g);
        }
        NG_TEST(once, "%s pass %d: every one of %d parameters reported exactly once", what, pass,
                m->nparams);
        if (final) ng_test_pass();
    }
    for (int i = 0; i < m->nparams; i++) free(w.snap[i]);
    free(w.snap), free(w.seen);
    ng_tensor_free(&x);
    ng_model_free(m);
}

int main(void) {
    ng_arch a;
    ng_arch_defaults("mlp", &a);
    a.img = 4, a.width = 6, a.classes = 3;
    check_arch("mlp", &a, 3);
    ng_arch_defaults("lenet", &a);
    a.img = 12, a.classes = 3;
    check_arch("lenet", &a, 2);
    ng_arch_defaults("vgg", &a);
    a.img = 8, a.width = 3, a.depth = 2, a.classes = 3, a.checkpoint.every = 1;
    check_arch("vgg checkpointed", &a, 3);
    ng_arch_defaults("cnn3d", &a);
    a.img = 5, a.width = 3, a.depth = 2, a.checkpoint.every = 1;
    check_arch("cnn3d checkpointed", &a, 2);
    for (int ck = 0; ck < 2; ck++) {
        ng_arch_defaults("vit", &a);
        a.img = 8, a.patch = 4, a.width = 8, a.depth = 2, a.heads = 2, a.classes = 3;
        a.checkpoint.every = ck;
        check_arch(ck ? "vit checkpointed" : "vit", &a, 2);
    }
    return ng_test_finish("test_grad_hook");
}
