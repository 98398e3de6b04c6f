/* The MPI backend: host buffers, MPI's own collectives for the flat level, point-to-point
 * messages for natgrad's rings. MPI has no fp16/bf16, so halves travel as MPI_UINT16_T with
 * user-defined sum operations that add through core/half.h. */
#include "comm_mpi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/build_info.h"
#include "core/error.h"

#define NG_MPI_TAG 7 /* one tag: MPI keeps messages between two ranks in order */

static MPI_Op op_f16 = MPI_OP_NULL, op_bf16 = MPI_OP_NULL;
static int provided_level, we_initialised;
static char version[MPI_MAX_LIBRARY_VERSION_STRING];

void ng_mpi_check_fail(const char *file, int line, const char *call, int err) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(err, msg, &len) != MPI_SUCCESS) snprintf(msg, sizeof msg, "code %d", err);
    ng_lib_fail("MPI", file, line, call, msg);
}

static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    ng_comm_cpu_add(NULL, inout, in, *len, NG_F16);
}
static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    ng_comm_cpu_add(NULL, inout, in, *len, NG_BF16);
}

static MPI_Datatype mpi_type(ng_dtype dt) {
    switch (dt) {
        case NG_F32:
            return MPI_FLOAT;
        case NG_F64:
            return MPI_DOUBLE;
        case NG_F16:
        case NG_BF16:
            return MPI_UINT16_T;
        default:
            ng_fail("comm (mpi): no MPI type for %s", ng_dtype_name(dt));
    }
    return MPI_DATATYPE_NULL;
}

static MPI_Op mpi_sum(ng_dtype dt) {
    return dt == NG_F16 ? op_f16 : dt == NG_BF16 ? op_bf16 : MPI_SUM;
}

static int icount(int64_t n) {
    NG_CHECK(n <= INT_MAX, "comm (mpi): %lld elements in one message exceed MPI's int count",
             (long long)n);
    return (int)n;
}

static void mpi_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt) {
    NG_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, buf, icount(n), mpi_type(dt), mpi_sum(dt), ng_mpi_comm(c)));
}

static void mpi_reduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root) {
    if (c->rank == root)
        NG_MPI_CHECK(MPI_Reduce(MPI_IN_PLACE, buf, icount(n), mpi_type(dt), mpi_sum(dt), root,
                                ng_mpi_comm(c)));
    else
        NG_MPI_CHECK(
            MPI_Reduce(buf, NULL, icount(n), mpi_type(dt), mpi_sum(dt), root, ng_mpi_comm(c)));
}

static void mpi_bcast(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root) {
    NG_MPI_CHECK(MPI_Bcast(buf, icount(n), mpi_type(dt), root, ng_mpi_comm(c)));
}

static void counts_displs(const ng_comm *c, const int64_t *offs, int *counts, int *displs) {
    for (int i = 0; i < c->size; i++) {
        counts[i] = icount(offs[i + 1] - offs[i]);
        displs[i] = icount(offs[i]);
    }
}

static void mpi_reduce_scatterv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt) {
    int *counts = malloc(2 * sizeof(int) * (size_t)c->size), *displs = counts + c->size;
    counts_displs(c, offs, counts, displs);
    size_t es = ng_dtype_size(dt), mine = (size_t)counts[c->rank] * es;
    /* MPI_IN_PLACE would leave the result at the front of buf; receive aside, then put it in
     * its segment. */
    void *tmp = ng_comm_scratch(c, mine ? mine : 1);
    NG_MPI_CHECK(MPI_Reduce_scatter(buf, tmp, counts, mpi_type(dt), mpi_sum(dt), ng_mpi_comm(c)));
    memcpy((char *)buf + (size_t)displs[c->rank] * es, tmp, mine);
    free(counts);
}

static void mpi_allgatherv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt) {
    int *counts = malloc(2 * sizeof(int) * (size_t)c->size), *displs = counts + c->size;
    counts_displs(c, offs, counts, displs);
    NG_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs,
                                mpi_type(dt), ng_mpi_comm(c)));
    free(counts);
}

/* All chunks are posted at once and reduced as they arrive, so adding chunk k overlaps the
 * transfer of the chunks behind it. */
static void mpi_shift(ng_comm *c, const void *send, int64_t ns, int dst, void *recv, int64_t nr,
                      int src, ng_dtype dt, void *acc, int64_t chunk) {
    if (dst < 0) ns = 0;
    if (src < 0) nr = 0;
    int64_t ksend = (ns + chunk - 1) / chunk, krecv = (nr + chunk - 1) / chunk;
    if (ksend + krecv == 0) return;
    size_t es = ng_dtype_size(dt);
    MPI_Datatype t = mpi_type(dt);
    MPI_Comm comm = ng_mpi_comm(c);
    MPI_Request *req = malloc(sizeof(MPI_Request) * (size_t)(ksend + krecv));
    char *into = acc ? ng_comm_scratch(c, (size_t)nr * es) : recv;
    for (int64_t k = 0; k < krecv; k++) {
        int64_t off = k * chunk, len = nr - off < chunk ? nr - off : chunk;
        NG_MPI_CHECK(
            MPI_Irecv(into + (size_t)off * es, icount(len), t, src, NG_MPI_TAG, comm, &req[k]));
    }
    for (int64_t k = 0; k < ksend; k++) {
        int64_t off = k * chunk, len = ns - off < chunk ? ns - off : chunk;
        NG_MPI_CHECK(MPI_Isend((const char *)send + (size_t)off * es, icount(len), t, dst,
                               NG_MPI_TAG, comm, &req[krecv + k]));
    }
    for (int64_t k = 0; k < krecv; k++) {
        NG_MPI_CHECK(MPI_Wait(&req[k], MPI_STATUS_IGNORE));
        int64_t off = k * chunk, len = nr - off < chunk ? nr - off : chunk;
        if (acc)
            ng_comm_cpu_add(c, (char *)acc + (size_t)off * es, into + (size_t)off * es, len, dt);
    }
    NG_MPI_CHECK(MPI_Waitall((int)ksend, req + krecv, MPI_STATUSES_IGNORE));
    free(req);
}

void ng_mpi_barrier(ng_comm *c) {
    NG_MPI_CHECK(MPI_Barrier(ng_mpi_comm(c)));
}

void ng_mpi_scalars(ng_comm *c, double *v, int n, ng_comm_scalar_op op) {
    NG_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE,
                               op == NG_COMM_SCALAR_MAX ? MPI_MAX : MPI_SUM, ng_mpi_comm(c)));
}

void ng_mpi_allgather_ints(ng_comm *c, const int *mine, int *all) {
    NG_MPI_CHECK(MPI_Allgather(mine, 1, MPI_INT, all, 1, MPI_INT, ng_mpi_comm(c)));
}

void ng_mpi_abort(ng_comm *c, int code) {
    MPI_Abort(c && c->impl ? ng_mpi_comm(c) : MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this keeps the compiler sure of it */
}

void ng_mpi_split_into(ng_comm *parent, int color, int key, ng_comm *child, size_t impl_bytes) {
    MPI_Comm nc;
    NG_MPI_CHECK(MPI_Comm_split(ng_mpi_comm(parent), color < 0 ? MPI_UNDEFINED : color, key, &nc));
    if (nc == MPI_COMM_NULL) return;
    NG_MPI_CHECK(MPI_Comm_set_errhandler(nc, MPI_ERRORS_RETURN));
    ng_mpi_impl *impl = calloc(1, impl_bytes);
    impl->comm = nc;
    child->impl = impl;
    NG_MPI_CHECK(MPI_Comm_rank(nc, &child->rank));
    NG_MPI_CHECK(MPI_Comm_size(nc, &child->size));
}

void ng_mpi_free_comm(ng_comm *c) {
    if (!c->impl) return;
    ng_mpi_impl *impl = c->impl;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) NG_MPI_CHECK(MPI_Comm_free(&impl->comm));
    free(impl);
    c->impl = NULL;
}

static void mpi_split(ng_comm *parent, int color, int key, ng_comm *child) {
    ng_mpi_split_into(parent, color, key, child, sizeof(ng_mpi_impl));
}

static const ng_comm_ops mpi_ops = {
    .name = "mpi",
    .allreduce = mpi_allreduce,
    .reduce = mpi_reduce,
    .bcast = mpi_bcast,
    .reduce_scatterv = mpi_reduce_scatterv,
    .allgatherv = mpi_allgatherv,
    .shift = mpi_shift,
    .barrier = ng_mpi_barrier,
    .scalars = ng_mpi_scalars,
    .allgather_ints = ng_mpi_allgather_ints,
    .split = mpi_split,
    .destroy = ng_mpi_free_comm,
    .abort = ng_mpi_abort,
    .add = ng_comm_cpu_add,
    .divide = ng_comm_cpu_divide,
    .copy = ng_comm_cpu_copy,
};

int ng_comm_mpi_launched(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK",
                                 "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

int ng_comm_thread_multiple(void) {
    return provided_level >= MPI_THREAD_MULTIPLE;
}

int ng_comm_mpi_world(ng_comm *w, int *argc, char ***argv, int ranks_per_node) {
    int inited = 0;
    NG_MPI_CHECK(MPI_Initialized(&inited));
    if (!inited) {
        NG_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided_level));
        we_initialised = 1;
    } else {
        NG_MPI_CHECK(MPI_Query_thread(&provided_level));
    }
    if (op_f16 == MPI_OP_NULL) {
        NG_MPI_CHECK(MPI_Op_create(sum_f16, 1, &op_f16));
        NG_MPI_CHECK(MPI_Op_create(sum_bf16, 1, &op_bf16));
    }
    ng_mpi_impl *impl = calloc(1, sizeof *impl);
    NG_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &impl->comm));
    /* Errors come back to NG_MPI_CHECK, which names the call before ending the job. */
    NG_MPI_CHECK(MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN));
    w->ops = &mpi_ops;
    w->impl = impl;
    w->backend = NG_COMM_MPI;
    w->device = NG_CPU;
    NG_MPI_CHECK(MPI_Comm_rank(impl->comm, &w->rank));
    NG_MPI_CHECK(MPI_Comm_size(impl->comm, &w->size));
    int label = w->rank / (ranks_per_node > 0 ? ranks_per_node : 1);
    if (ranks_per_node <= 0) {
        /* A node is the set of ranks sharing memory; its label is its lowest rank. */
        MPI_Comm shared;
        NG_MPI_CHECK(
            MPI_Comm_split_type(impl->comm, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &shared));
        NG_MPI_CHECK(MPI_Allreduce(&w->rank, &label, 1, MPI_INT, MPI_MIN, shared));
        NG_MPI_CHECK(MPI_Comm_free(&shared));
    }
    ng_comm_set_topology(w, label);
    return 1;
}

void ng_comm_mpi_finalize(void) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (!inited || finalized) return;
    if (op_f16 != MPI_OP_NULL) {
        MPI_Op_free(&op_f16);
        MPI_Op_free(&op_bf16);
    }
    if (we_initialised) NG_MPI_CHECK(MPI_Finalize());
}

void ng_comm_mpi_abort_all(int code) {
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (inited && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

const char *ng_comm_mpi_version(void) {
    if (!version[0]) {
        int len = 0;
        MPI_Get_library_version(version, &len);
        char *nl = version;
        while (*nl && *nl != '\n' && *nl != ',') nl++;
        *nl = 0;
        size_t used = strlen(version);
        snprintf(version + used, sizeof version - used, " (MPI %d.%d)", MPI_VERSION,
                 MPI_SUBVERSION);
    }
    return version;
}

/* core's build report asks comm for the MPI version; registered whenever comm/ is linked in. */
__attribute__((constructor)) static void register_mpi_version(void) {
    ng_build_info_set_mpi(ng_comm_mpi_version);
}
