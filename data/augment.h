/* Augmentation: a step between a source and a batch, chosen in the config (data.augment.*) and
 * independent of the source. Each example's transform comes from one Philox block keyed by
 * (seed, epoch, example index), so it is the same on every rank, after any resume, and whatever
 * the batch or prefetch. */
#ifndef NG_AUGMENT_H
#define NG_AUGMENT_H

#include <stdint.h>

typedef struct {
    int crop_pad; /* random crop after zero padding by this many voxels in every spatial dim */
    int hflip;    /* mirror the last (width) axis with p = 0.5 */
} ng_augment;

/* 1 when the step changes anything. */
int ng_augment_active(const ng_augment *a);
/* Usage error (naming data.augment.*) unless a can apply to examples of this shape: crops and
 * flips need [C, H, W] images or [C, D, H, W] volumes, and crop_pad below every spatial side. */
void ng_augment_check(const ng_augment *a, int ndim, const int64_t *shape, const char *data_name);
/* dst = example idx of epoch `epoch` (src, of the checked shape) shifted by (dz,) dy, dx in
 * [-crop_pad, crop_pad] with zero fill, then mirrored or not. src and dst do not overlap. */
void ng_augment_example(const ng_augment *a, uint64_t seed, int64_t epoch, int64_t idx, int ndim,
                        const int64_t *shape, const float *src, float *dst);

#endif
