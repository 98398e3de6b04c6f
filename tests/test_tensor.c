/* Tensors, views, the counting allocator and arenas; usage errors name the tensor. */
#include <string.h>

#include "core/memory.h"
#include "core/tensor.h"
#include "testing.h"

static void test_alloc_counts(void) {
    ng_mem_stats s0 = ng_mem_stats_get(NG_CPU);
    ng_tensor a = ng_tensor_3d(NG_F32, NG_CPU, 3, 5, 7, "a");
    NG_TEST(a.numel == 105 && ng_tensor_bytes(&a) == 420, "numel/bytes of [3,5,7] f32");
    NG_TEST(((uintptr_t)a.data % NG_ALIGN) == 0, "allocation aligned to %d", NG_ALIGN);
    ng_mem_stats s1 = ng_mem_stats_get(NG_CPU);
    NG_TEST(s1.current == s0.current + 420, "current grows by the bytes asked");
    ng_tensor b = ng_tensor_1d(NG_F16, NG_CPU, 1000, "b");
    ng_tensor_free(&b);
    ng_mem_stats s2 = ng_mem_stats_get(NG_CPU);
    NG_TEST(s2.current == s1.current && s2.peak >= s1.current + 2000, "peak keeps the high water");
    ng_mem_reset_peak(NG_CPU);
    NG_TEST(ng_mem_stats_get(NG_CPU).peak == s2.current, "reset_peak");
    ng_tensor_free(&a);
    NG_TEST(ng_mem_stats_get(NG_CPU).current == s0.current, "all freed");
}

static void test_views(void) {
    ng_tensor a = ng_tensor_2d(NG_F64, NG_CPU, 4, 6, "a");
    ng_test_fill_uniform(&a, -1, 1);
    ng_tensor v = ng_tensor_view(&a, 6, 2, (int64_t[]){2, 6}, "rows 1-2");
    NG_TEST(v.data == (double *)a.data + 6 && !v.owns, "view points into its parent");
    NG_TEST(((double *)v.data)[0] == ((double *)a.data)[6], "view reads parent memory");
    ng_tensor r = ng_tensor_reshape(&a, 3, (int64_t[]){2, 3, 4});
    NG_TEST(r.numel == 24 && r.data == a.data, "reshape keeps data");
    NG_TEST_ERROR(ng_tensor_view(&a, 20, 1, (int64_t[]){5}, "late"), "late");
    NG_TEST_ERROR(ng_tensor_reshape(&a, 2, (int64_t[]){5, 5}), "reshape of a");
    NG_TEST_ERROR(ng_tensor_new(NG_F32, NG_CPU, 6, (int64_t[]){1, 1, 1, 1, 1, 1}, "deep"), "deep");
    ng_tensor c = ng_tensor_2d(NG_F64, NG_CPU, 4, 6, "c");
    ng_tensor_copy(&c, &a);
    NG_TEST(!memcmp(c.data, a.data, ng_tensor_bytes(&a)), "copy");
    ng_tensor d = ng_tensor_1d(NG_F32, NG_CPU, 24, "d");
    NG_TEST_ERROR(ng_tensor_copy(&d, &a), "dtype");
    ng_tensor_free(&a);
    ng_tensor_free(&c);
    ng_tensor_free(&d);
}

/* Shapes from files: element and byte counts that overflow int64 are errors naming the tensor,
 * never a wrapped count (2^31 x 2^31 f32 once gave 0 bytes). Random dims around the edges. */
static void test_shape_overflow(void) {
    int64_t two31 = (int64_t)1 << 31, two32 = (int64_t)1 << 32;
    NG_TEST_ERROR(ng_tensor_wrap(NULL, NG_F32, NG_CPU, 2, (int64_t[]){two31, two31}, "w31"), "w31");
    NG_TEST_ERROR(ng_tensor_wrap(NULL, NG_U8, NG_CPU, 2, (int64_t[]){two32, two32}, "w32"), "w32");
    NG_TEST_ERROR(
        ng_tensor_wrap(NULL, NG_F64, NG_CPU, 3, (int64_t[]){1 << 21, 1 << 21, 1 << 19}, "w3"),
        "2^63 bytes");
    for (int k = 0; k < 200; k++) {
        int nd = 1 + (int)(0.5 * (ng_test_uniform() + 1) * 4.999);
        int64_t shape[5];
        long double exact = 1;
        for (int d = 0; d < nd; d++) {
            int bits = (int)(0.5 * (ng_test_uniform() + 1) * 40);
            shape[d] = ((int64_t)1 << bits) + (int64_t)(0.5 * (ng_test_uniform() + 1) * 1000);
            exact *= (long double)shape[d];
        }
        size_t es = (size_t)1 << (int)(0.5 * (ng_test_uniform() + 1) * 3.999);
        int64_t numel = -1;
        int ok = ng_shape_numel(nd, shape, es, &numel);
        int fits = exact * (long double)es <= (long double)INT64_MAX;
        NG_TEST(ok == fits && (!ok || (long double)numel == exact),
                "shape numel of %d dims (%Lg elements x %zu bytes): ok %d, numel %lld", nd, exact,
                es, ok, (long long)numel);
    }
    ng_tensor a = ng_tensor_1d(NG_F32, NG_CPU, 10, "a");
    NG_TEST_ERROR(ng_tensor_view(&a, INT64_MAX - 2, 1, (int64_t[]){5}, "far"), "far");
    ng_tensor_free(&a);
}

static void test_arena(void) {
    ng_arena ar = ng_arena_new(NG_CPU, 4096, "acts");
    ng_tensor x = ng_arena_tensor(&ar, NG_F32, 1, (int64_t[]){100}, "x");
    ng_arena_mark m = ng_arena_get_mark(&ar);
    ng_tensor y = ng_arena_tensor(&ar, NG_F32, 1, (int64_t[]){300}, "y");
    NG_TEST((char *)y.data >= (char *)x.data + 400, "arena tensors do not overlap");
    NG_TEST(((uintptr_t)y.data % NG_ALIGN) == 0, "arena tensors aligned");
    size_t peak = ar.peak;
    ng_arena_release(&ar, m);
    NG_TEST(ar.used == m && ar.peak == peak, "release keeps the peak");
    ng_tensor z = ng_arena_tensor(&ar, NG_F32, 1, (int64_t[]){300}, "z");
    NG_TEST(z.data == y.data, "released space is reused");
    NG_TEST_ERROR(ng_arena_alloc(&ar, 1 << 20), "acts");
    ng_arena_free(&ar);
}

int main(void) {
    test_alloc_counts();
    test_views();
    test_shape_overflow();
    test_arena();
    return ng_test_finish("test_tensor");
}
