/* The loader: a producer thread fills a ring of batch slots in order; the consumer takes them in
 * the same order. The slot handed out last is never refilled until the next call. */
#include "data/loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"

typedef struct {
    float *x; /* on the config's device */
    int32_t *y;
    int64_t b, g; /* examples, global batch number */
} slot;

struct ng_loader {
    ng_loader_config c;
    int64_t per_rank, nb, esize;
    int nslots;
    slot *slots;
    int64_t *perm, perm_epoch; /* the producer's cache of one epoch's order */
    float *raw;                /* a batch before augmentation (NULL without it) */
    int64_t *idx;              /* the examples of the batch being built */
    /* shared between threads, under mu */
    pthread_t thread;
    int running, stop;
    int64_t produced, consumed; /* global batch numbers: next to produce, next to hand out */
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Stream ids of the loader's Philox draws; disjoint from other users of the run's seed. */
#define STREAM_SHUFFLE (UINT64_C(0x4c4f4144) << 32)

static void epoch_order(ng_loader *l, int64_t epoch) {
    if (l->perm_epoch == epoch) return;
    int64_t n = l->c.source->n;
    for (int64_t i = 0; i < n; i++) l->perm[i] = i;
    if (l->c.shuffle && !l->c.source->ordered) {
        ng_rng_key k = {.seed = l->c.seed, .stream = STREAM_SHUFFLE | (uint64_t)epoch};
        for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            uint32_t w[4];
            ng_rng_block(k, (uint64_t)i, w);
            int64_t j = (int64_t)((((uint64_t)w[0] << 32) | w[1]) % (uint64_t)(i + 1));
            int64_t t = l->perm[i];
            l->perm[i] = l->perm[j], l->perm[j] = t;
        }
    }
    l->perm_epoch = epoch;
}

/* The augmentation of a filled batch, raw -> x, example by example on the workers (each example
 * is a function of its own index). */
static void augment_batch(ng_loader *l, int64_t epoch, int64_t b, float *x) {
    const ng_source *src = l->c.source;
    int workers = l->c.workers > 1 ? l->c.workers : 1;
#pragma omp parallel for num_threads(workers) schedule(static) if (workers > 1 && b > 1)
    for (int64_t k = 0; k < b; k++)
        ng_augment_example(&l->c.augment, l->c.seed, epoch, l->idx[k], src->ndim, src->shape,
                           l->raw + k * l->esize, x + k * l->esize);
}

static void build(ng_loader *l, int64_t g, slot *s) {
    int64_t epoch = g / l->nb, index = g % l->nb, n = l->c.source->n;
    epoch_order(l, epoch);
    int64_t first = index * l->c.batch, b = l->per_rank - first;
    if (b > l->c.batch) b = l->c.batch;
    for (int64_t k = 0; k < b; k++) {
        /* Rank r takes positions r, r + w, ... of the epoch order padded by wrapping. */
        int64_t pos = (first + k) * l->c.world + l->c.rank;
        l->idx[k] = l->perm[pos % n];
    }
    const ng_source *src = l->c.source;
    int64_t shape[5] = {b};
    for (int d = 0; d < src->ndim; d++) shape[d + 1] = src->shape[d];
    ng_tensor x =
        ng_tensor_wrap(l->raw ? l->raw : s->x, NG_F32, l->c.device, src->ndim + 1, shape, "batch");
    ng_source_fill_batch(l->c.source, epoch, l->idx, b, &x, s->y);
    if (l->raw) augment_batch(l, epoch, b, s->x);
    s->b = b, s->g = g;
}

static void *producer(void *arg) {
    ng_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        /* Room while the batch to make stays `prefetch` ahead of the one handed out last. */
        while (!l->stop && l->produced >= l->consumed + l->c.prefetch)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int64_t g = l->produced;
        pthread_mutex_unlock(&l->mu);
        build(l, g, &l->slots[g % l->nslots]);
        pthread_mutex_lock(&l->mu);
        l->produced = g + 1;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void start(ng_loader *l, int64_t g) {
    l->produced = l->consumed = g;
    l->stop = 0;
    if (l->c.prefetch > 0 && l->c.device == NG_CPU) {
        NG_CHECK(!pthread_create(&l->thread, NULL, producer, l),
                 "data loader: cannot start its thread");
        l->running = 1;
    }
}

static void halt(ng_loader *l) {
    if (!l->running) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->running = 0;
}

static size_t slot_bytes(const ng_loader *l) {
    return sizeof(float) * (size_t)(l->c.batch * l->esize);
}

static void free_slots(ng_loader *l) {
    for (int i = 0; l->slots && i < l->nslots; i++) {
        if (l->c.device == NG_CPU)
            free(l->slots[i].x);
        else if (l->slots[i].x)
            ng_free(l->c.device, l->slots[i].x, slot_bytes(l));
        free(l->slots[i].y);
    }
    free(l->slots);
}

ng_loader *ng_loader_new(const ng_loader_config *c) {
    NG_CHECK(c, "data loader: no configuration");
    const ng_source *d = c->source;
    NG_CHECK(d && d->n > 0, "data loader: no data (an empty or missing source)");
    NG_CHECK(d->dtype == NG_F32, "data loader: source %s holds %s examples; batches are f32",
             d->name, ng_dtype_name(d->dtype));
    NG_CHECK(c->batch > 0, "train.batch_size: %lld must be > 0", (long long)c->batch);
    NG_CHECK(c->world >= 1, "world: %d ranks, need 1 or more", c->world);
    NG_CHECK(c->rank >= 0 && c->rank < c->world, "rank: %d is outside [0, %d) for a world of %d",
             c->rank, c->world, c->world);
    NG_CHECK(c->prefetch >= 0 && c->prefetch <= 64, "data.prefetch: %d is outside [0, 64]",
             c->prefetch);
    NG_CHECK(c->workers >= 0 && c->workers <= 256, "data.workers: %d is outside [1, 256]",
             c->workers);
    ng_augment_check(&c->augment, d->ndim, d->shape, d->name);
    NG_CHECK(c->device == NG_CPU || c->device == NG_CUDA, "data loader: device %d", (int)c->device);
    NG_CHECK(c->device == NG_CPU || d->device_batches,
             "data loader: %s cannot fill batches on the GPU (FractalDB 2D and 3D can)", d->name);
    NG_CHECK(c->device == NG_CPU || !ng_augment_active(&c->augment),
             "data.augment: %s renders its batches on the GPU, where nothing augments yet; turn "
             "augmentation off",
             d->name);
    /* Sizes are settled before anything is allocated, so a caught error leaks nothing. */
    int64_t per_rank = (d->n + c->world - 1) / c->world;
    int64_t nb = c->drop_last ? per_rank / c->batch : (per_rank + c->batch - 1) / c->batch;
    NG_CHECK(nb > 0,
             "train.batch_size: %lld is larger than the %lld examples per rank of %s, so "
             "drop_last leaves no batch",
             (long long)c->batch, (long long)per_rank, d->name);
    ng_loader *l = calloc(1, sizeof *l);
    NG_CHECK(l, "data loader: out of host memory");
    l->c = *c;
    l->esize = ng_source_example_size(d);
    l->per_rank = per_rank;
    l->nb = nb;
    /* Device batches are built in ng_loader_next, so one slot. */
    l->nslots = c->device == NG_CPU ? c->prefetch + 1 : 1;
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->perm = malloc(sizeof(int64_t) * (size_t)d->n);
    l->idx = malloc(sizeof(int64_t) * (size_t)c->batch);
    int aug = ng_augment_active(&c->augment);
    if (aug) l->raw = malloc(slot_bytes(l));
    int ok = l->slots && l->perm && l->idx && (l->raw || !aug);
    for (int i = 0; ok && i < l->nslots; i++) {
        if (c->device == NG_CPU) {
            l->slots[i].x = malloc(sizeof(float) * (size_t)(c->batch * l->esize));
        } else { /* ng_alloc fails itself when the device has no memory left */
            ng_mem_category was = ng_mem_set_category(NG_MEM_DATA);
            l->slots[i].x = ng_alloc(c->device, slot_bytes(l));
            ng_mem_set_category(was);
        }
        l->slots[i].y = malloc(sizeof(int32_t) * (size_t)c->batch);
        ok = l->slots[i].x && l->slots[i].y;
    }
    if (!ok) {
        free_slots(l);
        free(l->perm);
        free(l->idx);
        free(l->raw);
        free(l);
        ng_fail("data loader: out of host memory for %d batches of %lld examples of %s",
                c->prefetch + 1, (long long)c->batch, d->name);
    }
    l->perm_epoch = -1;
    c->source->workers = c->workers; /* the source's fill_batch threads */
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    start(l, 0);
    return l;
}

ng_batch ng_loader_next(ng_loader *l) {
    int64_t g;
    slot *s;
    if (!l->running) {
        g = l->consumed++;
        s = &l->slots[0];
        build(l, g, s);
    } else {
        pthread_mutex_lock(&l->mu);
        g = l->consumed;
        while (l->produced <= g) pthread_cond_wait(&l->cv, &l->mu);
        l->consumed = g + 1; /* frees the slot handed out before this one */
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        s = &l->slots[g % l->nslots];
    }
    return (ng_batch){s->x, s->y, s->b, g / l->nb, g % l->nb, l->c.device};
}

int64_t ng_loader_batches_per_epoch(const ng_loader *l) {
    return l->nb;
}

void ng_loader_seek(ng_loader *l, int64_t epoch, int64_t index) {
    NG_CHECK(epoch >= 0 && index >= 0 && index < l->nb,
             "data loader: position epoch %lld batch %lld is outside the %lld batches per epoch",
             (long long)epoch, (long long)index, (long long)l->nb);
    halt(l);
    start(l, epoch * l->nb + index);
}

void ng_loader_free(ng_loader *l) {
    if (!l) return;
    halt(l);
    free_slots(l);
    free(l->perm);
    free(l->idx);
    free(l->raw);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
