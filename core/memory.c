/* The counting allocator and activation arenas. Each live allocation's size and category sit in
 * a small open-addressing table keyed by address, so a free is charged back to the category it
 * came from; allocations are few and large (flat buffers, arenas, factors), so the table is
 * small and a lock is cheap. */
#include "memory.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend.h"
#include "error.h"

static ng_mem_stats stats[NG_NUM_DEVICES];
static _Thread_local ng_mem_category current_cat = NG_MEM_OTHER;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct {
    void *p; /* NULL: empty; TOMB: deleted */
    unsigned char cat;
} slot;
static slot *table;
static size_t table_cap, table_used; /* used counts tombstones too */
#define TOMB ((void *)1)

static size_t hash(const void *p, size_t cap) {
    uint64_t x = (uint64_t)(uintptr_t)p >> 8;
    x *= UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(x >> 32) & (cap - 1);
}

static void table_put(void *p, ng_mem_category c);

static void grow(void) {
    slot *old = table;
    size_t n = table_cap;
    table_cap = n ? n * 2 : 256;
    table = calloc(table_cap, sizeof *table);
    NG_CHECK(table, "out of host memory for the allocation table");
    table_used = 0;
    for (size_t i = 0; i < n; i++)
        if (old[i].p && old[i].p != TOMB) table_put(old[i].p, (ng_mem_category)old[i].cat);
    free(old);
}

static void table_put(void *p, ng_mem_category c) {
    if ((table_used + 1) * 2 > table_cap) grow();
    size_t i = hash(p, table_cap);
    while (table[i].p && table[i].p != TOMB) i = (i + 1) & (table_cap - 1);
    if (!table[i].p) table_used++;
    table[i] = (slot){p, (unsigned char)c};
}

static ng_mem_category table_take(void *p) {
    if (!table_cap) return NG_MEM_OTHER;
    for (size_t i = hash(p, table_cap); table[i].p; i = (i + 1) & (table_cap - 1)) {
        if (table[i].p == p) {
            table[i].p = TOMB;
            return (ng_mem_category)table[i].cat;
        }
    }
    return NG_MEM_OTHER;
}

const char *ng_mem_category_name(ng_mem_category c) {
    static const char *names[NG_MEM_NCAT] = {"other",     "params", "grads",
                                             "optimizer", "kfac",   "activations",
                                             "workspace", "data",   "comm"};
    return (unsigned)c < NG_MEM_NCAT ? names[c] : "?";
}

ng_mem_category ng_mem_set_category(ng_mem_category c) {
    ng_mem_category was = current_cat;
    current_cat = c;
    return was;
}

void *ng_alloc(ng_device dev, size_t bytes) {
    const ng_backend *b = ng_backend_for(dev, "ng_alloc");
    void *p = b->alloc(bytes);
    NG_CHECK(p, "out of %s memory: could not allocate %zu bytes (%zu in use, peak %zu)",
             ng_device_name(dev), bytes, stats[dev].current, stats[dev].peak);
    pthread_mutex_lock(&lock);
    ng_mem_stats *s = &stats[dev];
    ng_mem_category c = current_cat;
    table_put(p, c);
    s->current += bytes;
    s->total_allocs++;
    if (s->current > s->peak) s->peak = s->current;
    s->cat_current[c] += bytes;
    if (s->cat_current[c] > s->cat_peak[c]) s->cat_peak[c] = s->cat_current[c];
    pthread_mutex_unlock(&lock);
    return p;
}

void ng_free(ng_device dev, void *p, size_t bytes) {
    if (!p) return;
    ng_backend_for(dev, "ng_free")->free(p);
    pthread_mutex_lock(&lock);
    ng_mem_category c = table_take(p);
    stats[dev].current -= bytes;
    stats[dev].cat_current[c] -= bytes;
    pthread_mutex_unlock(&lock);
}

ng_mem_stats ng_mem_stats_get(ng_device dev) {
    pthread_mutex_lock(&lock);
    ng_mem_stats s = stats[dev];
    pthread_mutex_unlock(&lock);
    return s;
}

void ng_mem_reset_peak(ng_device dev) {
    pthread_mutex_lock(&lock);
    ng_mem_stats *s = &stats[dev];
    s->peak = s->current;
    for (int c = 0; c < NG_MEM_NCAT; c++) s->cat_peak[c] = s->cat_current[c];
    pthread_mutex_unlock(&lock);
}

ng_arena ng_arena_new(ng_device dev, size_t capacity, const char *name) {
    ng_arena a = {.device = dev, .capacity = capacity, .name = name, .owns = 1};
    a.base = ng_alloc(dev, capacity);
    return a;
}

void ng_arena_pair(ng_device dev, size_t capacity, ng_arena *up, const char *up_name,
                   ng_arena *down, const char *down_name, size_t *joint_peak) {
    capacity = (capacity + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    *up = ng_arena_new(dev, capacity, up_name);
    *down = (ng_arena){
        .device = dev, .base = up->base, .capacity = capacity, .name = down_name, .down = 1};
    up->twin = down, down->twin = up;
    up->joint_peak = down->joint_peak = joint_peak;
    *joint_peak = 0;
}

void ng_arena_free(ng_arena *a) {
    if (a->owns) ng_free(a->device, a->base, a->capacity);
    if (a->twin) a->twin->twin = NULL;
    a->base = NULL;
    a->capacity = a->used = 0;
    a->twin = NULL;
    a->owns = 0;
}

size_t ng_arena_free_bytes(const ng_arena *a) {
    size_t taken = a->used + (a->twin ? a->twin->used : 0);
    return a->capacity > taken ? a->capacity - taken : 0;
}

void *ng_arena_alloc(ng_arena *a, size_t bytes) {
    size_t other = a->twin ? a->twin->used : 0, start, end;
    if (a->down) { /* the block [capacity - end, capacity - used), end aligned */
        start = a->used;
        end = (a->used + bytes + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    } else {
        start = (a->used + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
        end = start + bytes;
    }
    NG_CHECK(end >= start && end + other <= a->capacity,
             "arena '%s' is full: %zu bytes asked with %zu of %zu in use%s (raise its capacity)",
             a->name ? a->name : "?", bytes, a->used + other, a->capacity,
             a->twin ? " by it and its twin" : "");
    a->used = end;
    if (a->used > a->peak) a->peak = a->used;
    if (a->joint_peak && end + other > *a->joint_peak) *a->joint_peak = end + other;
    return a->down ? a->base + a->capacity - end : a->base + start;
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
