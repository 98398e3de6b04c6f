/* A helper for tests/cluster.sh (not a test on its own): what MPI sees of the machine.
 * Every rank prints one line, in rank order:
 *   rank R size N host H local_rank L local_size S
 * where L and S come from MPI_Comm_split_type(MPI_COMM_TYPE_SHARED), i.e. what Open MPI takes to
 * be one node. With --bw MIB, rank 0 then exchanges MIB MiB with every other rank in turn (ping-
 * pong, 5 round trips after one warm-up) and prints one line per peer:
 *   bw 0<->R host H same_node Y|N MiB_per_s X Mbit_per_s Y
 * so that the link between namespaces can be told from shared memory within one. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOST_LEN 64

static double pingpong(int peer, int me, char *buf, int bytes, int reps) {
    double t0 = 0;
    for (int r = 0; r <= reps; r++) {
        if (r == 1) t0 = MPI_Wtime(); /* round 0 warms the connection up */
        if (me == 0) {
            MPI_Send(buf, bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, bytes, MPI_BYTE, peer, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, bytes, MPI_BYTE, 0, 0, MPI_COMM_WORLD);
        }
    }
    return MPI_Wtime() - t0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int bw_mib = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bw") == 0 && i + 1 < argc) bw_mib = atoi(argv[++i]);
    }
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int local_rank, local_size;
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_size(node, &local_size);
    char host[HOST_LEN] = {0};
    gethostname(host, HOST_LEN - 1);

    /* Rank 0 prints everything so that lines never interleave across processes. */
    char line[160];
    snprintf(line, sizeof line, "rank %d size %d host %s local_rank %d local_size %d", rank, size,
             host, local_rank, local_size);
    char *all = rank == 0 ? malloc((size_t)size * sizeof line) : NULL;
    MPI_Gather(line, sizeof line, MPI_CHAR, all, sizeof line, MPI_CHAR, 0, MPI_COMM_WORLD);
    char *hosts = rank == 0 ? malloc((size_t)size * HOST_LEN) : NULL;
    MPI_Gather(host, HOST_LEN, MPI_CHAR, hosts, HOST_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < size; r++) printf("%s\n", all + (size_t)r * sizeof line);
        fflush(stdout);
    }

    if (bw_mib > 0) {
        int bytes = bw_mib * 1024 * 1024;
        char *buf = calloc((size_t)bytes, 1);
        const int reps = 5;
        for (int peer = 1; peer < size; peer++) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank != 0 && rank != peer) continue;
            double t = pingpong(peer, rank, buf, bytes, reps);
            if (rank == 0) {
                /* Each round trip moves the message once each way; a link of rate R per direction
                 * (as tc shapes it here) carries one message in bytes/R, so time per message is
                 * t/2r. */
                double per_msg = t / (2.0 * reps);
                double mib_s = bw_mib / per_msg;
                const char *ph = hosts + (size_t)peer * HOST_LEN;
                printf("bw 0<->%d host %s same_node %s MiB_per_s %.1f Mbit_per_s %.1f\n", peer, ph,
                       strcmp(ph, host) == 0 ? "Y" : "N", mib_s, mib_s * 1048576.0 * 8 / 1e6);
                fflush(stdout);
            }
        }
        free(buf);
    }
    free(all);
    free(hosts);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return 0;
}
