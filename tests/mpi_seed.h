/* For _mpi tests: one test seed for every rank (rank 0's, or NG_TEST_SEED), set before the
 * first draw, so every rank draws the same shapes and inputs. 52 bits: a double carries it. */
#ifndef NG_MPI_SEED_H
#define NG_MPI_SEED_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "comm/comm.h"
#include "testing.h"

static inline void ng_test_share_seed(ng_comm *c) {
    double seed = 0;
    if (ng_comm_rank(c) == 0) {
        const char *e = getenv("NG_TEST_SEED");
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t s =
            e ? strtoull(e, NULL, 10) : (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
        seed = (double)(s & ((1ull << 52) - 1));
    }
    ng_comm_scalars(c, &seed, 1, NG_COMM_SCALAR_SUM);
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)seed);
    setenv("NG_TEST_SEED", buf, 1);
    ng_test_seed();
}

#endif
