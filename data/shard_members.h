/* The members of a tar shard (data/shards.h): what their bytes mean. Shared by the reader and the
 * writer of shards, and by `natgrad data-bench` (apps/data_bench.c) to time one PNG file per
 * image against them; not for other use outside data/. */
#ifndef NG_SHARD_MEMBERS_H
#define NG_SHARD_MEMBERS_H

#include <stddef.h>
#include <stdint.h>

/* Members larger than this are refused (4 GiB). */
#define NG_SHARD_MAX_MEMBER (INT64_C(1) << 32)

typedef struct {
    int ndim;
    int64_t shape[4];
} ng_shard_shape;

int64_t ng_shard_numel(const ng_shard_shape *s);
/* Decodes a data member (ext "npy": little-endian f4 or u1; "png": 8-bit grey or RGB, alpha
 * dropped) into its shape and, when out != NULL, its values as f32 [C, ...] (u1 and PNG scaled to
 * [0, 1]). With want != NULL the shape must equal *want. 0 and a reason in why on failure. */
int ng_shard_decode(const char *ext, const unsigned char *b, size_t len, const ng_shard_shape *want,
                    ng_shard_shape *got, float *out, char *why, size_t cap);
/* The label of a .cls member: a decimal integer in [0, 2^31 - 1), whitespace around it allowed. */
int ng_shard_parse_cls(const unsigned char *b, size_t len, int32_t *y, char *why, size_t cap);
/* Writes the npy v1.0 header of a little-endian f4 array of this shape, padded to 64 bytes;
 * returns its length. */
size_t ng_shard_npy_header(int ndim, const int64_t *shape, char *h, size_t cap);

/* Encodes an f32 image [C, H, W] (C 1: grey, 3: RGB) as an 8-bit PNG, value v to
 * round(255 (v - lo) / (hi - lo)), so that the reader's pixel / 255 gives back (v - lo) / (hi - lo)
 * within half a level (exactly for v = k / 255 with lo 0, hi 1). Returns the PNG (malloc'ed) and
 * its length, or NULL and a reason in why (a value outside [lo, hi], not finite, an encoder
 * error). */
unsigned char *ng_shard_png_encode(const float *x, int64_t c, int64_t h, int64_t w, double lo,
                                   double hi, size_t *len, char *why, size_t cap);

#endif
