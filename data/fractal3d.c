/* FractalDB 3D on the fly: category search, instance perturbation, the chaos game's point cloud
 * and its voxelization, every draw a function of (seed, category, instance); the rules are in
 * data/fractal3d.h. */
#include "data/fractal3d.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"
#include "data/fractal.h"

/* Philox streams (or'ed with the category); disjoint from the 2D ones and the other users of the
 * run's seed. */
#define STREAM_SEARCH (UINT64_C(0x46334453) << 32)   /* "F3DS": category parameters */
#define STREAM_FILL (UINT64_C(0x4633444c) << 32)     /* "F3DL": the search's filling renders */
#define STREAM_INSTANCE (UINT64_C(0x46334449) << 32) /* "F3DI": weight variation and flips */
#define STREAM_POINTS (UINT64_C(0x46334450) << 32)   /* "F3DP": an instance's chaos game */

#define MAX_TRIES 100000
#define DIVERGED 1e6

static uint64_t cat_stream(uint64_t purpose, int64_t category) {
    return purpose | (uint64_t)(uint32_t)category;
}

typedef void (*visit_fn)(void *, const double p[3]);

/* Runs the chaos game; calls visit on every kept point. Returns 0 on divergence or when no point
 * is kept. */
static int chaos(const ng_ifs3 *f, int64_t points, ng_rng_key k, visit_fn visit, void *arg) {
    double cum[NG_FRACTAL3D_MAX_MAPS], total = 0;
    for (int j = 0; j < f->nmaps; j++) {
        const double *a = f->m[j].a;
        /* det by the first row's cofactors, in a fixed order */
        double det = a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6]) +
                     a[2] * (a[3] * a[7] - a[4] * a[6]);
        total += fabs(det);
        cum[j] = total;
    }
    if (!(total > 0) || !isfinite(total)) return 0;
    for (int j = 0; j < f->nmaps; j++) cum[j] /= total;
    double p[3] = {0, 0, 0};
    uint32_t w[4];
    for (int64_t n = 0; n < points; n++) {
        if (n % 4 == 0) ng_rng_block(k, (uint64_t)(n / 4), w);
        double u = (double)ng_rng_u01(w[n % 4]);
        int j = 0;
        while (j < f->nmaps - 1 && !(u <= cum[j])) j++;
        const ng_ifs3_map *m = &f->m[j];
        double q[3];
        for (int r = 0; r < 3; r++)
            q[r] = m->a[3 * r] * p[0] + m->a[3 * r + 1] * p[1] + m->a[3 * r + 2] * p[2] + m->t[r];
        p[0] = q[0], p[1] = q[1], p[2] = q[2];
        if (!(fabs(p[0]) <= DIVERGED && fabs(p[1]) <= DIVERGED && fabs(p[2]) <= DIVERGED)) return 0;
        if (n >= NG_FRACTAL_SKIP) visit(arg, p);
    }
    return points > NG_FRACTAL_SKIP;
}

/* ---- voxelization ------------------------------------------------------------------------- */

typedef struct {
    double lo[3], hi[3];
} bbox;

static void visit_bbox(void *arg, const double p[3]) {
    bbox *b = arg;
    for (int a = 0; a < 3; a++) b->lo[a] = fmin(b->lo[a], p[a]), b->hi[a] = fmax(b->hi[a], p[a]);
}

static void bbox_init(bbox *b) {
    for (int a = 0; a < 3; a++) b->lo[a] = INFINITY, b->hi[a] = -INFINITY;
}

typedef struct {
    double v0[3], s[3]; /* index = floor((v - v0) * s), or the middle when s is 0 */
    int64_t side;
    int flips;
    uint8_t *occ;
} splat;

static void splat_init(splat *sp, const bbox *b, int64_t side, int flips, uint8_t *occ) {
    for (int a = 0; a < 3; a++) {
        double ext = b->hi[a] - b->lo[a];
        sp->v0[a] = b->lo[a];
        sp->s[a] = ext < 1e-9 * (1 + fabs(b->lo[a])) ? 0 : (double)side / ext;
    }
    sp->side = side, sp->flips = flips, sp->occ = occ;
}

static void visit_splat(void *arg, const double p[3]) {
    splat *sp = arg;
    int64_t idx[3], side = sp->side;
    for (int a = 0; a < 3; a++) {
        if (sp->s[a] == 0) {
            idx[a] = side / 2;
        } else {
            double v = floor((p[a] - sp->v0[a]) * sp->s[a]);
            idx[a] = v < 0 ? 0 : v > (double)(side - 1) ? side - 1 : (int64_t)v;
        }
        if (sp->flips >> a & 1) idx[a] = side - 1 - idx[a];
    }
    sp->occ[(idx[2] * side + idx[1]) * side + idx[0]] = 1;
}

void ng_voxelize(const double *xyz, int64_t n, int64_t side, int flips, uint8_t *occ) {
    memset(occ, 0, (size_t)(side * side * side));
    if (n <= 0) return;
    bbox b;
    bbox_init(&b);
    for (int64_t i = 0; i < n; i++) visit_bbox(&b, xyz + 3 * i);
    splat sp;
    splat_init(&sp, &b, side, flips, occ);
    for (int64_t i = 0; i < n; i++) visit_splat(&sp, xyz + 3 * i);
}

typedef struct {
    double *xyz;
    int64_t n;
} collect;

static void visit_collect(void *arg, const double p[3]) {
    collect *c = arg;
    memcpy(c->xyz + 3 * c->n++, p, 3 * sizeof(double));
}

int ng_fractal3d_points(const ng_ifs3 *f, int64_t points, ng_rng_key k, double *xyz) {
    collect c = {xyz, 0};
    return chaos(f, points, k, visit_collect, &c);
}

int ng_fractal3d_occupancy(const ng_ifs3 *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                           uint8_t *occ) {
    memset(occ, 0, (size_t)(side * side * side));
    bbox b;
    bbox_init(&b);
    /* Twice over the same numbers: the bounding box, then the voxels; no point buffer, so the
     * point count is not bounded by memory. */
    if (!chaos(f, points, k, visit_bbox, &b)) return 0;
    splat sp;
    splat_init(&sp, &b, side, flips, occ);
    chaos(f, points, k, visit_splat, &sp);
    return 1;
}

double ng_fractal3d_filling(const ng_ifs3 *f, uint64_t seed, int64_t category) {
    enum { V = NG_FRACTAL3D_FILL_SIDE * NG_FRACTAL3D_FILL_SIDE * NG_FRACTAL3D_FILL_SIDE };
    uint8_t occ[V];
    ng_rng_key k = {.seed = seed, .stream = cat_stream(STREAM_FILL, category)};
    if (!ng_fractal3d_occupancy(f, NG_FRACTAL3D_FILL_POINTS, k, NG_FRACTAL3D_FILL_SIDE, 0, occ))
        return 0;
    int64_t on = 0;
    for (int p = 0; p < V; p++) on += occ[p];
    return (double)on / V;
}

static void check_threshold(double threshold) {
    NG_CHECK(threshold > 0 && threshold <= 1, "data.fractal3d.threshold: %g is not in (0, 1]",
             threshold);
}

/* The category search: the tries it took, or 0 when none of MAX_TRIES reaches the threshold (the
 * source's constructor then frees what it holds before failing). */
static int64_t search(uint64_t seed, int64_t category, double threshold, ng_ifs3 *out) {
    ng_rng_key k = {.seed = seed, .stream = cat_stream(STREAM_SEARCH, category)};
    for (int64_t t = 0; t < MAX_TRIES; t++) {
        /* 13 blocks a try: the map count, then 48 parameter words (12 of each of 4 maps). */
        uint32_t w[4 * 13];
        for (int b = 0; b < 13; b++) ng_rng_block(k, (uint64_t)(16 * t + b), w + 4 * b);
        ng_ifs3 f = {.nmaps = 2 + (int)(w[0] % 3)};
        for (int j = 0; j < f.nmaps; j++) {
            double p[12];
            for (int q = 0; q < 12; q++) p[q] = 2.0 * (double)ng_rng_u01(w[4 + 12 * j + q]) - 1.0;
            memcpy(f.m[j].a, p, sizeof f.m[j].a);
            memcpy(f.m[j].t, p + 9, sizeof f.m[j].t);
        }
        if (ng_fractal3d_filling(&f, seed, category) >= threshold) {
            *out = f;
            return t + 1;
        }
    }
    return 0;
}

__attribute__((noreturn)) static void no_category(uint64_t seed, int64_t category,
                                                  double threshold) {
    ng_fail("data.fractal3d.threshold: no IFS of category %lld (seed %llu) reaches a filling rate "
            "of %g in %d tries; lower the threshold",
            (long long)category, (unsigned long long)seed, threshold, MAX_TRIES);
}

int64_t ng_fractal3d_category(uint64_t seed, int64_t category, double threshold, ng_ifs3 *out) {
    check_threshold(threshold);
    int64_t t = search(seed, category, threshold, out);
    if (!t) no_category(seed, category, threshold);
    return t;
}

void ng_fractal3d_instance(const ng_ifs3 *cat, uint64_t seed, int64_t category, int64_t instance,
                           int augment, ng_ifs3 *out, int *flips) {
    static const double factors[4] = {0.8, 0.9, 1.1, 1.2};
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = seed, .stream = cat_stream(STREAM_INSTANCE, category)},
                 (uint64_t)instance, w);
    *out = *cat;
    if (augment & NG_FRACTAL_WEIGHT_VARIATION) {
        ng_ifs3_map *m = &out->m[w[0] % (uint32_t)cat->nmaps];
        unsigned q = w[1] % 12;
        double *p = q < 9 ? &m->a[q] : &m->t[q - 9];
        *p *= factors[w[2] % 4];
    }
    *flips = augment & NG_FRACTAL_FLIP ? (int)(w[3] & 7) : 0;
}

ng_rng_key ng_fractal3d_points_key(uint64_t seed, int64_t category, int64_t instance) {
    return (ng_rng_key){.seed = seed,
                        .stream = cat_stream(STREAM_POINTS, category),
                        .offset = (uint64_t)instance << 32};
}

static void to_pm1(const uint8_t *occ, int64_t n, float *x) {
    for (int64_t p = 0; p < n; p++) x[p] = occ[p] ? 1.0f : -1.0f;
}

static void render_cpu(const ng_ifs3 *f, const int *flips, const ng_rng_key *keys, int64_t count,
                       int64_t points, int64_t side, float *out) {
    int64_t v = side * side * side;
    uint8_t *occ = malloc((size_t)v);
    NG_CHECK(occ, "ng_fractal3d_render: out of host memory for a %lld^3 volume", (long long)side);
    for (int64_t j = 0; j < count; j++) {
        ng_fractal3d_occupancy(&f[j], points, keys[j], side, flips[j], occ);
        to_pm1(occ, v, out + j * v);
    }
    free(occ);
}

void ng_fractal3d_render(const ng_ifs3 *f, const int *flips, const ng_rng_key *keys, int64_t points,
                         ng_tensor *out) {
    int64_t side = out->shape[out->ndim - 1], count = out->shape[0];
    NG_CHECK(out->dtype == NG_F32 && out->ndim == 5 && out->shape[1] == 1 &&
                 out->shape[2] == side && out->shape[3] == side && side >= 1 &&
                 side <= NG_FRACTAL3D_MAX_SIDE,
             "ng_fractal3d_render: %s must be f32 [count, 1, side, side, side]",
             out->name ? out->name : "out");
    for (int64_t j = 0; j < count; j++)
        NG_CHECK(f[j].nmaps >= 1 && f[j].nmaps <= NG_FRACTAL3D_MAX_MAPS,
                 "ng_fractal3d_render: volume %lld has %d maps", (long long)j, f[j].nmaps);
    NG_DISPATCH(out, render_cpu(f, flips, keys, count, points, side, out->data),
                ng_fractal3d_render_cuda(f, NULL, flips, keys, count, points, side, out->data));
}

/* ---- the source ------------------------------------------------------------------------- */

typedef struct {
    ng_fractal3d_config c;
    ng_ifs3 *cats;
    uint8_t *occ;
} fractals3d;

/* Volume i into out, with occ (side^3 bytes) as the renderer's scratch: a fixed data set, the
 * same volume every epoch. */
static void render(const void *self, int64_t i, float *out, int32_t *y, uint8_t *occ) {
    const fractals3d *fr = self;
    const ng_fractal3d_config *c = &fr->c;
    int64_t cat = i % c->categories, inst = c->first_instance + i / c->categories;
    ng_ifs3 f;
    int flips;
    ng_fractal3d_instance(&fr->cats[cat], c->seed, cat, inst,
                          ng_fractal_augment(c->no_weight_variation, c->no_flip), &f, &flips);
    ng_rng_key k = ng_fractal3d_points_key(c->seed, cat, inst);
    /* A scaled parameter can make the IFS expand: then the category's own IFS (a blank volume
     * would be a label without a shape). */
    if (!ng_fractal3d_occupancy(&f, c->points, k, c->side, flips, occ))
        ng_fractal3d_occupancy(&fr->cats[cat], c->points, k, c->side, flips, occ);
    to_pm1(occ, c->side * c->side * c->side, out);
    *y = (int32_t)cat;
}

static void fill(ng_source *s, int64_t epoch, int64_t i, void *out, int32_t *y) {
    (void)epoch;
    fractals3d *fr = s->impl;
    render(fr, i, out, y, fr->occ);
}

/* A batch: on the host, rendered as fill renders, on the workers; on the GPU, the instances and
 * fallbacks drawn here as fill draws them and one kernel call renders them all. */
static void fill_batch(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count, ng_tensor *x,
                       int32_t *y) {
    fractals3d *fr = s->impl;
    const ng_fractal3d_config *c = &fr->c;
    (void)epoch;
    if (x->device != NG_CUDA) {
        ng_source_render_batch(s, idx, count, x->data, y, (size_t)ng_source_example_size(s), render,
                               fr);
        return;
    }
    size_t n = (size_t)count;
    ng_ifs3 *f = malloc(sizeof(ng_ifs3) * 2 * n);
    int *flips = malloc(sizeof(int) * n);
    ng_rng_key *keys = malloc(sizeof(ng_rng_key) * n);
    NG_CHECK(f && flips && keys, "%s: out of host memory for a batch of %lld", s->name,
             (long long)count);
    for (int64_t j = 0; j < count; j++) {
        int64_t cat = idx[j] % c->categories, inst = c->first_instance + idx[j] / c->categories;
        ng_fractal3d_instance(&fr->cats[cat], c->seed, cat, inst,
                              ng_fractal_augment(c->no_weight_variation, c->no_flip), &f[j],
                              &flips[j]);
        f[count + j] = fr->cats[cat]; /* the fallback, as fill's */
        keys[j] = ng_fractal3d_points_key(c->seed, cat, inst);
        y[j] = (int32_t)cat;
    }
    NG_CUDA_ONLY(
        ng_fractal3d_render_cuda(f, f + count, flips, keys, count, c->points, c->side, x->data));
    free(f), free(flips), free(keys);
}

static void destroy(ng_source *s) {
    fractals3d *fr = s->impl;
    free(fr->cats);
    free(fr->occ);
    free(fr);
}

size_t ng_fractal3d_cuda_workspace(int64_t count) {
    return count > 0 ? ng_fractal_jobs_bytes(sizeof(ng_fractal3d_job), count) : 0;
}

static size_t device_workspace(const ng_source *s, int64_t count) {
    (void)s;
    return ng_fractal3d_cuda_workspace(count);
}

static const ng_source_ops ops = {fill, destroy, NULL, fill_batch, device_workspace};

const ng_ifs3 *ng_fractal3d_source_categories(const ng_source *s) {
    NG_CHECK(s->ops == &ops, "%s is not a fractal3d source", s->name);
    return ((const fractals3d *)s->impl)->cats;
}

ng_source *ng_fractal3d_new(const ng_fractal3d_config *c) {
    const char *name = c->name ? c->name : "fractal3d";
    NG_CHECK(c->categories >= 2 && c->categories <= 1000000,
             "data.fractal3d.categories: %lld, need 2 to 1000000", (long long)c->categories);
    NG_CHECK(c->instances >= 1, "data.fractal3d.instances: %lld, need 1 or more",
             (long long)c->instances);
    NG_CHECK(c->side >= 4 && c->side <= NG_FRACTAL3D_MAX_SIDE,
             "data.fractal3d.side: %lld, need 4 to %d", (long long)c->side, NG_FRACTAL3D_MAX_SIDE);
    NG_CHECK(c->points > NG_FRACTAL_SKIP && c->points <= (INT64_C(1) << 32),
             "data.fractal3d.points: %lld, need more than %d (the first %d are skipped) and at "
             "most 2^32",
             (long long)c->points, NG_FRACTAL_SKIP, NG_FRACTAL_SKIP);
    NG_CHECK(c->first_instance >= 0 && c->first_instance + c->instances <= (INT64_C(1) << 31),
             "data.fractal3d.instances: %lld from instance %lld is too many",
             (long long)c->instances, (long long)c->first_instance);
    int64_t n = 0;
    NG_CHECK(!__builtin_mul_overflow(c->categories, c->instances, &n) && n <= (INT64_C(1) << 40),
             "data.fractal3d: %lld categories x %lld instances are too many examples",
             (long long)c->categories, (long long)c->instances);
    check_threshold(c->threshold); /* before anything is allocated */
    ng_source *s = calloc(1, sizeof *s);
    fractals3d *fr = calloc(1, sizeof *fr);
    if (fr) {
        fr->cats = malloc(sizeof(ng_ifs3) * (size_t)c->categories);
        fr->occ = malloc((size_t)(c->side * c->side * c->side));
    }
    if (!s || !fr || !fr->cats || !fr->occ) {
        if (fr) free(fr->cats), free(fr->occ);
        free(s), free(fr);
        ng_fail("%s: out of host memory for %lld categories and a %lld^3 volume", name,
                (long long)c->categories, (long long)c->side);
    }
    for (int64_t k = 0; k < c->categories; k++)
        if (!search(c->seed, k, c->threshold, &fr->cats[k])) {
            free(fr->cats), free(fr->occ), free(fr), free(s);
            no_category(c->seed, k, c->threshold);
        }
    fr->c = *c;
    fr->c.name = NULL;
    *s = (ng_source){.ops = &ops,
                     .device_batches = 1,
                     .n = n,
                     .ndim = 4,
                     .shape = {1, c->side, c->side, c->side},
                     .dtype = NG_F32,
                     .classes = c->categories,
                     .impl = fr};
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}
