/* Inside comm/: the communicator struct, the table of primitives each backend provides, and the
 * algorithm entry points built on those primitives (raw buffers, counts in elements). */
#ifndef NG_COMM_INTERNAL_H
#define NG_COMM_INTERNAL_H

#include "comm.h"

typedef struct ng_comm_async ng_comm_async;

/* A non-blocking all-reduce: run by the worker thread (MPI), queued on a stream (NCCL), or
 * already done when it was run inside start. */
struct ng_comm_request {
    ng_comm *comm;
    ng_tensor tensor;
    ng_comm_op op;
    ng_allreduce_opts opts;
    int done;      /* worker path: set under the queue's lock */
    int on_stream; /* NCCL path: `event` holds the completion */
    void *event;
    ng_comm_request *next;
};

/* What a backend binds. Buffers live on the communicator's device; everything is in place
 * unless said otherwise, and only sums are reduced (average is a scale afterwards). */
typedef struct {
    const char *name;
    void (*allreduce)(ng_comm *c, void *buf, int64_t n, ng_dtype dt);
    /* root ends with the sum; the other ranks' buf is unchanged */
    void (*reduce)(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root);
    void (*bcast)(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root);
    /* rank r ends with the sum of segment [offs[r], offs[r+1]); the rest of buf is undefined */
    void (*reduce_scatterv)(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt);
    /* every rank ends with every segment r taken from rank r */
    void (*allgatherv)(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt);
    /* Sends ns elements to dst and receives nr from src (either side skipped when its peer is
     * -1), in chunks of `chunk` elements. With acc, each received chunk goes to scratch and is
     * added into acc; without, it lands in recv. */
    void (*shift)(ng_comm *c, const void *send, int64_t ns, int dst, void *recv, int64_t nr,
                  int src, ng_dtype dt, void *acc, int64_t chunk);
    void (*barrier)(ng_comm *c);
    void (*scalars)(ng_comm *c, double *v, int n, ng_comm_scalar_op op);
    void (*allgather_ints)(ng_comm *c, const int *mine, int *all); /* one int per rank */
    /* fills child's backend part (child->rank/size too); color < 0: not a member */
    void (*split)(ng_comm *parent, int color, int key, ng_comm *child);
    void (*destroy)(ng_comm *c);
    void (*abort)(ng_comm *c, int code);
    /* local arithmetic on the communicator's device (its stream for CUDA) */
    void (*add)(ng_comm *c, void *dst, const void *src, int64_t n, ng_dtype dt);
    void (*divide)(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int by);
    void (*copy)(ng_comm *c, void *dst, const void *src, size_t bytes);
    /* blocking collectives start with begin (NCCL: after core's stream) and end with finish
     * (NCCL: wait for the communicator's stream); NULL for host backends */
    void (*begin)(ng_comm *c);
    void (*finish)(ng_comm *c);
    /* optional non-blocking path (NCCL: the stream orders it); NULL: the worker thread */
    ng_comm_request *(*start)(ng_comm *c, ng_tensor *t, ng_comm_op op, const ng_allreduce_opts *o);
    void (*wait)(ng_comm_request *r);
} ng_comm_ops;

struct ng_comm {
    const ng_comm_ops *ops;
    ng_comm_backend backend;
    ng_device device;
    int rank, size;
    int node, nodes, local_rank, local_size, max_local_size;
    int *node_of; /* node index of every rank */
    ng_allreduce_opts defaults;
    ng_allreduce_rule table[NG_AR_MAX_RULES];
    int table_n;
    void *impl; /* the backend's own state */
    ng_comm *parent;
    ng_comm *children; /* split from this one, freed with it */
    ng_comm *next_sibling;
    /* communicators the hierarchical algorithms build on first use (collectively) */
    ng_comm *intra, *leaders;
    int leaders_built;
    ng_comm **chunk_comms; /* hier_rs: one per chunk index, NULL where not a member */
    int n_chunk_comms;
    ng_comm *torus_row, *torus_col; /* for a grid of torus_rows rows */
    int torus_rows;
    ng_comm_async *async;
    void *scratch;
    size_t scratch_bytes;
};

/* A scratch buffer of the communicator's device, kept and grown (never shrunk). */
void *ng_comm_scratch(ng_comm *c, size_t bytes);
/* Builds the topology fields of c from one node label per rank (equal labels: same node). */
void ng_comm_set_topology(ng_comm *c, int my_label);
/* The communicator of the ranks with my node index (cached); leaders = local rank 0. */
ng_comm *ng_comm_intra(ng_comm *c);
/* A split whose result is not linked into the parent's children list by the caller. */
ng_comm *ng_comm_split_internal(ng_comm *c, int color, int key);

/* ng_comm_allreduce_with without the final wait (the NCCL stream path queues it). */
void ng_comm_allreduce_enqueue(ng_comm *c, ng_tensor *t, ng_comm_op op, const ng_allreduce_opts *o);
/* The all-reduce of a sum on raw memory with resolved options (no AUTO). */
void ng_allreduce_run(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o);
void ng_ring_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int64_t chunk);
void ng_ring_reduce_scatterv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt,
                             int64_t chunk);
void ng_ring_allgatherv(ng_comm *c, void *buf, const int64_t *offs, ng_dtype dt, int64_t chunk);
void ng_ring_reduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root, int64_t chunk);
void ng_ring_bcast(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int root, int64_t chunk);
void ng_hier_rs(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o);
void ng_hier_leader(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o);
void ng_torus(ng_comm *c, void *buf, int64_t n, ng_dtype dt, const ng_allreduce_opts *o);
/* One level: the library's all-reduce or the ring. */
void ng_level_allreduce(ng_comm *c, void *buf, int64_t n, ng_dtype dt, ng_level_algo l,
                        int64_t chunk);
/* offs[i] = i*n/p for i = 0..p: p balanced segments */
void ng_balanced_offsets(int64_t n, int p, int64_t *offs);
int64_t ng_chunk_elems(const ng_allreduce_opts *o, ng_dtype dt);

/* Backends. */
extern const ng_comm_ops ng_comm_self_ops;
/* Fills world with the MPI (or NCCL) backend; 0 when this build has none. */
int ng_comm_mpi_world(ng_comm *world, int *argc, char ***argv, int ranks_per_node);
int ng_comm_nccl_world(ng_comm *world);
void ng_comm_mpi_finalize(void);
/* Ends the job from the error handler (MPI_Abort when MPI is running). */
void ng_comm_mpi_abort_all(int code);

/* The worker thread of non-blocking all-reduces (comm/async.c). */
ng_comm_request *ng_comm_async_start(ng_comm *c, ng_tensor *t, ng_comm_op op,
                                     const ng_allreduce_opts *o);
void ng_comm_async_wait(ng_comm_request *r);
void ng_comm_async_destroy(ng_comm *c);

/* Host arithmetic (comm/reduce_cpu.c): the add, divide and copy of the self and MPI backends
 * (c is unused and may be NULL). */
void ng_comm_cpu_add(ng_comm *c, void *dst, const void *src, int64_t n, ng_dtype dt);
void ng_comm_cpu_divide(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int by);
void ng_comm_cpu_copy(ng_comm *c, void *dst, const void *src, size_t bytes);

#endif
