/* NCCL for the CUDA emulation build (NG_CUDA_EMU with MPI): the calls comm_nccl.c makes, carried
 * over MPI, so the NCCL backend's own code and everything above it (buckets on the device,
 * hierarchical all-reduces on CUDA tensors, distributed K-FAC, multi-rank training on "cuda") run
 * on a machine without a GPU. Not a model of NCCL's speed or its algorithms.
 *
 * What it holds to, as NCCL does: every buffer is device memory (a host pointer is an error
 * here, where NCCL would read garbage or fault); in-place reduce-scatter and all-gather only in
 * NCCL's layout; every rank of a communicator calls the same collectives in the same order with
 * the same counts, types and roots (checked on every call: a mismatch hangs or corrupts NCCL);
 * sends and receives inside a group are matched at ncclGroupEnd. Results are identical on every
 * rank: sums are taken in rank order, each addition rounded to the element type as
 * comm/reduce_cpu.c does. Calls on a created stream run on that stream's worker thread, in
 * order, beside the host (core/stream_emu.h), so results are there only after the stream is
 * synchronised or waited for, as on a GPU; calls on the NULL stream run at once.
 *
 * Device memory is opened only to copy into and out of host staging buffers; MPI never sees it
 * (its progress engine may run in any later MPI call, outside an emulated op). */
#include <mpi.h>
#include <nccl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm_internal.h"
#include "core/cuda_emu.h"
#include "core/error.h"
#include "core/stream_emu.h"

struct ncclComm {
    MPI_Comm mpi;
    int rank, size;
};

typedef enum {
    OP_ALLREDUCE,
    OP_REDUCE,
    OP_BCAST,
    OP_REDUCE_SCATTER,
    OP_ALLGATHER,
    OP_SEND,
    OP_RECV
} op_kind;

static const char *op_names[] = {"ncclAllReduce",     "ncclReduce",    "ncclBroadcast",
                                 "ncclReduceScatter", "ncclAllGather", "ncclSend",
                                 "ncclRecv"};

typedef struct {
    op_kind kind;
    const void *send;
    void *recv;
    size_t count; /* elements: per rank for reduce-scatter's output and all-gather's input */
    ng_dtype dt;
    int root; /* or the peer of a send or receive */
    ncclComm_t comm;
    cudaStream_t stream;
} pending;

/* ncclGroupStart/End: calls between them are queued and run at the outermost end. */
static struct {
    int depth;
    pending *ops;
    int n, max;
} group;

/* Prints why a call is refused (core's ng_emu_say), then returns ncclInvalidUsage. */
#define usage(call, fmt, ...)                                                                      \
    (ng_emu_say("NCCL", "%s: " fmt, (call), ##__VA_ARGS__), ncclInvalidUsage)

static int dtype_of(ncclDataType_t t, ng_dtype *dt) {
    switch (t) {
        case ncclFloat32:
            *dt = NG_F32;
            return 1;
        case ncclFloat64:
            *dt = NG_F64;
            return 1;
        case ncclFloat16:
            *dt = NG_F16;
            return 1;
        case ncclBfloat16:
            *dt = NG_BF16;
            return 1;
        default:
            return 0;
    }
}

static size_t bytes_of(const pending *p) {
    return p->count * ng_dtype_size(p->dt);
}

/* Every rank describes its call; all must agree (the peers of sends and receives are not
 * collective and are not compared). */
static ncclResult_t check_agreement(const pending *p) {
    long mine[4] = {p->kind, (long)p->count, p->dt, p->root}, *all;
    all = malloc(sizeof mine * (size_t)p->comm->size);
    if (!all) return ncclSystemError;
    MPI_Allgather(mine, 4, MPI_LONG, all, 4, MPI_LONG, p->comm->mpi);
    ncclResult_t r = ncclSuccess;
    for (int i = 0; i < p->comm->size && r == ncclSuccess; i++)
        if (memcmp(all + 4 * i, mine, sizeof mine))
            r = usage(op_names[p->kind],
                      "rank %d calls %s(count %ld, %s, root %ld) where rank %d calls %s(count %ld, "
                      "%s, root %ld): every rank must make the same calls in the same order",
                      i, op_names[all[4 * i]], all[4 * i + 1],
                      ng_dtype_name((ng_dtype)all[4 * i + 2]), all[4 * i + 3], p->comm->rank,
                      op_names[p->kind], mine[1], ng_dtype_name(p->dt), mine[3]);
    free(all);
    return r;
}

static void *staged(const void *dev, size_t bytes) {
    void *h = malloc(bytes ? bytes : 1);
    if (h && bytes) {
        ng_emu_enter();
        memcpy(h, dev, bytes);
        ng_emu_leave();
    }
    return h;
}

static void unstage(void *dev, const void *h, size_t bytes) {
    if (!bytes) return;
    ng_emu_enter();
    memcpy(dev, h, bytes);
    ng_emu_leave();
}

/* Every rank's contribution (`bytes` each), gathered in rank order. */
static char *gather_all(const pending *p, const void *dev, size_t bytes) {
    NG_CHECK(bytes * (size_t)p->comm->size <= INT32_MAX,
             "NCCL (emulated) %s: %zu bytes per rank is more than this emulation gathers",
             op_names[p->kind], bytes);
    void *mine = staged(dev, bytes);
    char *all = malloc(bytes * (size_t)p->comm->size + 1);
    NG_CHECK(mine && all, "NCCL (emulated): out of host memory");
    MPI_Allgather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, p->comm->mpi);
    free(mine);
    return all;
}

/* The rank-order sum of segment [off, off + n) over every rank's copy in `all`, into all[0]. */
static void sum_ranks(const pending *p, char *all, size_t stride, size_t off, size_t n) {
    size_t es = ng_dtype_size(p->dt);
    for (int i = 1; i < p->comm->size; i++)
        ng_comm_cpu_add(NULL, all + off * es, all + (size_t)i * stride + off * es, (int64_t)n,
                        p->dt);
}

static ncclResult_t run_collective(const pending *p) {
    ncclResult_t r = check_agreement(p);
    if (r != ncclSuccess) return r;
    size_t bytes = bytes_of(p);
    switch (p->kind) {
        case OP_ALLREDUCE:
        case OP_REDUCE: {
            char *all = gather_all(p, p->send, bytes);
            sum_ranks(p, all, bytes, 0, p->count);
            if (p->kind == OP_ALLREDUCE || p->comm->rank == p->root) unstage(p->recv, all, bytes);
            free(all);
            break;
        }
        case OP_BCAST: {
            void *h = p->comm->rank == p->root ? staged(p->send, bytes) : malloc(bytes + 1);
            NG_CHECK(h, "NCCL (emulated): out of host memory");
            NG_CHECK(bytes <= INT32_MAX, "NCCL (emulated) ncclBroadcast: %zu bytes is too many",
                     bytes);
            MPI_Bcast(h, (int)bytes, MPI_BYTE, p->root, p->comm->mpi);
            unstage(p->recv, h, bytes);
            free(h);
            break;
        }
        case OP_REDUCE_SCATTER: {
            size_t whole = bytes * (size_t)p->comm->size;
            char *all = gather_all(p, p->send, whole);
            size_t mine = p->count * (size_t)p->comm->rank;
            sum_ranks(p, all, whole, mine, p->count);
            unstage(p->recv, all + mine * ng_dtype_size(p->dt), bytes);
            free(all);
            break;
        }
        case OP_ALLGATHER: {
            char *all = gather_all(p, p->send, bytes);
            unstage(p->recv, all, bytes * (size_t)p->comm->size);
            free(all);
            break;
        }
        default:
            break;
    }
    return ncclSuccess;
}

/* A group's calls: the sends and receives are posted together (so a ring's send and receive
 * cannot deadlock), the collectives run in order, then everything is waited for. */
static ncclResult_t run_ops(const pending *ops, int n) {
    MPI_Request *req = calloc((size_t)n + 1, sizeof *req);
    void **host = calloc((size_t)n + 1, sizeof *host);
    NG_CHECK(req && host, "NCCL (emulated): out of host memory");
    int nreq = 0;
    ncclResult_t r = ncclSuccess;
    for (int i = 0; i < n; i++) {
        const pending *p = &ops[i];
        if (p->kind != OP_SEND && p->kind != OP_RECV) continue;
        size_t bytes = bytes_of(p);
        NG_CHECK(bytes <= INT32_MAX, "NCCL (emulated) %s: %zu bytes is too many", op_names[p->kind],
                 bytes);
        host[i] = p->kind == OP_SEND ? staged(p->send, bytes) : malloc(bytes + 1);
        NG_CHECK(host[i], "NCCL (emulated): out of host memory");
        if (p->kind == OP_SEND)
            MPI_Isend(host[i], (int)bytes, MPI_BYTE, p->root, 0, p->comm->mpi, &req[nreq++]);
        else
            MPI_Irecv(host[i], (int)bytes, MPI_BYTE, p->root, 0, p->comm->mpi, &req[nreq++]);
    }
    for (int i = 0; i < n && r == ncclSuccess; i++)
        if (ops[i].kind != OP_SEND && ops[i].kind != OP_RECV) r = run_collective(&ops[i]);
    MPI_Waitall(nreq, req, MPI_STATUSES_IGNORE);
    for (int i = 0; i < n; i++) {
        if (ops[i].kind == OP_RECV) unstage(ops[i].recv, host[i], bytes_of(&ops[i]));
        free(host[i]);
    }
    free(req);
    free(host);
    return r;
}

typedef struct {
    pending *ops;
    int n;
} queued_group;

/* On the stream's worker: an error there has no caller to return to (NCCL would report it
 * through ncclCommGetAsyncError), so it ends the process. */
static void run_queued(void *arg) {
    queued_group *g = arg;
    ncclResult_t r = run_ops(g->ops, g->n);
    if (r != ncclSuccess)
        ng_fail("NCCL (emulated): %s failed on its stream: %s", op_names[g->ops[0].kind],
                ncclGetErrorString(r));
    free(g->ops);
    free(g);
}

/* The outermost group end (or a call outside a group): on the NULL stream the calls run now;
 * on a created stream they are queued behind its earlier work (core/stream_emu.h). */
static ncclResult_t end_group(void) {
    int n = group.n;
    group.n = 0;
    if (n == 0) return ncclSuccess;
    for (int i = 1; i < n; i++)
        if (group.ops[i].stream != group.ops[0].stream)
            return usage("ncclGroupEnd", "the calls of one group are on different streams");
    if (!group.ops[0].stream) return run_ops(group.ops, n);
    queued_group *g = malloc(sizeof *g);
    NG_CHECK(g, "NCCL (emulated): out of host memory");
    g->ops = malloc(sizeof *g->ops * (size_t)n);
    NG_CHECK(g->ops, "NCCL (emulated): out of host memory");
    memcpy(g->ops, group.ops, sizeof *g->ops * (size_t)n);
    g->n = n;
    ng_emu_stream_enqueue(group.ops[0].stream, run_queued, g);
    return ncclSuccess;
}

static ncclResult_t submit(pending p) {
    if (group.n == group.max) {
        int max = group.max ? 2 * group.max : 16;
        pending *ops = realloc(group.ops, sizeof *ops * (size_t)max);
        if (!ops) return ncclSystemError;
        group.ops = ops, group.max = max;
    }
    group.ops[group.n++] = p;
    return group.depth > 0 ? ncclSuccess : end_group();
}

/* The checks NCCL's callers owe it: a communicator, a known type, sum, device buffers. */
static ncclResult_t prepare(pending *p, ncclDataType_t t, ncclRedOp_t op, size_t send_count,
                            size_t recv_count) {
    const char *call = op_names[p->kind];
    if (!p->comm) return usage(call, "no communicator");
    if (!dtype_of(t, &p->dt)) return usage(call, "element type %d is not emulated", (int)t);
    if (op != ncclSum) return usage(call, "only ncclSum is emulated (natgrad reduces sums only)");
    if ((p->kind == OP_REDUCE || p->kind == OP_BCAST || p->kind == OP_SEND || p->kind == OP_RECV) &&
        (p->root < 0 || p->root >= p->comm->size))
        return usage(call, "rank %d is not in a communicator of %d", p->root, p->comm->size);
    size_t es = ng_dtype_size(p->dt);
    int send_needed = p->kind != OP_RECV && (p->kind != OP_BCAST || p->comm->rank == p->root);
    if (send_needed && send_count && !ng_emu_is_device(p->send, send_count * es))
        return usage(call, "the send buffer %p (%zu bytes) is not device memory", p->send,
                     send_count * es);
    int recv_needed = p->kind != OP_SEND && (p->kind != OP_REDUCE || p->comm->rank == p->root);
    if (recv_needed && recv_count && !ng_emu_is_device(p->recv, recv_count * es))
        return usage(call, "the receive buffer %p (%zu bytes) is not device memory", p->recv,
                     recv_count * es);
    return ncclSuccess;
}

/* Overlapping buffers are allowed only as NCCL's in-place layouts. */
static int overlaps(const void *a, size_t na, const void *b, size_t nb) {
    return (const char *)a < (const char *)b + nb && (const char *)b < (const char *)a + na;
}

ncclResult_t ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
    pending p = {OP_ALLREDUCE, sendbuff, recvbuff, count, NG_F32, 0, comm, stream};
    ncclResult_t r = prepare(&p, datatype, op, count, count);
    return r != ncclSuccess ? r : submit(p);
}

ncclResult_t ncclReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
                        ncclRedOp_t op, int root, ncclComm_t comm, cudaStream_t stream) {
    pending p = {OP_REDUCE, sendbuff, recvbuff, count, NG_F32, root, comm, stream};
    ncclResult_t r = prepare(&p, datatype, op, count, count);
    return r != ncclSuccess ? r : submit(p);
}

ncclResult_t ncclBroadcast(const void *sendbuff, void *recvbuff, size_t count,
                           ncclDataType_t datatype, int root, ncclComm_t comm,
                           cudaStream_t stream) {
    pending p = {OP_BCAST, sendbuff, recvbuff, count, NG_F32, root, comm, stream};
    ncclResult_t r = prepare(&p, datatype, ncclSum, count, count);
    return r != ncclSuccess ? r : submit(p);
}

ncclResult_t ncclReduceScatter(const void *sendbuff, void *recvbuff, size_t recvcount,
                               ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                               cudaStream_t stream) {
    pending p = {OP_REDUCE_SCATTER, sendbuff, recvbuff, recvcount, NG_F32, 0, comm, stream};
    ncclResult_t r =
        prepare(&p, datatype, op, recvcount * (size_t)(comm ? comm->size : 0), recvcount);
    if (r != ncclSuccess) return r;
    size_t es = ng_dtype_size(p.dt), out = recvcount * es;
    if (overlaps(sendbuff, out * (size_t)comm->size, recvbuff, out) &&
        (const char *)recvbuff != (const char *)sendbuff + out * (size_t)comm->rank)
        return usage("ncclReduceScatter", "the buffers overlap, but not in place (in place: "
                                          "recvbuff = sendbuff + rank * recvcount)");
    return submit(p);
}

ncclResult_t ncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount,
                           ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    pending p = {OP_ALLGATHER, sendbuff, recvbuff, sendcount, NG_F32, 0, comm, stream};
    ncclResult_t r =
        prepare(&p, datatype, ncclSum, sendcount, sendcount * (size_t)(comm ? comm->size : 0));
    if (r != ncclSuccess) return r;
    size_t in = sendcount * ng_dtype_size(p.dt);
    if (overlaps(sendbuff, in, recvbuff, in * (size_t)comm->size) &&
        (const char *)sendbuff != (const char *)recvbuff + in * (size_t)comm->rank)
        return usage("ncclAllGather", "the buffers overlap, but not in place (in place: "
                                      "sendbuff = recvbuff + rank * sendcount)");
    return submit(p);
}

ncclResult_t ncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
    pending p = {OP_SEND, sendbuff, NULL, count, NG_F32, peer, comm, stream};
    ncclResult_t r = prepare(&p, datatype, ncclSum, count, 0);
    return r != ncclSuccess ? r : submit(p);
}

ncclResult_t ncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
    pending p = {OP_RECV, NULL, recvbuff, count, NG_F32, peer, comm, stream};
    ncclResult_t r = prepare(&p, datatype, ncclSum, 0, count);
    return r != ncclSuccess ? r : submit(p);
}

ncclResult_t ncclGroupStart(void) {
    group.depth++;
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (group.depth == 0) return usage("ncclGroupEnd", "no group was started");
    return --group.depth > 0 ? ncclSuccess : end_group();
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static int serial;
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "natgrad-emulated-nccl %ld %d", (long)getpid(),
             ++serial);
    return ncclSuccess;
}

/* Collective over MPI's world (as natgrad calls it: every process makes the world's NCCL
 * communicator): the processes holding the same id form the communicator, ordered by `rank`. */
ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int inited = 0, world = 0;
    MPI_Initialized(&inited);
    if (!inited) return usage("ncclCommInitRank", "the emulation needs MPI to be running");
    int level = 0;
    MPI_Query_thread(&level);
    if (level < MPI_THREAD_MULTIPLE) /* streams' workers call MPI beside the host thread */
        return usage("ncclCommInitRank", "the emulation needs MPI_THREAD_MULTIPLE");
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    ncclUniqueId *ids = malloc(sizeof id * (size_t)world);
    if (!ids) return ncclSystemError;
    MPI_Allgather(&id, (int)sizeof id, MPI_BYTE, ids, (int)sizeof id, MPI_BYTE, MPI_COMM_WORLD);
    int color = 0;
    while (memcmp(&ids[color], &id, sizeof id)) color++;
    free(ids);
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    MPI_Comm_split(MPI_COMM_WORLD, color, rank, &c->mpi);
    MPI_Comm_rank(c->mpi, &c->rank);
    MPI_Comm_size(c->mpi, &c->size);
    if (c->size != nranks || c->rank != rank) {
        ncclResult_t r =
            usage("ncclCommInitRank", "rank %d of %d asked for, but %d processes hold this id",
                  rank, nranks, c->size);
        MPI_Comm_free(&c->mpi);
        free(c);
        return r;
    }
    *comm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
                           ncclConfig_t *config) {
    (void)config;
    if (!comm) return usage("ncclCommSplit", "no communicator");
    ng_emu_streams_drain(); /* no worker may be using comm's MPI communicator meanwhile */
    MPI_Comm nc;
    MPI_Comm_split(comm->mpi, color == NCCL_SPLIT_NOCOLOR ? MPI_UNDEFINED : color, key, &nc);
    *newcomm = NULL;
    if (nc == MPI_COMM_NULL) return ncclSuccess;
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->mpi = nc;
    MPI_Comm_rank(nc, &c->rank);
    MPI_Comm_size(nc, &c->size);
    *newcomm = c;
    return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (!comm) return ncclSuccess;
    if (group.depth > 0) return usage("ncclCommDestroy", "inside a group");
    ng_emu_streams_drain();
    MPI_Comm_free(&comm->mpi);
    free(comm);
    return ncclSuccess;
}

ncclResult_t ncclGetVersion(int *version) {
    *version = 0; /* reported as 0.0.0: no NCCL library is linked */
    return ncclSuccess;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
        case ncclSuccess:
            return "no error";
        case ncclSystemError:
            return "system error (emulated NCCL: out of host memory)";
        case ncclInvalidArgument:
            return "invalid argument (emulated NCCL; the reason is printed above)";
        case ncclInvalidUsage:
            return "invalid usage (emulated NCCL; the reason is printed above)";
        default:
            return "unknown result (emulated NCCL)";
    }
}
