/* Containers: a sequence of layers, a residual block y = x + f(x), and a checkpoint segment that
 * keeps only its input and replays its interior during backward. */
#ifndef NG_CONTAINERS_H
#define NG_CONTAINERS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Children are added with ng_layer_add_child and run in order. */
ng_layer *ng_sequence(const char *name);
/* y = x + f(x); f's output shape must equal its input shape. Takes ownership of f. */
ng_layer *ng_residual(const char *name, ng_layer *f);
/* Marks children [first, first + count) of a sequence as one activation-checkpoint segment:
 * forward keeps only the segment's input and output; backward replays the interior (same RNG
 * keys, so dropout masks repeat; observers and running statistics skip the replay) and then
 * runs its backward. Segments may not overlap. The layer tree is unchanged, so checkpointing
 * is a run setting and not a different model. */
void ng_sequence_checkpoint(ng_layer *seq, int first, int count);
/* Children [first, end), a run of segments, keep no output: forward keeps the run's input and one
 * output at a time, backward recomputes each segment's input from the run's input (forward work
 * quadratic in the run's length; memory independent of it). */
void ng_sequence_recompute(ng_layer *seq, int first, int end);
/* The segments of a sequence as [firsts[k], ends[k]); returns how many (fills up to cap). */
int ng_sequence_segments(const ng_layer *seq, int *firsts, int *ends, int cap);
/* A sequence named `name` holding `inner`, as one segment when `enabled`. Takes ownership. */
ng_layer *ng_checkpoint(const char *name, ng_layer *inner, int enabled);

/* model.checkpoint: which of a model's blocks (ViT blocks, 3D-CNN layers, VGG stages) run as
 * segments. Text forms: "none" (also "false"), "every K" (segments of K consecutive blocks; "all"
 * and "true" are "every 1"), a list of block indices "0,3,7" (also "[0, 3, 7]" or
 * "blocks 0,3,7"), each its own segment, or "recompute": every block a segment and no block's
 * output kept (ng_sequence_recompute). */
#define NG_CKPT_MAX_BLOCKS 64
typedef struct {
    int every;       /* > 0: segments of `every` blocks; 0: the list */
    uint64_t blocks; /* bit b: block b is a segment by itself */
    int recompute;   /* with every = 1: the blocks' outputs are recomputed, not kept */
} ng_ckpt_spec;

/* Returns 1 and fills out, or 0 with the reason in why. */
int ng_ckpt_spec_parse(const char *text, ng_ckpt_spec *out, char *why, size_t cap);
/* The canonical text form ("none", "every 2", "blocks 0,3"). */
void ng_ckpt_spec_format(const ng_ckpt_spec *s, char *out, size_t cap);
static inline int ng_ckpt_spec_active(const ng_ckpt_spec *s) {
    return s->every > 0 || s->blocks != 0;
}
/* Applies the spec to the nblocks children of seq starting at child `first`; a listed block
 * beyond the model fails naming model.checkpoint. */
void ng_checkpoint_blocks(ng_layer *seq, int first, int nblocks, const ng_ckpt_spec *s);

/* Shared by containers: shape after running the children in order. */
/* The children's FLOPs summed along the same chain. */
int64_t ng_children_flops(const ng_layer *l, int ndim, const int64_t *in);
void ng_children_out_shape(const ng_layer *l, int ndim, const int64_t *in, int *out_ndim,
                           int64_t *out);

#ifdef __cplusplus
}
#endif
#endif
