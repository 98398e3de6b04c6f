/* `natgrad bench --per-layer` (apps/bench_layers.c). */
#ifndef NG_BENCH_LAYERS_H
#define NG_BENCH_LAYERS_H

#include "nn/models.h"

/* Prints (and with json != NULL writes) the per-layer inference table of `ar` at `batch` on
 * `dev`, fp32 against the half type `half`; returns the command's exit status. */
int ng_bench_per_layer(const ng_arch *ar, const char *arch, int64_t batch, ng_device dev,
                       ng_dtype half, int reps, const char *json);

#endif
