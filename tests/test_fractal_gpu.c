/* The CUDA fractal renderers against the CPU ones, bit for bit: searched categories with their
 * instances (flips included) at several sides and point counts (a partial last chunk, a count
 * below the skip, chunks of exactly one block), the degenerate segment and point IFS, and a
 * diverging IFS (all -1); in 2D (data/fractal.h: grey, and painted with patches and colour) and
 * in 3D voxels (data/fractal3d.h); the kernels' fallback to the category's IFS; and the sources'
 * device batches (fill_batch) against fill on the host. */
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
        ng_fractal_instance(&cat, seed, c, inst, NG_FRACTAL_AUGMENT_ALL, &f[j], &flips[j]);
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

/* Painted images (data.fractal.patch, data.fractal.colour) by ng_fractal_render_paint. */
static void compare_paint(const char *what, const ng_ifs *f, const int *flips,
                          const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                          int patch, const uint8_t *masks,
                          const float (*rgb)[NG_FRACTAL_MAX_MAPS][3]) {
    int64_t shape[4] = {count, rgb ? 3 : 1, side, side};
    ng_tensor c = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "cpu");
    ng_tensor g = ng_tensor_new(NG_F32, NG_CUDA, 4, shape, "gpu");
    ng_fractal_render_paint(f, flips, keys, points, patch, masks, rgb, &c);
    ng_fractal_render_paint(f, flips, keys, points, patch, masks, rgb, &g);
    ng_tensor h = ng_tensor_to(&g, NG_CPU, "gpu-on-host");
    int64_t diff = 0, first = -1;
    for (int64_t i = 0; i < c.numel; i++)
        if (((const float *)c.data)[i] != ((const float *)h.data)[i]) {
            if (first < 0) first = i;
            diff++;
        }
    NG_TEST(diff == 0,
            "painted %s (%lld images, %lld points, side %lld, patch %d, %s): %lld values differ, "
            "first %lld",
            what, (long long)count, (long long)points, (long long)side, patch,
            rgb ? "colour" : "grey", (long long)diff, (long long)first);
    ng_tensor_free(&c), ng_tensor_free(&g), ng_tensor_free(&h);
}

/* Ten categories, four instances each, with their patterns and colours, at several sides, point
 * counts and patch sizes, grey and colour; and the special IFS in colour. */
static void test_painted(uint64_t seed) {
    enum { N = 40 };
    ng_ifs f[N];
    int flips[N];
    ng_rng_key keys[N];
    static uint8_t masks[8][N * NG_FRACTAL_MAX_PATCH * NG_FRACTAL_MAX_PATCH];
    float rgb[N][NG_FRACTAL_MAX_MAPS][3];
    for (int j = 0; j < N; j++) {
        ng_ifs cat;
        int64_t c = j % 10, inst = j / 10;
        ng_fractal_category(seed, c, 0.2, &cat);
        ng_fractal_instance(&cat, seed, c, inst, NG_FRACTAL_AUGMENT_ALL, &f[j], &flips[j]);
        keys[j] = ng_fractal_points_key(seed, c, inst);
        ng_fractal_colours(seed, c, inst, rgb[j]);
        for (int p = 1; p <= NG_FRACTAL_MAX_PATCH; p++)
            ng_fractal_patch_mask(seed, c, inst, p, masks[p] + j * p * p);
    }
    const float(*col)[NG_FRACTAL_MAX_MAPS][3] = (const float(*)[NG_FRACTAL_MAX_MAPS][3])rgb;
    compare_paint("instances", f, flips, keys, N, 2000, 32, 1, masks[1], col);
    compare_paint("instances", f, flips, keys, N, 2000, 32, 3, masks[3], col);
    compare_paint("instances", f, flips, keys, N, 2000, 32, 3, masks[3], NULL);
    compare_paint("instances", f, flips, keys, N, 5003, 64, 5, masks[5], col);
    compare_paint("instances", f, flips, keys, N, 1024, 28, 7, masks[7], col);
    compare_paint("instances", f, flips, keys, N, 10, 16, 3, masks[3], col); /* all skipped */
    compare_paint("instances", f, flips, keys, 4, 100000, 224, 1, masks[1], col);
    compare_paint("instances", f, flips, keys, 4, 100000, 224, 3, masks[3], col);
    compare_paint("instances", f, flips, keys, 4, 100000, 224, 5, masks[5], NULL);
    ng_ifs s[3] = {{.nmaps = 2, .m = {{0.5, 0, 0, 0.5, 0, 0}, {0.5, 0, 0, 0.5, 0.5, 0.5}}},
                   {.nmaps = 1, .m = {{0.5, 0, 0, 0.5, 0, 0}}},
                   {.nmaps = 2, .m = {{2, 0, 0, 2, 1, 1}, {1.5, 0.3, 0, 1.5, 0, 1}}}};
    int sf[3] = {1, 2, 3};
    ng_rng_key sk[3] = {{.seed = 1}, {.seed = 2, .stream = 9}, {.seed = 3, .offset = 77}};
    compare_paint("segment, point, diverging", s, sf, sk, 3, 3000, 12, 3, masks[3], col);
}

/* The kernels' fallback (the source's): a diverging IFS with an alternative renders the
 * alternative, one without renders nothing. The CUDA entry points exist only in CUDA builds (a
 * CPU build compiles this test to skip it). */
#ifdef NG_HAVE_CUDA
static void test_fallback(uint64_t seed) {
    ng_ifs good, diverging = {.nmaps = 2, .m = {{2, 0, 0, 2, 1, 1}, {1.5, 0.3, 0, 1.5, 0, 1}}};
    ng_fractal_category(seed, 3, 0.2, &good);
    ng_ifs f[3] = {diverging, good, diverging}, alt[3] = {good, diverging, {.nmaps = 0}};
    ng_ifs want[3] = {good, good, diverging};
    int flips[3] = {1, 2, 0};
    ng_rng_key keys[3] = {{.seed = 5}, {.seed = 6}, {.seed = 7}};
    int64_t shape[4] = {3, 1, 40, 40};
    ng_tensor c = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "cpu");
    ng_tensor g = ng_tensor_new(NG_F32, NG_CUDA, 4, shape, "gpu");
    ng_fractal_render(want, flips, keys, 3000, &c);
    ng_fractal_render_cuda(f, alt, flips, keys, 3, 3000, 40, g.data);
    ng_tensor h = ng_tensor_to(&g, NG_CPU, "gpu-on-host");
    NG_TEST(!memcmp(c.data, h.data, sizeof(float) * (size_t)c.numel),
            "the grey kernel's fallback differs from the CPU");
    ng_tensor_free(&g), ng_tensor_free(&h);
    uint8_t masks[27];
    for (int j = 0; j < 3; j++) ng_fractal_patch_mask(seed, 0, j, 3, masks + 9 * j);
    float rgb[3][NG_FRACTAL_MAX_MAPS][3];
    for (int j = 0; j < 3; j++) ng_fractal_colours(seed, 0, j, rgb[j]);
    int64_t shape3[4] = {3, 3, 40, 40};
    ng_tensor c3 = ng_tensor_new(NG_F32, NG_CPU, 4, shape3, "cpu");
    ng_tensor g3 = ng_tensor_new(NG_F32, NG_CUDA, 4, shape3, "gpu");
    const float(*col)[NG_FRACTAL_MAX_MAPS][3] = (const float(*)[NG_FRACTAL_MAX_MAPS][3])rgb;
    ng_fractal_render_paint(want, flips, keys, 3000, 3, masks, col, &c3);
    ng_fractal_paint_cuda(f, alt, flips, keys, 3, 3000, 40, 3, masks, col, g3.data);
    h = ng_tensor_to(&g3, NG_CPU, "gpu-on-host");
    NG_TEST(!memcmp(c3.data, h.data, sizeof(float) * (size_t)c3.numel),
            "the painting kernel's fallback differs from the CPU");
    ng_tensor_free(&c), ng_tensor_free(&c3), ng_tensor_free(&g3), ng_tensor_free(&h);
}
#else
static void test_fallback(uint64_t seed) {
    (void)seed;
}
#endif

/* The sources' device batches against fill on the host, example by example (labels too): the
 * path `natgrad data-bench --device cuda` times. */
static void compare_source(ng_source *s, const int64_t *idx, int64_t count) {
    int64_t shape[5] = {count}, e = ng_source_example_size(s);
    for (int d = 0; d < s->ndim; d++) shape[d + 1] = s->shape[d];
    ng_tensor g = ng_tensor_new(NG_F32, NG_CUDA, s->ndim + 1, shape, "gpu");
    int32_t *y = malloc(sizeof(int32_t) * (size_t)count), yj;
    float *one = malloc(sizeof(float) * (size_t)e);
    ng_source_fill_batch(s, 0, idx, count, &g, y);
    ng_tensor h = ng_tensor_to(&g, NG_CPU, "gpu-on-host");
    int64_t bad = 0, bad_y = 0;
    for (int64_t j = 0; j < count; j++) {
        ng_source_fill(s, 0, idx[j], one, &yj);
        bad += memcmp(one, (float *)h.data + j * e, sizeof(float) * (size_t)e) != 0;
        bad_y += yj != y[j];
    }
    NG_TEST(!bad && !bad_y, "%s: %lld of %lld device examples and %lld labels differ from fill",
            s->name, (long long)bad, (long long)count, (long long)bad_y);
    ng_tensor_free(&g), ng_tensor_free(&h);
    free(y), free(one);
}

static void test_sources(uint64_t seed) {
    int64_t idx[64];
    for (int j = 0; j < 64; j++) idx[j] = (j * 37 + 5) % 200;
    struct {
        int64_t side, points, patch;
        int colour, count;
    } v[] = {{32, 2000, 0, 0, 64}, {32, 2000, 3, 0, 64},   {32, 2000, 0, 1, 64},
             {64, 5003, 5, 1, 64}, {224, 100000, 0, 0, 6}, {224, 100000, 3, 1, 6}};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        ng_fractal_config c = {.categories = 20,
                               .instances = 10,
                               .side = v[k].side,
                               .points = v[k].points,
                               .patch = v[k].patch,
                               .colour = v[k].colour,
                               .threshold = 0.2,
                               .seed = seed,
                               .name = "fractal"};
        ng_source *s = ng_fractal_new(&c);
        compare_source(s, idx, v[k].count);
        ng_source_free(s);
    }
    ng_fractal3d_config c3 = {.categories = 8,
                              .instances = 25,
                              .side = 16,
                              .points = 16384,
                              .threshold = 0.1,
                              .seed = seed,
                              .name = "fractal3d"};
    ng_source *s3 = ng_fractal3d_new(&c3);
    compare_source(s3, idx, 32);
    ng_source_free(s3);
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
        ng_fractal3d_instance(&cat, seed, c, inst, NG_FRACTAL_AUGMENT_ALL, &f[j], &flips[j]);
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
    test_painted(seed);
    test_fallback(seed);
    test_sources(seed);
    return ng_test_finish("test_fractal_gpu");
}
