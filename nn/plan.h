/* Activation memory planned from shapes. Every layer's `plan` op replays the arena traffic of its
 * forward or its backward (what it takes from ctx->acts and ctx->grads, in order, and what it
 * hands back) on counters instead of memory, so a model's arena peaks for any input size and
 * dtype come without allocating or computing anything. The ops sit next to the allocations they
 * mirror; tests/test_plan.c holds them to the measured peaks of real passes. */
#ifndef NG_PLAN_H
#define NG_PLAN_H

#include <stddef.h>

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* An arena's counters, rounding as ng_arena_alloc does (the activation arena rounds each start up
 * to NG_ALIGN, the gradient arena, which grows down from the other end of the same buffer, each
 * end); `joint` is the most both held at once, the buffer's size. */
typedef struct ng_sim_arena {
    size_t used, peak;
    int down;
    struct ng_sim_arena *twin;
    size_t *joint;
} ng_sim_arena;

struct ng_mem_sim {
    ng_sim_arena acts, grads;
    size_t joint;      /* the most acts and grads held at once */
    ng_device device;  /* the CUDA path of some layers takes its scratch elsewhere (cuDNN) */
    ng_dtype master;   /* the parameters' gradients (f32 in mixed precision) */
    int training;      /* dropout allocates only in training */
    int retain;        /* as ng_ctx.retain: backward keeps the forward's activations */
    int recomputing;   /* replaying a checkpoint segment: no capture */
    int inplace;       /* as ng_ctx.inplace, for the child being planned */
    int dy_scratch;    /* as ng_ctx.dy_scratch */
    int forward_only;  /* as ng_ctx.forward_only */
    int output_unused; /* as ng_ctx.output_unused, for the child being planned */
    /* Called by Linear and Conv plans where their forward tells the observer its input (K-FAC's
     * plan sizes its scratch from these); NULL: nobody listens. */
    void (*capture)(void *self, const ng_layer *l, int ndim, const int64_t *in, ng_dtype dt);
    void *capture_self;
    /* The largest request to the CUDA workspace (cuDNN's scratch), which lies outside the arenas;
     * `workspace_bounded` when some request is the cap, no GPU having been there to ask. */
    size_t workspace;
    int workspace_bounded;
    size_t cudnn_workspace; /* the largest of those requests that are cuDNN's */
};

/* The observer's view of a plan, for Linear and Conv plans. */
static inline void ng_sim_capture(ng_mem_sim *s, const ng_layer *l, int ndim, const int64_t *in,
                                  ng_dtype dt) {
    if (s->capture && !s->recomputing) s->capture(s->capture_self, l, ndim, in, dt);
}

/* A request of the shared CUDA workspace (which keeps the largest): counted on CUDA plans only. */
static inline void ng_sim_workspace(ng_mem_sim *s, size_t bytes) {
    if (s->device == NG_CUDA && bytes > s->workspace) s->workspace = bytes;
}

void ng_sim_alloc(ng_sim_arena *a, size_t bytes);
void ng_sim_tensor(ng_sim_arena *a, ng_dtype dt, int ndim, const int64_t *shape);
static inline size_t ng_sim_mark(const ng_sim_arena *a) {
    return a->used;
}
static inline void ng_sim_release(ng_sim_arena *a, size_t mark) {
    a->used = mark;
}

/* Replays l's forward (backward 0) for an input of `in` in dtype dt, or its backward (1) after
 * that forward, with an input gradient wanted when need_dx. A layer without a plan op allocates
 * its output in acts and nothing else. */
void ng_layer_plan(ng_layer *l, ng_mem_sim *s, int backward, int need_dx, int ndim,
                   const int64_t *in, ng_dtype dt);

/* The arenas' high-water marks, and the most both hold at once (their shared buffer), in bytes;
 * and the CUDA workspace a pass asks for. */
typedef struct {
    size_t acts, grads, joint;
    size_t workspace;      /* the CUDA workspace (ng_mem_sim.workspace) */
    int workspace_bounded; /* 1: workspace is an upper bound (cuDNN's cap: planned without a GPU) */
    /* 1: some request in it is an estimate, which may fall short (cuSOLVER's scratch from LAPACK's
     * formulas: planned without a GPU; ng_mem_predict's K-FAC part) */
    int workspace_estimated;
    size_t workspace_cudnn;    /* cuDNN's largest request, within workspace */
    size_t workspace_cusolver; /* the linear algebra's largest (K-FAC's factors), within it */
} ng_arena_plan;

/* A training step as the trainer runs it: the input cast to the compute dtype (when it differs
 * from the master dtype), forward, the loss gradient in the grads arena, backward (twice over one
 * forward for the true Fisher: the first keeps the activations). `in` includes the batch. */
ng_arena_plan ng_plan_train_step(ng_layer *root, int ndim, const int64_t *in, ng_dtype master,
                                 ng_dtype compute, ng_device dev, int true_fisher);
/* The same with a capture hook (see ng_mem_sim.capture); capture may be NULL. */
ng_arena_plan ng_plan_train_step_observed(
    ng_layer *root, int ndim, const int64_t *in, ng_dtype master, ng_dtype compute, ng_device dev,
    int true_fisher, void (*capture)(void *, const ng_layer *, int, const int64_t *, ng_dtype),
    void *capture_self);
/* An evaluation forward (no dropout; activations stay until the arenas are reset). */
ng_arena_plan ng_plan_eval(ng_layer *root, int ndim, const int64_t *in, ng_dtype master,
                           ng_dtype compute, ng_device dev);

#ifdef __cplusplus
}
#endif
#endif
