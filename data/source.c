/* What all sources share, and the in-memory data set as a source. */
#include "data/source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int64_t ng_source_example_size(const ng_source *s) {
    int64_t e = 1;
    for (int i = 0; i < s->ndim; i++) e *= s->shape[i];
    return e;
}

void ng_source_fill(ng_source *s, int64_t epoch, int64_t i, void *x, int32_t *y) {
    NG_CHECK(i >= 0 && i < s->n && epoch >= 0,
             "data source %s: example %lld of epoch %lld is outside its %lld examples", s->name,
             (long long)i, (long long)epoch, (long long)s->n);
    s->ops->fill(s, epoch, i, x, y);
}

void ng_source_fill_batch(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count,
                          ng_tensor *x, int32_t *y) {
    for (int64_t j = 0; j < count; j++)
        NG_CHECK(idx[j] >= 0 && idx[j] < s->n && epoch >= 0,
                 "data source %s: example %lld of epoch %lld is outside its %lld examples", s->name,
                 (long long)idx[j], (long long)epoch, (long long)s->n);
    int64_t e = ng_source_example_size(s);
    int shape_ok = x->dtype == NG_F32 && s->dtype == NG_F32 && x->ndim == s->ndim + 1 &&
                   x->shape[0] == count && count >= 0;
    for (int d = 0; shape_ok && d < s->ndim; d++) shape_ok = x->shape[d + 1] == s->shape[d];
    NG_CHECK(shape_ok,
             "data source %s: a batch of %lld needs an f32 tensor [%lld, its example "
             "shape], not %s",
             s->name, (long long)count, (long long)count, x->name ? x->name : "this one");
    if (s->ops->fill_batch) {
        s->ops->fill_batch(s, epoch, idx, count, x, y);
        return;
    }
    NG_CHECK(x->device == NG_CPU, "data source %s fills host batches only (%s is on the GPU)",
             s->name, x->name ? x->name : "the batch");
    int workers = s->reentrant && s->workers > 1 ? s->workers : 1;
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1) if (workers > 1 && count > 1)
    for (int64_t j = 0; j < count; j++)
        s->ops->fill(s, epoch, idx[j], (float *)x->data + j * e, &y[j]);
}

void ng_source_render_batch(ng_source *s, const int64_t *idx, int64_t count, float *x, int32_t *y,
                            size_t scratch_bytes,
                            void (*render)(const void *self, int64_t i, float *x, int32_t *y,
                                           uint8_t *scratch),
                            const void *self) {
    int64_t e = ng_source_example_size(s);
    int workers = s->workers > 1 && count > 1 ? s->workers : 1, ok = 1;
#pragma omp parallel num_threads(workers) reduction(&& : ok)
    {
        uint8_t *scratch = malloc(scratch_bytes ? scratch_bytes : 1);
        ok = scratch != NULL;
#pragma omp for schedule(dynamic, 1)
        for (int64_t j = 0; j < count; j++)
            if (scratch) render(self, idx[j], x + j * e, &y[j], scratch);
        free(scratch);
    }
    NG_CHECK(ok, "%s: out of host memory for %d workers' scratch", s->name, workers);
}

int ng_source_split(ng_source *s, int rank, int world) {
    NG_CHECK(world >= 1 && rank >= 0 && rank < world, "data source %s: rank %d of %d", s->name,
             rank, world);
    if (!s->ops->split || world == 1) return 0;
    s->ops->split(s, rank, world);
    return 1;
}

void ng_source_free(ng_source *s) {
    if (!s) return;
    if (s->ops->destroy) s->ops->destroy(s);
    free(s);
}

static void dataset_fill(ng_source *s, int64_t epoch, int64_t i, void *x, int32_t *y) {
    (void)epoch;
    const ng_dataset *d = s->impl;
    int64_t e = ng_dataset_example_size(d);
    memcpy(x, d->x + i * e, sizeof(float) * (size_t)e);
    *y = d->y[i];
}

static void dataset_destroy(ng_source *s) {
    ng_dataset_free(s->impl);
}

static const ng_source_ops dataset_ops = {dataset_fill, dataset_destroy, NULL, NULL, NULL};

ng_source *ng_source_dataset(ng_dataset *d) {
    NG_CHECK(d && d->n > 0 && d->x && d->y, "data source: no data (an empty or missing data set)");
    ng_source *s = calloc(1, sizeof *s);
    if (!s) {
        ng_dataset_free(d);
        ng_fail("data source: out of host memory");
    }
    *s = (ng_source){.ops = &dataset_ops,
                     .reentrant = 1, /* a copy of row i */
                     .n = d->n,
                     .ndim = d->ndim,
                     .dtype = NG_F32,
                     .classes = d->classes,
                     .impl = d};
    snprintf(s->name, sizeof s->name, "%s", d->name);
    memcpy(s->shape, d->shape, sizeof s->shape);
    return s;
}
