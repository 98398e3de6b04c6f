/* Synthetic 3D volumes made on the fly: an elongated blob whose direction is the class, plus
 * noise, every voxel a function of (seed, split, example index). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/source.h"

/* Philox streams (or'ed with the split); disjoint from the other users of the run's seed. */
#define STREAM_PLACE (UINT64_C(0x564f4c50) << 32) /* blob centres */
#define STREAM_NOISE (UINT64_C(0x564f4c4e) << 32) /* voxel noise */

#define NDIRS 13

typedef struct {
    ng_synthetic3d_config c;
    double sigma_long, sigma_short;
} volumes;

/* The 13 directions through opposite faces, edges and corners of a cube, in that order: the
 * axes first, so two or three classes differ most. */
static const int dirs[NDIRS][3] = {{1, 0, 0},  {0, 1, 0},  {0, 0, 1}, {1, 1, 0},  {1, -1, 0},
                                   {1, 0, 1},  {1, 0, -1}, {0, 1, 1}, {0, 1, -1}, {1, 1, 1},
                                   {1, 1, -1}, {1, -1, 1}, {-1, 1, 1}};

void ng_synthetic3d_direction(int64_t c, double d[3]) {
    NG_CHECK(c >= 0 && c < NDIRS, "synthetic3d: class %lld has no direction (0-12)", (long long)c);
    double len =
        sqrt((double)(dirs[c][0] * dirs[c][0] + dirs[c][1] * dirs[c][1] + dirs[c][2] * dirs[c][2]));
    for (int k = 0; k < 3; k++) d[k] = dirs[c][k] / len;
}

static void fill(ng_source *s, int64_t epoch, int64_t i, void *out, int32_t *y) {
    (void)epoch; /* a fixed data set: the same volume every epoch */
    const volumes *v = s->impl;
    const ng_synthetic3d_config *c = &v->c;
    int64_t D = c->side, e = ng_source_example_size(s);
    float *x = out;
    /* Noise first, through core's fill so it follows natgrad's one RNG rule; each example has
     * its own counter range of the split's stream. */
    ng_tensor t = ng_tensor_wrap(x, NG_F32, NG_CPU, 1, (int64_t[]){e}, s->name);
    ng_rng_normal(&t,
                  (ng_rng_key){.seed = c->seed,
                               .stream = STREAM_NOISE | c->split,
                               .offset = (uint64_t)i * ng_rng_blocks(e)},
                  0.0, c->noise);
    int64_t cls = i % c->classes;
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = c->seed, .stream = STREAM_PLACE | c->split}, (uint64_t)i, w);
    double ctr[3], d[3];
    for (int k = 0; k < 3; k++) ctr[k] = 0.25 * (double)D + 0.5 * (double)D * ng_rng_u01(w[k]);
    ng_synthetic3d_direction(cls, d);
    double al = 0.5 / (v->sigma_long * v->sigma_long), as = 0.5 / (v->sigma_short * v->sigma_short);
    /* The blob once, into channel 0's noise; then channels 1.. add the same values. */
    float *blob = NULL;
    if (c->channels > 1) {
        blob = malloc(sizeof(float) * (size_t)(D * D * D));
        NG_CHECK(blob, "%s: out of host memory for a %lld^3 volume", s->name, (long long)D);
    }
    for (int64_t z = 0; z < D; z++)
        for (int64_t yy = 0; yy < D; yy++)
            for (int64_t xx = 0; xx < D; xx++) {
                /* Axis order (x, y, z) = (W, H, D) of the [C, D, H, W] layout. */
                double q0 = (double)xx + 0.5 - ctr[0], q1 = (double)yy + 0.5 - ctr[1],
                       q2 = (double)z + 0.5 - ctr[2];
                double along = q0 * d[0] + q1 * d[1] + q2 * d[2];
                double across = q0 * q0 + q1 * q1 + q2 * q2 - along * along;
                double b = exp(-al * along * along - as * across);
                int64_t p = (z * D + yy) * D + xx;
                x[p] = (float)((double)x[p] + b);
                if (blob) blob[p] = (float)b;
            }
    for (int64_t ch = 1; ch < c->channels; ch++) {
        float *xc = x + ch * D * D * D;
        for (int64_t p = 0; p < D * D * D; p++) xc[p] = (float)((double)xc[p] + (double)blob[p]);
    }
    free(blob);
    *y = (int32_t)cls;
}

static void destroy(ng_source *s) {
    free(s->impl);
}

static const ng_source_ops ops = {fill, destroy, NULL, NULL, NULL};

ng_source *ng_synthetic3d_new(const ng_synthetic3d_config *c) {
    const char *name = c->name ? c->name : "synthetic3d";
    NG_CHECK(c->n > 0, "data.synthetic: %s needs at least one example (got %lld)", name,
             (long long)c->n);
    NG_CHECK(c->side >= 2, "data.synthetic.side: %lld is too small for a volume (need 2 or more)",
             (long long)c->side);
    NG_CHECK(c->channels >= 1, "data.synthetic.channels: %lld must be 1 or more",
             (long long)c->channels);
    NG_CHECK(c->classes >= 2 && c->classes <= NDIRS,
             "data.synthetic.classes: synthetic3d has one class per blob direction, 2 to %d, not "
             "%lld",
             NDIRS, (long long)c->classes);
    NG_CHECK(c->noise >= 0 && isfinite(c->noise), "data.synthetic.noise: %g must be >= 0",
             c->noise);
    /* One example must fit a 64-bit count and its noise counters must not run into the next
     * example's for any index: n * blocks < 2^62. */
    int64_t e = 0;
    NG_CHECK(c->side <= 1 << 20 && c->channels <= 1 << 20 &&
                 !__builtin_mul_overflow(c->side * c->side * c->side, c->channels, &e) &&
                 e <= (INT64_C(1) << 40) && (double)c->n * (double)ng_rng_blocks(e) < 0x1p62,
             "data.synthetic: %lld volumes of %lld x %lld^3 voxels are too large", (long long)c->n,
             (long long)c->channels, (long long)c->side);
    ng_source *s = calloc(1, sizeof *s);
    volumes *v = malloc(sizeof *v);
    if (!s || !v) {
        free(s), free(v);
        ng_fail("%s: out of host memory", name);
    }
    v->c = *c;
    v->c.name = NULL;
    /* Sizes relative to the cube, so the task looks the same at every side; the short axis keeps
     * at least a voxel's width so small volumes still show a direction. */
    v->sigma_long = (double)c->side / 4.0;
    v->sigma_short = fmax((double)c->side / 12.0, 0.75);
    *s = (ng_source){.ops = &ops,
                     .reentrant = 1, /* a function of (seed, split, i), its own buffers */
                     .n = c->n,
                     .ndim = 4,
                     .shape = {c->channels, c->side, c->side, c->side},
                     .dtype = NG_F32,
                     .classes = c->classes,
                     .impl = v};
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}
