/* The layer interface: a layer is a struct with a small table of functions (forward, backward,
 * output shape), named parameters that live in the model's flat buffers, and children when it
 * is a container. Forward and backward are written by hand for every layer. */
#ifndef NG_LAYER_H
#define NG_LAYER_H

#include "core/memory.h"
#include "core/rng.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ng_layer ng_layer;
typedef struct ng_mem_sim ng_mem_sim; /* nn/plan.h */

/* How a parameter starts; `a` is the std (normal; trunc_normal redraws values outside the
 * absolute bounds [-2, 2], as timm's trunc_normal_ does),
 * the bound (uniform: [-a, a]) or the value (constant). Kaiming variants use the fan-in the
 * layer records in `fan_in`. */
typedef enum {
    NG_INIT_CONSTANT,
    NG_INIT_NORMAL,
    NG_INIT_TRUNC_NORMAL,
    NG_INIT_UNIFORM,
    NG_INIT_KAIMING_NORMAL,  /* std = sqrt(2 / fan_in), for convolutions followed by ReLU */
    NG_INIT_KAIMING_UNIFORM, /* bound = 1/sqrt(fan_in): PyTorch's Linear/Conv default */
} ng_init_kind;

typedef struct {
    ng_init_kind kind;
    double a;
    int64_t fan_in;
} ng_init;

/* A named parameter. `value` and `grad` are views into the model's flat parameter and gradient
 * buffers once the model is built (ng_model_build); before that they only carry the shape. */
typedef struct {
    char name[96];   /* full dotted name, timm style: "blocks.0.attn.qkv.weight" */
    ng_tensor value; /* master weights: f32, or f64 for gradient checks */
    /* What layers compute with: value itself when the model's compute dtype is its master dtype,
     * else a view of the same shape into the model's f16/bf16 copy (ng_model_refresh_compute).
     * Norm layers keep reading value: their statistics and parameters stay f32. */
    ng_tensor compute;
    ng_tensor grad; /* same shape, master dtype; backward accumulates (+=) into it */
    ng_init init;
    int decay; /* 1 when weight decay applies (weights); 0 for biases, norms, embeddings */
} ng_param;

/* Non-trainable state saved with the weights (batch-norm running statistics). After
 * ng_model_build, `value` is a view into the model's flat buffer tensor, on the model's device in
 * the model's dtype, filled with `init`. */
typedef struct {
    char name[96];
    ng_tensor value;
    double init;
} ng_buffer;

/* K-FAC and other observers see Linear and Conv layers through this: the layer's input
 * activations during forward and the gradient w.r.t. its output during backward, at the moment
 * the layer has them. Not called during the replay of a checkpoint segment, so nothing is
 * counted twice, and not called at all when no observer is set. */
typedef struct {
    void *self;
    void (*input)(void *self, ng_layer *l, const ng_tensor *x);
    void (*output_grad)(void *self, ng_layer *l, const ng_tensor *dy);
} ng_observer;

/* Gradient-ready hook: told, during backward, the moment a layer has finished adding into its own
 * parameters' gradients for this pass (its children report for themselves, before it). From then
 * on the pass no longer writes those gradients, so data-parallel training can start reducing
 * them while backward goes on. Not called for layers without parameters. */
typedef struct {
    void *self;
    void (*ready)(void *self, const ng_layer *l);
} ng_grad_hook;

/* What a forward or backward pass runs with. */
typedef struct {
    ng_device device;
    ng_arena *acts;  /* forward outputs and everything backward needs */
    ng_arena *grads; /* activation gradients and backward scratch, used as a stack */
    int training;    /* dropout active, batch norm uses batch statistics */
    int recomputing; /* replaying a checkpoint segment: no capture, no running-stat updates */
    /* 0: backward hands each layer's forward activations back to ctx->acts once the layer's
     * backward is done (so a checkpoint replay reuses them, as PyTorch frees a graph); 1 keeps
     * them for another backward over the same forward (PyTorch's retain_graph: the true
     * Fisher's sampled-label pass). */
    int retain;
    /* Set by a sequence around one child's forward when nothing but that child reads the child's
     * input (the previous child's fresh output, which its own backward does not read): the
     * child may write its output over it (ReLU does). Containers clear it for their children. */
    int inplace;
    /* Set by a sequence around one child's backward when the child may write over its dy once it
     * no longer reads it (the sequence's own buffer, or the sequence's caller gave dy up).
     * Containers that read dy after a child's backward (residual) clear it. */
    int dy_scratch;
    /* Set by a sequence for a forward that no backward will follow: a checkpoint segment's
     * first forward (replayed before its backward) and the recomputation chain of
     * model.checkpoint: recompute (which only rebuilds a block's input). Layers need not keep
     * what their backward reads, and where ctx->inplace allows, batch norm writes over its
     * input. Containers pass it on to their children. */
    int forward_only;
    /* Set by a sequence around one child's forward when nothing after the child reads its
     * output (the last child of a replayed checkpoint segment: the layers after it have run
     * their backward). The child may then skip computing it (batch norm does; its backward
     * recomputes what it needs) and return a tensor of the right shape without data.
     * Containers clear it for their children, passing it on only where it still holds. */
    int output_unused;
    ng_rng_key rng; /* seed and step; layers add their own stream id */
    ng_observer *observer;
    ng_grad_hook *grad_ready; /* NULL: nobody waits for gradients */
} ng_ctx;

typedef struct {
    const char *kind;
    /* 1 when forward's output is a fresh arena tensor that this layer's backward never reads:
     * the next layer of a sequence may then overwrite it (ctx->inplace). */
    int out_unread;
    /* 1 when backward can write dx over dy (element by element, after anything it reduces over
     * dy): a sequence may then give a child dy's memory for dx when ctx->dy_scratch allows. */
    int dx_over_dy;
    /* Output shape for an input shape; dim 0 is the batch. Fails naming the layer when the
     * input shape does not fit. */
    void (*out_shape)(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim, int64_t *out);
    /* Computes y = f(x) into a tensor it allocates from ctx->acts (or a view of x), saving
     * what backward needs. */
    ng_tensor (*forward)(ng_layer *l, ng_ctx *ctx, const ng_tensor *x);
    /* Given dy for the last forward's output, adds parameter gradients into the params' grad
     * views and writes the input gradient into dx (caller-allocated, x's shape) unless dx is
     * NULL. Scratch comes from ctx->grads and is released before returning. */
    void (*backward)(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx);
    /* Replays forward's (backward 0) or backward's arena traffic on the counters of nn/plan.h,
     * for an input of shape `in` in dtype dt; dx is wanted when need_dx. NULL: forward takes its
     * output from ctx->acts and nothing else. */
    void (*plan)(ng_layer *l, ng_mem_sim *s, int backward, int need_dx, int ndim, const int64_t *in,
                 ng_dtype dt);
    /* Floating-point operations of one inference forward on an input of shape `in`, counted as
     * fvcore and most papers count them: 2 per multiply-add of a GEMM or convolution (bias
     * additions not counted), 1 per output element of anything else; containers sum their
     * children. NULL: 1 per output element (element-wise layers, norms, pooling). */
    int64_t (*flops)(const ng_layer *l, int ndim, const int64_t *in);
    /* Frees what the layer allocated itself (not its children: ng_layer_free walks them). */
    void (*destroy)(ng_layer *l);
} ng_layer_ops;

#define NG_LAYER_MAX_PARAMS 4
#define NG_LAYER_MAX_BUFFERS 2

struct ng_layer {
    const ng_layer_ops *ops;
    char name[80]; /* dotted path, e.g. "blocks.3.mlp.fc1" */
    ng_param params[NG_LAYER_MAX_PARAMS];
    int nparams;
    ng_buffer buffers[NG_LAYER_MAX_BUFFERS];
    int nbuffers;
    ng_layer **children;
    int nchildren;
    int capture; /* 1 for layers that offer the observer interface (Linear, Conv) */
    int index;   /* position in the model's depth-first order, for RNG streams */
    void *impl;  /* the layer kind's own state */
};

/* Allocates a layer with a name and zeroed impl of `impl_bytes`. */
ng_layer *ng_layer_new(const ng_layer_ops *ops, const char *name, size_t impl_bytes);
/* Declares a parameter: its name is the layer's name + "." + short_name. */
ng_param *ng_layer_add_param(ng_layer *l, const char *short_name, int ndim, const int64_t *shape,
                             ng_init init, int decay);
/* Declares a buffer named like a parameter, filled with `init` when the model is built. */
ng_buffer *ng_layer_add_buffer(ng_layer *l, const char *short_name, int ndim, const int64_t *shape,
                               double init);
void ng_layer_add_child(ng_layer *l, ng_layer *child);
/* Frees the layer and all its children. */
void ng_layer_free(ng_layer *l);

/* Runs l's backward and then tells ctx->grad_ready that l's parameters are final. Containers
 * and layers with sub-layers run their children's backward through this, never through the ops
 * directly, so every parameter is reported exactly once per pass. */
void ng_layer_backward(ng_layer *l, ng_ctx *ctx, const ng_tensor *dy, ng_tensor *dx);

/* The layer's inference FLOPs through its ops (see ng_layer_ops.flops). */
int64_t ng_layer_flops(const ng_layer *l, int ndim, const int64_t *in);

/* Output shape through the ops, with the input checked against NG_MAX_DIMS. */
void ng_layer_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                        int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
