/* Models built from a small description: MLP, LeNet-style CNN, VGG- and NIN-style CNNs, a
 * 3D-CNN for voxel volumes, and ViT (nn/transformer.h). Configs and the trainer fill an
 * ng_arch; parameter names follow PyTorch/timm conventions. */
#ifndef NG_MODELS_H
#define NG_MODELS_H

#include "nn/containers.h"
#include "nn/layer.h"

typedef struct {
    char
        arch[48]; /* mlp, lenet, vgg, nin, cnn3d, vit, or a ViT preset (vit_tiny_patch16_224 ...) */
    int64_t in_ch; /* input channels */
    int64_t img;   /* input side: H = W (and D for cnn3d) */
    int64_t classes;
    int64_t width; /* mlp: hidden units; vgg, nin, cnn3d: channels of the first stage */
    int depth; /* mlp: hidden layers; vgg: stages; nin: blocks; cnn3d: conv layers; vit: blocks */
    int batchnorm;           /* vgg and cnn3d: BatchNorm after each conv */
    double dropout;          /* mlp: after each hidden layer; vit: in the MLP blocks */
    ng_ckpt_spec checkpoint; /* blocks run as checkpoint segments (vgg stages, cnn3d layers,
                              * vit blocks) */
    int64_t patch, heads;    /* vit */
    double mlp_ratio;        /* vit */
} ng_arch;

/* Defaults for an architecture name (fills everything but what the caller sets after); 0 when
 * the name is unknown. */
int ng_arch_defaults(const char *arch, ng_arch *a);
/* The blocks model.checkpoint counts: vgg stages, cnn3d conv layers, vit blocks; 0 for the rest. */
int ng_arch_blocks(const ng_arch *a);
/* Fails naming model.checkpoint when the spec lists a block the model lacks, or asks for
 * segments of a model without blocks. */
void ng_arch_check_checkpoint(const ng_arch *a);
/* The layer tree; a bad combination (image too small for the stages, ...) fails naming it. */
ng_layer *ng_arch_build(const ng_arch *a);
/* The input shape of one example: [C, H, W] or [C, D, H, W] for cnn3d. Returns ndim. */
int ng_arch_input_shape(const ng_arch *a, int64_t *shape);
/* Names accepted by ng_arch_defaults, for error messages. */
const char *ng_arch_names(void);

#endif
