/* The counting allocator's categories: an allocation counts under its thread's category when it
 * is made and a free charges the same category back, whatever the category at the free; peaks
 * per category and in total; the category is per thread; many live allocations (the table grows)
 * all come back. */
#include <pthread.h>
#include <stdlib.h>

#include "core/memory.h"
#include "testing.h"

/* a size in [lo, lo + span) */
static size_t rand_size(size_t lo, size_t span) {
    return lo + (size_t)((ng_test_uniform() + 1) / 2 * (double)span);
}

static void *other_thread(void *arg) {
    (void)arg;
    /* a fresh thread starts in OTHER whatever the main thread set */
    void *p = ng_alloc(NG_CPU, 1000);
    ng_free(NG_CPU, p, 1000);
    return (void *)(size_t)ng_mem_set_category(NG_MEM_OTHER);
}

int main(void) {
    ng_mem_stats s0 = ng_mem_stats_get(NG_CPU);
    size_t a = rand_size(1000, 5000), b = rand_size(3000, 9000);
    ng_mem_category was = ng_mem_set_category(NG_MEM_OPTIMIZER);
    NG_TEST(was == NG_MEM_OTHER, "the first category is other, got %s", ng_mem_category_name(was));
    void *pa = ng_alloc(NG_CPU, a);
    ng_mem_set_category(NG_MEM_KFAC);
    void *pb = ng_alloc(NG_CPU, b);
    ng_mem_stats s1 = ng_mem_stats_get(NG_CPU);
    NG_TEST(s1.cat_current[NG_MEM_OPTIMIZER] - s0.cat_current[NG_MEM_OPTIMIZER] == a &&
                s1.cat_current[NG_MEM_KFAC] - s0.cat_current[NG_MEM_KFAC] == b,
            "categories hold %zu and %zu bytes, not %zu and %zu",
            s1.cat_current[NG_MEM_OPTIMIZER] - s0.cat_current[NG_MEM_OPTIMIZER],
            s1.cat_current[NG_MEM_KFAC] - s0.cat_current[NG_MEM_KFAC], a, b);
    /* freed under another current category: charged back to where it came from */
    ng_mem_set_category(NG_MEM_DATA);
    ng_free(NG_CPU, pa, a);
    ng_mem_stats s2 = ng_mem_stats_get(NG_CPU);
    NG_TEST(s2.cat_current[NG_MEM_OPTIMIZER] == s0.cat_current[NG_MEM_OPTIMIZER] &&
                s2.cat_current[NG_MEM_DATA] == s0.cat_current[NG_MEM_DATA],
            "a free went to the wrong category");
    NG_TEST(s2.cat_peak[NG_MEM_OPTIMIZER] >= s0.cat_current[NG_MEM_OPTIMIZER] + a,
            "the optimizer peak forgot its allocation");
    NG_TEST(s2.peak >= s0.current + a + b, "total peak %zu below %zu", s2.peak, s0.current + a + b);
    ng_mem_reset_peak(NG_CPU);
    ng_mem_stats s3 = ng_mem_stats_get(NG_CPU);
    NG_TEST(s3.cat_peak[NG_MEM_OPTIMIZER] == s3.cat_current[NG_MEM_OPTIMIZER] &&
                s3.peak == s3.current,
            "reset_peak left peaks above the current figures");
    ng_free(NG_CPU, pb, b);

    pthread_t t;
    void *ret;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, &ret);
    NG_TEST((ng_mem_category)(size_t)ret == NG_MEM_OTHER, "another thread inherited category %s",
            ng_mem_category_name((ng_mem_category)(size_t)ret));

    /* many live allocations across categories: the table grows, every free finds its entry */
    enum { N = 5000 };
    void **p = malloc(sizeof *p * N);
    size_t *sz = malloc(sizeof *sz * N);
    ng_mem_stats before = ng_mem_stats_get(NG_CPU);
    for (int i = 0; i < N; i++) {
        ng_mem_set_category((ng_mem_category)(i % NG_MEM_NCAT));
        sz[i] = rand_size(16, 300);
        p[i] = ng_alloc(NG_CPU, sz[i]);
    }
    for (int i = N - 1; i >= 0; i -= 2) ng_free(NG_CPU, p[i], sz[i]);
    for (int i = N - 2; i >= 0; i -= 2) ng_free(NG_CPU, p[i], sz[i]);
    ng_mem_stats after = ng_mem_stats_get(NG_CPU);
    int same = after.current == before.current;
    for (int c = 0; c < NG_MEM_NCAT; c++) same &= after.cat_current[c] == before.cat_current[c];
    NG_TEST(same, "after %d allocations and frees the counters moved (%zu vs %zu)", N,
            after.current, before.current);
    free(p), free(sz);
    ng_mem_set_category(NG_MEM_OTHER);
    return ng_test_finish("test_memory");
}
