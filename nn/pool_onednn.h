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

/* 0 sends bf16 CPU pooling to oneDNN's f32 kernels on widened copies (pool.c's half_forward), the
 * path f16 always takes; 1 (the default) runs oneDNN's bf16 kernels on the bf16 tensors where the
 * CPU has AVX512_BF16. */
void ng_pool_use_native_bf16(int enabled);
/* Whether bf16 CPU pooling runs natively here: both switches on and the CPU's ISA. */
int ng_pool_bf16_native(void);
/* How many bf16 pooling passes (forward, backward) ran natively so far (pool.c), so a test can
 * tell which path ran. */
long ng_pool_native_passes(void);

/* Whether oneDNN runs this tensor's pooling: f32 on the CPU, and the switch on. */
int ng_pool_onednn_takes(const ng_tensor *x);

/* The bytes of the workspace max pooling's forward leaves for its backward (the window's argmax
 * in oneDNN's own encoding), for an input of `in` in dt (f32 or bf16, as x below); 0 for average
 * pooling. The layer keeps it in the activation arena from forward to backward. */
size_t ng_pool_onednn_workspace(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                                ng_dtype dt);

/* Whether oneDNN's choice for dt is an optimised kernel, not its reference loop: the inference
 * forward (infer 1), or the training forward and the backward (0). */
int ng_pool_onednn_native(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                          ng_dtype dt, int infer);

/* Forward of x (f32 or bf16; a cache holds one dtype) into y, ws (ng_pool_onednn_workspace bytes,
 * NULL for average pooling) filled for backward; max pooling with ws NULL runs the inference
 * forward, which leaves none. Scratch comes from `scratch` and is given back. */
void ng_pool_onednn_forward(void **cache, const ng_pool_geom *g, const ng_tensor *x, ng_tensor *y,
                            void *ws, ng_arena *scratch);
/* dx (overwritten) from dy and the forward's workspace. */
void ng_pool_onednn_backward(void **cache, const ng_pool_geom *g, const ng_tensor *x,
                             const ng_tensor *dy, const void *ws, ng_tensor *dx, ng_arena *scratch);
/* The scratch a pass takes from the gradient arena, replayed on the plan's counters. */
enum { NG_POOL_FORWARD, NG_POOL_BACKWARD, NG_POOL_INFER };
void ng_pool_onednn_plan(void **cache, const ng_pool_geom *g, int ndim, const int64_t *in,
                         ng_dtype dt, int pass, ng_sim_arena *grads);
void ng_pool_onednn_free(void *cache);

#endif
