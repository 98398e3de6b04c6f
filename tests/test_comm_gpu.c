/* The NCCL communicator on one GPU (one rank, as a single GPU allows): the device choice, every
 * collective on CUDA tensors, and non-blocking buckets ordered after work queued on core's
 * stream and before work queued after ng_comm_wait. Skipped without a GPU or without MPI. In the
 * emulation build (NCCL over MPI, comm/nccl_emu.c) it also runs under mpirun on 2-4 ranks, as
 * simulated nodes with --ranks-per-node R. */
#include <stdio.h>
#include <string.h>

#include "comm/comm.h"
#include "comm/comm_check.h"
#include "core/ops.h"
#include "mpi_testing.h"

int main(int argc, char **argv) {
    ng_test_require_gpu("test_comm_gpu");
    if (!strncmp(ng_comm_mpi_version(), "not built", 9)) {
        printf("test_comm_gpu: skipped (the NCCL backend needs an MPI build)\n");
        return 77;
    }
    ng_comm *w = ng_test_mpi_init_backend(argc, argv, NG_COMM_NCCL);
    uint64_t seed = ng_test_seed();
    NG_TEST(ng_comm_backend_of(w) == NG_COMM_NCCL && ng_comm_size(w) >= 1, "an NCCL world");
    const ng_dtype dtypes[4] = {NG_F32, NG_F64, NG_F16, NG_BF16};
    int size = ng_comm_size(w), rank = ng_comm_rank(w);
    for (int d = 0; d < 4; d++)
        for (int a = NG_AR_FLAT; a < NG_AR_NUM; a++)
            for (int op = 0; op < 2; op++) {
                ng_tensor t = ng_tensor_1d(dtypes[d], NG_CUDA, 100003, "grads");
                ng_comm_check_fill(&t, seed, rank, 0);
                ng_comm_allreduce_with(w, &t, (ng_comm_op)op,
                                       &(ng_allreduce_opts){.algo = (ng_allreduce_algo)a});
                NG_TEST(ng_comm_check_wrong(&t, seed, size, (ng_comm_op)op, 0) == 0,
                        "%s %s of %s on CUDA is exact", ng_allreduce_algo_name(a),
                        op ? "avg" : "sum", ng_dtype_name(dtypes[d]));
                ng_tensor_free(&t);
            }
    /* Buckets filled on core's stream, reduced on NCCL's, then changed on core's stream by an
     * op that does not commute with the sum (+1: before the reduction it would add `size`), then
     * set back: the reduction must see the fill and the +1 must see the reduction. The buckets
     * are made first, so nothing between the starts and the waits frees memory (a free waits for
     * the device). */
    enum { NB = 4 };
    ng_tensor b[NB], one[NB];
    ng_comm_request *req[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = ng_tensor_1d(NG_F32, NG_CUDA, 1 << (12 + 3 * i), "bucket");
        one[i] = ng_tensor_1d(NG_F32, NG_CUDA, b[i].numel, "ones");
        ng_fill(&one[i], 1);
        ng_comm_check_fill(&b[i], seed + (uint64_t)i, rank, 0);
    }
    for (int i = 0; i < NB; i++) req[i] = ng_comm_allreduce_start(w, &b[i], NG_COMM_SUM, NULL);
    for (int i = 0; i < NB; i++) {
        ng_comm_wait(req[i]);
        ng_axpy(1.0, &one[i], &b[i]);
    }
    for (int i = 0; i < NB; i++) {
        ng_axpy(-1.0, &one[i], &b[i]);
        NG_TEST(ng_comm_check_wrong(&b[i], seed + (uint64_t)i, size, NG_COMM_SUM, 0) == 0,
                "non-blocking bucket %d is exact, and ordered between core's ops", i);
        ng_tensor_free(&b[i]), ng_tensor_free(&one[i]);
    }
    ng_tensor in = ng_tensor_1d(NG_BF16, NG_CUDA, 64 * size, "rs_in");
    ng_tensor out = ng_tensor_1d(NG_BF16, NG_CUDA, 64, "rs_out");
    ng_comm_check_fill(&in, seed, rank, 0);
    ng_comm_reduce_scatter(w, &in, &out, NG_COMM_SUM);
    NG_TEST(ng_comm_check_wrong(&out, seed, size, NG_COMM_SUM, 64 * rank) == 0,
            "reduce-scatter on CUDA is exact");
    ng_comm_broadcast(w, &out, 0);
    double v = 2;
    ng_comm_scalars(w, &v, 1, NG_COMM_SCALAR_SUM);
    NG_TEST(v == 2.0 * size, "host scalars beside NCCL");
    ng_tensor_free(&in), ng_tensor_free(&out);
    return ng_test_mpi_finish(w, "test_comm_gpu");
}
