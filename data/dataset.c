/* The synthetic data set and what all data sets share. */
#include "data/dataset.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"

int64_t ng_dataset_example_size(const ng_dataset *d) {
    int64_t s = 1;
    for (int i = 0; i < d->ndim; i++) s *= d->shape[i];
    return s;
}

void ng_dataset_free(ng_dataset *d) {
    if (!d) return;
    free(d->x);
    free(d->y);
    free(d);
}

/* Host normal draws through core's fill, so the numbers follow natgrad's one RNG. */
static void normals(float *out, int64_t n, ng_rng_key k, double std) {
    ng_tensor t = ng_tensor_wrap(out, NG_F32, NG_CPU, 1, (int64_t[]){n}, "synthetic");
    ng_rng_normal(&t, k, 0.0, std);
}

ng_dataset *ng_synthetic(int64_t n, int ndim, const int64_t *shape, int64_t classes, double noise,
                         uint64_t seed, uint64_t split, const char *name) {
    if (!name) name = "synthetic";
    NG_CHECK(n > 0 && classes > 1 && classes <= INT32_MAX && ndim >= 1 && ndim <= 4 && noise >= 0,
             "synthetic data %s: n %lld, classes %lld, %d dims, noise %g: need n > 0, classes > 1, "
             "1-4 dims, noise >= 0",
             name, (long long)n, (long long)classes, ndim, noise);
    NG_CHECK(shape, "synthetic data %s: no example shape", name);
    int64_t e = 1;
    for (int i = 0; i < ndim; i++) {
        NG_CHECK(shape[i] > 0 && shape[i] <= (INT64_C(1) << 40) / e,
                 "synthetic data %s: dimension %d of the example shape is %lld, need 1 or more "
                 "(and a size below 2^40)",
                 name, i, (long long)shape[i]);
        e *= shape[i];
    }
    NG_CHECK(n <= (INT64_C(1) << 40) / e && classes <= (INT64_C(1) << 40) / e,
             "synthetic data %s: %lld examples of %lld floats is too large", name, (long long)n,
             (long long)e);
    ng_dataset *d = calloc(1, sizeof *d);
    float *means = malloc(sizeof(float) * (size_t)(classes * e));
    if (d) d->x = malloc(sizeof(float) * (size_t)(n * e));
    if (d) d->y = malloc(sizeof(int32_t) * (size_t)n);
    if (!d || !d->x || !d->y || !means) {
        ng_dataset_free(d);
        free(means);
        ng_fail("synthetic data %s: out of host memory for %lld examples", name, (long long)n);
    }
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = n, d->ndim = ndim, d->classes = classes;
    memcpy(d->shape, shape, sizeof(int64_t) * (size_t)ndim);
    normals(means, classes * e, (ng_rng_key){.seed = seed, .stream = 0}, 1.0);
    /* Balanced labels, shuffled by Fisher-Yates from the split's own stream. */
    for (int64_t i = 0; i < n; i++) d->y[i] = (int32_t)(i % classes);
    ng_rng_key lk = {.seed = seed, .stream = 2 * split + 2};
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t w[4];
        ng_rng_block(lk, (uint64_t)i, w);
        int64_t j = (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)(i + 1));
        int32_t t = d->y[i];
        d->y[i] = d->y[j], d->y[j] = t;
    }
    normals(d->x, n * e, (ng_rng_key){.seed = seed, .stream = 2 * split + 1}, noise);
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < e; k++) d->x[i * e + k] += means[d->y[i] * e + k];
    free(means);
    return d;
}
