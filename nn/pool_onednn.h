/* Internal to the pooling layer (nn/pool.c): max and average pooling of f32 CPU tensors through
 * oneDNN (nn/pool_onednn.c). C only; the CUDA twins never see it. */
#ifndef NG_POOL_ONEDNN_H
#define NG_POOL_ONEDNN_H

#include <stddef.h>
#include <stdint.h>

#include "core/memory.h"
#include "core/tensor.h"
#include "nn/plan.h"

/* A pooling window as the layer holds it: nd (2 or 3) spatial dims. Average pooling counts the
 * padding (count_include_pad); max pooling ignores it. */
typedef struct {
    int max, nd;
    int64_t kernel[3], stride[3], padding[3];
} ng_pool_geom;

/* 0 sends f32 CPU pooling to natgrad's own loops (the reference the tests hold oneDNN to);
 * 1 (the default) uses oneDNN. */
void ng_pool_use_onednn(int enabled);
int ng_pool_onednn_enabled(void);

/* Whether oneDNN runs this tensor's pooling: f32 on the CPU, and the switch on. */
int ng_pool_onednn_takes(const ng_tensor *x);

/* The bytes of the workspace max pooling's forward leaves for its backward (the window's argmax
 * in oneDNN's own encoding), for an input of `in`; 0 for average pooling. The layer keeps it in
 * the activation arena from forward to backward. */
size_t ng_pool_onednn_workspace(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in);

/* Forward of x into y, ws (ng_pool_onednn_workspace bytes, NULL for average pooling) filled for
 * backward; scratch comes from `scratch` and is given back. */
void ng_pool_onednn_forward(void **cache, const ng_pool_geom *g, const ng_tensor *x, ng_tensor *y,
                            void *ws, ng_arena *scratch);
/* dx (overwritten) from dy and the forward's workspace. */
void ng_pool_onednn_backward(void **cache, const ng_pool_geom *g, const ng_tensor *x,
                             const ng_tensor *dy, const void *ws, ng_tensor *dx, ng_arena *scratch);
/* The scratch a forward (backward 0) or backward pass takes from the gradient arena, replayed on
 * the plan's counters. */
void ng_pool_onednn_plan(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                         int backward, ng_sim_arena *grads);
void ng_pool_onednn_free(void *cache);

#endif
