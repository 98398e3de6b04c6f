/* Batches from a data source: seeded per-epoch shuffling, per-rank sharding, augmentation, and a
 * thread that prepares batches ahead. Every batch is a function of (seed, epoch, index) only, so
 * a loader moved with ng_loader_seek continues bit-identically, whatever was prefetched. A batch
 * is the list of its examples' indices, filled in one call of the source's fill_batch when it has
 * one (with `workers` threads; the only way to a device batch) and then augmented example by
 * example on those threads, or else filled and augmented example by example. */
#ifndef NG_LOADER_H
#define NG_LOADER_H

#include "data/augment.h"
#include "data/source.h"

typedef struct {
    ng_source *source; /* read by the loader's thread while the loader lives */
    int64_t batch;     /* per-rank batch size */
    int shuffle;       /* permute each epoch (ordered sources shuffle themselves) */
    int drop_last;     /* drop a final partial batch */
    uint64_t seed;
    int rank, world;    /* rank r of w takes every w-th index of the epoch's order, padded by
                         * wrapping so every rank gets the same count (as DistributedSampler) */
    ng_augment augment; /* applied to each example after the source fills it */
    int prefetch;       /* batches prepared ahead by a thread; 0 = none, built in ng_loader_next */
    int workers; /* threads that fill and augment a batch's examples (data.workers; 0 or 1: the
                  * loader's own thread), through the source's fill_batch; the batches are the
                  * same for any number */
    /* Where batches live. NG_CUDA: the source renders each batch straight into device memory
     * (its fill_batch: FractalDB 2D and 3D), no augmentation, and on the caller's thread inside
     * ng_loader_next (prefetch is not used: natgrad's one CUDA stream and its workspace belong to
     * that thread). The same examples in the same order as on the host, so positions and resume
     * are unchanged. NG_CPU (0): host batches. */
    ng_device device;
} ng_loader_config;

typedef struct {
    float *x;             /* [b, shape...], valid until the next ng_loader_next or ng_loader_seek */
    int32_t *y;           /* [b] */
    int64_t b;            /* examples in this batch */
    int64_t epoch, index; /* which batch of which epoch */
    ng_device device;     /* where x lives (the config's device); y is always on the host */
} ng_batch;

typedef struct ng_loader ng_loader;

ng_loader *ng_loader_new(const ng_loader_config *c);
/* The next batch; after an epoch's last batch comes the next epoch's first. */
ng_batch ng_loader_next(ng_loader *l);
int64_t ng_loader_batches_per_epoch(const ng_loader *l);
/* Continue at batch `index` of epoch `epoch` (for resume): the batches from there are the ones an
 * uninterrupted loader hands out, bit for bit. An index outside [0, batches per epoch) is an
 * error. Stops and restarts the thread; batches handed out before are no longer valid. */
void ng_loader_seek(ng_loader *l, int64_t epoch, int64_t index);
void ng_loader_free(ng_loader *l);

#endif
