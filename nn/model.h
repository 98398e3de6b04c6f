/* A model: a root layer, its parameters gathered into one flat parameter buffer and one flat
 * gradient buffer with the same offsets, and the arenas its passes run in. */
#ifndef NG_MODEL_H
#define NG_MODEL_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Each parameter starts at a multiple of this many elements in the flat buffers, so every
 * parameter view is aligned for vector loads and tensor-core GEMMs. The gaps stay zero. */
#define NG_PARAM_ALIGN 64

typedef struct {
    ng_param *param;
    int64_t offset; /* in elements, into the flat buffers */
    ng_layer *layer;
} ng_param_entry;

typedef struct {
    ng_buffer *buffer;
    int64_t offset; /* in elements, into flat_buffers */
} ng_buffer_entry;

typedef struct {
    ng_layer *root;
    ng_param_entry *params; /* depth-first order: the order of the flat buffers */
    int nparams;
    int64_t numel;            /* flat buffer length including alignment gaps */
    int64_t count;            /* parameters proper */
    ng_tensor flat_params;    /* [numel] */
    ng_tensor flat_grads;     /* [numel] */
    ng_buffer_entry *buffers; /* non-trainable state (running statistics), depth-first */
    int nbuffers;
    int64_t buffer_numel;
    ng_tensor flat_buffers; /* [buffer_numel] */
    ng_device device;
    ng_dtype dtype;         /* master dtype: flat_params, flat_grads, flat_buffers */
    ng_dtype compute_dtype; /* activations and the weights layers read (ng_param.compute) */
    /* [numel] in compute_dtype: the cast of flat_params when compute_dtype differs from dtype,
     * else flat_params itself (a view, so the f32 and f64 paths are untouched). */
    ng_tensor flat_compute;
    ng_arena acts, grads; /* one buffer: acts from its start, grads down from its end */
    size_t arena_peak;    /* the most acts and grads held at once */
} ng_model;

/* Takes ownership of root. Gathers the parameters; checks that names are unique. */
ng_model *ng_model_new(ng_layer *root);
/* Allocates the flat buffers on `dev` in `dtype` (f32, or f64 for gradient checks), binds the
 * parameter views, initialises every parameter from `seed` (on the host, in double, from the
 * Philox stream of its index, so CPU and GPU models start identical), zeroes the gradients and
 * creates the arenas: one buffer of act_bytes + grad_bytes that activations fill from one end
 * and activation gradients from the other. */
void ng_model_build(ng_model *m, ng_device dev, ng_dtype dtype, uint64_t seed, size_t act_bytes,
                    size_t grad_bytes);
/* ng_model_build with f32 master weights (gradients, buffers, optimizer state all f32) and a
 * compute dtype: f32 (the same as ng_model_build in f32), f16 or bf16. With f16/bf16 the model
 * also holds flat_compute, the weights rounded to the compute dtype, which layers read; forward
 * takes and returns compute-dtype activations (an f32 input is cast on entry) and backward adds
 * parameter gradients into the f32 flat_grads with f32 accumulation. Mixed precision in a few
 * lines: see "Mixed precision" in docs/ARCHITECTURE.md. */
void ng_model_build_mixed(ng_model *m, ng_device dev, ng_dtype compute, uint64_t seed,
                          size_t act_bytes, size_t grad_bytes);
/* Re-rounds flat_params into flat_compute; call after every change of the master weights
 * (optimizer step, weights loaded, perturbation). A no-op when compute_dtype is the master
 * dtype. */
void ng_model_refresh_compute(ng_model *m);
void ng_model_free(ng_model *m);

/* A context for one pass over this model. */
ng_ctx ng_model_ctx(ng_model *m, int training, uint64_t seed, uint64_t step);
/* Releases the arenas for the next step. */
void ng_model_reset_arenas(ng_model *m);
/* A model whose compute dtype differs from its master dtype casts an input in the master dtype
 * into the activation arena first; layers see compute-dtype activations and so does the
 * caller. */
ng_tensor ng_model_forward(ng_model *m, ng_ctx *ctx, const ng_tensor *x);
/* Backward from the loss gradient w.r.t. the model output; parameter gradients accumulate. */
void ng_model_backward(ng_model *m, ng_ctx *ctx, const ng_tensor *dy);
void ng_model_zero_grad(ng_model *m);
/* The entry of a parameter by its full name, or NULL. */
ng_param_entry *ng_model_find(ng_model *m, const char *name);

/* Initialises one tensor (any device, float dtype) per `init` from the stream `stream`. */
void ng_init_tensor(ng_tensor *t, ng_init init, uint64_t seed, uint64_t stream);

#ifdef __cplusplus
}
#endif
#endif
