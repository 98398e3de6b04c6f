/* The NCCL backend: CUDA tensors, NCCL's collectives for the flat level and ncclSend/ncclRecv
 * groups for natgrad's rings, all on the communicator's own stream (split communicators share
 * it, so the levels of a hierarchical all-reduce stay in order). MPI carries the unique id,
 * the host scalars and the splits' bookkeeping. Compiled in every CUDA+MPI build; not yet run
 * on a GPU. */
#include <stdio.h>
#include <stdlib.h>

#include "comm_mpi.h"
#include "core/build_info.h"
#include "core/cuda_context.h"
#include "nccl_check.h"
#include "reduce_cuda.h"

typedef struct {
    ng_mpi_impl mpi; /* first: the MPI helpers read it */
    ncclComm_t nccl;
    cudaStream_t stream;
    int owns_stream;
} nccl_impl;

static nccl_impl *impl_of(const ng_comm *c) {
    return c->impl;
}

static ncclDataType_t nccl_type(ng_dtype dt) {
    switch (dt) {
        case NG_F32:
            return ncclFloat32;
        case NG_F64:
            return ncclFloat64;
        case NG_F16:
            return ncclFloat16;
        case NG_BF16:
            return ncclBfloat16;
        default:
            ng_fail("comm (nccl): no NCCL type for %s", ng_dtype_name(dt));
    }
    return ncclFloat32;
}

static char *at(void *buf, int64_t off, ng_dtype dt) {
    return (char *)buf + (size_t)off * ng_dtype_size(dt);
}

static void nccl_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt) {
    nccl_impl *m = impl_of(c);
    NG_NCCL_CHECK(ncclAllReduce(buf, buf, (size_t)n, nccl_type(dt), ncclSum, m->nccl, m->stream));
}

static void nccl_reduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root) {
    nccl_impl *m = impl_of(c);
    NG_NCCL_CHECK(
        ncclReduce(buf, buf, (size_t)n, nccl_type(dt), ncclSum, root, m->nccl, m->stream));
}

static void nccl_bcast(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root) {
    nccl_impl *m = impl_of(c);
    NG_NCCL_CHECK(ncclBroadcast(buf, buf, (size_t)n, nccl_type(dt), root, m->nccl, m->stream));
}

static int equal_segments(const ng_comm *c, const int64_t *offs) {
    for (int i = 0; i < c->size; i++)
        if (offs[i + 1] - offs[i] != offs[1] - offs[0] || offs[i] != i * (offs[1] - offs[0]))
            return 0;
    return 1;
}

/* Equal segments map onto ncclReduceScatter in place; uneven ones (hier_rs on uneven nodes)
 * become one grouped reduce per segment to its owner. */
static void nccl_reduce_scatterv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt) {
    nccl_impl *m = impl_of(c);
    ncclDataType_t t = nccl_type(dt);
    if (equal_segments(c, offs)) {
        size_t k = (size_t)(offs[1] - offs[0]);
        NG_NCCL_CHECK(
            ncclReduceScatter(buf, at(buf, offs[c->rank], dt), k, t, ncclSum, m->nccl, m->stream));
        return;
    }
    NG_NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < c->size; i++)
        NG_NCCL_CHECK(ncclReduce(at(buf, offs[i], dt), at(buf, offs[i], dt),
                                 (size_t)(offs[i + 1] - offs[i]), t, ncclSum, i, m->nccl,
                                 m->stream));
    NG_NCCL_CHECK(ncclGroupEnd());
}

static void nccl_allgatherv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt) {
    nccl_impl *m = impl_of(c);
    ncclDataType_t t = nccl_type(dt);
    if (equal_segments(c, offs)) {
        size_t k = (size_t)(offs[1] - offs[0]);
        NG_NCCL_CHECK(ncclAllGather(at(buf, offs[c->rank], dt), buf, k, t, m->nccl, m->stream));
        return;
    }
    NG_NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < c->size; i++)
        NG_NCCL_CHECK(ncclBroadcast(at(buf, offs[i], dt), at(buf, offs[i], dt),
                                    (size_t)(offs[i + 1] - offs[i]), t, i, m->nccl, m->stream));
    NG_NCCL_CHECK(ncclGroupEnd());
}

/* Chunk k's send and receive form one group; its reduction is queued behind it on the same
 * stream, while the next group's transfer can already start. */
static void nccl_shift(ng_comm *c, const void *send, int64_t ns, int dst, void *recv, int64_t nr,
                       int src, ng_dtype dt, void *acc, int64_t chunk) {
    nccl_impl *m = impl_of(c);
    if (dst < 0) ns = 0;
    if (src < 0) nr = 0;
    ncclDataType_t t = nccl_type(dt);
    char *into = acc ? ng_comm_scratch(c, (size_t)nr * ng_dtype_size(dt)) : recv;
    for (int64_t off = 0; off < ns || off < nr; off += chunk) {
        int64_t ls = ns - off < chunk ? ns - off : chunk, lr = nr - off < chunk ? nr - off : chunk;
        NG_NCCL_CHECK(ncclGroupStart());
        if (ls > 0)
            NG_NCCL_CHECK(
                ncclSend(at((void *)send, off, dt), (size_t)ls, t, dst, m->nccl, m->stream));
        if (lr > 0)
            NG_NCCL_CHECK(ncclRecv(at(into, off, dt), (size_t)lr, t, src, m->nccl, m->stream));
        NG_NCCL_CHECK(ncclGroupEnd());
        if (acc && lr > 0) ng_comm_cuda_add(at(acc, off, dt), at(into, off, dt), lr, dt, m->stream);
    }
}

static void nccl_finish(ng_comm *c) {
    NG_CUDA_CHECK(cudaStreamSynchronize(impl_of(c)->stream));
}

/* Blocking calls start after everything already queued on core's stream. */
static void nccl_begin(ng_comm *c) {
    (void)c;
    NG_CUDA_CHECK(cudaStreamSynchronize(ng_cuda_ctx()->stream));
}

static void nccl_barrier(ng_comm *c) {
    nccl_finish(c);
    ng_mpi_barrier(c);
}

static void nccl_split(ng_comm *parent, int color, int key, ng_comm *child) {
    ng_mpi_split_into(parent, color, key, child, sizeof(nccl_impl));
    ncclComm_t nc = NULL;
    /* collective over the parent: non-members take part with NCCL_SPLIT_NOCOLOR */
    NG_NCCL_CHECK(ncclCommSplit(impl_of(parent)->nccl, color < 0 ? NCCL_SPLIT_NOCOLOR : color, key,
                                &nc, NULL));
    if (!child->impl) return;
    nccl_impl *m = child->impl;
    m->nccl = nc;
    m->stream = impl_of(parent)->stream;
    m->owns_stream = 0;
}

static void nccl_destroy(ng_comm *c) {
    nccl_impl *m = c->impl;
    if (!m) return;
    NG_CUDA_CHECK(cudaStreamSynchronize(m->stream));
    NG_NCCL_CHECK(ncclCommDestroy(m->nccl));
    if (m->owns_stream) NG_CUDA_CHECK(cudaStreamDestroy(m->stream));
    ng_mpi_free_comm(c);
}

static void nccl_add(ng_comm *c, void *dst, const void *src, int64_t n, ng_dtype dt) {
    ng_comm_cuda_add(dst, src, n, dt, impl_of(c)->stream);
}

static void nccl_divide(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int by) {
    ng_comm_cuda_divide(buf, n, dt, by, impl_of(c)->stream);
}

static void nccl_copy(ng_comm *c, void *dst, const void *src, size_t bytes) {
    if (bytes)
        NG_CUDA_CHECK(
            cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, impl_of(c)->stream));
}

/* Non-blocking: the stream orders the buckets (the same order on every rank, as NCCL needs);
 * the host returns at once, and wait makes core's stream wait for this bucket only. */
static ng_comm_request *nccl_start(ng_comm *c, ng_tensor *t, ng_comm_op op,
                                   const ng_allreduce_opts *o) {
    nccl_impl *m = impl_of(c);
    cudaEvent_t ready, done;
    NG_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    NG_CUDA_CHECK(cudaEventRecord(ready, ng_cuda_ctx()->stream));
    NG_CUDA_CHECK(cudaStreamWaitEvent(m->stream, ready, 0));
    NG_CUDA_CHECK(cudaEventDestroy(ready));
    ng_comm_allreduce_enqueue(c, t, op, o);
    NG_CUDA_CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
    NG_CUDA_CHECK(cudaEventRecord(done, m->stream));
    ng_comm_request *r = calloc(1, sizeof *r);
    r->comm = c;
    r->on_stream = 1;
    r->event = done;
    return r;
}

static void nccl_wait(ng_comm_request *r) {
    cudaEvent_t done = r->event;
    NG_CUDA_CHECK(cudaStreamWaitEvent(ng_cuda_ctx()->stream, done, 0));
    NG_CUDA_CHECK(cudaEventDestroy(done));
    free(r);
}

static const ng_comm_ops nccl_ops = {
    .name = "nccl",
    .allreduce = nccl_allreduce,
    .reduce = nccl_reduce,
    .bcast = nccl_bcast,
    .reduce_scatterv = nccl_reduce_scatterv,
    .allgatherv = nccl_allgatherv,
    .shift = nccl_shift,
    .barrier = nccl_barrier,
    .scalars = ng_mpi_scalars,
    .allgather_ints = ng_mpi_allgather_ints,
    .split = nccl_split,
    .destroy = nccl_destroy,
    .abort = ng_mpi_abort,
    .add = nccl_add,
    .divide = nccl_divide,
    .copy = nccl_copy,
    .finish = nccl_finish,
    .begin = nccl_begin,
    .start = nccl_start,
    .wait = nccl_wait,
};

int ng_comm_nccl_world(ng_comm *w) {
    NG_CHECK(w->backend == NG_COMM_MPI, "comm: the nccl backend starts from an MPI world");
    NG_CHECK(ng_cuda_device_count() > 0,
             "comm: the nccl backend needs a CUDA device on rank %d, and none is visible", w->rank);
    /* The local rank picks the GPU, before core's CUDA context opens one. */
    if (!getenv("NG_CUDA_DEVICE")) {
        char dev[16];
        snprintf(dev, sizeof dev, "%d",
                 ng_comm_device_for_local_rank(w->local_rank, ng_cuda_device_count()));
        setenv("NG_CUDA_DEVICE", dev, 1);
    }
    ng_cuda_ctx();
    nccl_impl *m = calloc(1, sizeof *m);
    m->mpi = *(ng_mpi_impl *)w->impl;
    free(w->impl);
    w->impl = m;
    ncclUniqueId id;
    if (w->rank == 0) NG_NCCL_CHECK(ncclGetUniqueId(&id));
    NG_MPI_CHECK(MPI_Bcast(&id, (int)sizeof id, MPI_BYTE, 0, m->mpi.comm));
    NG_NCCL_CHECK(ncclCommInitRank(&m->nccl, w->size, id, w->rank));
    NG_CUDA_CHECK(cudaStreamCreateWithFlags(&m->stream, cudaStreamNonBlocking));
    m->owns_stream = 1;
    w->ops = &nccl_ops;
    w->backend = NG_COMM_NCCL;
    w->device = NG_CUDA;
    return 1;
}

static const char *nccl_version(void) {
    static char v[32];
    int code = 0;
    if (ncclGetVersion(&code) != ncclSuccess) return "unknown";
    snprintf(v, sizeof v, "%d.%d.%d", code / 10000, code / 100 % 100, code % 100);
    return v;
}

/* core's build report asks comm for NCCL's version; registered whenever this file is linked. */
__attribute__((constructor)) static void register_nccl_version(void) {
    ng_build_info_set_nccl(nccl_version);
}
