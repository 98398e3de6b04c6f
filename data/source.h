/* Data sources: where examples come from. A source has a size, one example's shape and dtype, a
 * class count, and fills example i (of epoch e, for sources whose examples change with the epoch)
 * into a caller's buffer with its label. The loader (data/loader.h) reads any source, and
 * augmentation (data/augment.h) is a step of its own after the source. */
#ifndef NG_SOURCE_H
#define NG_SOURCE_H

#include <stdint.h>

#include "core/tensor.h"
#include "data/dataset.h"

typedef struct ng_source ng_source;

typedef struct {
    /* Example i in [0, n) of epoch `epoch` into x (ng_source_example_size elements of the
     * source's dtype) and its label, in [0, classes), into *y. A function of (source, epoch, i)
     * only, whatever was filled before: that is what makes loader positions resumable. Called
     * by one thread at a time per source. */
    void (*fill)(ng_source *s, int64_t epoch, int64_t i, void *x, int32_t *y);
    void (*destroy)(ng_source *s); /* frees impl; the struct itself is freed by ng_source_free */
    /* Optional: keep only rank's part of the data (of world ranks), so that each rank reads only
     * its own files; n becomes this rank's count, equal on every rank. NULL: the loader splits
     * the epoch's positions instead (every rank sees the whole source). */
    void (*split)(ng_source *s, int rank, int world);
    /* Optional: examples idx[0..count) of epoch `epoch` into x, an f32 tensor [count, shape...]
     * on any device, and their labels into y (host, count of them): what fill gives example by
     * example, value for value, so a source that renders (the fractals) can fill a device batch
     * directly, and a host batch with up to `workers` threads (rendering, decoding) whose
     * results do not depend on their number. NULL: fill only. */
    void (*fill_batch)(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count, ng_tensor *x,
                       int32_t *y);
    /* Optional, with device_batches: the bytes fill_batch asks of the shared CUDA workspace for
     * a device batch of count examples (the memory plan's figure). NULL: none. */
    size_t (*device_workspace)(const ng_source *s, int64_t count);
} ng_source_ops;

struct ng_source {
    const ng_source_ops *ops;
    char name[64];    /* in every error about the source */
    int64_t n;        /* examples */
    int ndim;         /* dims of one example */
    int64_t shape[4]; /* one example's shape: [C, H, W] images, [C, D, D, D] volumes */
    ng_dtype dtype;   /* of the filled elements (f32 for every source so far) */
    int64_t classes;
    int ordered; /* 1: a stream that orders each epoch itself (tar shards with a shuffle buffer):
                  * the loader asks for positions 0, 1, 2, ... of an epoch and does not permute,
                  * and any other request costs a replay of the epoch from its start */
    /* Bad examples left out when the source was opened (tar shards with skip_bad): examples
     * skipped, shards cut short (unreadable from some member on), and the first reason, naming
     * the shard and the member. 0, 0, "" for every other source. */
    int64_t skipped, cut;
    char first_bad[512];
    /* Threads fill_batch may use for a host batch (data.workers, which the loader sets): the
     * examples of a batch are independent (tar shards take theirs from the stream in order,
     * then decode them in parallel), so the values are the same for any number. 0 or 1: the
     * calling thread only. */
    int workers;
    int device_batches; /* 1: fill_batch also fills batches in device memory (the fractals render
                         * there) */
    int reentrant;      /* 1: fill may run for different examples on several threads at once, so a
                         * source without fill_batch is filled on the workers too */
    void *impl;
};

/* An in-memory data set (MNIST, the synthetic set) as a source; the source owns d from here on
 * and frees it. Example i is row i whatever the epoch. */
ng_source *ng_source_dataset(ng_dataset *d);

/* Synthetic 3D volumes [C, side, side, side], made on the fly from (seed, split, index) with
 * Philox, so no data set is held in memory and any side the host memory allows for one batch
 * works. Example i belongs to class i % classes (balanced); its volume is one elongated Gaussian
 * blob of amplitude 1 whose long axis points along the class's direction (the three axes, then the
 * six face diagonals, then the four body diagonals of the cube: 2 to 13 classes), centred at a
 * random place in the middle half of the cube, the same blob in every channel, plus independent
 * N(0, noise^2) noise per voxel. The class is a local shape, not a place, so a convolutional net
 * with global pooling can learn it. `split` keys the blob places and noise: a train and a test
 * split of one seed share nothing but the rule. */
typedef struct {
    int64_t n, side, channels, classes;
    double noise;
    uint64_t seed, split;
    const char *name;
} ng_synthetic3d_config;
ng_source *ng_synthetic3d_new(const ng_synthetic3d_config *c);
/* The unit direction of class c's long axis (c < 13), for tests and docs. */
void ng_synthetic3d_direction(int64_t c, double d[3]);

/* Splits s across ranks when it can (1: s now holds this rank's part; give the loader world 1),
 * else 0 (give the loader the rank and world). */
int ng_source_split(ng_source *s, int rank, int world);
/* For sources' fill_batch: examples idx[0..count) into x ([count, example]) and y by render, on
 * up to s->workers threads, each with a scratch of scratch_bytes of its own (render's other
 * state must be read-only). */
void ng_source_render_batch(ng_source *s, const int64_t *idx, int64_t count, float *x, int32_t *y,
                            size_t scratch_bytes,
                            void (*render)(const void *self, int64_t i, float *x, int32_t *y,
                                           uint8_t *scratch),
                            const void *self);
/* Checks i in [0, n) and calls the source's fill. */
void ng_source_fill(ng_source *s, int64_t epoch, int64_t i, void *x, int32_t *y);
int64_t ng_source_example_size(const ng_source *s);
/* Examples idx[0..count) of epoch `epoch` into x, an f32 tensor [count, shape...] (on the host,
 * or on the GPU for a source with fill_batch), labels into y: the source's fill_batch, or fill
 * example by example into a host tensor. Checks the indices and the tensor, naming the source. */
void ng_source_fill_batch(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count,
                          ng_tensor *x, int32_t *y);
void ng_source_free(ng_source *s);

#endif
