/* Model weights as safetensors under timm's parameter names and PyTorch's layouts, so a
 * natgrad model loads into PyTorch/timm (load_state_dict) and back. */
#ifndef NG_WEIGHTS_H
#define NG_WEIGHTS_H

#include "nn/model.h"

/* Writes every parameter and buffer (batch-norm running statistics) in the model's dtype (f32
 * masters for a mixed-precision model), plus optional metadata pairs. PyTorch's BatchNorm also
 * keeps num_batches_tracked, which natgrad does not: load natgrad files into PyTorch with
 * load_state_dict(..., strict=False) when the model has batch norm. */
void ng_weights_save(ng_model *m, const char *path, const char **meta);
/* Loads every parameter and buffer by name; stored f16/bf16/f32/f64 values are converted to the
 * model's dtype (the f32 masters of a mixed-precision model, whose compute copy is then refreshed).
 * A missing tensor, an unexpected one, or a shape mismatch is an error naming it. */
void ng_weights_load(ng_model *m, const char *path);
/* Fine-tuning's load: as ng_weights_load, except that the tensors of the `nskip` modules named in
 * `skip` (a name or a dotted prefix: "head" is head.weight and head.bias) are left out on both
 * sides (they keep the model's fresh initialisation, e.g. a classifier head of another class count:
 * prefix "head"). Every other tensor must match in name and shape. Returns how many tensors were
 * loaded. */
int ng_weights_load_except(ng_model *m, const char *path, const char *const *skip, int nskip);
/* Whether parameter `name` is `module` or inside it: "head" holds head.weight and head.bias, not
 * head_drop.weight. */
int ng_weights_in_module(const char *name, const char *module);
/* The checks of ng_weights_load_except without loading: the model need not be built (names and
 * shapes are known from ng_model_new), so a config can be checked before a run starts. */
void ng_weights_check_except(ng_model *m, const char *path, const char *const *skip, int nskip);

#endif
