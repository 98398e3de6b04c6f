/* Philox fills pinned once: a key and the f32 bits of the first six elements of a uniform (-1, 2),
 * normal (-1, 2) and bernoulli (0.5) fill. test_rng checks the CPU and test_rng_gpu the GPU
 * against the same table, so a change of the stream or of rounding shows on either side. */
#ifndef NG_RNG_PINNED_H
#define NG_RNG_PINNED_H

#include <stdint.h>

#include "core/rng.h"

static const ng_rng_key rng_pinned_key = {20240601, 3, 7};
static const uint32_t rng_pinned_bits[3][6] = {
    {0xbf31f3e5, 0x3f1df25c, 0x3e0e5fc8, 0x3f914368, 0x3f29987d, 0x3eb3c116},
    {0xc0a4c602, 0xc002649e, 0xbfd51426, 0xc06cfc37, 0xc0445e79, 0xbeaa93f3},
    {0x3f800000, 0x00000000, 0x3f800000, 0x00000000, 0x00000000, 0x3f800000},
};

#endif
