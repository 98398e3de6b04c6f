/* The communicator under mpirun (np 1-4, optionally --ranks-per-node N to simulate nodes):
 * every all-reduce algorithm and level choice equals the flat result bit for bit on
 * integer-valued inputs, the other collectives are exact, non-blocking buckets complete in
 * order, and results are identical run to run and rank to rank on random floats.
 * `--fail-on-rank R` instead makes rank R fail while the others wait (tests/comm_abort.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "comm/comm_check.h"
#include "core/error.h"
#include "mpi_testing.h"
#include "testing.h"

static ng_comm *world;
static uint64_t seed;
static int rank, size;

static const ng_dtype dtypes[4] = {NG_F32, NG_F64, NG_F16, NG_BF16};

/* Every algorithm with every level choice, the ring with small chunks, and the torus on a
 * grid of two rows whatever the nodes. */
static int all_algorithms(ng_allreduce_opts *out) {
    int n = 0;
    out[n++] = (ng_allreduce_opts){.algo = NG_AR_RING};
    out[n++] = (ng_allreduce_opts){.algo = NG_AR_RING, .chunk_bytes = 24};
    ng_allreduce_algo hier[3] = {NG_AR_HIER_RS, NG_AR_HIER_LEADER, NG_AR_TORUS};
    for (int h = 0; h < 3; h++)
        for (int l = 0; l < 4; l++)
            out[n++] = (ng_allreduce_opts){.algo = hier[h],
                                           .intra = (ng_level_algo)(l & 1),
                                           .inter = (ng_level_algo)(l >> 1),
                                           .chunk_bytes = 4096};
    out[n++] = (ng_allreduce_opts){.algo = NG_AR_TORUS, .torus_rows = 2, .intra = NG_LEVEL_RING};
    return n;
}

static const char *opts_label(const ng_allreduce_opts *o) {
    static char b[96];
    snprintf(b, sizeof b, "%s (chunk %lld, rows %d)", ng_allreduce_opts_name(o),
             (long long)o->chunk_bytes, o->torus_rows);
    return b;
}

/* 1 on every rank when the bits of t agree on all ranks. */
static int same_on_all_ranks(const ng_tensor *t) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = t->data;
    for (size_t i = 0; i < ng_tensor_bytes(t); i++) h = (h ^ p[i]) * 1099511628211ull;
    double v[2] = {(double)(h >> 12), -(double)(h >> 12)};
    ng_comm_scalars(world, v, 2, NG_COMM_SCALAR_MAX);
    return v[0] == -v[1];
}

/* rpn: forced ranks per node, or, with `detected`, the ranks per node MPI should find itself
 * (the namespace cluster); 0: one machine, one node. */
static void test_topology(int rpn) {
    NG_TEST(ng_comm_size(world) == size && rank >= 0 && rank < size, "rank %d of %d", rank, size);
    int want_node = rpn ? rank / rpn : 0, want_nodes = rpn ? (size + rpn - 1) / rpn : 1;
    int want_local = rpn ? rank % rpn : rank;
    int want_lsize = rpn ? (size - want_node * rpn < rpn ? size - want_node * rpn : rpn) : size;
    NG_TEST(ng_comm_node(world) == want_node && ng_comm_nodes(world) == want_nodes &&
                ng_comm_local_rank(world) == want_local && ng_comm_local_size(world) == want_lsize,
            "rank %d: node %d/%d local %d/%d, expected node %d/%d local %d/%d", rank,
            ng_comm_node(world), ng_comm_nodes(world), ng_comm_local_rank(world),
            ng_comm_local_size(world), want_node, want_nodes, want_local, want_lsize);
    NG_TEST(ng_comm_device_for_local_rank(5, 4) == 1 && ng_comm_device_for_local_rank(2, 0) == 0,
            "device choice is local rank modulo the device count");
    double v[3] = {1, rank, -rank};
    ng_comm_scalars(world, v, 3, NG_COMM_SCALAR_SUM);
    NG_TEST(v[0] == size && v[1] == size * (size - 1) / 2.0, "scalar sum: %g %g", v[0], v[1]);
    double m[2] = {rank, -rank};
    ng_comm_scalars(world, m, 2, NG_COMM_SCALAR_MAX);
    NG_TEST(m[0] == size - 1 && m[1] == 0, "scalar max: %g %g", m[0], m[1]);
}

/* The largest count tried (--max-count: a slow shaped link takes the small ones only). */
static int64_t max_count = INT64_MAX;

/* Flat is checked against the exact sums; every other algorithm against flat's bits. */
static void test_allreduce_equals_flat(void) {
    ng_allreduce_opts algos[32];
    int na = all_algorithms(algos);
    const int64_t counts[] = {0, 1, 7, 1001, (1 << 20) + 13};
    ng_allreduce_opts flat = {.algo = NG_AR_FLAT};
    for (size_t ci = 0; ci < sizeof counts / sizeof *counts && counts[ci] <= max_count; ci++)
        for (int d = 0; d < 4; d++)
            for (int op = 0; op < 2; op++) {
                int64_t n = counts[ci];
                if (n > 100000 && op == NG_COMM_AVG && dtypes[d] != NG_F32) continue;
                ng_tensor ref = ng_tensor_1d(dtypes[d], NG_CPU, n, "reference");
                ng_tensor t = ng_tensor_1d(dtypes[d], NG_CPU, n, "bucket");
                ng_tensor input = ng_tensor_1d(dtypes[d], NG_CPU, n, "input");
                ng_comm_check_fill(&input, seed, rank, 0);
                ng_tensor_copy(&ref, &input);
                ng_comm_allreduce_with(world, &ref, (ng_comm_op)op, &flat);
                int64_t wrong = ng_comm_check_wrong(&ref, seed, size, (ng_comm_op)op, 0);
                NG_TEST(wrong == 0, "flat %s of %lld %s: %lld wrong elements", op ? "avg" : "sum",
                        (long long)n, ng_dtype_name(dtypes[d]), (long long)wrong);
                for (int a = 0; a < na; a++) {
                    if (n > 100000 && algos[a].chunk_bytes < 1024) continue; /* 24-byte chunks */
                    ng_tensor_copy(&t, &input);
                    ng_comm_allreduce_with(world, &t, (ng_comm_op)op, &algos[a]);
                    NG_TEST(!memcmp(t.data, ref.data, ng_tensor_bytes(&t)),
                            "%s %s of %lld %s differs from flat", opts_label(&algos[a]),
                            op ? "avg" : "sum", (long long)n, ng_dtype_name(dtypes[d]));
                }
                ng_tensor_free(&ref), ng_tensor_free(&t), ng_tensor_free(&input);
            }
    /* auto picks some algorithm per size; it must still be exact */
    ng_tensor t = ng_tensor_1d(NG_F32, NG_CPU, (1 << 19) + 5, "auto");
    ng_comm_check_fill(&t, seed, rank, 0);
    ng_comm_allreduce_with(world, &t, NG_COMM_SUM, &(ng_allreduce_opts){.algo = NG_AR_AUTO});
    NG_TEST(ng_comm_check_wrong(&t, seed, size, NG_COMM_SUM, 0) == 0, "auto all-reduce is exact");
    ng_tensor_free(&t);
}

static void test_other_collectives(void) {
    for (int d = 0; d < 4; d++) {
        int64_t k = 37;
        ng_tensor in = ng_tensor_1d(dtypes[d], NG_CPU, k * size, "rs_in");
        ng_tensor out = ng_tensor_1d(dtypes[d], NG_CPU, k, "rs_out");
        for (int op = 0; op < 2; op++) {
            ng_comm_check_fill(&in, seed, rank, 0);
            ng_comm_reduce_scatter(world, &in, &out, (ng_comm_op)op);
            NG_TEST(ng_comm_check_wrong(&out, seed, size, (ng_comm_op)op, rank * k) == 0,
                    "reduce-scatter %s %s: rank %d's block is not the exact reduction",
                    op ? "avg" : "sum", ng_dtype_name(dtypes[d]), rank);
        }
        ng_tensor g_in = ng_tensor_1d(dtypes[d], NG_CPU, k, "ag_in");
        ng_tensor g_out = ng_tensor_1d(dtypes[d], NG_CPU, k * size, "ag_out");
        ng_tensor want = ng_tensor_1d(dtypes[d], NG_CPU, k, "want");
        ng_comm_check_fill(&g_in, seed, rank, 0);
        ng_test_poison(&g_out);
        ng_comm_allgather(world, &g_in, &g_out);
        int ok = 1;
        for (int q = 0; q < size; q++) {
            ng_comm_check_fill(&want, seed, q, 0);
            ok &= !memcmp((char *)g_out.data + ng_tensor_bytes(&want) * (size_t)q, want.data,
                          ng_tensor_bytes(&want));
        }
        NG_TEST(ok, "all-gather %s: a block differs from its rank's input",
                ng_dtype_name(dtypes[d]));
        int root = size - 1;
        ng_comm_check_fill(&g_in, seed, rank, 0);
        ng_comm_broadcast(world, &g_in, root);
        ng_comm_check_fill(&want, seed, root, 0);
        NG_TEST(!memcmp(g_in.data, want.data, ng_tensor_bytes(&want)),
                "broadcast %s from rank %d differs from the root's data", ng_dtype_name(dtypes[d]),
                root);
        ng_tensor_free(&in), ng_tensor_free(&out), ng_tensor_free(&g_in);
        ng_tensor_free(&g_out), ng_tensor_free(&want);
    }
    ng_comm_barrier(world);
    NG_TEST(1, "barrier returns");
}

/* Buckets started back to back (with a blocking call on the main thread between them) finish
 * in order: once the last is waited for, all earlier ones already hold their results. */
static void test_nonblocking(void) {
    enum { NB = 6 };
    const int64_t counts[NB] = {1000, 0, 77777, 1, 300001, 4093};
    ng_allreduce_opts algos[32];
    all_algorithms(algos);
    ng_tensor b[NB];
    ng_comm_request *req[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = ng_tensor_1d(dtypes[i % 4], NG_CPU, counts[i], "grad_bucket");
        ng_comm_check_fill(&b[i], seed + (uint64_t)i, rank, 0);
    }
    for (int i = 0; i < NB; i++) {
        req[i] = ng_comm_allreduce_start(world, &b[i], (ng_comm_op)(i & 1),
                                         i == 0 ? NULL : &algos[i % 14]);
        if (i == 2) {
            double v = 1;
            ng_comm_scalars(world, &v, 1, NG_COMM_SCALAR_SUM);
            NG_TEST(v == size, "a host scalar sum while buckets are in flight");
        }
    }
    ng_comm_wait(req[NB - 1]);
    for (int i = 0; i < NB - 1; i++)
        NG_TEST(ng_comm_check_wrong(&b[i], seed + (uint64_t)i, size, (ng_comm_op)(i & 1), 0) == 0,
                "bucket %d was not complete when bucket %d, started after it, was", i, NB - 1);
    for (int i = 0; i < NB - 1; i++) ng_comm_wait(req[i]);
    NG_TEST(ng_comm_check_wrong(&b[NB - 1], seed + NB - 1, size, (ng_comm_op)((NB - 1) & 1), 0) ==
                0,
            "the last bucket is exact");
    for (int i = 0; i < NB; i++) ng_tensor_free(&b[i]);
}

/* Random non-integer floats: each algorithm gives the same bits twice, and on every rank. */
static void test_deterministic(void) {
    ng_allreduce_opts algos[32];
    int na = all_algorithms(algos);
    algos[na++] = (ng_allreduce_opts){.algo = NG_AR_FLAT};
    for (int d = 0; d < 4; d++) {
        int64_t n = 20011;
        ng_tensor x = ng_tensor_1d(dtypes[d], NG_CPU, n, "x");
        ng_tensor first = ng_tensor_1d(dtypes[d], NG_CPU, n, "first");
        ng_tensor second = ng_tensor_1d(dtypes[d], NG_CPU, n, "second");
        ng_test_fill_uniform(&x, -1, 1);
        for (int a = 0; a < na; a++) {
            ng_tensor_copy(&first, &x);
            ng_tensor_copy(&second, &x);
            ng_comm_allreduce_with(world, &first, NG_COMM_AVG, &algos[a]);
            ng_comm_allreduce_with(world, &second, NG_COMM_AVG, &algos[a]);
            NG_TEST(!memcmp(first.data, second.data, ng_tensor_bytes(&x)), "%s %s: two runs differ",
                    opts_label(&algos[a]), ng_dtype_name(dtypes[d]));
            NG_TEST(same_on_all_ranks(&first), "%s %s: ranks hold different bits",
                    opts_label(&algos[a]), ng_dtype_name(dtypes[d]));
        }
        ng_tensor_free(&x), ng_tensor_free(&first), ng_tensor_free(&second);
    }
}

static void test_split_and_errors(void) {
    /* parity groups, ordered by descending world rank */
    ng_comm *half = ng_comm_split(world, rank % 2, -rank);
    int members = (size - rank % 2 + 1) / 2, higher = 0;
    for (int q = rank + 2; q < size; q += 2) higher++;
    NG_TEST(ng_comm_size(half) == members && ng_comm_rank(half) == higher,
            "split: rank %d of %d in its parity group, expected %d of %d", ng_comm_rank(half),
            ng_comm_size(half), higher, members);
    ng_tensor t = ng_tensor_1d(NG_F64, NG_CPU, 333, "half_sum");
    ng_comm_check_fill(&t, seed, rank, 0);
    ng_comm_allreduce_with(half, &t, NG_COMM_SUM, &(ng_allreduce_opts){.algo = NG_AR_RING});
    int64_t wrong = 0;
    for (int64_t i = 0; i < t.numel; i++) {
        double s = 0;
        for (int q = rank % 2; q < size; q += 2) s += ng_comm_check_value(seed, q, i);
        wrong += ((double *)t.data)[i] != s;
    }
    NG_TEST(wrong == 0, "ring all-reduce in a split: %lld wrong", (long long)wrong);
    ng_comm *solo = ng_comm_split(world, rank == 0 ? 0 : -1, 0);
    NG_TEST(rank == 0 ? solo && ng_comm_size(solo) == 1 : solo == NULL,
            "a negative color gives no communicator, the one member a communicator of one");
    ng_comm_free(solo);
    ng_tensor_free(&t);
    ng_comm_free(half);

    ng_tensor ints = ng_tensor_1d(NG_I32, NG_CPU, 4, "step_counter");
    NG_TEST_ERROR(ng_comm_allreduce(world, &ints, NG_COMM_SUM), "step_counter");
    ng_tensor small = ng_tensor_1d(NG_F32, NG_CPU, 3, "shard");
    ng_tensor big = ng_tensor_1d(NG_F32, NG_CPU, 3 * size + 1, "full");
    NG_TEST_ERROR(ng_comm_reduce_scatter(world, &big, &small, NG_COMM_SUM), "full");
    NG_TEST_ERROR(ng_comm_broadcast(world, &small, size), "shard");
    ng_tensor_free(&ints), ng_tensor_free(&small), ng_tensor_free(&big);
}

int main(int argc, char **argv) {
    int rpn = 0, fail_rank = -1, expect_rpn = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--ranks-per-node")) rpn = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--fail-on-rank")) fail_rank = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--max-count")) max_count = atoll(argv[i + 1]);
        if (!strcmp(argv[i], "--expect-ranks-per-node")) expect_rpn = atoi(argv[i + 1]);
    }
    world = ng_comm_init(&argc, &argv, &(ng_comm_config){.ranks_per_node = rpn});
    if (ng_comm_backend_of(world) != NG_COMM_MPI) {
        printf("test_comm_mpi: skipped (needs an MPI build started by mpirun)\n");
        ng_comm_finalize(world);
        return 77;
    }
    rank = ng_comm_rank(world), size = ng_comm_size(world);
    if (fail_rank >= 0) {
        if (rank == fail_rank) ng_fail("deliberate failure on rank %d", rank);
        ng_comm_barrier(world); /* never completes: the failing rank never arrives */
        return 0;
    }
    /* One seed for all ranks: rank 0's, sent as a double (52 bits survive). */
    double s = rank == 0 ? (double)(ng_test_seed() & ((1ull << 52) - 1)) : 0;
    ng_comm_scalars(world, &s, 1, NG_COMM_SCALAR_SUM);
    seed = (uint64_t)s;
    for (int i = 0; i < rank * 7919; i++) ng_test_uniform(); /* random floats differ by rank */

    if (rank == 0)
        printf("%d ranks, nodes %s; non-blocking all-reduces on %s\n", size,
               rpn ? "forced" : "detected",
               ng_comm_thread_multiple() ? "a worker thread (MPI_THREAD_MULTIPLE)"
                                         : "the caller (no MPI_THREAD_MULTIPLE)");
    test_topology(rpn ? rpn : expect_rpn);
    test_allreduce_equals_flat();
    test_other_collectives();
    test_nonblocking();
    test_deterministic();
    test_split_and_errors();

    return ng_test_mpi_finish(world, "test_comm_mpi");
}
