/* FractalDB in 3D (in the spirit of formula-driven 3D pre-training, Yamada et al., CVPR 2022):
 * categories are iterated function systems of 3D affine maps found by a search, instances perturb
 * them, the chaos game gives a point cloud, and the point cloud is voxelized into a D^3 occupancy
 * volume for the 3D-CNN. Every draw is a function of (seed, category, instance) through Philox
 * (core/rng.h): nothing is held in memory, and a seed gives the same volumes on every run.
 *
 * A 3D IFS has 2-4 affine maps w(p) = A p + t (A 3x3, row-major, t a 3-vector); map k is chosen
 * with probability |det A_k| / sum_j |det A_j|, as in 2D (data/fractal.h).
 *
 * Category search: try t of category c draws the map count (2-4, uniform) and the twelve
 * parameters of each map (A row by row, then t), uniform in [-1, 1], from Philox stream "search"
 * of c at counter 16 t (13 blocks used); a try is kept when its filling rate reaches the threshold.
 *
 * Filling rate: the fraction of the NG_FRACTAL3D_FILL_SIDE^3 voxels (16^3) occupied by the chaos
 * game of NG_FRACTAL3D_FILL_POINTS points (4 per voxel) of stream "fill" of c, voxelized as below.
 * Diverging sets (beyond 1e6 or not finite) and degenerate ones (all |det| 0) fill nothing. A
 * fractal of dimension 2 fills about 1/16 of a 16^3 grid, so the 3D threshold is lower than 2D's.
 *
 * Chaos game: start at (0, 0, 0); point n (0-based) applies the map chosen by word n % 4 of Philox
 * block n / 4 of the key (u = ng_rng_u01(word), the first map whose cumulative probability reaches
 * u); the first NG_FRACTAL_SKIP points are dropped; the rest are the point cloud. Arithmetic in
 * double, each coordinate ((a0 x + a1 y) + a2 z) + t0 in that order, no fused multiply-add.
 *
 * Voxelization: the cloud's bounding box maps to the voxels, each axis on its own: index =
 * floor((v - vmin) * (side / (vmax - vmin))), clamped to side - 1; an axis whose extent is below
 * 1e-9 (1 + |vmin|) maps to the middle voxel, side / 2. x is the W axis, y H, z D of the
 * [1, D, H, W] volume. Flips: bit 0 mirrors W, bit 1 H, bit 2 D.
 *
 * Instances: instance i of category c draws one Philox block of stream "instance" of c at counter
 * i: word 0 picks a map, word 1 one of its twelve parameters, word 2 a factor in {0.8, 0.9, 1.1,
 * 1.2} that scales it (FractalDB's weight variation), bits 0-2 of word 3 the flips; either can be
 * left out (data.fractal3d.weight_variation, data.fractal3d.flip) without changing the other, as
 * in 2D. Its points come from stream "points" of c at counter i * 2^32. When the perturbed IFS
 * diverges, the source voxelizes the category's own IFS with the same points and flips instead.
 *
 * Volumes: [1, side, side, side] float, +1 where a point landed and -1 elsewhere; the label is the
 * category. */
#ifndef NG_FRACTAL3D_H
#define NG_FRACTAL3D_H

#include <stdint.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/fractal.h" /* the instance augmentations' mask, shared with 2D */
#include "data/source.h"

#define NG_FRACTAL3D_MAX_MAPS 4
#define NG_FRACTAL3D_FILL_SIDE 16
#define NG_FRACTAL3D_FILL_POINTS                                                                   \
    (4 * NG_FRACTAL3D_FILL_SIDE * NG_FRACTAL3D_FILL_SIDE * NG_FRACTAL3D_FILL_SIDE)
#define NG_FRACTAL3D_MAX_SIDE 1024 /* 1024^3 voxels: 4 GiB of f32 for one volume */

typedef struct {
    double a[9]; /* A, row-major */
    double t[3];
} ng_ifs3_map;

typedef struct {
    int nmaps;
    ng_ifs3_map m[NG_FRACTAL3D_MAX_MAPS];
} ng_ifs3;

/* The kept points of the chaos game (points - NG_FRACTAL_SKIP of them) into xyz (x, y, z per
 * point). Returns 1, or 0 when the points diverge (xyz then holds what came before). */
int ng_fractal3d_points(const ng_ifs3 *f, int64_t points, ng_rng_key k, double *xyz);
/* Voxelizes n points (x, y, z each) into occ, side^3 bytes in [D][H][W] order (1 = occupied),
 * by the bounding-box rule above, with flips. */
void ng_voxelize(const double *xyz, int64_t n, int64_t side, int flips, uint8_t *occ);
/* The chaos game of `points` points of key k voxelized into occ without a point buffer (two passes
 * over the same numbers): the same bytes as ng_voxelize of ng_fractal3d_points. Returns 1, or 0
 * (occ all 0) when the points diverge or none is kept. */
int ng_fractal3d_occupancy(const ng_ifs3 *f, int64_t points, ng_rng_key k, int64_t side, int flips,
                           uint8_t *occ);
/* The filling rate of f for category `category` of `seed` (the stream the search uses). */
double ng_fractal3d_filling(const ng_ifs3 *f, uint64_t seed, int64_t category);
/* Category `category` of `seed`: the first try whose filling rate reaches threshold (in (0, 1]).
 * Returns the number of tries; fails (exit 2, naming data.fractal3d.threshold) after 100000 (about
 * a minute). */
int64_t ng_fractal3d_category(uint64_t seed, int64_t category, double threshold, ng_ifs3 *out);
/* Instance `instance` of a category's IFS cat, with the augmentations in `augment` (NG_FRACTAL_*
 * of data/fractal.h): the IFS (cat's own without NG_FRACTAL_WEIGHT_VARIATION) and the flips (0
 * without NG_FRACTAL_FLIP). */
void ng_fractal3d_instance(const ng_ifs3 *cat, uint64_t seed, int64_t category, int64_t instance,
                           int augment, ng_ifs3 *out, int *flips);
/* The key of an instance's points. */
ng_rng_key ng_fractal3d_points_key(uint64_t seed, int64_t category, int64_t instance);

/* Renders count volumes into out, an f32 tensor [count, 1, side, side, side] on either device:
 * volume j from f[j], flips[j] and key keys[j], +1/-1 as above. The CUDA twin
 * (data/fractal_cuda.cu) is written to give the same bits, as the 2D one does. */
void ng_fractal3d_render(const ng_ifs3 *f, const int *flips, const ng_rng_key *keys, int64_t points,
                         ng_tensor *out);
/* One volume's job for the CUDA twin, copied into the CUDA workspace (here so that the memory
 * plan can size it): the IFS, its fallback (nmaps 0: none), the points key and the flips. */
typedef struct {
    ng_ifs3 f;
    ng_ifs3 alt;
    ng_rng_key key;
    int flips;
} ng_fractal3d_job;
/* The CUDA twin's request of the shared CUDA workspace for count volumes: their jobs, nothing
 * per voxel. */
size_t ng_fractal3d_cuda_workspace(int64_t count);
#ifdef NG_HAVE_CUDA
/* alt (NULL: none) is rendered for volume j instead when f[j] diverges (the source's fallback). */
void ng_fractal3d_render_cuda(const ng_ifs3 *f, const ng_ifs3 *alt, const int *flips,
                              const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                              float *out);
#endif

/* The source: example i is category i % categories, instance first_instance + i / categories,
 * for n = categories * instances examples; a train and a test split share the categories and
 * take disjoint instance ranges; no_weight_variation and no_flip leave those augmentations out of
 * every instance (0, 0: all in). Its fill_batch (data/source.h) renders a batch on the device of
 * the tensor it is given (the GPU: one call of the CUDA twin, with the fallback). */
typedef struct {
    int64_t categories, instances, first_instance, side, points;
    int no_weight_variation, no_flip; /* zero is the default, so that {0} has both */
    double threshold;
    uint64_t seed;
    const char *name;
} ng_fractal3d_config;
ng_source *ng_fractal3d_new(const ng_fractal3d_config *c);
/* The categories of a fractal3d source. */
const ng_ifs3 *ng_fractal3d_source_categories(const ng_source *s);

#endif
