/* Tar shards in the WebDataset layout: each example is a group of consecutive members sharing a
 * key (KEY.npy or KEY.png, and KEY.cls holding the label in decimal), read with libarchive as a
 * stream, so the data set need not fit in memory. */
#ifndef NG_SHARDS_H
#define NG_SHARDS_H

#include <stdint.h>

#include "data/source.h"

typedef struct {
    const char *dir;        /* the shards are DIR/PREFIX-NNNNNN.tar */
    const char *prefix;     /* "train", "test", ... */
    int64_t shuffle_buffer; /* examples held for shuffling; 1 = the stored order */
    uint64_t seed;
    int skip_bad; /* leave bad examples out (counted in the source's skipped and cut) instead of
                   * failing; the scan then reads and decodes every member */
} ng_shards_config;

/* A source over the shards (ordered: it shuffles itself). Opening scans every shard's headers
 * and labels (data members are skipped, except the first, which fixes the example shape): the
 * count, shape and classes (largest label + 1) are known before training, and a missing label,
 * a member of no known kind, or a shard that is not a tar file is a usage error naming the shard
 * and the member. Each epoch streams the shards in an order drawn from (seed, epoch) through a
 * buffer of shuffle_buffer examples, from which Philox keyed by (seed, epoch, position) picks the
 * next: the same seed gives the same stream. npy members must be little-endian f4 or u1 (u1 and
 * PNG pixels are scaled to [0, 1]); PNG is grey (one channel) or RGB (alpha dropped). A member
 * whose shape differs from the first example's, or that does not decode, is an error naming the
 * shard and the member when the example is read. Split across ranks (ng_source_split), rank r
 * reads only the shards whose sorted index is r modulo the world, in its own (seed, epoch) order,
 * and stops each epoch after as many examples as the rank with the fewest has.
 *
 * With skip_bad, the scan reads and decodes every member instead: a bad example (a missing label
 * or data member, a label that is not a class, a member that does not decode, a shape unlike the
 * first good example's, a member of no KEY.EXT name) is left out and counted in src->skipped, a
 * shard that cannot be read on from some member (truncated, damaged headers) keeps the examples
 * before it and counts in src->cut, a shard that does not open counts in src->cut too, and
 * src->first_bad names the first shard and member. The stream passes over the same examples, so
 * positions, resume and the split are as for clean shards. No good example at all is still an
 * error. */
ng_source *ng_shards_open(const ng_shards_config *c);

/* The k-th file a shards source's epochs read (its rank's shards after a split, in sorted order),
 * or NULL past the last one and for a source that is not shards; the path lives as long as the
 * source. For `natgrad data-bench --cold`, which drops these files from the page cache. */
const char *ng_shards_file(const ng_source *src, int k);

/* Writes every example of a source, in its order, as DIR/PREFIX-NNNNNN.tar shards of about
 * shard_bytes each (an example is never split; each shard holds at least one), members
 * KEY.npy (f4, the example's shape) and KEY.cls, KEY the example's index in 9 digits. Each shard
 * is written to a .tmp name, fsynced and renamed. Returns the number of shards. */
int64_t ng_shards_write(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes);
/* As ng_shards_write, with KEY.png members instead (8-bit grey or RGB, for sources of [1|3, H, W]
 * images): value v is stored as round(255 (v - lo) / (hi - lo)), so reading gives back
 * (v - lo) / (hi - lo) in [0, 1] within half a level of 1/255 (exactly the source's values for
 * values k / 255 and the range 0, 1). A value outside [lo, hi] is an error naming the example. */
int64_t ng_shards_write_png(ng_source *s, const char *dir, const char *prefix, int64_t shard_bytes,
                            double lo, double hi);

#endif
