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
        ng_fractal_instance(&c, seed, cat, 3 + cat, NG_FRACTAL_AUGMENT_ALL, &f, &flips);
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
    ng_fractal_instance(&cats[1], seed, 1, 7, NG_FRACTAL_AUGMENT_ALL, &p1, &f1);
    ng_fractal_instance(&cats[1], seed, 1, 7, NG_FRACTAL_AUGMENT_ALL, &p2, &f2);
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

/* Patch and colour rendering: a patch image is the single-pixel image dilated by the instance's
 * pattern (clipped), a colour image lights the same pixels in colours of the instance's maps, and
 * on the segment IFS the lower half of the diagonal is map 0's and the upper half map 1's. */
static void test_patch_colour(uint64_t seed) {
    enum { SIDE = 20, HW = SIDE * SIDE, N = 12 };
    ng_fractal_config g = {.categories = 4,
                           .instances = 3,
                           .side = SIDE,
                           .points = 1200,
                           .threshold = 0.2,
                           .seed = seed};
    ng_fractal_config pc = g, cc = g;
    pc.patch = 3, cc.colour = 1;
    ng_source *gs = ng_fractal_new(&g), *ps = ng_fractal_new(&pc), *cs = ng_fractal_new(&cc);
    NG_TEST(cs->shape[0] == 3 && ps->shape[0] == 1 && cs->classes == 4,
            "colour images have 3 channels (%lld), patch images 1 (%lld)", (long long)cs->shape[0],
            (long long)ps->shape[0]);
    const ng_ifs *cats = ng_fractal_source_categories(gs);
    int dil_bad = 0, col_bad = 0, same_lit = 1, multi = 0, masks_differ = 0;
    uint8_t first_mask[9];
    for (int64_t i = 0; i < N; i++) {
        static float xg[HW], xp[HW], xc[3 * HW];
        int32_t y;
        ng_source_fill(gs, 0, i, xg, &y);
        ng_source_fill(ps, 0, i, xp, &y);
        ng_source_fill(cs, 0, i, xc, &y);
        int64_t cat = i % 4, inst = i / 4;
        uint8_t mask[9];
        ng_fractal_patch_mask(seed, cat, inst, 3, mask);
        if (i == 0) memcpy(first_mask, mask, 9);
        masks_differ |= memcmp(mask, first_mask, 9) != 0;
        NG_TEST(mask[4] == 1, "the patch pattern's centre must be lit");
        for (int64_t r = 0; r < SIDE; r++)
            for (int64_t c = 0; c < SIDE; c++) {
                int want = 0; /* some lit pixel whose pattern covers (r, c) */
                for (int dy = 0; dy < 3; dy++)
                    for (int dx = 0; dx < 3; dx++) {
                        int64_t sr = r - dy + 1, sc = c - dx + 1;
                        want |= mask[dy * 3 + dx] && sr >= 0 && sr < SIDE && sc >= 0 && sc < SIDE &&
                                xg[sr * SIDE + sc] > 0;
                    }
                dil_bad += (xp[r * SIDE + c] > 0) != want ||
                           (xp[r * SIDE + c] != 1.0f && xp[r * SIDE + c] != -1.0f);
            }
        ng_ifs f;
        int flips;
        ng_fractal_instance(&cats[cat], seed, cat, inst, NG_FRACTAL_AUGMENT_ALL, &f, &flips);
        float rgb[NG_FRACTAL_MAX_MAPS][3];
        ng_fractal_colours(seed, cat, inst, rgb);
        int used[NG_FRACTAL_MAX_MAPS] = {0};
        for (int64_t p = 0; p < HW; p++) {
            int lit = xc[p] != -1.0f || xc[HW + p] != -1.0f || xc[2 * HW + p] != -1.0f;
            same_lit &= lit == (xg[p] > 0);
            if (!lit) continue;
            int match = -1;
            for (int j = 0; j < f.nmaps && match < 0; j++) {
                int eq = 1;
                for (int ch = 0; ch < 3; ch++)
                    eq &= xc[ch * HW + p] == (float)(2.0 * (double)rgb[j][ch] - 1.0);
                if (eq) match = j;
            }
            col_bad += match < 0;
            if (match >= 0) used[match] = 1;
        }
        multi += used[0] + used[1] + used[2] + used[3] >= 2;
    }
    NG_TEST(!dil_bad, "patch images: %d pixels differ from the dilated single-pixel images",
            dil_bad);
    NG_TEST(same_lit, "colour images should light the pixels the grey images light");
    NG_TEST(!col_bad, "colour images: %d lit pixels are not a colour of the instance's maps",
            col_bad);
    NG_TEST(multi >= N / 2, "only %d of %d colour images show two or more map colours", multi, N);
    NG_TEST(masks_differ, "every instance has the same patch pattern");
    ng_source_free(gs), ng_source_free(ps), ng_source_free(cs);

    ng_ifs seg = {.nmaps = 2, .m = {{0.5, 0, 0, 0.5, 0, 0}, {0.5, 0, 0, 0.5, 0.5, 0.5}}};
    uint8_t lab[64], one = 1;
    ng_fractal_paint(&seg, 4000, (ng_rng_key){.seed = seed, .stream = 4}, 8, 0, 1, &one, lab);
    int seg_bad = 0;
    for (int d = 0; d < 8; d++) {
        if (d == 3 || d == 4) continue; /* the halves meet here, up to the bounding box */
        seg_bad += lab[d * 8 + d] != (d < 4 ? 1 : 2);
    }
    NG_TEST(!seg_bad, "segment IFS: %d diagonal pixels painted by the wrong map", seg_bad);
    ng_fractal_config bad = g;
    bad.patch = 8;
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.patch");
    bad = g, bad.threshold = 2; /* refused before anything is allocated (sanitize.sh: no leak) */
    NG_TEST_ERROR(ng_fractal_new(&bad), "data.fractal.threshold");
}

/* Batches: the source's fill_batch on a host tensor (rendered by 1-4 workers) gives fill's
 * examples in the order asked (grey, patch, colour), ng_fractal_render_paint (what the GPU twin is
 * compared with) gives the source's painted images, and a batch of the wrong shape is refused
 * naming the source. */
static void test_batches(uint64_t seed, int v) {
    enum { SIDE = 24, HW = SIDE * SIDE, B = 7 };
    ng_fractal_config base = {.categories = 5,
                              .instances = 4,
                              .side = SIDE,
                              .points = 1500,
                              .threshold = 0.2,
                              .seed = seed,
                              .name = "batches"};
    const int64_t idx[B] = {19, 0, 7, 7, 12, 3, 18};
    {
        ng_fractal_config c = base;
        c.patch = v == 1 ? 3 : v == 3 ? 5 : 0;
        c.colour = v >= 2;
        ng_source *s = ng_fractal_new(&c);
        int64_t ch = c.colour ? 3 : 1, shape[4] = {B, ch, SIDE, SIDE};
        ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "batch");
        int32_t y[B];
        s->workers = 1 + v; /* 1-4 rendering threads: the same images */
        ng_source_fill_batch(s, 0, idx, B, &x, y);
        s->workers = 1;
        static float one[3 * HW];
        int bad = 0, bad_y = 0, bad_paint = 0;
        for (int j = 0; j < B; j++) {
            int32_t yj;
            ng_source_fill(s, 0, idx[j], one, &yj);
            bad +=
                memcmp(one, (float *)x.data + j * ch * HW, sizeof(float) * (size_t)(ch * HW)) != 0;
            bad_y += yj != y[j];
        }
        if (c.patch > 1 || c.colour) { /* the renderer of the GPU test, on the source's draws */
            const ng_ifs *cats = ng_fractal_source_categories(s);
            ng_ifs f[B];
            int flips[B];
            ng_rng_key keys[B];
            int patch = c.patch > 1 ? (int)c.patch : 1;
            uint8_t masks[B * 25], lab[HW];
            float rgb[B][NG_FRACTAL_MAX_MAPS][3];
            for (int j = 0; j < B; j++) {
                int64_t cat = idx[j] % c.categories, inst = idx[j] / c.categories;
                ng_fractal_instance(&cats[cat], seed, cat, inst, NG_FRACTAL_AUGMENT_ALL, &f[j],
                                    &flips[j]);
                keys[j] = ng_fractal_points_key(seed, cat, inst);
                masks[j * patch * patch] = 1;
                if (patch > 1)
                    ng_fractal_patch_mask(seed, cat, inst, patch, masks + j * patch * patch);
                ng_fractal_colours(seed, cat, inst, rgb[j]);
                if (!ng_fractal_paint(&f[j], c.points, keys[j], SIDE, flips[j], patch,
                                      masks + j * patch * patch, lab))
                    f[j] = cats[cat]; /* the source's fallback */
            }
            ng_tensor r = ng_tensor_new(NG_F32, NG_CPU, 4, shape, "painted");
            ng_fractal_render_paint(f, flips, keys, c.points, patch, masks,
                                    c.colour ? (const float(*)[NG_FRACTAL_MAX_MAPS][3])rgb : NULL,
                                    &r);
            bad_paint = memcmp(r.data, x.data, sizeof(float) * (size_t)x.numel) != 0;
            ng_tensor_free(&r);
        }
        NG_TEST(!bad && !bad_y && !bad_paint,
                "batch of patch %lld colour %d: %d images and %d labels differ from fill, "
                "render_paint %s",
                (long long)c.patch, c.colour, bad, bad_y, bad_paint ? "differs" : "agrees");
        int64_t wrong[4] = {B, 2, SIDE, SIDE};
        ng_tensor w = ng_tensor_new(NG_F32, NG_CPU, 4, wrong, "wrong");
        NG_TEST_ERROR(ng_source_fill_batch(s, 0, idx, B, &w, y), "batches");
        int64_t out_of_range = 20;
        NG_TEST_ERROR(ng_source_fill_batch(s, 0, &out_of_range, 1, &x, y), "outside");
        ng_tensor_free(&w), ng_tensor_free(&x);
        ng_source_free(s);
    }
}

/* IFS a and b are the same bits (their maps; the struct may hold padding). */
static int same_ifs(const ng_ifs *a, const ng_ifs *b) {
    return a->nmaps == b->nmaps && !memcmp(a->m, b->m, sizeof(ng_ifs_map) * (size_t)a->nmaps);
}

/* Instance augmentations left out (data.fractal.weight_variation, data.fractal.flip false):
 * without weight variation an instance is its category's IFS bit for bit and keeps the flips it
 * has with both on; without flips it is never flipped and keeps the IFS it has with both on. The
 * sources render exactly those: with both off the category's IFS unflipped, and without flips
 * the default source's images before their mirroring. */
static void test_augment_off(uint64_t seed) {
    enum { CATS = 3, INST = 4, SIDE = 16, HW = SIDE * SIDE, N = CATS * INST };
    ng_fractal_config on = {.categories = CATS,
                            .instances = INST,
                            .side = SIDE,
                            .points = 900,
                            .threshold = 0.2,
                            .seed = seed};
    ng_fractal_config off = on, noflip = on;
    off.no_weight_variation = off.no_flip = 1, noflip.no_flip = 1;
    ng_source *s_on = ng_fractal_new(&on), *s_off = ng_fractal_new(&off),
              *s_noflip = ng_fractal_new(&noflip);
    const ng_ifs *cats = ng_fractal_source_categories(s_on);
    int ifs_bad = 0, flips_bad = 0, flipped = 0, varied = 0;
    for (int64_t cat = 0; cat < CATS; cat++)
        for (int64_t inst = 0; inst < 40; inst++) {
            ng_ifs fa, fw, ff, f0;
            int la, lw, lf, l0;
            const ng_ifs *c = &cats[cat];
            ng_fractal_instance(c, seed, cat, inst, NG_FRACTAL_AUGMENT_ALL, &fa, &la);
            ng_fractal_instance(c, seed, cat, inst, NG_FRACTAL_FLIP, &fw, &lw);
            ng_fractal_instance(c, seed, cat, inst, NG_FRACTAL_WEIGHT_VARIATION, &ff, &lf);
            ng_fractal_instance(c, seed, cat, inst, 0, &f0, &l0);
            ifs_bad += !same_ifs(&fw, c) || !same_ifs(&f0, c) || !same_ifs(&ff, &fa);
            flips_bad += lw != la || lf != 0 || l0 != 0;
            flipped += la != 0;
            varied += !same_ifs(&fa, c);
        }
    NG_TEST(!ifs_bad && !flips_bad,
            "instances with an augmentation left out: %d IFS and %d flips not as they should be",
            ifs_bad, flips_bad);
    NG_TEST(flipped > 60 && varied == CATS * 40,
            "with both on, %d of %d instances are flipped and %d varied", flipped, CATS * 40,
            varied);
    static float x_on[HW], x_off[HW], x_nf[HW];
    uint8_t occ[HW];
    int off_bad = 0, noflip_bad = 0;
    for (int64_t i = 0; i < N; i++) {
        int32_t y;
        int64_t cat = i % CATS, inst = i / CATS;
        ng_source_fill(s_on, 0, i, x_on, &y);
        ng_source_fill(s_off, 0, i, x_off, &y);
        ng_source_fill(s_noflip, 0, i, x_nf, &y);
        ng_fractal_occupancy(&cats[cat], on.points, ng_fractal_points_key(seed, cat, inst), SIDE, 0,
                             occ);
        for (int p = 0; p < HW; p++) off_bad += x_off[p] != (occ[p] ? 1.0f : -1.0f);
        ng_ifs f;
        int flips;
        ng_fractal_instance(&cats[cat], seed, cat, inst, NG_FRACTAL_AUGMENT_ALL, &f, &flips);
        for (int r = 0; r < SIDE; r++)
            for (int c = 0; c < SIDE; c++) {
                int rr = flips & 2 ? SIDE - 1 - r : r, cc = flips & 1 ? SIDE - 1 - c : c;
                noflip_bad += x_on[rr * SIDE + cc] != x_nf[r * SIDE + c];
            }
    }
    NG_TEST(!off_bad, "both off: %d pixels differ from the category's IFS rendered unflipped",
            off_bad);
    NG_TEST(!noflip_bad, "flips off: %d pixels differ from the default images unmirrored",
            noflip_bad);
    ng_source_free(s_on), ng_source_free(s_off), ng_source_free(s_noflip);
}

/* The examples of a fixed seed as one FNV-1a hash of their f32 bytes and labels. */
static uint64_t source_hash(ng_source *s) {
    int64_t e = ng_source_example_size(s);
    float *x = malloc(sizeof(float) * (size_t)(e * s->n));
    int32_t *y = malloc(sizeof(int32_t) * (size_t)s->n);
    for (int64_t i = 0; i < s->n; i++) ng_source_fill(s, 0, i, x + i * e, y + i);
    uint64_t h = ng_test_fnv1a(x, sizeof(float) * (size_t)(e * s->n)) ^
                 ng_test_fnv1a(y, sizeof(int32_t) * (size_t)s->n);
    free(x), free(y);
    return h;
}

/* Pinned images: the default instance augmentations (data.fractal.weight_variation and flip on)
 * give the bits rendered before they were config keys, so earlier runs, their checkpoints and
 * their shards stay valid; grey, and colour with patches. */
static void test_pinned(void) {
    ng_fractal_config g = {
        .categories = 3, .instances = 4, .side = 12, .points = 700, .threshold = 0.2, .seed = 7};
    ng_fractal_config pc = g;
    pc.patch = 3, pc.colour = 1;
    ng_source *gs = ng_fractal_new(&g), *ps = ng_fractal_new(&pc);
    uint64_t hg = source_hash(gs), hp = source_hash(ps);
    NG_TEST(hg == 0x3ede7ef9102df620ull && hp == 0xcfdd62b19a82cdbaull,
            "seed 7: images hash to %016llx (grey) and %016llx (patch 3, colour), pinned "
            "3ede7ef9102df620 and cfdd62b19a82cdba",
            (unsigned long long)hg, (unsigned long long)hp);
    ng_source_free(gs), ng_source_free(ps);
}

int main(void) {
    uint64_t seed = ng_test_seed();
    test_segment();
    test_contraction();
    test_reference(seed);
    test_search(seed);
    test_source(seed);
    test_patch_colour(seed);
    test_augment_off(seed);
    test_pinned();
    for (int v = 0; v < 4; v++) test_batches(seed, v); /* grey, patch, colour, both */
    return ng_test_finish("test_fractal");
}
