/* Tests for data/fractal.h: the chaos-game renderer against direct references (an IFS whose
 * attractor is a diagonal segment, a single contraction, and an independent reimplementation of
 * the documented rule), category search determinism and its filling-rate threshold, instances,
 * and the source's splits and errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "data/fractal.h"
#include "testing.h"

/* Two maps halving toward (0, 0) and (1, 1): every point from (0, 0) lies on the diagonal x = y
 * (both coordinates take the same arithmetic), so exactly the diagonal pixels light up once
 * enough points fall. */
static void test_segment(void) {
    ng_ifs f = {.nmaps = 2, .m = {{0.5, 0, 0, 0.5, 0, 0}, {0.5, 0, 0, 0.5, 0.5, 0.5}}};
    const int64_t side = 8;
    uint8_t occ[64];
    for (int flips = 0; flips < 4; flips++) {
        int ok =
            ng_fractal_occupancy(&f, 4000, (ng_rng_key){.seed = 11, .stream = 5}, side, flips, occ);
        NG_TEST(ok, "segment IFS reported divergence");
        int bad = 0;
        for (int64_t r = 0; r < side; r++)
            for (int64_t col = 0; col < side; col++) {
                int64_t cc = flips & 1 ? side - 1 - col : col, rr = flips & 2 ? side - 1 - r : r;
                bad += occ[r * side + col] != (cc == rr);
            }
        NG_TEST(bad == 0, "segment IFS, flips %d: %d pixels off the expected diagonal", flips, bad);
    }
}

/* One map halving toward (0, 0), the chaos game's start: every point is the fixed point, the
 * extent is 0 on both axes, and only the middle pixel is lit. */
static void test_contraction(void) {
    const int64_t side = 6;
    uint8_t occ[36];
    int lit = 0;
    ng_ifs g = {.nmaps = 1, .m = {{0.5, 0, 0, 0.5, 0, 0}}};
    ng_fractal_occupancy(&g, 200, (ng_rng_key){.seed = 1}, side, 0, occ);
    for (int p = 0; p < 36; p++) lit += occ[p];
    NG_TEST(lit == 1 && occ[(side / 2) * side + side / 2],
            "a point attractor should light only the middle pixel (%d lit)", lit);
}

/* The documented rule, written again from core/rng.h alone, with the points kept in a buffer. */
static void reference(const ng_ifs *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                      uint8_t *occ) {
    double prob[4], tot = 0;
    for (int j = 0; j < f->nmaps; j++)
        tot += prob[j] = fabs(f->m[j].a * f->m[j].d - f->m[j].b * f->m[j].c);
    double *px = malloc(sizeof(double) * (size_t)points),
           *py = malloc(sizeof(double) * (size_t)points);
    double x = 0, y = 0;
    for (int64_t n = 0; n < points; n++) {
        uint32_t w[4];
        ng_rng_block(k, (uint64_t)n / 4, w);
        double u = (double)ng_rng_u01(w[n % 4]), acc = 0;
        int j = 0;
        for (; j < f->nmaps - 1; j++) {
            acc += prob[j];
            if (u <= acc / tot) break;
        }
        const ng_ifs_map *m = &f->m[j];
        double nx = m->a * x + m->b * y + m->e, ny = m->c * x + m->d * y + m->f;
        x = nx, y = ny;
        px[n] = x, py[n] = y;
    }
    double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
    for (int64_t n = NG_FRACTAL_SKIP; n < points; n++) {
        lo[0] = fmin(lo[0], px[n]), hi[0] = fmax(hi[0], px[n]);
        lo[1] = fmin(lo[1], py[n]), hi[1] = fmax(hi[1], py[n]);
    }
    memset(occ, 0, (size_t)(side * side));
    for (int64_t n = NG_FRACTAL_SKIP; n < points; n++) {
        int64_t pix[2];
        double v[2] = {px[n], py[n]};
        for (int a = 0; a < 2; a++) {
            double ext = hi[a] - lo[a];
            if (ext < 1e-9 * (1 + fabs(lo[a]))) {
                pix[a] = side / 2;
            } else {
                double p = floor((v[a] - lo[a]) * ((double)side / ext));
                pix[a] = p < 0 ? 0 : p > (double)(side - 1) ? side - 1 : (int64_t)p;
            }
        }
        if (flips & 1) pix[0] = side - 1 - pix[0];
        if (flips & 2) pix[1] = side - 1 - pix[1];
        occ[pix[1] * side + pix[0]] = 1;
    }
    free(px), free(py);
}

static void test_reference(uint64_t seed) {
    const int64_t side = 24, points = 3000;
    uint8_t *a = malloc(side * side), *b = malloc(side * side);
    for (int64_t cat = 0; cat < 6; cat++) {
        ng_ifs c, f;
        int flips;
        ng_fractal_category(seed, cat, 0.2, &c);
        ng_fractal_instance(&c, seed, cat, 3 + cat, &f, &flips);
        ng_rng_key k = ng_fractal_points_key(seed, cat, 3 + cat);
        int ok = ng_fractal_occupancy(&f, points, k, side, flips, a);
        reference(&f, points, k, side, flips, b);
        NG_TEST(!ok || !memcmp(a, b, (size_t)(side * side)),
                "category %lld: renderer differs from the reference", (long long)cat);
    }
    free(a), free(b);
}

static void test_search(uint64_t seed) {
    ng_ifs a[12], b[12], c[12];
    int differ = 0;
    for (int64_t k = 0; k < 12; k++) {
        ng_fractal_category(seed, k, 0.2, &a[k]);
        ng_fractal_category(seed, k, 0.2, &b[k]);
        ng_fractal_category(seed + 1, k, 0.2, &c[k]);
        NG_TEST(!memcmp(&a[k], &b[k], sizeof a[k]), "category %lld differs between two searches",
                (long long)k);
        differ += memcmp(&a[k], &c[k], sizeof a[k]) != 0;
        NG_TEST(a[k].nmaps >= 2 && a[k].nmaps <= 4, "category %lld has %d maps", (long long)k,
                a[k].nmaps);
        double r = ng_fractal_filling(&a[k], seed, k);
        NG_TEST(r >= 0.2, "category %lld accepted at filling rate %g < 0.2", (long long)k, r);
        ng_fractal_category(seed, k, 0.35, &c[k]);
        r = ng_fractal_filling(&c[k], seed, k);
        NG_TEST(r >= 0.35, "category %lld accepted at filling rate %g < 0.35", (long long)k, r);
    }
    NG_TEST(differ == 12, "another seed gives %d of 12 categories different", differ);
    int distinct = 1;
    for (int k = 1; k < 12; k++) distinct &= memcmp(&a[k], &a[0], sizeof a[0]) != 0;
    NG_TEST(distinct, "categories of one seed repeat");
    NG_TEST_ERROR(ng_fractal_category(seed, 0, 1.5, &a[0]), "data.fractal.threshold");
}

static void test_source(uint64_t seed) {
    ng_fractal_config cfg = {.categories = 5,
                             .instances = 4,
                             .side = 16,
                             .points = 1500,
                             .threshold = 0.2,
                             .seed = seed};
    ng_source *tr = ng_fractal_new(&cfg), *tr2 = ng_fractal_new(&cfg);
    ng_fractal_config tc = cfg;
    tc.first_instance = 4, tc.instances = 2;
    ng_source *te = ng_fractal_new(&tc);
    NG_TEST(tr->n == 20 && te->n == 10 && tr->classes == 5 && tr->ndim == 3 && tr->shape[0] == 1 &&
                tr->shape[1] == 16 && tr->shape[2] == 16,
            "source sizes: n %lld / %lld, classes %lld", (long long)tr->n, (long long)te->n,
            (long long)tr->classes);
    NG_TEST(!memcmp(ng_fractal_source_categories(tr), ng_fractal_source_categories(te),
                    5 * sizeof(ng_ifs)),
            "train and test splits should share the categories");
    float x[20][256], x2[256], t[10][256];
    int32_t y[20], y2, yt[10];
    int det = 1, bin = 1, lit_ok = 1;
    for (int64_t i = 0; i < 20; i++) {
        ng_source_fill(tr, 0, i, x[i], &y[i]);
        ng_source_fill(tr2, 3, i, x2, &y2); /* another source, another epoch: the same image */
        det &= !memcmp(x[i], x2, sizeof x2) && y2 == y[i];
        int lit = 0;
        for (int p = 0; p < 256; p++) {
            bin &= x[i][p] == 1.0f || x[i][p] == -1.0f;
            lit += x[i][p] > 0;
        }
        lit_ok &= lit > 0;
        NG_TEST(y[i] == i % 5, "example %lld labelled %d", (long long)i, y[i]);
    }
    NG_TEST(det, "fills are not deterministic");
    NG_TEST(bin && lit_ok, "images should be +1/-1 with some pixels lit");
    /* Instances of one category differ (images), within a split and across splits. */
    int same = 0;
    for (int64_t i = 0; i < 10; i++) ng_source_fill(te, 0, i, t[i], &yt[i]);
    for (int cat = 0; cat < 5; cat++) {
        float *imgs[6] = {x[cat], x[cat + 5], x[cat + 10], x[cat + 15], t[cat], t[cat + 5]};
        for (int p = 0; p < 6; p++)
            for (int q = p + 1; q < 6; q++) same += !memcmp(imgs[p], imgs[q], sizeof x2);
    }
    NG_TEST(same == 0, "%d pairs of instances of one category are identical", same);
    /* Instance perturbation: deterministic and changes one parameter by a listed factor. */
    const ng_ifs *cats = ng_fractal_source_categories(tr);
    ng_ifs p1, p2;
    int f1, f2;
    ng_fractal_instance(&cats[1], seed, 1, 7, &p1, &f1);
    ng_fractal_instance(&cats[1], seed, 1, 7, &p2, &f2);
    NG_TEST(!memcmp(&p1, &p2, sizeof p1) && f1 == f2, "instance 7 is not deterministic");
    const double *o = (const double *)cats[1].m, *v = (const double *)p1.m;
    int changed = 0, factor_ok = 1;
    for (int q = 0; q < 6 * cats[1].nmaps; q++)
        if (o[q] != v[q]) {
            changed++;
            double r = v[q] / o[q];
            factor_ok &= fabs(r - 0.8) < 1e-12 || fabs(r - 0.9) < 1e-12 || fabs(r - 1.1) < 1e-12 ||
                         fabs(r - 1.2) < 1e-12;
        }
    NG_TEST(changed == 1 && factor_ok, "an instance should scale one parameter (%d changed)",
            changed);
    ng_source_free(tr), ng_source_free(tr2), ng_source_free(te);

    ng_fractal_config bad = cfg;
    bad.side = 2;
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.side");
    bad = cfg, bad.points = 10;
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.points");
    bad = cfg, bad.categories = 1;
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.categories");
    bad = cfg, bad.instances = 0;
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.instances");
}

int main(void) {
    uint64_t seed = ng_test_seed();
    test_segment();
    test_contraction();
    test_reference(seed);
    test_search(seed);
    test_source(seed);
    return ng_test_finish("test_fractal");
}
