/* FractalDB 2D (Kataoka et al., ACCV 2020) as an on-the-fly data source: categories are
 * iterated function systems found by a search, instances perturb them, and every image is rendered
 * by the chaos game from (seed, category, instance) with Philox (core/rng.h), so nothing is held
 * in memory and a seed gives the same images on every run.
 *
 * An IFS has 2-4 affine maps w(x, y) = (a x + b y + e, c x + d y + f); map k is chosen with
 * probability |det_k| / sum_j |det_j|, det = a d - b c (FractalDB's rule).
 *
 * Category search: try t of category c draws the map count (2-4, uniform) and the six parameters of
 * each map, uniform in [-1, 1], from Philox stream "search" of c at counter 8 t; a try is kept when
 * its filling rate (below) reaches the threshold (FractalDB uses 0.2).
 *
 * Filling rate: the fraction of the NG_FRACTAL_FILL_SIDE^2 pixels (32 x 32) occupied by the
 * chaos game of NG_FRACTAL_FILL_POINTS points (4 per pixel) of stream "fill" of c, rendered as
 * below. Degenerate sets (a point, a line) and diverging ones (a point cloud beyond 1e6 or not
 * finite) have a low rate, or 0.
 *
 * Chaos game: start at (0, 0); point n (0-based) applies the map chosen by word n % 4 of Philox
 * block n / 4 of the key (u = ng_rng_u01(word), the first map whose cumulative probability reaches
 * u); the first NG_FRACTAL_SKIP points are dropped. The kept points' bounding box maps to the
 * pixels, each axis on its own: column = floor((x - xmin) / (xmax - xmin) * side), clamped to
 * side - 1 (y likewise gives the row); an axis whose extent is below 1e-9 (1 + |min|) maps to the
 * middle pixel, side / 2. Arithmetic in double, no fused multiply-add.
 *
 * Instances: instance i of category c draws one Philox block of stream "instance" of c at counter
 * i: word 0 picks a map, word 1 one of its six parameters, word 2 a factor in {0.8, 0.9, 1.1,
 * 1.2} that scales it (FractalDB's weight variation; probabilities follow the new determinants),
 * and bits 0 and 1 of word 3 a horizontal and a vertical flip of the image. Either augmentation
 * can be left out (data.fractal.weight_variation, data.fractal.flip): the block is drawn all the
 * same, so the other one does not change, and an instance without weight variation is its
 * category's IFS exactly, one without flips is never flipped. Its points come from
 * stream "points" of c at counter i * 2^32. When the perturbed IFS diverges (a scale of 1.1 or 1.2
 * can make a map expand), the source renders the category's own IFS with the same points and
 * flips instead.
 *
 * Images: grey [1, side, side] float, +1 where a point landed and -1 elsewhere (a fixed affine
 * map of the occupancy, so no statistics are needed and the pixels are balanced around 0 for
 * fractals of filling rate near 1/2). The label is the category.
 *
 * Patch rendering (FractalDB's patches): with patch k > 1 each kept point lights a k x k pattern
 * centred on its pixel (top-left offset (k - 1) / 2, clipped at the edges) instead of the pixel
 * alone; the pattern is the instance's, bit q of words 0-1 (low word first) of Philox block i of
 * stream "patch" of c, the centre always lit. Colour: the image is [3, side, side], each map of
 * the instance has a colour, components 0.25 + 0.75 u from words 3 j .. 3 j + 2 of blocks
 * 4 i .. 4 i + 2 of stream "colour" of c (never black, so a lit pixel differs from the
 * background), and a pixel takes the colour of the map that made the last point painted on it,
 * in the chaos game's order, as 2 colour - 1 (in [-0.5, 1]); the background is -1 in every
 * channel. Grey images with patch 1 are rendered exactly as above. */
#ifndef NG_FRACTAL_H
#define NG_FRACTAL_H

#include <stdint.h>

#include "core/rng.h"
#include "data/source.h"

#define NG_FRACTAL_MAX_MAPS 4
#define NG_FRACTAL_FILL_SIDE 32
#define NG_FRACTAL_FILL_POINTS (4 * NG_FRACTAL_FILL_SIDE * NG_FRACTAL_FILL_SIDE)
#define NG_FRACTAL_SKIP 20
#define NG_FRACTAL_MAX_PATCH 7

typedef struct {
    double a, b, c, d, e, f;
} ng_ifs_map;

typedef struct {
    int nmaps;
    ng_ifs_map m[NG_FRACTAL_MAX_MAPS];
} ng_ifs;

/* Occupancy of the chaos game of `points` points of key k (the rule above) on a side x side grid
 * into occ (row-major, 1 = occupied); flips bit 0 mirrors the columns, bit 1 the rows. Returns 1,
 * or 0 (occ all 0) when the points diverge or no point is kept. */
int ng_fractal_occupancy(const ng_ifs *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                         uint8_t *occ);
/* As ng_fractal_occupancy, with each kept point painting map + 1 (1-4) over the patch x patch
 * pattern mask around its pixel (patch 1, mask {1}: the pixel alone); 0 = unpainted. */
int ng_fractal_paint(const ng_ifs *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                     int patch, const uint8_t *mask, uint8_t *lab);
/* The map colours of an instance (RGB in [0.25, 1]) and its patch pattern (patch^2 bytes). */
void ng_fractal_colours(uint64_t seed, int64_t category, int64_t instance,
                        float rgb[NG_FRACTAL_MAX_MAPS][3]);
void ng_fractal_patch_mask(uint64_t seed, int64_t category, int64_t instance, int patch,
                           uint8_t *mask);
/* The filling rate of f for category `category` of `seed` (the stream the search uses). */
double ng_fractal_filling(const ng_ifs *f, uint64_t seed, int64_t category);
/* Category `category` of `seed`: the first try whose filling rate reaches threshold (in (0, 1]).
 * Returns the number of tries; fails (exit 2) after 100000. */
int64_t ng_fractal_category(uint64_t seed, int64_t category, double threshold, ng_ifs *out);
/* The instance augmentations, a mask (2D and 3D): FractalDB's weight variation and the flips. */
#define NG_FRACTAL_WEIGHT_VARIATION 1
#define NG_FRACTAL_FLIP 2
#define NG_FRACTAL_AUGMENT_ALL (NG_FRACTAL_WEIGHT_VARIATION | NG_FRACTAL_FLIP)
/* The mask a source's config asks for (its no_weight_variation and no_flip). */
int ng_fractal_augment(int no_weight_variation, int no_flip);
/* Instance `instance` of a category's IFS cat, with the augmentations in `augment`: the IFS
 * (cat's own without NG_FRACTAL_WEIGHT_VARIATION) and the flips (0 without NG_FRACTAL_FLIP). */
void ng_fractal_instance(const ng_ifs *cat, uint64_t seed, int64_t category, int64_t instance,
                         int augment, ng_ifs *out, int *flips);
/* Painted map numbers (1-4, 0 = unpainted; or occupancy) of hw pixels as an image: +1 grey (rgb
 * NULL), or the map's colour in [0.25, 1] as [-0.5, 1] per channel (3 x hw); the background -1. */
void ng_fractal_pixels(const uint8_t *lab, int64_t hw, const float (*rgb)[3], float *x);
/* The key of an instance's points. */
ng_rng_key ng_fractal_points_key(uint64_t seed, int64_t category, int64_t instance);

/* Renders count images into out, an f32 tensor [count, 1, side, side] (or [count, side, side])
 * on either device: image j from the IFS f[j], flips[j] and points key keys[j], +1/-1 as above.
 * The CUDA twin (data/fractal_cuda.cu) gives the same bits: one thread block per image, its
 * threads draw the map choices of a chunk of points, one thread walks the chunk's points (a
 * chain: point n needs point n-1) in double with round-to-nearest intrinsics (no fused
 * multiply-add, as the CPU build), and all threads splat the chunk with atomic stores. */
void ng_fractal_render(const ng_ifs *f, const int *flips, const ng_rng_key *keys, int64_t points,
                       ng_tensor *out);
/* Renders count painted images (patches, colour) into out, an f32 tensor [count, C, side, side]
 * on either device, C = 3 with rgb (colour: rgb[j] the map colours of image j, as from
 * ng_fractal_colours) or 1 without (grey, +1 where painted): image j as ng_fractal_paint of f[j],
 * flips[j], keys[j] with the patch x patch pattern masks + j patch^2, pixels as the source's. The
 * CUDA twin gives the same bits: the chain as in the grey kernel, and since the points of a chunk
 * splat in parallel, each pixel keeps the largest (point, map) that reached it, which is the
 * CPU's last painter. */
void ng_fractal_render_paint(const ng_ifs *f, const int *flips, const ng_rng_key *keys,
                             int64_t points, int patch, const uint8_t *masks,
                             const float (*rgb)[NG_FRACTAL_MAX_MAPS][3], ng_tensor *out);
/* One image's job for the CUDA twins, copied into the CUDA workspace (here so that the memory
 * plan can size it): the IFS, its fallback (nmaps 0: none), the points key and the flips; a
 * painted image adds its pattern and the pixel value each map paints, per channel. */
typedef struct {
    ng_ifs f;
    ng_ifs alt; /* rendered instead when f diverges (the source's fallback); nmaps 0: none */
    ng_rng_key key;
    int flips;
} ng_fractal_job;
typedef struct {
    ng_fractal_job g;
    int patch;
    unsigned char mask[NG_FRACTAL_MAX_PATCH * NG_FRACTAL_MAX_PATCH];
    float value[NG_FRACTAL_MAX_MAPS][3];
} ng_fractal_paint_job;
/* count jobs of job_bytes each, rounded up to 256 bytes: where the kernels' scratch starts. */
size_t ng_fractal_jobs_bytes(size_t job_bytes, int64_t count);
/* The CUDA twins' request of the shared CUDA workspace for count images of side^2 pixels, which
 * the memory plan counts too: the jobs, and for painted images (painted 1) the last painter of
 * every pixel, 8 bytes each (103 MB for 256 images of 224 px). */
size_t ng_fractal_cuda_workspace(int64_t count, int64_t side, int painted);
#ifdef NG_HAVE_CUDA
/* The CUDA twins; alt (NULL: none) is rendered for image j instead when f[j] diverges or keeps
 * no point (the source's fallback to the category's own IFS). */
void ng_fractal_render_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                            const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                            float *out);
void ng_fractal_paint_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                           const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                           int patch, const uint8_t *masks,
                           const float (*rgb)[NG_FRACTAL_MAX_MAPS][3], float *out);
#endif

/* The source: example i is category i % categories, instance first_instance + i / categories,
 * for n = categories * instances examples; a train and a test split share the categories and
 * take disjoint instance ranges (train 0.., test from the train count on). patch (0 or 1: single
 * pixels) and colour as above; no_weight_variation and no_flip leave those augmentations out of
 * every instance (0, 0: FractalDB's instances). The source's fill_batch (data/source.h) renders a
 * batch of examples on the device of the tensor it is given: on the CPU example by example through
 * fill, on the GPU in one call of the CUDA twins above (grey, patch and colour alike, with the
 * fallback), the same values either way. */
typedef struct {
    int64_t categories, instances, first_instance, side, points, patch;
    int colour;
    int no_weight_variation, no_flip; /* zero is the default, so that {0} is FractalDB's source */
    double threshold;
    uint64_t seed;
    const char *name;
} ng_fractal_config;
ng_source *ng_fractal_new(const ng_fractal_config *c);
/* The category parameter sets of a fractal source (categories of them). */
const ng_ifs *ng_fractal_source_categories(const ng_source *s);

#endif
