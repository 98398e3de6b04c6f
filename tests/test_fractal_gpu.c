/* The CUDA fractal renderers against the CPU ones, bit for bit: searched categories with their
 * instances (flips included) at several sides and point counts (a partial last chunk, a count
 * below the skip, chunks of exactly one block), the degenerate segment and point IFS, and a
 * diverging IFS (all -1); in 2D (data/fractal.h) and in 3D voxels (data/fractal3d.h). */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "data/fractal.h"
#include "data/fractal3d.h"
#include "testing.h"

static void compare(const char *what, const ng_ifs *f, const int *flips, const ng_rng_key *keys,
                    int64_t count, int64_t points, int64_t side) {
    int64_t shape[4] = {count, 1, side, side};
    ng_tensor c = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "cpu");
    ng_tensor g = ng_tensor_new(NG_F32, NG_CUDA, 4, shape, "gpu");
    ng_fractal_render(f, flips, keys, points, &c);
    ng_fractal_render(f, flips, keys, points, &g);
    ng_tensor h = ng_tensor_to(&g, NG_CPU, "gpu-on-host");
    int64_t diff = 0, first = -1;
    for (int64_t i = 0; i < c.numel; i++)
        if (((const float *)c.data)[i] != ((const float *)h.data)[i]) {
            if (first < 0) first = i;
            diff++;
        }
    NG_TEST(diff == 0, "%s (%lld images, %lld points, side %lld): %lld pixels differ, first %lld",
            what, (long long)count, (long long)points, (long long)side, (long long)diff,
            (long long)first);
    ng_tensor_free(&c), ng_tensor_free(&g), ng_tensor_free(&h);
}

static void test_instances(uint64_t seed) {
    enum { N = 40 };
    ng_ifs f[N];
    int flips[N];
    ng_rng_key keys[N];
    for (int j = 0; j < N; j++) {
        ng_ifs cat;
        int64_t c = j % 10, inst = j / 10;
        ng_fractal_category(seed, c, 0.2, &cat);
        ng_fractal_instance(&cat, seed, c, inst, &f[j], &flips[j]);
        keys[j] = ng_fractal_points_key(seed, c, inst);
    }
    compare("instances", f, flips, keys, N, 2000, 28);
    compare("instances", f, flips, keys, N, 5003, 64);
    compare("instances", f, flips, keys, N, 1024, 32);
    compare("instances", f, flips, keys, N, 10, 16); /* all skipped: every image -1 */
    compare("instances", f, flips, keys, 3, 100000, 224);
}

static void test_special(void) {
    ng_ifs f[3] = {{.nmaps = 2, .m = {{0.5, 0, 0, 0.5, 0, 0}, {0.5, 0, 0, 0.5, 0.5, 0.5}}},
                   {.nmaps = 1, .m = {{0.5, 0, 0, 0.5, 0, 0}}},
                   {.nmaps = 2, .m = {{2, 0, 0, 2, 1, 1}, {1.5, 0.3, 0, 1.5, 0, 1}}}};
    int flips[3] = {1, 2, 3};
    ng_rng_key keys[3] = {{.seed = 1}, {.seed = 2, .stream = 9}, {.seed = 3, .offset = 77}};
    compare("segment, point, diverging", f, flips, keys, 3, 3000, 12);
}

static void compare3(const char *what, const ng_ifs3 *f, const int *flips, const ng_rng_key *keys,
                     int64_t count, int64_t points, int64_t side) {
    int64_t shape[5] = {count, 1, side, side, side};
    ng_tensor c = ng_tensor_new(NG_F32, NG_CPU, 5, shape, "cpu");
    ng_tensor g = ng_tensor_new(NG_F32, NG_CUDA, 5, shape, "gpu");
    ng_fractal3d_render(f, flips, keys, points, &c);
    ng_fractal3d_render(f, flips, keys, points, &g);
    ng_tensor h = ng_tensor_to(&g, NG_CPU, "gpu-on-host");
    int64_t diff = 0, first = -1;
    for (int64_t i = 0; i < c.numel; i++)
        if (((const float *)c.data)[i] != ((const float *)h.data)[i]) {
            if (first < 0) first = i;
            diff++;
        }
    NG_TEST(diff == 0,
            "3D %s (%lld volumes, %lld points, side %lld): %lld voxels differ, first "
            "%lld",
            what, (long long)count, (long long)points, (long long)side, (long long)diff,
            (long long)first);
    ng_tensor_free(&c), ng_tensor_free(&g), ng_tensor_free(&h);
}

static void test_instances3d(uint64_t seed) {
    enum { N = 24 };
    ng_ifs3 f[N];
    int flips[N];
    ng_rng_key keys[N];
    for (int j = 0; j < N; j++) {
        ng_ifs3 cat;
        int64_t c = j % 8, inst = j / 8;
        ng_fractal3d_category(seed, c, 0.1, &cat);
        ng_fractal3d_instance(&cat, seed, c, inst, &f[j], &flips[j]);
        keys[j] = ng_fractal3d_points_key(seed, c, inst);
    }
    compare3("instances", f, flips, keys, N, 16384, 16);
    compare3("instances", f, flips, keys, N, 5003, 12);
    compare3("instances", f, flips, keys, N, 1024, 8);
    compare3("instances", f, flips, keys, N, 10, 8); /* all skipped: every volume -1 */
    compare3("instances", f, flips, keys, 2, 200000, 64);
    ng_ifs3 s[3] = {{.nmaps = 2}, {.nmaps = 1}, {.nmaps = 1}};
    for (int j = 0; j < 2; j++) { /* the diagonal segment */
        for (int r = 0; r < 3; r++) s[0].m[j].a[4 * r] = 0.5, s[0].m[j].t[r] = 0.5 * j;
    }
    for (int r = 0; r < 3; r++)
        s[1].m[0].a[4 * r] = 0.5, s[2].m[0].a[4 * r] = 3; /* point, diverging */
    s[2].m[0].t[0] = 1;
    int sf[3] = {5, 2, 7};
    ng_rng_key sk[3] = {{.seed = 1}, {.seed = 2, .stream = 9}, {.seed = 3, .offset = 77}};
    compare3("segment, point, diverging", s, sf, sk, 3, 3000, 10);
}

int main(void) {
    ng_test_require_gpu("test_fractal_gpu");
    uint64_t seed = ng_test_seed();
    test_instances(seed);
    test_special();
    test_instances3d(seed);
    return ng_test_finish("test_fractal_gpu");
}
