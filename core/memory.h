/* Device memory: a counting allocator with a high-water mark per device, and arenas with
 * mark/release for activations (the arena's peak is the activation-memory figure). */
#ifndef NG_MEMORY_H
#define NG_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Every buffer is aligned to this many bytes (enough for vector loads and cuBLAS). */
#define NG_ALIGN 256

/* What an allocation holds, for the per-category peaks a run reports (and natgrad plan predicts).
 * An allocation counts under the category current on its thread when it is made. */
typedef enum {
    NG_MEM_OTHER,
    NG_MEM_PARAMS,      /* master weights, their compute-dtype copy, batch-norm buffers */
    NG_MEM_GRADS,       /* the flat gradient buffer */
    NG_MEM_OPTIMIZER,   /* momentum, Adam moments */
    NG_MEM_KFAC,        /* K-FAC factors, their sums and inverses */
    NG_MEM_ACTIVATIONS, /* the activation arena */
    NG_MEM_WORKSPACE,   /* the activation-gradient arena (im2col chunks), cuDNN, K-FAC scratch */
    NG_MEM_DATA,        /* input batches on the device */
    NG_MEM_COMM,        /* gradient buckets and collective scratch */
    NG_MEM_NCAT
} ng_mem_category;

const char *ng_mem_category_name(ng_mem_category c);
/* Sets this thread's category and returns the one it replaces (restore it after). */
ng_mem_category ng_mem_set_category(ng_mem_category c);

void *ng_alloc(ng_device dev, size_t bytes);
/* `bytes` must be what was asked of ng_alloc: the counters stay exact without a lookup. */
void ng_free(ng_device dev, void *p, size_t bytes);

typedef struct {
    size_t current, peak, total_allocs;
    size_t cat_current[NG_MEM_NCAT], cat_peak[NG_MEM_NCAT];
} ng_mem_stats;

ng_mem_stats ng_mem_stats_get(ng_device dev);
/* Sets the peaks (total and per category) to the current figures, so a benchmark can measure
 * one phase. */
void ng_mem_reset_peak(ng_device dev);

/* An arena: one buffer, bump allocation, release back to a mark. Two arenas may share one
 * buffer (ng_arena_pair): one grows from its start, the other down from its end, so the buffer
 * needs the most the two hold at once, not the sum of their separate peaks. */
typedef struct ng_arena {
    ng_device device;
    char *base;
    size_t capacity, used, peak;
    const char *name;
    int down;              /* 1: allocates down from base + capacity */
    struct ng_arena *twin; /* the other arena of a pair (NULL: alone) */
    size_t *joint_peak;    /* a pair: the most both held at once */
    int owns;              /* 1 for the arena that frees the buffer */
} ng_arena;

typedef size_t ng_arena_mark;

ng_arena ng_arena_new(ng_device dev, size_t capacity, const char *name);
/* One buffer of `capacity` bytes (rounded up to NG_ALIGN) shared by `up` and `down`; joint_peak
 * receives the most they hold at once. Both must stay where they are (they point at each
 * other); `up` owns the buffer: free `down` first, then `up`. */
void ng_arena_pair(ng_device dev, size_t capacity, ng_arena *up, const char *up_name,
                   ng_arena *down, const char *down_name, size_t *joint_peak);
/* Bytes an allocation could still take (what the twin leaves, for a pair). */
size_t ng_arena_free_bytes(const ng_arena *a);
void ng_arena_free(ng_arena *a);
/* Fails with a message naming the arena and the sizes when the arena is full. */
void *ng_arena_alloc(ng_arena *a, size_t bytes);
ng_tensor ng_arena_tensor(ng_arena *a, ng_dtype dtype, int ndim, const int64_t *shape,
                          const char *name);
static inline ng_arena_mark ng_arena_get_mark(const ng_arena *a) {
    return a->used;
}
void ng_arena_release(ng_arena *a, ng_arena_mark m);
void ng_arena_reset_peak(ng_arena *a);

#ifdef __cplusplus
}
#endif
#endif
