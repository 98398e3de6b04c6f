/* FractalDB 2D on the fly: category search, instance perturbation and chaos-game rendering, every
 * draw a function of (seed, category, instance); the rules are in data/fractal.h. */
#include "data/fractal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/error.h"

/* Philox streams (or'ed with the category); disjoint from the other users of the run's seed. */
#define STREAM_SEARCH (UINT64_C(0x46524153) << 32)   /* category parameters */
#define STREAM_FILL (UINT64_C(0x4652414c) << 32)     /* the search's filling-rate renders */
#define STREAM_INSTANCE (UINT64_C(0x46524149) << 32) /* weight variation and flips */
#define STREAM_POINTS (UINT64_C(0x46524150) << 32)   /* an instance's chaos game */
#define STREAM_COLOUR (UINT64_C(0x46524143) << 32)   /* an instance's map colours */
#define STREAM_PATCH (UINT64_C(0x46524154) << 32)    /* an instance's patch pattern */

#define MAX_TRIES 100000
#define DIVERGED 1e6

static uint64_t cat_stream(uint64_t purpose, int64_t category) {
    return purpose | (uint64_t)(uint32_t)category;
}

/* The map chosen by u in (0, 1]: the first whose cumulative probability reaches u. */
static int pick(const double *cum, int n, double u) {
    for (int k = 0; k < n - 1; k++)
        if (u <= cum[k]) return k;
    return n - 1;
}

/* Runs the chaos game; calls visit(x, y, map) on every kept point when given. Returns 0 on
 * divergence. bbox gets xmin, xmax, ymin, ymax. */
static int chaos(const ng_ifs *f, int64_t points, ng_rng_key k, double bbox[4],
                 void (*visit)(void *, double, double, int), void *arg) {
    double cum[NG_FRACTAL_MAX_MAPS], total = 0;
    for (int j = 0; j < f->nmaps; j++) {
        const ng_ifs_map *m = &f->m[j];
        total += fabs(m->a * m->d - m->b * m->c);
        cum[j] = total;
    }
    if (!(total > 0) || !isfinite(total)) return 0;
    for (int j = 0; j < f->nmaps; j++) cum[j] /= total;
    double x = 0, y = 0;
    bbox[0] = bbox[2] = INFINITY;
    bbox[1] = bbox[3] = -INFINITY;
    uint32_t w[4];
    for (int64_t n = 0; n < points; n++) {
        if (n % 4 == 0) ng_rng_block(k, (uint64_t)(n / 4), w);
        int j = pick(cum, f->nmaps, (double)ng_rng_u01(w[n % 4]));
        const ng_ifs_map *m = &f->m[j];
        double nx = m->a * x + m->b * y + m->e, ny = m->c * x + m->d * y + m->f;
        x = nx, y = ny;
        if (!(fabs(x) <= DIVERGED && fabs(y) <= DIVERGED)) return 0;
        if (n < NG_FRACTAL_SKIP) continue;
        if (visit) {
            visit(arg, x, y, j);
        } else {
            bbox[0] = fmin(bbox[0], x), bbox[1] = fmax(bbox[1], x);
            bbox[2] = fmin(bbox[2], y), bbox[3] = fmax(bbox[3], y);
        }
    }
    return points > NG_FRACTAL_SKIP;
}

typedef struct {
    double x0, sx, y0, sy; /* pixel = (v - v0) * s, or the middle when s is 0 */
    int64_t side;
    int flips;
    uint8_t *occ;
    int patch;           /* paint: a patch x patch pattern around each point's pixel */
    const uint8_t *mask; /* paint: the pattern, row-major */
} splat;

static int64_t to_pixel(double v, double v0, double s, int64_t side) {
    if (s == 0) return side / 2;
    double p = floor((v - v0) * s);
    if (p < 0) p = 0;
    if (p > (double)(side - 1)) p = (double)(side - 1);
    return (int64_t)p;
}

static void visit_splat(void *arg, double x, double y, int map) {
    (void)map;
    splat *sp = arg;
    int64_t col = to_pixel(x, sp->x0, sp->sx, sp->side),
            row = to_pixel(y, sp->y0, sp->sy, sp->side);
    if (sp->flips & 1) col = sp->side - 1 - col;
    if (sp->flips & 2) row = sp->side - 1 - row;
    sp->occ[row * sp->side + col] = 1;
}

/* Paints the map's number + 1 over the pattern around the point's pixel (clipped at the edges):
 * a later point paints over an earlier one. */
static void visit_paint(void *arg, double x, double y, int map) {
    splat *sp = arg;
    int64_t col = to_pixel(x, sp->x0, sp->sx, sp->side),
            row = to_pixel(y, sp->y0, sp->sy, sp->side);
    if (sp->flips & 1) col = sp->side - 1 - col;
    if (sp->flips & 2) row = sp->side - 1 - row;
    int64_t h = (sp->patch - 1) / 2;
    for (int dy = 0; dy < sp->patch; dy++)
        for (int dx = 0; dx < sp->patch; dx++) {
            int64_t r = row + dy - h, c = col + dx - h;
            if (sp->mask[dy * sp->patch + dx] && r >= 0 && r < sp->side && c >= 0 && c < sp->side)
                sp->occ[r * sp->side + c] = (uint8_t)(map + 1);
        }
}

static double axis_scale(double lo, double hi, int64_t side) {
    double ext = hi - lo;
    if (ext < 1e-9 * (1 + fabs(lo))) return 0;
    return (double)side / ext;
}

/* The splat of an image over the bounding box bb, into out (which the caller has cleared, so a
 * diverging set leaves it empty). */
static splat splat_over(const double *bb, int64_t side, int flips, uint8_t *out) {
    return (splat){.x0 = bb[0],
                   .sx = axis_scale(bb[0], bb[1], side),
                   .y0 = bb[2],
                   .sy = axis_scale(bb[2], bb[3], side),
                   .side = side,
                   .flips = flips,
                   .occ = out};
}

int ng_fractal_occupancy(const ng_ifs *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                         uint8_t *occ) {
    memset(occ, 0, (size_t)(side * side));
    double bb[4];
    /* Twice over the same numbers: the bounding box, then the pixels; no point buffer. */
    if (!chaos(f, points, k, bb, NULL, NULL)) return 0;
    splat sp = splat_over(bb, side, flips, occ);
    chaos(f, points, k, bb, visit_splat, &sp);
    return 1;
}

int ng_fractal_paint(const ng_ifs *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                     int patch, const uint8_t *mask, uint8_t *lab) {
    memset(lab, 0, (size_t)(side * side));
    double bb[4];
    if (!chaos(f, points, k, bb, NULL, NULL)) return 0;
    splat sp = splat_over(bb, side, flips, lab);
    sp.patch = patch, sp.mask = mask;
    chaos(f, points, k, bb, visit_paint, &sp);
    return 1;
}

void ng_fractal_colours(uint64_t seed, int64_t category, int64_t instance,
                        float rgb[NG_FRACTAL_MAX_MAPS][3]) {
    ng_rng_key k = {.seed = seed, .stream = cat_stream(STREAM_COLOUR, category)};
    uint32_t w[12];
    for (int b = 0; b < 3; b++) ng_rng_block(k, (uint64_t)instance * 4 + (uint64_t)b, w + 4 * b);
    for (int j = 0; j < NG_FRACTAL_MAX_MAPS; j++)
        for (int ch = 0; ch < 3; ch++)
            rgb[j][ch] = (float)(0.25 + 0.75 * (double)ng_rng_u01(w[3 * j + ch]));
}

void ng_fractal_patch_mask(uint64_t seed, int64_t category, int64_t instance, int patch,
                           uint8_t *mask) {
    NG_CHECK(patch >= 1 && patch <= NG_FRACTAL_MAX_PATCH, "data.fractal.patch: %d, need 1 to %d",
             patch, NG_FRACTAL_MAX_PATCH);
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = seed, .stream = cat_stream(STREAM_PATCH, category)},
                 (uint64_t)instance, w);
    uint64_t bits = (uint64_t)w[0] | (uint64_t)w[1] << 32;
    for (int q = 0; q < patch * patch; q++) mask[q] = (uint8_t)(bits >> q & 1);
    int h = (patch - 1) / 2;
    mask[h * patch + h] = 1; /* the point's own pixel */
}

double ng_fractal_filling(const ng_ifs *f, uint64_t seed, int64_t category) {
    uint8_t occ[NG_FRACTAL_FILL_SIDE * NG_FRACTAL_FILL_SIDE];
    ng_rng_key k = {.seed = seed, .stream = cat_stream(STREAM_FILL, category)};
    if (!ng_fractal_occupancy(f, NG_FRACTAL_FILL_POINTS, k, NG_FRACTAL_FILL_SIDE, 0, occ)) return 0;
    int64_t on = 0;
    for (int p = 0; p < NG_FRACTAL_FILL_SIDE * NG_FRACTAL_FILL_SIDE; p++) on += occ[p];
    return (double)on / (NG_FRACTAL_FILL_SIDE * NG_FRACTAL_FILL_SIDE);
}

static void check_threshold(double threshold) {
    NG_CHECK(threshold > 0 && threshold <= 1, "data.fractal.threshold: %g is not in (0, 1]",
             threshold);
}

/* The category search: the tries it took, or 0 when none of MAX_TRIES reaches the threshold (the
 * source's constructor then frees what it holds before failing). */
static int64_t search(uint64_t seed, int64_t category, double threshold, ng_ifs *out) {
    ng_rng_key k = {.seed = seed, .stream = cat_stream(STREAM_SEARCH, category)};
    for (int64_t t = 0; t < MAX_TRIES; t++) {
        /* 7 blocks a try: the map count, then 24 parameter words (6 of each of 4 maps). */
        uint32_t w[4 * 7];
        for (int b = 0; b < 7; b++) ng_rng_block(k, (uint64_t)(8 * t + b), w + 4 * b);
        ng_ifs f = {.nmaps = 2 + (int)(w[0] % 3)};
        for (int j = 0; j < f.nmaps; j++) {
            double p[6];
            for (int q = 0; q < 6; q++) p[q] = 2.0 * (double)ng_rng_u01(w[4 + 6 * j + q]) - 1.0;
            f.m[j] = (ng_ifs_map){p[0], p[1], p[2], p[3], p[4], p[5]};
        }
        if (ng_fractal_filling(&f, seed, category) >= threshold) {
            *out = f;
            return t + 1;
        }
    }
    return 0;
}

__attribute__((noreturn)) static void no_category(uint64_t seed, int64_t category,
                                                  double threshold) {
    ng_fail("data.fractal.threshold: no IFS of category %lld (seed %llu) reaches a filling rate of "
            "%g in %d tries; lower the threshold",
            (long long)category, (unsigned long long)seed, threshold, MAX_TRIES);
}

int64_t ng_fractal_category(uint64_t seed, int64_t category, double threshold, ng_ifs *out) {
    check_threshold(threshold);
    int64_t t = search(seed, category, threshold, out);
    if (!t) no_category(seed, category, threshold);
    return t;
}

void ng_fractal_instance(const ng_ifs *cat, uint64_t seed, int64_t category, int64_t instance,
                         int augment, ng_ifs *out, int *flips) {
    static const double factors[4] = {0.8, 0.9, 1.1, 1.2};
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = seed, .stream = cat_stream(STREAM_INSTANCE, category)},
                 (uint64_t)instance, w);
    *out = *cat;
    if (augment & NG_FRACTAL_WEIGHT_VARIATION) {
        ng_ifs_map *m = &out->m[w[0] % (uint32_t)cat->nmaps];
        double *p[6] = {&m->a, &m->b, &m->c, &m->d, &m->e, &m->f};
        *p[w[1] % 6] *= factors[w[2] % 4];
    }
    *flips = augment & NG_FRACTAL_FLIP ? (int)(w[3] & 3) : 0;
}

int ng_fractal_augment(int no_weight_variation, int no_flip) {
    return (no_weight_variation ? 0 : NG_FRACTAL_WEIGHT_VARIATION) |
           (no_flip ? 0 : NG_FRACTAL_FLIP);
}

ng_rng_key ng_fractal_points_key(uint64_t seed, int64_t category, int64_t instance) {
    return (ng_rng_key){.seed = seed,
                        .stream = cat_stream(STREAM_POINTS, category),
                        .offset = (uint64_t)instance << 32};
}

static void render_cpu(const ng_ifs *f, const int *flips, const ng_rng_key *keys, int64_t count,
                       int64_t points, int64_t side, float *out) {
    uint8_t *occ = malloc((size_t)(side * side));
    NG_CHECK(occ, "ng_fractal_render: out of host memory");
    for (int64_t j = 0; j < count; j++) {
        ng_fractal_occupancy(&f[j], points, keys[j], side, flips[j], occ);
        float *x = out + j * side * side;
        for (int64_t p = 0; p < side * side; p++) x[p] = occ[p] ? 1.0f : -1.0f;
    }
    free(occ);
}

void ng_fractal_render(const ng_ifs *f, const int *flips, const ng_rng_key *keys, int64_t points,
                       ng_tensor *out) {
    int64_t side = out->shape[out->ndim - 1], count = out->shape[0];
    NG_CHECK(out->dtype == NG_F32 && (out->ndim == 3 || out->ndim == 4) &&
                 out->shape[out->ndim - 2] == side && (out->ndim == 3 || out->shape[1] == 1) &&
                 out->numel == count * side * side && side >= 1,
             "ng_fractal_render: %s must be f32 [count, 1, side, side] or [count, side, side]",
             out->name ? out->name : "out");
    for (int64_t j = 0; j < count; j++)
        NG_CHECK(f[j].nmaps >= 1 && f[j].nmaps <= NG_FRACTAL_MAX_MAPS,
                 "ng_fractal_render: image %lld has %d maps", (long long)j, f[j].nmaps);
    NG_DISPATCH(out, render_cpu(f, flips, keys, count, points, side, out->data),
                ng_fractal_render_cuda(f, NULL, flips, keys, count, points, side, out->data));
}

void ng_fractal_pixels(const uint8_t *lab, int64_t hw, const float (*rgb)[3], float *x) {
    if (!rgb) {
        for (int64_t p = 0; p < hw; p++) x[p] = lab[p] ? 1.0f : -1.0f;
        return;
    }
    for (int ch = 0; ch < 3; ch++)
        for (int64_t p = 0; p < hw; p++)
            x[ch * hw + p] = lab[p] ? (float)(2.0 * (double)rgb[lab[p] - 1][ch] - 1.0) : -1.0f;
}

static void render_paint_cpu(const ng_ifs *f, const int *flips, const ng_rng_key *keys,
                             int64_t count, int64_t points, int64_t side, int patch,
                             const uint8_t *masks, const float (*rgb)[NG_FRACTAL_MAX_MAPS][3],
                             float *out) {
    uint8_t *lab = malloc((size_t)(side * side));
    NG_CHECK(lab, "ng_fractal_render_paint: out of host memory");
    int64_t hw = side * side, ch = rgb ? 3 : 1;
    for (int64_t j = 0; j < count; j++) {
        ng_fractal_paint(&f[j], points, keys[j], side, flips[j], patch, masks + j * patch * patch,
                         lab);
        ng_fractal_pixels(lab, hw, rgb ? (const float(*)[3])rgb[j] : NULL, out + j * ch * hw);
    }
    free(lab);
}

void ng_fractal_render_paint(const ng_ifs *f, const int *flips, const ng_rng_key *keys,
                             int64_t points, int patch, const uint8_t *masks,
                             const float (*rgb)[NG_FRACTAL_MAX_MAPS][3], ng_tensor *out) {
    int64_t side = out->shape[out->ndim - 1], count = out->shape[0], ch = rgb ? 3 : 1;
    NG_CHECK(out->dtype == NG_F32 && out->ndim == 4 && out->shape[1] == ch &&
                 out->shape[2] == side && side >= 1,
             "ng_fractal_render_paint: %s must be f32 [count, %lld, side, side]",
             out->name ? out->name : "out", (long long)ch);
    NG_CHECK(patch >= 1 && patch <= NG_FRACTAL_MAX_PATCH,
             "ng_fractal_render_paint: patch %d, need 1 to %d", patch, NG_FRACTAL_MAX_PATCH);
    for (int64_t j = 0; j < count; j++)
        NG_CHECK(f[j].nmaps >= 1 && f[j].nmaps <= NG_FRACTAL_MAX_MAPS,
                 "ng_fractal_render_paint: image %lld has %d maps", (long long)j, f[j].nmaps);
    NG_DISPATCH(out,
                render_paint_cpu(f, flips, keys, count, points, side, patch, masks, rgb, out->data),
                ng_fractal_paint_cuda(f, NULL, flips, keys, count, points, side, patch, masks, rgb,
                                      out->data));
}

/* ---- the source ------------------------------------------------------------------------- */

typedef struct {
    ng_fractal_config c;
    ng_ifs *cats;
    uint8_t *occ;
} fractals;

/* Grey single-pixel images keep the original renderer (and its bits); a patch or colour paints
 * map numbers and turns them into pixels. */
static int plain(const ng_fractal_config *c) {
    return !c->colour && c->patch <= 1;
}

/* Image i into out, with occ (side^2 bytes) as the renderer's scratch: a fixed data set, the same
 * image every epoch. */
static void render(const void *self, int64_t i, float *out, int32_t *y, uint8_t *occ) {
    const fractals *fr = self;
    const ng_fractal_config *c = &fr->c;
    int64_t cat = i % c->categories, inst = c->first_instance + i / c->categories;
    ng_ifs f;
    int flips;
    ng_fractal_instance(&fr->cats[cat], c->seed, cat, inst,
                        ng_fractal_augment(c->no_weight_variation, c->no_flip), &f, &flips);
    ng_rng_key k = ng_fractal_points_key(c->seed, cat, inst);
    float *x = out;
    int64_t hw = c->side * c->side;
    *y = (int32_t)cat;
    if (plain(c)) {
        /* A scaled parameter can make the IFS expand: then the category's own IFS, same points
         * key and flips (a blank image would be a label without a picture). */
        if (!ng_fractal_occupancy(&f, c->points, k, c->side, flips, occ))
            ng_fractal_occupancy(&fr->cats[cat], c->points, k, c->side, flips, occ);
        for (int64_t p = 0; p < hw; p++) x[p] = occ[p] ? 1.0f : -1.0f;
        return;
    }
    uint8_t mask[NG_FRACTAL_MAX_PATCH * NG_FRACTAL_MAX_PATCH] = {1};
    int patch = c->patch < 1 ? 1 : (int)c->patch;
    if (patch > 1) ng_fractal_patch_mask(c->seed, cat, inst, patch, mask);
    if (!ng_fractal_paint(&f, c->points, k, c->side, flips, patch, mask, occ))
        ng_fractal_paint(&fr->cats[cat], c->points, k, c->side, flips, patch, mask, occ);
    float rgb[NG_FRACTAL_MAX_MAPS][3];
    if (c->colour) ng_fractal_colours(c->seed, cat, inst, rgb);
    ng_fractal_pixels(occ, hw, c->colour ? (const float(*)[3])rgb : NULL, x);
}

static void fill(ng_source *s, int64_t epoch, int64_t i, void *out, int32_t *y) {
    (void)epoch;
    fractals *fr = s->impl;
    render(fr, i, out, y, fr->occ);
}

/* A batch: on the host, rendered as fill renders, on the workers; on the GPU, the instances,
 * fallbacks, patterns and colours are drawn here as fill draws them and one kernel call renders
 * them all. */
static void fill_batch(ng_source *s, int64_t epoch, const int64_t *idx, int64_t count, ng_tensor *x,
                       int32_t *y) {
    fractals *fr = s->impl;
    const ng_fractal_config *c = &fr->c;
    (void)epoch;
    if (x->device != NG_CUDA) {
        ng_source_render_batch(s, idx, count, x->data, y, (size_t)(c->side * c->side), render, fr);
        return;
    }
    int patch = c->patch < 1 ? 1 : (int)c->patch;
    size_t n = (size_t)count;
    ng_ifs *f = malloc(sizeof(ng_ifs) * 2 * n);
    int *flips = malloc(sizeof(int) * n);
    ng_rng_key *keys = malloc(sizeof(ng_rng_key) * n);
    uint8_t *masks = malloc(n * (size_t)(patch * patch));
    float(*rgb)[NG_FRACTAL_MAX_MAPS][3] = c->colour ? malloc(sizeof *rgb * n) : NULL;
    NG_CHECK(f && flips && keys && masks && (rgb || !c->colour),
             "%s: out of host memory for a batch of %lld", s->name, (long long)count);
    for (int64_t j = 0; j < count; j++) {
        int64_t cat = idx[j] % c->categories, inst = c->first_instance + idx[j] / c->categories;
        ng_fractal_instance(&fr->cats[cat], c->seed, cat, inst,
                            ng_fractal_augment(c->no_weight_variation, c->no_flip), &f[j],
                            &flips[j]);
        f[count + j] = fr->cats[cat]; /* the fallback, as fill's */
        keys[j] = ng_fractal_points_key(c->seed, cat, inst);
        y[j] = (int32_t)cat;
        if (patch > 1)
            ng_fractal_patch_mask(c->seed, cat, inst, patch, masks + j * patch * patch);
        else
            masks[j] = 1;
        if (rgb) ng_fractal_colours(c->seed, cat, inst, rgb[j]);
    }
    if (plain(c))
        NG_CUDA_ONLY(
            ng_fractal_render_cuda(f, f + count, flips, keys, count, c->points, c->side, x->data));
    else
        NG_CUDA_ONLY(ng_fractal_paint_cuda(f, f + count, flips, keys, count, c->points, c->side,
                                           patch, masks,
                                           (const float(*)[NG_FRACTAL_MAX_MAPS][3])rgb, x->data));
    free(f), free(flips), free(keys), free(masks), free(rgb);
}

static void destroy(ng_source *s) {
    fractals *fr = s->impl;
    free(fr->cats);
    free(fr->occ);
    free(fr);
}

size_t ng_fractal_jobs_bytes(size_t job_bytes, int64_t count) {
    return (job_bytes * (size_t)count + 255) / 256 * 256;
}

size_t ng_fractal_cuda_workspace(int64_t count, int64_t side, int painted) {
    if (count <= 0) return 0; /* no call, no request */
    if (!painted) return ng_fractal_jobs_bytes(sizeof(ng_fractal_job), count);
    return ng_fractal_jobs_bytes(sizeof(ng_fractal_paint_job), count) +
           sizeof(uint64_t) * (size_t)(side * side) * (size_t)count;
}

static size_t device_workspace(const ng_source *s, int64_t count) {
    const fractals *fr = s->impl;
    return ng_fractal_cuda_workspace(count, fr->c.side, !plain(&fr->c));
}

static const ng_source_ops ops = {fill, destroy, NULL, fill_batch, device_workspace};

const ng_ifs *ng_fractal_source_categories(const ng_source *s) {
    NG_CHECK(s->ops == &ops, "%s is not a fractal source", s->name);
    return ((const fractals *)s->impl)->cats;
}

ng_source *ng_fractal_new(const ng_fractal_config *c) {
    const char *name = c->name ? c->name : "fractal";
    NG_CHECK(c->categories >= 2 && c->categories <= 1000000,
             "data.fractal.categories: %lld, need 2 to 1000000", (long long)c->categories);
    NG_CHECK(c->instances >= 1, "data.fractal.instances: %lld, need 1 or more",
             (long long)c->instances);
    NG_CHECK(c->side >= 4 && c->side <= 4096, "data.fractal.side: %lld, need 4 to 4096",
             (long long)c->side);
    NG_CHECK(c->points > NG_FRACTAL_SKIP && c->points <= (INT64_C(1) << 32),
             "data.fractal.points: %lld, need more than %d (the first %d are skipped) and at most "
             "2^32",
             (long long)c->points, NG_FRACTAL_SKIP, NG_FRACTAL_SKIP);
    NG_CHECK(c->patch >= 0 && c->patch <= NG_FRACTAL_MAX_PATCH,
             "data.fractal.patch: %lld, need 1 to %d (0 = 1)", (long long)c->patch,
             NG_FRACTAL_MAX_PATCH);
    NG_CHECK(c->first_instance >= 0 && c->first_instance + c->instances <= (INT64_C(1) << 31),
             "data.fractal.instances: %lld from instance %lld is too many", (long long)c->instances,
             (long long)c->first_instance);
    int64_t n = 0;
    NG_CHECK(!__builtin_mul_overflow(c->categories, c->instances, &n) && n <= (INT64_C(1) << 40),
             "data.fractal: %lld categories x %lld instances are too many examples",
             (long long)c->categories, (long long)c->instances);
    check_threshold(c->threshold); /* before anything is allocated */
    ng_source *s = calloc(1, sizeof *s);
    fractals *fr = calloc(1, sizeof *fr);
    if (fr) {
        fr->cats = malloc(sizeof(ng_ifs) * (size_t)c->categories);
        fr->occ = malloc((size_t)(c->side * c->side));
    }
    if (!s || !fr || !fr->cats || !fr->occ) {
        if (fr) free(fr->cats), free(fr->occ);
        free(s), free(fr);
        ng_fail("%s: out of host memory", name);
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
                     .ndim = 3,
                     .shape = {c->colour ? 3 : 1, c->side, c->side},
                     .dtype = NG_F32,
                     .classes = c->categories,
                     .impl = fr};
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}
