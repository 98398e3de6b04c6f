/* Gradient buckets: the flat gradient buffer cut into ranges of about `bytes`, each all-reduced
 * (averaged) with the non-blocking all-reduce as soon as backward has finished every parameter
 * in it, so communication overlaps the rest of backward (PyTorch DDP's buckets, over natgrad's
 * flat buffer). comm/ knows nothing of models: parameters are element ranges of the buffer. */
#ifndef NG_BUCKET_H
#define NG_BUCKET_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ng_buckets ng_buckets;

/* Parameter i occupies elements [start[i], start[i+1]) of flat (start ascending, start[0] = 0;
 * the last parameter runs to flat->numel). Buckets take consecutive parameters from the end of
 * the buffer (the order backward finishes them) until they hold at least `bytes`; every element
 * of flat belongs to exactly one bucket. bytes 0: one bucket per parameter. */
ng_buckets *ng_buckets_new(ng_comm *c, ng_tensor *flat, const int64_t *start, int nparams,
                           size_t bytes);
void ng_buckets_free(ng_buckets *b);
int ng_buckets_count(const ng_buckets *b);
/* Bucket k's elements [lo, hi); bucket 0 ends the buffer, the last one starts it. */
void ng_buckets_range(const ng_buckets *b, int k, int64_t *lo, int64_t *hi);

/* Parameter i's gradient is final for this pass. Starts the all-reduce of every bucket whose
 * parameters are all final, in bucket order (bucket k starts only after bucket k-1), so every
 * rank starts the same collectives in the same order. Reporting a parameter twice in a pass is
 * a usage error. */
void ng_buckets_ready(ng_buckets *b, int i);
/* Starts the buckets not started yet (parameters never reported count as final), waits for all
 * of them, and rearms for the next pass. Returns the number of buckets that had started before
 * this call (how much of the communication overlapped backward). */
int ng_buckets_finish(ng_buckets *b);

#ifdef __cplusplus
}
#endif
#endif
