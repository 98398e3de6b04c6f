/* The arena counters, the default plan of a layer, and whole passes of a model. */
#include "nn/plan.h"

#include "core/dtype.h"
#include "core/error.h"

void ng_sim_alloc(ng_sim_arena *a, size_t bytes) {
    if (a->down)
        a->used = (a->used + bytes + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    else
        a->used = (a->used + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN + bytes;
    if (a->used > a->peak) a->peak = a->used;
    size_t both = a->used + (a->twin ? a->twin->used : 0);
    if (a->joint && both > *a->joint) *a->joint = both;
}

void ng_sim_tensor(ng_sim_arena *a, ng_dtype dt, int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    ng_sim_alloc(a, n * ng_dtype_size(dt));
}

void ng_layer_plan(ng_layer *l, ng_mem_sim *s, int backward, int need_dx, int ndim,
                   const int64_t *in, ng_dtype dt) {
    if (l->ops->plan) {
        l->ops->plan(l, s, backward, need_dx, ndim, in, dt);
        return;
    }
    if (backward) return;
    int on;
    int64_t out[NG_MAX_DIMS];
    ng_layer_out_shape(l, ndim, in, &on, out);
    ng_sim_tensor(&s->acts, dt, on, out);
}

static void start(ng_mem_sim *s, ng_device dev, ng_dtype master, int training) {
    *s = (ng_mem_sim){.device = dev, .master = master, .training = training};
    s->grads.down = 1;
    s->acts.twin = &s->grads, s->grads.twin = &s->acts;
    s->acts.joint = s->grads.joint = &s->joint;
}

/* ng_model_forward: a mixed model casts its master-dtype input into the activation arena. */
static ng_dtype cast_input(ng_mem_sim *s, int ndim, const int64_t *in, ng_dtype master,
                           ng_dtype compute) {
    if (compute != master) ng_sim_tensor(&s->acts, compute, ndim, in);
    return compute;
}

static ng_arena_plan arena_plan(const ng_mem_sim *s) {
    return (ng_arena_plan){.acts = s->acts.peak,
                           .grads = s->grads.peak,
                           .joint = s->joint,
                           .workspace = s->workspace,
                           .workspace_bounded = s->workspace_bounded,
                           .workspace_cudnn = s->cudnn_workspace};
}

ng_arena_plan ng_plan_train_step(ng_layer *root, int ndim, const int64_t *in, ng_dtype master,
                                 ng_dtype compute, ng_device dev, int true_fisher) {
    return ng_plan_train_step_observed(root, ndim, in, master, compute, dev, true_fisher, NULL,
                                       NULL);
}

ng_arena_plan ng_plan_train_step_observed(
    ng_layer *root, int ndim, const int64_t *in, ng_dtype master, ng_dtype compute, ng_device dev,
    int true_fisher, void (*capture)(void *, const ng_layer *, int, const int64_t *, ng_dtype),
    void *capture_self) {
    ng_mem_sim s;
    start(&s, dev, master, 1);
    s.capture = capture, s.capture_self = capture_self;
    ng_dtype dt = cast_input(&s, ndim, in, master, compute);
    ng_layer_plan(root, &s, 0, 0, ndim, in, dt);
    int on;
    int64_t out[NG_MAX_DIMS];
    ng_layer_out_shape(root, ndim, in, &on, out);
    ng_sim_tensor(&s.grads, dt, on, out); /* dlogits */
    if (true_fisher) {
        ng_sim_tensor(&s.grads, NG_I32, 1, out); /* the sampled labels */
        s.retain = 1;
        ng_layer_plan(root, &s, 1, 0, ndim, in, dt);
        s.retain = 0;
    }
    ng_layer_plan(root, &s, 1, 0, ndim, in, dt);
    return arena_plan(&s);
}

ng_arena_plan ng_plan_eval(ng_layer *root, int ndim, const int64_t *in, ng_dtype master,
                           ng_dtype compute, ng_device dev) {
    ng_mem_sim s;
    start(&s, dev, master, 0);
    ng_dtype dt = cast_input(&s, ndim, in, master, compute);
    ng_layer_plan(root, &s, 0, 0, ndim, in, dt);
    return arena_plan(&s);
}
