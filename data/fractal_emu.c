/* The CUDA twins of the fractal renderers in the CUDA emulation build (core/cuda_emu.h): the same
 * contract (alt rendered for image j when f[j] diverges or keeps no point), computed by the CPU
 * renderers into the device batch with device memory open. */
#include <stdlib.h>

#include "core/cuda_emu.h"
#include "core/error.h"
#include "data/fractal.h"
#include "data/fractal3d.h"

void ng_fractal_render_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                            const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                            float *out) {
    ng_fractal_paint_cuda(f, alt, flips, keys, count, points, side, 0, NULL, NULL, out);
}

/* patch 0: the grey renderer's occupancy (ng_fractal_render_cuda). */
void ng_fractal_paint_cuda(const ng_ifs *f, const ng_ifs *alt, const int *flips,
                           const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                           int patch, const uint8_t *masks,
                           const float (*rgb)[NG_FRACTAL_MAX_MAPS][3], float *out) {
    int64_t hw = side * side, ch = rgb ? 3 : 1;
    uint8_t *lab = malloc((size_t)hw);
    NG_CHECK(lab, "ng_fractal_paint_cuda (emulated): out of host memory");
    ng_emu_enter();
    for (int64_t j = 0; j < count; j++) {
        const uint8_t *m = patch ? masks + j * patch * patch : NULL;
        int ok = patch ? ng_fractal_paint(&f[j], points, keys[j], side, flips[j], patch, m, lab)
                       : ng_fractal_occupancy(&f[j], points, keys[j], side, flips[j], lab);
        if (!ok && alt) {
            if (patch)
                ng_fractal_paint(&alt[j], points, keys[j], side, flips[j], patch, m, lab);
            else
                ng_fractal_occupancy(&alt[j], points, keys[j], side, flips[j], lab);
        }
        ng_fractal_pixels(lab, hw, rgb ? (const float(*)[3])rgb[j] : NULL, out + j * ch * hw);
    }
    ng_emu_leave();
    free(lab);
}

void ng_fractal3d_render_cuda(const ng_ifs3 *f, const ng_ifs3 *alt, const int *flips,
                              const ng_rng_key *keys, int64_t count, int64_t points, int64_t side,
                              float *out) {
    int64_t v = side * side * side;
    uint8_t *occ = malloc((size_t)v);
    NG_CHECK(occ, "ng_fractal3d_render_cuda (emulated): out of host memory");
    ng_emu_enter();
    for (int64_t j = 0; j < count; j++) {
        if (!ng_fractal3d_occupancy(&f[j], points, keys[j], side, flips[j], occ) && alt)
            ng_fractal3d_occupancy(&alt[j], points, keys[j], side, flips[j], occ);
        ng_fractal_pixels(occ, v, NULL, out + j * v);
    }
    ng_emu_leave();
    free(occ);
}
