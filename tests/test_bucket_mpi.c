/* Gradient buckets under mpirun: parameters reported ready in a different random order on every
 * rank still start the same collectives in the same order, and the buffer ends up equal, bit for
 * bit, to one blocking all-reduce (average) of the whole buffer; buckets hold at least the asked
 * bytes; every element is reduced exactly once; a parameter reported twice is an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/bucket.h"
#include "mpi_testing.h"
#include "testing.h"

static ng_comm *world;
static int rank, size;

static void trial(int t) {
    int np = 1 + (int)((ng_test_uniform() + 1) * 20);
    int64_t start[64], at = 0;
    for (int i = 0; i < np; i++) {
        start[i] = at;
        at += (int64_t)((ng_test_uniform() + 1) * 3000); /* sizes 0 .. 6000, gaps included */
    }
    size_t bytes = t % 3 == 0 ? 0 : (size_t)((ng_test_uniform() + 1) * 20000);
    ng_tensor flat = ng_tensor_1d(NG_F32, NG_CPU, at ? at : 1, "flat grads");
    if (!at) start[0] = 0;
    /* Integer values that differ by rank (ranks draw the same stream; the rank shifts them). */
    float *g = flat.data;
    for (int64_t i = 0; i < flat.numel; i++)
        g[i] = (float)((int)(ng_test_uniform() * 1000) + 7 * rank);
    ng_tensor expect = ng_tensor_to(&flat, NG_CPU, "expected");
    ng_comm_allreduce(world, &expect, NG_COMM_AVG);
    ng_buckets *b = ng_buckets_new(world, &flat, start, np, bytes);
    int nb = ng_buckets_count(b);
    if (!bytes) NG_TEST(nb == np, "trial %d: bytes 0 gives one bucket per parameter", t);
    NG_TEST(nb >= 1 && nb <= np, "trial %d: %d buckets for %d parameters", t, nb, np);
    int tiled = 1;
    int64_t end = flat.numel;
    for (int k = 0; k < nb; k++) {
        int64_t lo, hi;
        ng_buckets_range(b, k, &lo, &hi);
        tiled &= hi == end && lo <= hi && (k == nb - 1 || (hi - lo) * 4 >= (int64_t)bytes);
        end = lo;
    }
    NG_TEST(tiled && end == 0,
            "trial %d: buckets tile the buffer from its end, each but the last >= %zu bytes", t,
            bytes);
    /* A rank-dependent order: a Fisher-Yates shuffle with extra draws per rank. */
    int order[64];
    for (int i = 0; i < np; i++) order[i] = i;
    unsigned s = (unsigned)(t * 7919 + rank * 104729 + 1);
    for (int i = np - 1; i > 0; i--) {
        s = s * 1103515245u + 12345u;
        int j = (int)((s >> 8) % (unsigned)(i + 1)), x = order[i];
        order[i] = order[j], order[j] = x;
    }
    int report = t % 2 ? np : np / 2; /* odd trials report all, even ones leave some to finish */
    for (int i = 0; i < report; i++) ng_buckets_ready(b, order[i]);
    int early = ng_buckets_finish(b);
    if (report == np)
        NG_TEST(early == nb, "trial %d: all %d buckets started during backward", t, nb);
    NG_TEST(!memcmp(flat.data, expect.data, ng_tensor_bytes(&flat)),
            "trial %d (%d params, %d buckets, %zu bytes): bucketed average equals one all-reduce",
            t, np, nb, bytes);
    /* A second pass on the same buckets: they rearm. */
    for (int64_t i = 0; i < flat.numel; i++) g[i] = (float)((int)(ng_test_uniform() * 99) - rank);
    ng_tensor_copy(&expect, &flat);
    ng_comm_allreduce(world, &expect, NG_COMM_AVG);
    for (int i = np - 1; i >= 0; i--) ng_buckets_ready(b, i);
    ng_buckets_finish(b);
    NG_TEST(!memcmp(flat.data, expect.data, ng_tensor_bytes(&flat)),
            "trial %d: rearmed buckets reduce a second pass", t);
    ng_buckets_ready(b, 0);
    NG_TEST_ERROR(ng_buckets_ready(b, 0), "twice");
    ng_buckets_finish(b);
    ng_buckets_free(b);
    ng_tensor_free(&flat), ng_tensor_free(&expect);
}

int main(int argc, char **argv) {
    world = ng_test_mpi_init(argc, argv);
    rank = ng_comm_rank(world), size = ng_comm_size(world);
    for (int t = 0; t < 40; t++) trial(t);
    return ng_test_mpi_finish(world, "test_bucket_mpi");
}
