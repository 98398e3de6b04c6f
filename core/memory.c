/* The counting allocator and activation arenas. */
#include "memory.h"

#include "backend.h"
#include "error.h"

static ng_mem_stats stats[NG_NUM_DEVICES];

void *ng_alloc(ng_device dev, size_t bytes) {
    const ng_backend *b = ng_backend_for(dev, "ng_alloc");
    void *p = b->alloc(bytes);
    NG_CHECK(p, "out of %s memory: could not allocate %zu bytes (%zu in use, peak %zu)",
             ng_device_name(dev), bytes, stats[dev].current, stats[dev].peak);
    stats[dev].current += bytes;
    stats[dev].total_allocs++;
    if (stats[dev].current > stats[dev].peak) stats[dev].peak = stats[dev].current;
    return p;
}

void ng_free(ng_device dev, void *p, size_t bytes) {
    if (!p) return;
    ng_backend_for(dev, "ng_free")->free(p);
    stats[dev].current -= bytes;
}

ng_mem_stats ng_mem_stats_get(ng_device dev) {
    return stats[dev];
}

void ng_mem_reset_peak(ng_device dev) {
    stats[dev].peak = stats[dev].current;
}

ng_arena ng_arena_new(ng_device dev, size_t capacity, const char *name) {
    ng_arena a = {.device = dev, .capacity = capacity, .name = name};
    a.base = ng_alloc(dev, capacity);
    return a;
}

void ng_arena_free(ng_arena *a) {
    ng_free(a->device, a->base, a->capacity);
    a->base = NULL;
    a->capacity = a->used = 0;
}

void *ng_arena_alloc(ng_arena *a, size_t bytes) {
    size_t start = (a->used + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    NG_CHECK(start + bytes <= a->capacity,
             "arena '%s' is full: %zu bytes asked with %zu of %zu in use (raise its capacity)",
             a->name ? a->name : "?", bytes, a->used, a->capacity);
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base + start;
}

ng_tensor ng_arena_tensor(ng_arena *a, ng_dtype dtype, int ndim, const int64_t *shape,
                          const char *name) {
    ng_tensor t = ng_tensor_wrap(NULL, dtype, a->device, ndim, shape, name);
    t.data = ng_arena_alloc(a, ng_tensor_bytes(&t));
    return t;
}

void ng_arena_release(ng_arena *a, ng_arena_mark m) {
    NG_CHECK(m <= a->used, "arena '%s': release to mark %zu past the top %zu",
             a->name ? a->name : "?", m, a->used);
    a->used = m;
}

void ng_arena_reset_peak(ng_arena *a) {
    a->peak = a->used;
}
