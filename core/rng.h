/* Philox4x32-10 counter-based RNG (Salmon et al., SC 2011): the same numbers on CPU and GPU.
 * A draw is keyed by (seed, stream, offset): seed is the run's seed, stream names the purpose
 * (dropout of layer 3, data shuffling, noise of rank r, ...), offset skips ahead so successive
 * fills of one stream do not overlap.
 *
 * Element i of a fill uses the Philox block with counter
 *   {lo32(offset + i/4), hi32(offset + i/4), lo32(stream), hi32(stream)}, key {lo32(seed),
 * hi32(seed)} and takes word i%4 of it. Normals come by Box-Muller from the word pairs (0,1) and
 * (2,3) of the same block: words 0,1 give elements 4b and 4b+1 (cos and sin), words 2,3 give 4b+2,
 * 4b+3. A fill of n elements therefore consumes ceil(n/4) counter values: the next fill of the same
 * stream should start at offset + ng_rng_blocks(n). */
#ifndef NG_RNG_H
#define NG_RNG_H

#include <stdint.h>

#include "half.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t seed, stream, offset;
} ng_rng_key;

/* One Philox4x32-10 block: out = philox(counter, key). */
static inline NG_HOSTDEV void ng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2],
                                               uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The block for counter value `block` of a key (the layout described above). */
static inline NG_HOSTDEV void ng_rng_block(ng_rng_key k, uint64_t block, uint32_t out[4]) {
    uint64_t c = k.offset + block;
    uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), (uint32_t)k.stream,
                       (uint32_t)(k.stream >> 32)};
    uint32_t key[2] = {(uint32_t)k.seed, (uint32_t)(k.seed >> 32)};
    ng_philox4x32_10(ctr, key, out);
}

/* A uniform float in (0, 1]: never 0, so log() in Box-Muller is safe. */
static inline NG_HOSTDEV float ng_rng_u01(uint32_t w) {
    return ((float)(w >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

static inline uint64_t ng_rng_blocks(int64_t n) {
    return (uint64_t)((n + 3) / 4);
}

/* Fills of a floating tensor (f32, f64, f16, bf16) on either device, bit-identical on CPU and
 * GPU; the exact per-element rule is in rng_dist.h. uniform: lo + (hi-lo)*u with u in (0,1];
 * normal: mean + std*z; bernoulli: 1 when u <= p, else 0. */
void ng_rng_uniform(ng_tensor *t, ng_rng_key k, double lo, double hi);
void ng_rng_normal(ng_tensor *t, ng_rng_key k, double mean, double std);
void ng_rng_bernoulli(ng_tensor *t, ng_rng_key k, double p);

#ifdef __cplusplus
}
#endif
#endif
