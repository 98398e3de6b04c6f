/* Data sources (data/source.h): the in-memory data set behind the interface, and the synthetic 3D
 * volumes: determinism from (seed, split, index) alone, balanced labels, noise of the stated
 * law, the blob's long axis along the class's direction, sources far larger than memory, and
 * errors naming the key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/source.h"
#include "testing.h"

static int64_t pick(int64_t n) {
    int64_t v = (int64_t)((ng_test_uniform() + 1.0) * 0.5 * (double)n);
    return v < n ? v : n - 1;
}

/* Fills and returns a fresh buffer for example i (poisoned first, so unwritten voxels show). */
static float *get(ng_source *s, int64_t epoch, int64_t i, int32_t *y) {
    int64_t e = ng_source_example_size(s);
    float *x = malloc(sizeof(float) * (size_t)e);
    for (int64_t p = 0; p < e; p++) x[p] = NAN;
    *y = -1;
    ng_source_fill(s, epoch, i, x, y);
    return x;
}

static void test_dataset_source(uint64_t seed) {
    int64_t shape[3] = {2, 5, 3};
    ng_dataset *d = ng_synthetic(37, 3, shape, 4, 1.0, seed, 0, "rows");
    ng_dataset *copy = ng_synthetic(37, 3, shape, 4, 1.0, seed, 0, "rows");
    ng_source *s = ng_source_dataset(d); /* owns d now */
    NG_TEST(s->n == 37 && s->ndim == 3 && s->shape[0] == 2 && s->shape[1] == 5 &&
                s->shape[2] == 3 && s->classes == 4 && s->dtype == NG_F32 &&
                ng_source_example_size(s) == 30 && !strcmp(s->name, "rows"),
            "dataset source: n %lld, %d dims, classes %lld, name %s", (long long)s->n, s->ndim,
            (long long)s->classes, s->name);
    int rows_ok = 1;
    for (int t = 0; t < 20; t++) {
        int64_t i = pick(37), ep = pick(5);
        int32_t y;
        float *x = get(s, ep, i, &y);
        rows_ok &= !memcmp(x, copy->x + i * 30, sizeof(float) * 30) && y == copy->y[i];
        free(x);
    }
    NG_TEST(rows_ok, "dataset source: example i of any epoch is row i and its label");
    float buf[30];
    int32_t y;
    NG_TEST_ERROR(ng_source_fill(s, 0, 37, buf, &y), "rows");
    NG_TEST_ERROR(ng_source_fill(s, 0, -1, buf, &y), "outside");
    NG_TEST_ERROR(ng_source_dataset(NULL), "no data");
    ng_source_free(s);
    ng_dataset_free(copy);
}

static ng_synthetic3d_config vol(uint64_t seed, int64_t side, int64_t channels, int64_t classes,
                                 double noise) {
    return (ng_synthetic3d_config){.n = 1000,
                                   .side = side,
                                   .channels = channels,
                                   .classes = classes,
                                   .noise = noise,
                                   .seed = seed,
                                   .split = 0,
                                   .name = "vol"};
}

static int64_t count_differ(const float *a, const float *b, int64_t n) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) k += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return k;
}

static void test_volumes_determinism(uint64_t seed) {
    ng_synthetic3d_config c = vol(seed, 9, 2, 5, 0.7);
    ng_source *s = ng_synthetic3d_new(&c);
    int64_t e = ng_source_example_size(s);
    NG_TEST(s->n == 1000 && s->ndim == 4 && s->shape[0] == 2 && s->shape[1] == 9 &&
                s->shape[2] == 9 && s->shape[3] == 9 && e == 2 * 729 && s->classes == 5 &&
                s->dtype == NG_F32,
            "volumes: shape [%lld,%lld,%lld,%lld], classes %lld", (long long)s->shape[0],
            (long long)s->shape[1], (long long)s->shape[2], (long long)s->shape[3],
            (long long)s->classes);
    int64_t i = pick(1000), j = (i + 1 + pick(998)) % 1000;
    int32_t yi, yj, y2, y3;
    float *a = get(s, 0, i, &yi);
    float *other = get(s, 3, j, &yj); /* another example in between, another epoch */
    float *b = get(s, 2, i, &y2);
    ng_source *s2 = ng_synthetic3d_new(&c); /* a second source of the same config */
    float *c2 = get(s2, 0, i, &y3);
    int64_t nonfinite = 0;
    for (int64_t p = 0; p < e; p++) nonfinite += !isfinite(a[p]);
    NG_TEST(!nonfinite, "volumes: %lld voxels unwritten or not finite", (long long)nonfinite);
    NG_TEST(!count_differ(a, b, e) && !count_differ(a, c2, e) && yi == y2 && yi == y3,
            "volumes: example %lld is the same bytes whatever came before, in any epoch and from "
            "any source of the same config",
            (long long)i);
    NG_TEST(count_differ(a, other, e) > e * 9 / 10, "volumes: examples %lld and %lld differ",
            (long long)i, (long long)j);
    NG_TEST(yi == i % 5 && yj == j % 5, "volumes: labels %d %d of examples %lld %lld are i %% 5",
            yi, yj, (long long)i, (long long)j);
    /* Another split and another seed share nothing. */
    ng_synthetic3d_config t = c;
    t.split = 1;
    ng_source *st = ng_synthetic3d_new(&t);
    t = c;
    t.seed = seed + 1;
    ng_source *so = ng_synthetic3d_new(&t);
    int32_t y;
    float *xt = get(st, 0, i, &y), *xo = get(so, 0, i, &y);
    NG_TEST(count_differ(a, xt, e) > e * 9 / 10 && count_differ(a, xo, e) > e * 9 / 10,
            "volumes: another split or seed gives other volumes");
    free(a), free(b), free(other), free(c2), free(xt), free(xo);
    ng_source_free(s), ng_source_free(s2), ng_source_free(st), ng_source_free(so);
}

/* A batch filled by 2-4 workers (the volumes are reentrant: drawn in parallel) is fill's examples
 * in the order asked, repeats included. */
static void test_volumes_workers(uint64_t seed) {
    ng_synthetic3d_config c = vol(seed, 7, 2, 4, 0.5);
    ng_source *s = ng_synthetic3d_new(&c);
    enum { B = 9 };
    int64_t e = ng_source_example_size(s), idx[B];
    for (int j = 0; j < B; j++) idx[j] = j == 4 ? idx[1] : pick(1000);
    float *x = malloc(sizeof(float) * (size_t)(B * e));
    int32_t y[B];
    ng_tensor t = ng_tensor_wrap(x, NG_F32, NG_CPU, 5, (int64_t[]){B, 2, 7, 7, 7}, "batch");
    s->workers = 2 + (int)pick(3);
    ng_source_fill_batch(s, 1, idx, B, &t, y);
    int64_t bad = 0;
    for (int j = 0; j < B; j++) {
        int32_t yj;
        float *one = get(s, 1, idx[j], &yj);
        bad += count_differ(one, x + j * e, e) + (yj != y[j]);
        free(one);
    }
    NG_TEST(!bad, "volumes: a batch filled by %d workers differs from fill in %lld places",
            s->workers, (long long)bad);
    free(x);
    ng_source_free(s);
}

/* x(noise sigma) - x(noise 0) is the noise: mean 0, std sigma, the same blob in every channel. */
static void test_volumes_noise(uint64_t seed) {
    double sigma = 0.3 + ng_test_uniform() * 0.2 + 0.2;
    ng_synthetic3d_config c = vol(seed, 16, 3, 7, sigma), q = vol(seed, 16, 3, 7, 0.0);
    ng_source *s = ng_synthetic3d_new(&c), *clean = ng_synthetic3d_new(&q);
    int64_t e = ng_source_example_size(s), V = 16 * 16 * 16;
    double sum = 0, sq = 0, m = 0;
    int64_t channels_differ = 0, labels_differ = 0;
    for (int t = 0; t < 8; t++) {
        int64_t i = pick(1000);
        int32_t y1, y2;
        float *x = get(s, 0, i, &y1), *b = get(clean, 0, i, &y2);
        labels_differ += y1 != y2;
        for (int64_t p = 0; p < e; p++) {
            double n = (double)x[p] - (double)b[p];
            sum += n, sq += n * n, m += 1;
        }
        for (int64_t ch = 1; ch < 3; ch++) channels_differ += count_differ(b, b + ch * V, V);
        free(x), free(b);
    }
    double mean = sum / m, sd = sqrt(sq / m - mean * mean);
    /* 98,304 draws: the mean's standard error is sigma/313, the std's sigma/443. */
    NG_TEST(fabs(mean) < 6 * sigma / 313 && fabs(sd / sigma - 1) < 6.0 / 443,
            "volumes: noise has mean %g (want 0) and std %g (want %g)", mean, sd, sigma);
    NG_TEST(!channels_differ && !labels_differ,
            "volumes: noise-free channels agree (%lld voxels differ), labels do not depend on the "
            "noise (%lld differ)",
            (long long)channels_differ, (long long)labels_differ);
    ng_source_free(s), ng_source_free(clean);
}

/* The blob's long axis is the class's direction: of the 13 directions, the one along which the
 * noise-free volume's second moment is largest is the class's, for every class. */
static void test_volumes_direction(uint64_t seed) {
    ng_synthetic3d_config c = vol(seed, 24, 1, 13, 0.0);
    ng_source *s = ng_synthetic3d_new(&c);
    int64_t D = 24, right = 0, total = 0;
    double peak_min = INFINITY;
    for (int64_t k = 0; k < 39; k++) {
        int64_t i = pick(76) * 13 + k % 13; /* class k % 13 */
        int32_t y;
        float *x = get(s, 0, i, &y);
        double w = 0, mu[3] = {0}, M[3][3] = {{0}}, peak = 0;
        for (int64_t z = 0; z < D; z++)
            for (int64_t r = 0; r < D; r++)
                for (int64_t q = 0; q < D; q++) {
                    double v = x[(z * D + r) * D + q], p[3] = {(double)q, (double)r, (double)z};
                    w += v, peak = fmax(peak, v);
                    for (int a = 0; a < 3; a++) mu[a] += v * p[a];
                }
        for (int a = 0; a < 3; a++) mu[a] /= w;
        for (int64_t z = 0; z < D; z++)
            for (int64_t r = 0; r < D; r++)
                for (int64_t q = 0; q < D; q++) {
                    double v = x[(z * D + r) * D + q];
                    double p[3] = {q - mu[0], r - mu[1], z - mu[2]};
                    for (int a = 0; a < 3; a++)
                        for (int b = 0; b < 3; b++) M[a][b] += v * p[a] * p[b] / w;
                }
        int best = -1;
        double best_v = -1;
        for (int dc = 0; dc < 13; dc++) {
            double d[3], v = 0;
            ng_synthetic3d_direction(dc, d);
            for (int a = 0; a < 3; a++)
                for (int b = 0; b < 3; b++) v += d[a] * M[a][b] * d[b];
            if (v > best_v) best_v = v, best = dc;
        }
        right += best == y && y == k % 13, total++;
        peak_min = fmin(peak_min, peak);
        free(x);
    }
    NG_TEST(right == total, "volumes: %lld of %lld blobs have their long axis along their class",
            (long long)right, (long long)total);
    /* The centre lies inside the cube, so the blob's peak (amplitude 1) is nearly reached. */
    NG_TEST(peak_min > 0.8 && peak_min <= 1.0, "volumes: the lowest blob peak is %g", peak_min);
    ng_source_free(s);
}

/* A source far larger than memory: nothing is held, any example can be made alone. */
static void test_volumes_large(uint64_t seed) {
    ng_synthetic3d_config c = vol(seed, 128, 1, 2, 1.0);
    c.n = 1000000000; /* 8 PB if it were stored */
    ng_source *s = ng_synthetic3d_new(&c);
    int32_t y;
    float *x = get(s, 0, c.n - 1, &y);
    int64_t e = ng_source_example_size(s), bad = 0;
    double sum = 0;
    for (int64_t p = 0; p < e; p++) bad += !isfinite(x[p]), sum += x[p];
    NG_TEST(!bad && y == (int32_t)((c.n - 1) % 2) && sum > 0,
            "volumes: the last of 1e9 128^3 volumes: %lld bad voxels, label %d, sum %g",
            (long long)bad, y, sum);
    free(x);
    ng_source_free(s);
}

static void test_volumes_errors(uint64_t seed) {
    ng_source *volatile s = NULL;
    ng_synthetic3d_config c = vol(seed, 8, 1, 2, 1.0);
    c.classes = 1;
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "data.synthetic.classes");
    c.classes = 14;
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "data.synthetic.classes");
    c = vol(seed, 1, 1, 2, 1.0);
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "data.synthetic.side");
    c = vol(seed, 8, 0, 2, 1.0);
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "data.synthetic.channels");
    c = vol(seed, 8, 1, 2, -1.0);
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "data.synthetic.noise");
    c = vol(seed, 8, 1, 2, 1.0);
    c.n = 0;
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "vol");
    c = vol(seed, 65536, 1024, 2, 1.0);
    NG_TEST_ERROR(s = ng_synthetic3d_new(&c), "too large");
    c = vol(seed, 4, 1, 2, 1.0);
    s = ng_synthetic3d_new(&c);
    float buf[64];
    int32_t y;
    NG_TEST_ERROR(ng_source_fill(s, 0, 1000, buf, &y), "vol");
    NG_TEST_ERROR(ng_synthetic3d_direction(13, (double[3]){0}), "class 13");
    ng_source_free(s);
}

int main(void) {
    uint64_t seed = ng_test_seed();
    test_dataset_source(seed);
    test_volumes_determinism(seed);
    test_volumes_workers(seed);
    test_volumes_noise(seed);
    test_volumes_direction(seed);
    test_volumes_large(seed);
    test_volumes_errors(seed);
    return ng_test_finish("test_source");
}
