/* Random crops (zero padding) and horizontal flips of images and volumes. */
#include "data/augment.h"

#include "core/error.h"
#include "core/rng.h"

/* The Philox stream of augmentation draws; disjoint from other users of the run's seed. */
#define STREAM_AUGMENT (UINT64_C(0x41554721) << 32)

int ng_augment_active(const ng_augment *a) {
    return a->crop_pad || a->hflip;
}

void ng_augment_check(const ng_augment *a, int ndim, const int64_t *shape, const char *data_name) {
    NG_CHECK(a->crop_pad >= 0, "data.augment.crop_pad: %d must be >= 0", a->crop_pad);
    if (!ng_augment_active(a)) return;
    NG_CHECK(ndim == 3 || ndim == 4,
             "data.augment (crop_pad %d, hflip %d): crops and flips need [C,H,W] images or "
             "[C,D,H,W] volumes, data %s has %d dims",
             a->crop_pad, a->hflip, data_name, ndim);
    for (int i = 1; i < ndim; i++)
        NG_CHECK(a->crop_pad < shape[i],
                 "data.augment.crop_pad: %d must be below every spatial side (%lld in %s)",
                 a->crop_pad, (long long)shape[i], data_name);
}

void ng_augment_example(const ng_augment *a, uint64_t seed, int64_t epoch, int64_t idx, int ndim,
                        const int64_t *shape, const float *src, float *dst) {
    uint32_t w[4];
    ng_rng_block((ng_rng_key){.seed = seed, .stream = STREAM_AUGMENT | (uint64_t)epoch},
                 (uint64_t)idx, w);
    /* Words 0-2 are what images always used (dy, dx, flip), so image runs keep their bits;
     * volumes take their depth shift from word 3. */
    int64_t p = a->crop_pad, span = 2 * p + 1;
    int64_t dy = p ? (int64_t)(w[0] % (uint32_t)span) - p : 0;
    int64_t dx = p ? (int64_t)(w[1] % (uint32_t)span) - p : 0;
    int64_t dz = p && ndim == 4 ? (int64_t)(w[3] % (uint32_t)span) - p : 0;
    int flip = a->hflip && (w[2] & 1);
    int64_t C = shape[0], D = ndim == 4 ? shape[1] : 1, H = shape[ndim - 2], W = shape[ndim - 1];
    for (int64_t c = 0; c < C; c++)
        for (int64_t z = 0; z < D; z++) {
            int64_t sz = z + dz;
            for (int64_t i = 0; i < H; i++) {
                int64_t si = i + dy;
                float *o = dst + ((c * D + z) * H + i) * W;
                if (sz < 0 || sz >= D || si < 0 || si >= H) {
                    for (int64_t j = 0; j < W; j++) o[j] = 0.0f;
                    continue;
                }
                const float *row = src + ((c * D + sz) * H + si) * W;
                for (int64_t j = 0; j < W; j++) {
                    int64_t sj = (flip ? W - 1 - j : j) + dx;
                    o[j] = sj >= 0 && sj < W ? row[sj] : 0.0f;
                }
            }
        }
}
