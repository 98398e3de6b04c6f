/* Tests for data/fractal3d.h: voxelization against a brute-force reference (every voxel against
 * every point) on small random clouds, the streaming renderer against the point cloud of an
 * independent chaos game, attractors whose voxels are known (a diagonal segment, a point, a flat
 * set), category search determinism and its threshold, instances, the source, and the loader
 * resuming a fractal3d stream bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/fractal.h"
#include "data/fractal3d.h"
#include "data/loader.h"
#include "testing.h"

/* Uniform in [0, 1) and in [0, n). */
static double u01(void) {
    return 0.5 * (ng_test_uniform() + 1.0);
}

static int64_t pick(int64_t n) {
    int64_t v = (int64_t)(u01() * (double)n);
    return v < n ? v : n - 1;
}

/* Voxel (i, j, k) is occupied when some point's (x, y, z) falls in it: per axis, the point's
 * scaled offset (v - lo) * (side / ext) lies in [index, index + 1), the last voxel also takes
 * everything from side - 1 on, and a flat axis (extent below 1e-9 (1 + |lo|)) puts every point in
 * the middle voxel. Mirrors apply after. A scan of all points for every voxel. */
static void brute_voxels(const double *xyz, int64_t n, int64_t side, int flips, uint8_t *occ) {
    double lo[3], hi[3];
    for (int a = 0; a < 3; a++) {
        lo[a] = xyz[a], hi[a] = xyz[a];
        for (int64_t p = 1; p < n; p++) {
            if (xyz[3 * p + a] < lo[a]) lo[a] = xyz[3 * p + a];
            if (xyz[3 * p + a] > hi[a]) hi[a] = xyz[3 * p + a];
        }
    }
    for (int64_t k = 0; k < side; k++)
        for (int64_t j = 0; j < side; j++)
            for (int64_t i = 0; i < side; i++) {
                int64_t want[3] = {i, j, k}, on = 0;
                for (int a = 0; a < 3; a++)
                    if (flips >> a & 1) want[a] = side - 1 - want[a];
                for (int64_t p = 0; p < n && !on; p++) {
                    int in = 1;
                    for (int a = 0; a < 3; a++) {
                        double ext = hi[a] - lo[a];
                        if (ext < 1e-9 * (1 + fabs(lo[a]))) {
                            in &= want[a] == side / 2;
                            continue;
                        }
                        double u = (xyz[3 * p + a] - lo[a]) * ((double)side / ext);
                        int64_t w = want[a];
                        in &= (u >= (double)w || w == 0) && (u < (double)(w + 1) || w == side - 1);
                    }
                    on = in;
                }
                occ[(k * side + j) * side + i] = (uint8_t)on;
            }
}

static void test_voxelize(void) {
    int bad = 0, cases = 0;
    for (int t = 0; t < 300; t++) {
        int64_t side = 1 + pick(7), n = 1 + pick(40);
        int flips = (int)pick(8);
        double *xyz = malloc(sizeof(double) * (size_t)(3 * n));
        /* Coordinates on a coarse grid half the time, so points land on voxel faces exactly; a
         * flat axis now and then. */
        int coarse = t % 2, flat = (int)pick(4);
        for (int64_t p = 0; p < 3 * n; p++) {
            double v = 2 * ng_test_uniform();
            if (coarse) v = floor(v * 4) / 4;
            if ((int)(p % 3) == flat) v = 0.375;
            xyz[p] = v;
        }
        uint8_t *a = malloc((size_t)(side * side * side)),
                *b = malloc((size_t)(side * side * side));
        ng_voxelize(xyz, n, side, flips, a);
        brute_voxels(xyz, n, side, flips, b);
        bad += memcmp(a, b, (size_t)(side * side * side)) != 0;
        cases++;
        free(a), free(b), free(xyz);
    }
    NG_TEST(bad == 0, "ng_voxelize differs from the brute-force reference in %d of %d clouds", bad,
            cases);
}

/* The documented chaos game, written again from core/rng.h alone. */
static int reference_points(const ng_ifs3 *f, int64_t points, ng_rng_key k, double *xyz) {
    double prob[4], tot = 0;
    for (int j = 0; j < f->nmaps; j++) {
        const double *a = f->m[j].a;
        prob[j] = fabs(a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6]) +
                       a[2] * (a[3] * a[7] - a[4] * a[6]));
        tot += prob[j];
    }
    double x = 0, y = 0, z = 0;
    for (int64_t n = 0; n < points; n++) {
        uint32_t w[4];
        ng_rng_block(k, (uint64_t)n / 4, w);
        double u = (double)ng_rng_u01(w[n % 4]), acc = 0;
        int j = 0;
        for (; j < f->nmaps - 1; j++) {
            acc += prob[j];
            if (u <= acc / tot) break;
        }
        const double *a = f->m[j].a, *t = f->m[j].t;
        double nx = a[0] * x + a[1] * y + a[2] * z + t[0];
        double ny = a[3] * x + a[4] * y + a[5] * z + t[1];
        double nz = a[6] * x + a[7] * y + a[8] * z + t[2];
        x = nx, y = ny, z = nz;
        if (!(fabs(x) <= 1e6 && fabs(y) <= 1e6 && fabs(z) <= 1e6)) return 0;
        if (n >= NG_FRACTAL_SKIP) {
            double *q = xyz + 3 * (n - NG_FRACTAL_SKIP);
            q[0] = x, q[1] = y, q[2] = z;
        }
    }
    return 1;
}

static void test_renderer(uint64_t seed) {
    const int64_t side = 12, points = 2500, kept = points - NG_FRACTAL_SKIP;
    int64_t v = side * side * side;
    uint8_t *a = malloc((size_t)v), *b = malloc((size_t)v), *c = malloc((size_t)v);
    double *xyz = malloc(sizeof(double) * (size_t)(3 * kept)),
           *ref = malloc(sizeof(double) * (size_t)(3 * kept));
    int checked = 0;
    for (int64_t cat = 0; cat < 6; cat++) {
        ng_ifs3 cg, f;
        int flips;
        ng_fractal3d_category(seed, cat, 0.08, &cg);
        ng_fractal3d_instance(&cg, seed, cat, 2 + cat, NG_FRACTAL_AUGMENT_ALL, &f, &flips);
        ng_rng_key k = ng_fractal3d_points_key(seed, cat, 2 + cat);
        int ok = ng_fractal3d_occupancy(&f, points, k, side, flips, a);
        int okp = ng_fractal3d_points(&f, points, k, xyz);
        int okr = reference_points(&f, points, k, ref);
        NG_TEST(ok == okp && ok == okr, "category %lld: divergence reported %d/%d/%d",
                (long long)cat, ok, okp, okr);
        if (!ok) continue;
        checked++;
        NG_TEST(!memcmp(xyz, ref, sizeof(double) * (size_t)(3 * kept)),
                "category %lld: the point cloud differs from the reference chaos game",
                (long long)cat);
        ng_voxelize(xyz, kept, side, flips, b);
        brute_voxels(ref, kept, side, flips, c);
        NG_TEST(!memcmp(a, b, (size_t)v) && !memcmp(a, c, (size_t)v),
                "category %lld: the streaming voxels differ from the voxelized cloud",
                (long long)cat);
        /* The bounding box fills the grid: every face of the cube has a voxel lit. */
        int faces = 0;
        for (int ax = 0; ax < 3; ax++)
            for (int end = 0; end < 2; end++) {
                int any = 0;
                for (int64_t p = 0; p < v; p++) {
                    int64_t idx[3] = {p % side, p / side % side, p / (side * side)};
                    any |= a[p] && idx[ax] == (end ? side - 1 : 0);
                }
                faces += any;
            }
        NG_TEST(faces == 6, "category %lld: %d of 6 faces of the grid lit", (long long)cat, faces);
    }
    NG_TEST(checked >= 4, "only %d of 6 instances rendered without diverging", checked);

    /* The render entry point on the host: the same volumes as the occupancy, as +1/-1. */
    ng_ifs3 fs[2];
    int fl[2];
    ng_rng_key ks[2];
    for (int j = 0; j < 2; j++) {
        ng_ifs3 cg;
        ng_fractal3d_category(seed, j, 0.08, &cg);
        ng_fractal3d_instance(&cg, seed, j, 0, NG_FRACTAL_AUGMENT_ALL, &fs[j], &fl[j]);
        ks[j] = ng_fractal3d_points_key(seed, j, 0);
    }
    ng_tensor t = ng_tensor_new(NG_F32, NG_CPU, 5, (int64_t[]){2, 1, side, side, side}, "vols");
    ng_fractal3d_render(fs, fl, ks, points, &t);
    int same = 1;
    for (int j = 0; j < 2; j++) {
        ng_fractal3d_occupancy(&fs[j], points, ks[j], side, fl[j], a);
        const float *x = (const float *)t.data + j * v;
        for (int64_t p = 0; p < v; p++) same &= x[p] == (a[p] ? 1.0f : -1.0f);
    }
    NG_TEST(same, "ng_fractal3d_render differs from the occupancy");
    ng_tensor bad = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){2, side, side, side}, "flat");
    NG_TEST_ERROR(ng_fractal3d_render(fs, fl, ks, points, &bad), "flat");
    ng_tensor_free(&bad);
    ng_tensor_free(&t);
    free(a), free(b), free(c), free(xyz), free(ref);
}

/* Attractors with known voxels. */
static void test_known(void) {
    const int64_t side = 8, v = side * side * side;
    uint8_t occ[8 * 8 * 8];
    /* Halving toward the origin and toward (1, 1, 1): every point has x = y = z (the same
     * arithmetic on each), so exactly the main diagonal lights up, mirrored by the flips. */
    ng_ifs3 diag = {.nmaps = 2};
    for (int j = 0; j < 2; j++) {
        double a[9] = {0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5};
        memcpy(diag.m[j].a, a, sizeof a);
        for (int r = 0; r < 3; r++) diag.m[j].t[r] = j * 0.5;
    }
    for (int flips = 0; flips < 8; flips++) {
        int ok = ng_fractal3d_occupancy(&diag, 5000, (ng_rng_key){.seed = 9, .stream = 3}, side,
                                        flips, occ);
        int bad = 0;
        for (int64_t p = 0; p < v; p++) {
            int64_t i = p % side, j = p / side % side, k = p / (side * side);
            if (flips & 1) i = side - 1 - i;
            if (flips & 2) j = side - 1 - j;
            if (flips & 4) k = side - 1 - k;
            bad += occ[p] != (i == j && j == k);
        }
        NG_TEST(ok && bad == 0, "diagonal IFS, flips %d: %d voxels off the diagonal", flips, bad);
    }
    /* One contraction toward the start: a point, the middle voxel only. */
    ng_ifs3 pt = {.nmaps = 1};
    memcpy(pt.m[0].a, (double[9]){0.5, 0, 0, 0, 0.5, 0, 0, 0, 0.5}, 9 * sizeof(double));
    ng_fractal3d_occupancy(&pt, 300, (ng_rng_key){.seed = 1}, side, 0, occ);
    int lit = 0;
    for (int64_t p = 0; p < v; p++) lit += occ[p];
    NG_TEST(lit == 1 && occ[(side / 2 * side + side / 2) * side + side / 2],
            "a point attractor should light only the middle voxel (%d lit)", lit);
    /* Maps that flatten z have det 0: the rule gives such a set no probability, nothing is lit. */
    ng_ifs3 flat = {.nmaps = 2};
    for (int j = 0; j < 2; j++) {
        memcpy(flat.m[j].a, (double[9]){0.5, 0, 0, 0, 0.5, 0, 0, 0, 0}, 9 * sizeof(double));
        flat.m[j].t[0] = j * 0.5;
    }
    int ok = ng_fractal3d_occupancy(&flat, 300, (ng_rng_key){.seed = 1}, side, 0, occ);
    lit = 0;
    for (int64_t p = 0; p < v; p++) lit += occ[p];
    NG_TEST(!ok && lit == 0, "a flat IFS (det 0) should fill nothing (%d lit)", lit);
    NG_TEST(ng_fractal3d_filling(&flat, 1, 0) == 0, "a flat IFS has a filling rate");
    /* An expanding map diverges: nothing lit, reported. */
    ng_ifs3 big = {.nmaps = 1};
    memcpy(big.m[0].a, (double[9]){3, 0, 0, 0, 3, 0, 0, 0, 3}, 9 * sizeof(double));
    big.m[0].t[0] = 1;
    ok = ng_fractal3d_occupancy(&big, 300, (ng_rng_key){.seed = 1}, side, 0, occ);
    lit = 0;
    for (int64_t p = 0; p < v; p++) lit += occ[p];
    NG_TEST(!ok && lit == 0, "an expanding IFS should be reported and fill nothing");
}

/* IFS a and b are the same bits (their maps; the struct may hold padding). */
static int same_ifs3(const ng_ifs3 *a, const ng_ifs3 *b) {
    return a->nmaps == b->nmaps && !memcmp(a->m, b->m, sizeof(ng_ifs3_map) * (size_t)a->nmaps);
}

static void test_search(uint64_t seed) {
    ng_ifs3 a[10], b[10], c[10];
    int differ = 0;
    for (int64_t k = 0; k < 10; k++) {
        int64_t ta = ng_fractal3d_category(seed, k, 0.1, &a[k]);
        int64_t tb = ng_fractal3d_category(seed, k, 0.1, &b[k]);
        ng_fractal3d_category(seed + 1, k, 0.1, &c[k]);
        NG_TEST(ta == tb && !memcmp(&a[k], &b[k], sizeof a[k]),
                "category %lld differs between two searches", (long long)k);
        differ += memcmp(&a[k], &c[k], sizeof a[k]) != 0;
        NG_TEST(a[k].nmaps >= 2 && a[k].nmaps <= 4, "category %lld has %d maps", (long long)k,
                a[k].nmaps);
        int in_range = 1;
        for (int j = 0; j < a[k].nmaps; j++)
            for (int q = 0; q < 12; q++) {
                double p = q < 9 ? a[k].m[j].a[q] : a[k].m[j].t[q - 9];
                in_range &= p >= -1 && p <= 1;
            }
        NG_TEST(in_range, "category %lld has a parameter outside [-1, 1]", (long long)k);
        double r = ng_fractal3d_filling(&a[k], seed, k);
        NG_TEST(r >= 0.1, "category %lld accepted at filling rate %g < 0.1", (long long)k, r);
        /* A higher threshold takes a later try (or the same one when it already qualifies). */
        int64_t th = ng_fractal3d_category(seed, k, 0.15, &c[k]);
        r = ng_fractal3d_filling(&c[k], seed, k);
        NG_TEST(r >= 0.15 && th >= ta,
                "category %lld at 0.15: rate %g after %lld tries (%lld at "
                "0.1)",
                (long long)k, r, (long long)th, (long long)ta);
    }
    NG_TEST(differ == 10, "another seed gives %d of 10 categories different", differ);
    int distinct = 1;
    for (int k = 1; k < 10; k++) distinct &= memcmp(&a[k], &a[0], sizeof a[0]) != 0;
    NG_TEST(distinct, "categories of one seed repeat");
    NG_TEST_ERROR(ng_fractal3d_category(seed, 0, 0, &a[0]), "data.fractal3d.threshold");
    NG_TEST_ERROR(ng_fractal3d_category(seed, 0, 1.5, &a[0]), "data.fractal3d.threshold");

    /* Instances: deterministic, one parameter scaled by a listed factor, flips in 0-7. */
    int flips_seen = 0;
    for (int64_t i = 0; i < 64; i++) {
        ng_ifs3 p1, p2;
        int f1, f2;
        ng_fractal3d_instance(&a[3], seed, 3, i, NG_FRACTAL_AUGMENT_ALL, &p1, &f1);
        ng_fractal3d_instance(&a[3], seed, 3, i, NG_FRACTAL_AUGMENT_ALL, &p2, &f2);
        NG_TEST(!memcmp(&p1, &p2, sizeof p1) && f1 == f2, "instance %lld is not deterministic",
                (long long)i);
        flips_seen |= 1 << f1;
        const double *o = (const double *)a[3].m, *nv = (const double *)p1.m;
        int changed = 0, factor_ok = 1;
        for (int q = 0; q < 12 * a[3].nmaps; q++)
            if (o[q] != nv[q]) {
                changed++;
                double r = nv[q] / o[q];
                factor_ok &= fabs(r - 0.8) < 1e-12 || fabs(r - 0.9) < 1e-12 ||
                             fabs(r - 1.1) < 1e-12 || fabs(r - 1.2) < 1e-12;
            }
        NG_TEST(changed == 1 && factor_ok && f1 >= 0 && f1 < 8,
                "instance %lld should scale one parameter (%d changed), flips %d", (long long)i,
                changed, f1);
        /* An augmentation left out (data.fractal3d.weight_variation, flip false) leaves the other
         * as it was: the category's IFS bit for bit with the same flips, or no flips with the
         * same IFS. */
        ng_ifs3 pw, pf, p0;
        int fw, ff, f0;
        ng_fractal3d_instance(&a[3], seed, 3, i, NG_FRACTAL_FLIP, &pw, &fw);
        ng_fractal3d_instance(&a[3], seed, 3, i, NG_FRACTAL_WEIGHT_VARIATION, &pf, &ff);
        ng_fractal3d_instance(&a[3], seed, 3, i, 0, &p0, &f0);
        NG_TEST(same_ifs3(&pw, &a[3]) && fw == f1 && same_ifs3(&pf, &p1) && ff == 0 &&
                    same_ifs3(&p0, &a[3]) && f0 == 0,
                "instance %lld with an augmentation left out: IFS %s / %s / %s, flips %d %d %d",
                (long long)i, same_ifs3(&pw, &a[3]) ? "ok" : "changed",
                same_ifs3(&pf, &p1) ? "ok" : "differs", same_ifs3(&p0, &a[3]) ? "ok" : "changed",
                fw, ff, f0);
    }
    NG_TEST(flips_seen == 0xff, "64 instances should use all 8 flips (mask %x)", flips_seen);
}

static void test_source(uint64_t seed) {
    ng_fractal3d_config cfg = {
        .categories = 4, .instances = 3, .side = 8, .points = 3000, .threshold = 0.1, .seed = seed};
    ng_source *tr = ng_fractal3d_new(&cfg), *tr2 = ng_fractal3d_new(&cfg);
    ng_fractal3d_config tc = cfg;
    tc.first_instance = 3, tc.instances = 2;
    ng_source *te = ng_fractal3d_new(&tc);
    NG_TEST(tr->n == 12 && te->n == 8 && tr->classes == 4 && tr->ndim == 4 && tr->shape[0] == 1 &&
                tr->shape[1] == 8 && tr->shape[2] == 8 && tr->shape[3] == 8 &&
                ng_source_example_size(tr) == 512,
            "source sizes: n %lld / %lld, classes %lld, ndim %d", (long long)tr->n,
            (long long)te->n, (long long)tr->classes, tr->ndim);
    NG_TEST(!memcmp(ng_fractal3d_source_categories(tr), ng_fractal3d_source_categories(te),
                    4 * sizeof(ng_ifs3)),
            "train and test splits should share the categories");
    static float x[12][512], t[8][512], x2[512];
    int32_t y[12], yt[8], y2;
    int det = 1, bin = 1, lit_ok = 1;
    for (int64_t i = 0; i < 12; i++) {
        ng_source_fill(tr, 0, i, x[i], &y[i]);
        ng_source_fill(tr2, 5, i, x2, &y2); /* another source, another epoch: the same volume */
        det &= !memcmp(x[i], x2, sizeof x2) && y2 == y[i];
        int lit = 0;
        for (int p = 0; p < 512; p++) {
            bin &= x[i][p] == 1.0f || x[i][p] == -1.0f;
            lit += x[i][p] > 0;
        }
        lit_ok &= lit > 8;
        NG_TEST(y[i] == i % 4, "example %lld labelled %d", (long long)i, y[i]);
    }
    NG_TEST(det, "fills are not deterministic");
    NG_TEST(bin && lit_ok, "volumes should be +1/-1 with voxels lit");
    int same = 0;
    for (int64_t i = 0; i < 8; i++) ng_source_fill(te, 0, i, t[i], &yt[i]);
    for (int cat = 0; cat < 4; cat++) {
        float *v[5] = {x[cat], x[cat + 4], x[cat + 8], t[cat], t[cat + 4]};
        for (int p = 0; p < 5; p++)
            for (int q = p + 1; q < 5; q++) same += !memcmp(v[p], v[q], sizeof x2);
    }
    NG_TEST(same == 0, "%d pairs of instances of one category are identical", same);
    NG_TEST_ERROR(ng_source_fill(tr, 0, 12, x2, &y2), "fractal3d");
    /* A host batch rendered by 3 workers: fill's volumes, in the order asked. */
    const int64_t idx[6] = {11, 0, 5, 5, 7, 2};
    static float b[6][512];
    int32_t yb[6];
    ng_tensor bt = ng_tensor_wrap(b, NG_F32, NG_CPU, 5, (int64_t[]){6, 1, 8, 8, 8}, "batch");
    tr2->workers = 3;
    ng_source_fill_batch(tr2, 0, idx, 6, &bt, yb);
    int batch_ok = 1;
    for (int j = 0; j < 6; j++)
        batch_ok &= !memcmp(b[j], x[idx[j]], sizeof x2) && yb[j] == y[idx[j]];
    NG_TEST(batch_ok, "a batch rendered by 3 workers differs from fill's volumes");

    /* The loader over the source: seeks with a prefetching thread give the uninterrupted batches
     * bit for bit (resume), and augmentation is keyed the same way. */
    ng_loader_config lc = {.source = tr,
                           .batch = 4,
                           .shuffle = 1,
                           .seed = seed,
                           .world = 1,
                           .augment = {.crop_pad = 1, .hflip = 1}};
    ng_loader *l = ng_loader_new(&lc);
    int64_t nb = ng_loader_batches_per_epoch(l), e = 512;
    float *rec = malloc(sizeof(float) * (size_t)(3 * nb * 4 * e));
    int32_t ry[3 * 3 * 4];
    for (int64_t g = 0; g < 3 * nb; g++) {
        ng_batch b = ng_loader_next(l);
        memcpy(rec + g * 4 * e, b.x, sizeof(float) * (size_t)(b.b * e));
        memcpy(ry + g * 4, b.y, sizeof(int32_t) * (size_t)b.b);
    }
    ng_loader_free(l);
    lc.prefetch = 2;
    l = ng_loader_new(&lc);
    int ok = 1;
    for (int r = 0; r < 8; r++) {
        int64_t ep = pick(3), ix = pick(nb);
        ng_loader_seek(l, ep, ix);
        for (int k = 0; k < 2 && ep * nb + ix + k < 3 * nb; k++) {
            ng_batch b = ng_loader_next(l);
            int64_t g = ep * nb + ix + k;
            ok &= !memcmp(b.x, rec + g * 4 * e, sizeof(float) * (size_t)(b.b * e)) &&
                  !memcmp(b.y, ry + g * 4, sizeof(int32_t) * (size_t)b.b);
        }
    }
    NG_TEST(ok, "loader over fractal3d: seeks with a prefetching thread continue exactly");
    ng_loader_free(l);
    free(rec);
    ng_source_free(tr), ng_source_free(tr2), ng_source_free(te);

    ng_fractal3d_config bad = cfg;
    bad.side = 3;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.side");
    bad = cfg, bad.side = 2000;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.side");
    bad = cfg, bad.points = 20;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.points");
    bad = cfg, bad.categories = 1;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.categories");
    bad = cfg, bad.instances = 0;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.instances");
    bad = cfg, bad.threshold = 2;
    NG_TEST_ERROR(ng_fractal3d_new(&bad), "data.fractal3d.threshold");
}

/* Sources with instance augmentations left out (data.fractal3d.weight_variation, flip false):
 * with both off the category's IFS voxelized unflipped, without flips the default volumes before
 * their mirroring (bit 0 W, 1 H, 2 D). */
static void test_augment_off(uint64_t seed) {
    enum { CATS = 3, INST = 3, S = 7, V = S * S * S, N = CATS * INST };
    ng_fractal3d_config on = {.categories = CATS,
                              .instances = INST,
                              .side = S,
                              .points = 2500,
                              .threshold = 0.1,
                              .seed = seed};
    ng_fractal3d_config off = on, noflip = on;
    off.no_weight_variation = off.no_flip = 1, noflip.no_flip = 1;
    ng_source *s_on = ng_fractal3d_new(&on), *s_off = ng_fractal3d_new(&off),
              *s_noflip = ng_fractal3d_new(&noflip);
    const ng_ifs3 *cats = ng_fractal3d_source_categories(s_on);
    static float x_on[V], x_off[V], x_nf[V];
    uint8_t occ[V];
    int off_bad = 0, noflip_bad = 0;
    for (int64_t i = 0; i < N; i++) {
        int32_t y;
        int64_t cat = i % CATS, inst = i / CATS;
        ng_source_fill(s_on, 0, i, x_on, &y);
        ng_source_fill(s_off, 0, i, x_off, &y);
        ng_source_fill(s_noflip, 0, i, x_nf, &y);
        ng_fractal3d_occupancy(&cats[cat], on.points, ng_fractal3d_points_key(seed, cat, inst), S,
                               0, occ);
        for (int p = 0; p < V; p++) off_bad += x_off[p] != (occ[p] ? 1.0f : -1.0f);
        ng_ifs3 f;
        int fl;
        ng_fractal3d_instance(&cats[cat], seed, cat, inst, NG_FRACTAL_AUGMENT_ALL, &f, &fl);
        for (int d = 0; d < S; d++)
            for (int h = 0; h < S; h++)
                for (int w = 0; w < S; w++) {
                    int dd = fl & 4 ? S - 1 - d : d, hh = fl & 2 ? S - 1 - h : h,
                        ww = fl & 1 ? S - 1 - w : w;
                    noflip_bad += x_on[(dd * S + hh) * S + ww] != x_nf[(d * S + h) * S + w];
                }
    }
    NG_TEST(!off_bad, "both off: %d voxels differ from the category's IFS voxelized unflipped",
            off_bad);
    NG_TEST(!noflip_bad, "flips off: %d voxels differ from the default volumes unmirrored",
            noflip_bad);
    ng_source_free(s_on), ng_source_free(s_off), ng_source_free(s_noflip);
}

/* Pinned volumes: the default instance augmentations (data.fractal3d.weight_variation and flip
 * on) give the bits rendered before they were config keys (FNV-1a of the f32 bytes and labels). */
static void test_pinned(void) {
    ng_fractal3d_config c = {
        .categories = 3, .instances = 4, .side = 7, .points = 2000, .threshold = 0.1, .seed = 7};
    ng_source *s = ng_fractal3d_new(&c);
    int64_t e = ng_source_example_size(s);
    float *x = malloc(sizeof(float) * (size_t)(e * s->n));
    int32_t y[12];
    for (int64_t i = 0; i < s->n; i++) ng_source_fill(s, 0, i, x + i * e, y + i);
    uint64_t h = ng_test_fnv1a(x, sizeof(float) * (size_t)(e * s->n)) ^ ng_test_fnv1a(y, sizeof y);
    NG_TEST(h == 0x354a22de5f734f00ull, "seed 7: volumes hash to %016llx, pinned 354a22de5f734f00",
            (unsigned long long)h);
    free(x);
    ng_source_free(s);
}

int main(void) {
    uint64_t seed = ng_test_seed();
    test_voxelize();
    test_known();
    test_renderer(seed);
    test_search(seed);
    test_source(seed);
    test_augment_off(seed);
    test_pinned();
    return ng_test_finish("test_fractal3d");
}
