/* Helpers of the _mpi test programs: start the world (with --ranks-per-node N from argv), share
 * one test seed, and end with one verdict for all ranks. */
#ifndef NG_MPI_TESTING_H
#define NG_MPI_TESTING_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "testing.h"

/* One test seed for every rank (rank 0's, or NG_TEST_SEED), set before the first draw, so every
 * rank draws the same shapes and inputs. 52 bits: a double carries it. */
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

/* The world of `backend` (NG_COMM_AUTO: MPI under mpirun) for a test run as `mpirun -np N prog
 * [--ranks-per-node R]`, with the shared seed. */
static inline ng_comm *ng_test_mpi_init_backend(int argc, char **argv, ng_comm_backend backend) {
    int rpn = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--ranks-per-node")) rpn = atoi(argv[i + 1]);
    ng_comm *w =
        ng_comm_init(&argc, &argv, &(ng_comm_config){.backend = backend, .ranks_per_node = rpn});
    ng_test_share_seed(w);
    return w;
}

static inline ng_comm *ng_test_mpi_init(int argc, char **argv) {
    return ng_test_mpi_init_backend(argc, argv, NG_COMM_AUTO);
}

/* Prints "<name> rank R/N: ..." and returns 1 on every rank when any rank failed; finalises. */
static inline int ng_test_mpi_finish(ng_comm *w, const char *name) {
    char label[96];
    snprintf(label, sizeof label, "%s rank %d/%d", name, ng_comm_rank(w), ng_comm_size(w));
    double bad = ng_test_finish(label) != 0;
    ng_comm_scalars(w, &bad, 1, NG_COMM_SCALAR_MAX);
    ng_comm_finalize(w);
    return bad ? 1 : 0;
}

#endif
