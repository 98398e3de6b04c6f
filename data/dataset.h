/* Data sets held in host memory: MNIST from IDX files and a learnable synthetic set. */
#ifndef NG_DATASET_H
#define NG_DATASET_H

#include <stdint.h>

typedef struct {
    char name[64];
    int64_t n;        /* examples */
    int ndim;         /* dims of one example */
    int64_t shape[4]; /* one example's shape, e.g. {1, 28, 28} */
    int64_t classes;
    float *x;   /* n * prod(shape) floats, normalised */
    int32_t *y; /* n labels in [0, classes) */
} ng_dataset;

/* MNIST from IDX files, gzipped or raw (zlib reads both). Checks magic numbers, dimensions,
 * that the counts agree, labels < 10 and file lengths; a problem is a usage error naming the
 * file. Pixels are scaled to [0,1] and normalised with MNIST's mean 0.1307 and std 0.3081. */
ng_dataset *ng_mnist_load(const char *images_path, const char *labels_path, const char *name);
/* MNIST split "train" (train-*) or "test" (t10k-*) from a folder, .gz or raw (.gz preferred);
 * NULL when neither file of the split is there, so callers can fall back to synthetic data. One
 * file without the other, malformed files and other split names are errors. */
ng_dataset *ng_mnist_find(const char *dir, const char *split);
/* A learnable synthetic classification set: class c has a fixed mean pattern m_c ~ N(0, 1)
 * drawn from (seed, stream 0); each example is m_label + noise * N(0, 1). `split` selects the
 * noise and label streams, so a train and a test split of one seed share their class means and
 * nothing else. Same arguments, same bytes. */
ng_dataset *ng_synthetic(int64_t n, int ndim, const int64_t *shape, int64_t classes, double noise,
                         uint64_t seed, uint64_t split, const char *name);
void ng_dataset_free(ng_dataset *d);
int64_t ng_dataset_example_size(const ng_dataset *d);

#endif
