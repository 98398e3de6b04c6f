/* Exact checks of collectives, shared by the tests and comm-bench: every rank fills its buffer
 * with small integers derived from (seed, rank, index), whose sums are exact in every dtype,
 * so a result can be compared with the true sum (or average) element by element. */
#ifndef NG_COMM_CHECK_H
#define NG_COMM_CHECK_H

#include <stdint.h>

#include "comm/comm.h"

/* The value rank `rank` contributes at element i: an integer in [-4, 4]. */
int ng_comm_check_value(uint64_t seed, int rank, int64_t i);
/* Fills t (any device, f32/f64/f16/bf16) with rank's values for elements first .. first+numel. */
void ng_comm_check_fill(ng_tensor *t, uint64_t seed, int rank, int64_t first);
/* The elements of t that differ from the sum (or the average, rounded once to t's dtype) of
 * the values of ranks 0 .. size-1; elements first .. first+numel. */
int64_t ng_comm_check_wrong(const ng_tensor *t, uint64_t seed, int size, ng_comm_op op,
                            int64_t first);

#endif
