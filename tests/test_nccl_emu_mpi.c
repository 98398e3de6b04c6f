/* The emulated NCCL of the emulation build (comm/nccl_emu.c), called directly under mpirun: its
 * collectives against sums taken here in rank order (bit for bit, every element type), a ring of
 * grouped sends and receives, a split with non-members, and the misuse NCCL would not survive
 * (a host buffer, an in-place layout NCCL does not have, ranks disagreeing on a count), each a
 * clear ncclInvalidUsage. Skipped outside the emulation build with MPI. */
#include <stdio.h>

#include "mpi_testing.h"

#ifndef NG_EMU_NCCL
int main(void) {
    printf("test_nccl_emu_mpi: skipped (only the CUDA emulation build with MPI emulates NCCL)\n");
    return 77;
}
#else
#include <mpi.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "core/convert.h"
#include "core/ops.h"
#include "core/rng.h"

static int rank, size;

/* Rank r's input: n values of type dt from the shared seed, distinct per rank. */
static ng_tensor input(ng_dtype dt, int64_t n, uint64_t seed, int r, ng_device dev) {
    ng_tensor t = ng_tensor_1d(dt, dev, n, "nccl_in");
    ng_rng_uniform(&t, (ng_rng_key){seed, (uint64_t)r, 0}, -4, 4);
    return t;
}

static ng_tensor to_host(const ng_tensor *t) {
    return ng_tensor_to(t, NG_CPU, "host");
}

/* The rank-order sum, rounded to dt after every addition, as the emulation promises. */
static ng_tensor expected_sum(ng_dtype dt, int64_t n, uint64_t seed) {
    ng_tensor acc = input(dt, n, seed, 0, NG_CPU);
    for (int r = 1; r < size; r++) {
        ng_tensor x = input(dt, n, seed, r, NG_CPU);
        for (int64_t i = 0; i < n; i++)
            cv_store(acc.data, dt, i, cv_load(acc.data, dt, i) + cv_load(x.data, dt, i));
        ng_tensor_free(&x);
    }
    return acc;
}

static int same_bits(const ng_tensor *a, const void *b, int64_t from, int64_t n) {
    size_t es = ng_dtype_size(a->dtype);
    return !memcmp((const char *)a->data + (size_t)from * es, b, (size_t)n * es);
}

static ncclDataType_t nccl_type(ng_dtype dt) {
    return dt == NG_F32   ? ncclFloat32
           : dt == NG_F64 ? ncclFloat64
           : dt == NG_F16 ? ncclFloat16
                          : ncclBfloat16;
}

int main(int argc, char **argv) {
    /* the world through comm/ (MPI with MPI_THREAD_MULTIPLE, which the emulation's streams
     * need) and one test seed for every rank */
    ng_comm *w = ng_test_mpi_init(argc, argv);
    rank = ng_comm_rank(w), size = ng_comm_size(w);
    uint64_t seed = ng_test_seed();
    ncclUniqueId id;
    if (rank == 0) ncclGetUniqueId(&id);
    MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    ncclComm_t comm;
    NG_TEST(ncclCommInitRank(&comm, size, id, rank) == ncclSuccess, "init of %d ranks", size);
    const ng_dtype dts[4] = {NG_F32, NG_F64, NG_F16, NG_BF16};
    for (int d = 0; d < 4; d++) {
        ng_dtype dt = dts[d];
        int64_t n =
            1 + (int64_t)((ng_test_uniform() + 1) * 2500); /* shared seed: same on every rank */
        uint64_t sd = seed + (uint64_t)d;
        ng_tensor want = expected_sum(dt, n, sd);
        /* all-reduce in place */
        ng_tensor x = input(dt, n, sd, rank, NG_CUDA);
        NG_TEST(ncclAllReduce(x.data, x.data, (size_t)n, nccl_type(dt), ncclSum, comm, NULL) ==
                    ncclSuccess,
                "all-reduce of %lld %s", (long long)n, ng_dtype_name(dt));
        ng_tensor h = to_host(&x);
        NG_TEST(same_bits(&want, h.data, 0, n),
                "all-reduce of %s is the rank-order sum, bit for bit", ng_dtype_name(dt));
        ng_tensor_free(&h), ng_tensor_free(&x);
        /* reduce to the last rank, out of place: only the root's output changes */
        x = input(dt, n, sd, rank, NG_CUDA);
        ng_tensor y = ng_tensor_1d(dt, NG_CUDA, n, "nccl_out");
        ng_fill(&y, 7);
        NG_TEST(ncclReduce(x.data, y.data, (size_t)n, nccl_type(dt), ncclSum, size - 1, comm,
                           NULL) == ncclSuccess,
                "reduce of %s", ng_dtype_name(dt));
        h = to_host(&y);
        int ok =
            rank == size - 1 ? same_bits(&want, h.data, 0, n) : cv_load(h.data, dt, n - 1) == 7;
        NG_TEST(ok, "reduce of %s: the root has the sum, the others their own output",
                ng_dtype_name(dt));
        ng_tensor_free(&h), ng_tensor_free(&y), ng_tensor_free(&x);
        /* reduce-scatter in place (rank r's segment at r * k) and all-gather back in place */
        int64_t k = n;
        ng_tensor big_want = expected_sum(dt, k * size, sd + 100);
        x = input(dt, k * size, sd + 100, rank, NG_CUDA);
        char *mine = (char *)x.data + (size_t)(k * rank) * ng_dtype_size(dt);
        NG_TEST(ncclReduceScatter(x.data, mine, (size_t)k, nccl_type(dt), ncclSum, comm, NULL) ==
                    ncclSuccess,
                "reduce-scatter of %s", ng_dtype_name(dt));
        NG_TEST(ncclAllGather(mine, x.data, (size_t)k, nccl_type(dt), comm, NULL) == ncclSuccess,
                "all-gather of %s", ng_dtype_name(dt));
        h = to_host(&x);
        NG_TEST(same_bits(&big_want, h.data, 0, k * size),
                "reduce-scatter then all-gather of %s is the whole sum", ng_dtype_name(dt));
        ng_tensor_free(&h), ng_tensor_free(&x), ng_tensor_free(&big_want), ng_tensor_free(&want);
    }
    /* a ring: send to the next rank, receive from the previous, in one group */
    int64_t n = 1000;
    ng_tensor out = input(NG_F32, n, seed + 7, rank, NG_CUDA); /* n >= 10 * size + 5 */
    ng_tensor in = ng_tensor_1d(NG_F32, NG_CUDA, n, "ring_in");
    ncclGroupStart();
    ncclSend(out.data, (size_t)n, ncclFloat32, (rank + 1) % size, comm, NULL);
    ncclRecv(in.data, (size_t)n, ncclFloat32, (rank + size - 1) % size, comm, NULL);
    NG_TEST(ncclGroupEnd() == ncclSuccess, "a grouped ring of sends and receives");
    ng_tensor from = input(NG_F32, n, seed + 7, (rank + size - 1) % size, NG_CPU);
    ng_tensor h = to_host(&in);
    NG_TEST(same_bits(&from, h.data, 0, n), "the ring delivered the previous rank's buffer");
    ng_tensor_free(&h), ng_tensor_free(&from);
    /* a split: even ranks only, the odd ones get no communicator */
    ncclComm_t even = NULL;
    NG_TEST(ncclCommSplit(comm, rank % 2 ? NCCL_SPLIT_NOCOLOR : 0, rank, &even, NULL) ==
                ncclSuccess,
            "split");
    NG_TEST((even != NULL) == (rank % 2 == 0), "non-members of a split get no communicator");
    if (even) {
        ng_fill(&in, 1);
        ncclAllReduce(in.data, in.data, (size_t)n, ncclFloat32, ncclSum, even, NULL);
        h = to_host(&in);
        NG_TEST(((float *)h.data)[n - 1] == (float)((size + 1) / 2),
                "the split sums over the even ranks");
        ng_tensor_free(&h);
        ncclCommDestroy(even);
    }
    /* misuse: a host buffer, a reduce-scatter that overlaps its input off NCCL's in-place slot,
     * ranks that disagree on a count */
    float host[4] = {0};
    NG_TEST(ncclAllReduce(host, host, 4, ncclFloat32, ncclSum, comm, NULL) == ncclInvalidUsage,
            "a host buffer is refused");
    NG_TEST(ncclReduceScatter(out.data, (float *)out.data + rank * 10 + 5, 10, ncclFloat32, ncclSum,
                              comm, NULL) == ncclInvalidUsage,
            "an overlapping reduce-scatter off the in-place slot is refused");
    if (size > 1)
        NG_TEST(ncclAllReduce(out.data, out.data, rank == 0 ? 10 : 11, ncclFloat32, ncclSum, comm,
                              NULL) == ncclInvalidUsage,
                "ranks that disagree on the count are stopped on every rank");
    ng_tensor_free(&in), ng_tensor_free(&out);
    ncclCommDestroy(comm);
    return ng_test_mpi_finish(w, "test_nccl_emu_mpi");
}
#endif
