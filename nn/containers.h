/* Containers: a sequence of layers, a residual block y = x + f(x), and a checkpoint segment that
 * keeps only its input and replays its interior during backward. */
#ifndef NG_CONTAINERS_H
#define NG_CONTAINERS_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Children are added with ng_layer_add_child and run in order. */
ng_layer *ng_sequence(const char *name);
/* y = x + f(x); f's output shape must equal its input shape. Takes ownership of f. */
ng_layer *ng_residual(const char *name, ng_layer *f);
/* Runs `inner` with activation checkpointing: forward keeps only the segment's input and
 * output; backward replays inner's forward (same RNG key, so dropout masks repeat) and then
 * runs inner's backward. Takes ownership of inner. With `enabled` 0 it is a plain wrapper,
 * so checkpointing is a run setting and not a different model. */
ng_layer *ng_checkpoint(const char *name, ng_layer *inner, int enabled);

/* Shared by containers: shape after running the children in order. */
void ng_children_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
