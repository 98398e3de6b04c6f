/* The communicator: collectives over ng_tensors across the ranks of a job (single process, MPI
 * on host tensors, NCCL on CUDA tensors), the choice of all-reduce algorithm, and the
 * non-blocking all-reduce that gradient buckets use. */
#ifndef NG_COMM_H
#define NG_COMM_H

#include <stdint.h>

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    NG_COMM_AUTO = 0, /* MPI when started by mpirun (and built with MPI), else single process */
    NG_COMM_SELF,     /* one process, no MPI: every collective is the identity */
    NG_COMM_MPI,      /* host (CPU) tensors */
    NG_COMM_NCCL,     /* CUDA tensors; MPI carries the NCCL id and the host scalars */
} ng_comm_backend;

typedef enum { NG_COMM_SUM = 0, NG_COMM_AVG } ng_comm_op;
typedef enum { NG_COMM_SCALAR_SUM = 0, NG_COMM_SCALAR_MAX } ng_comm_scalar_op;

/* All-reduce algorithms (config key comm.allreduce). */
typedef enum {
    NG_AR_AUTO = 0,    /* by message size from the communicator's table */
    NG_AR_FLAT,        /* the library's own: MPI_Allreduce / ncclAllReduce */
    NG_AR_RING,        /* natgrad's ring: reduce-scatter then all-gather, in chunks */
    NG_AR_HIER_RS,     /* intra reduce-scatter, inter all-reduce per chunk, intra all-gather */
    NG_AR_HIER_LEADER, /* intra reduce to the leader, leaders all-reduce, intra broadcast */
    NG_AR_TORUS,       /* all-reduce along the rows, then along the columns of a grid */
    NG_AR_NUM
} ng_allreduce_algo;

/* How one level (intra-node, inter-node, torus row or column) of a hierarchical algorithm moves
 * data: with the library's collectives or with natgrad's ring. */
typedef enum { NG_LEVEL_FLAT = 0, NG_LEVEL_RING } ng_level_algo;

typedef struct {
    ng_allreduce_algo algo;
    ng_level_algo intra, inter; /* hierarchical levels; torus: rows = intra, columns = inter */
    int64_t chunk_bytes;        /* ring pipelining chunk; 0 = 256 KiB */
    int torus_rows;             /* 0 = the number of nodes */
} ng_allreduce_opts;

/* One row of the automatic choice: messages of up to max_bytes (-1: any size) use opts. */
typedef struct {
    int64_t max_bytes;
    ng_allreduce_opts opts;
} ng_allreduce_rule;

#define NG_AR_MAX_RULES 32

typedef struct {
    ng_comm_backend backend;
    int ranks_per_node;          /* 0: nodes from MPI_Comm_split_type(SHARED); N: node = rank/N */
    ng_allreduce_opts allreduce; /* the default for ng_comm_allreduce */
    const char *table_file; /* auto's table (JSON from comm-bench --write-table); NULL: built-in */
} ng_comm_config;

typedef struct ng_comm ng_comm;
typedef struct ng_comm_request ng_comm_request;

/* Starts the job's world communicator (MPI_Init_thread with MPI_THREAD_MULTIPLE when MPI is
 * used) and installs an error handler that prints "natgrad: error: rank R: <message>" and
 * aborts every rank, so no rank waits forever in a collective. Call once, before any CUDA use
 * when the backend is NCCL (the local rank picks the GPU). cfg may be NULL (all defaults). */
ng_comm *ng_comm_init(int *argc, char ***argv, const ng_comm_config *cfg);
/* 1 when this process was started by mpirun (or another MPI launcher), before any MPI call. */
int ng_comm_mpi_launched(void);
/* Frees the world and every communicator split from it, then finalises MPI. */
void ng_comm_finalize(ng_comm *world);

ng_comm_backend ng_comm_backend_of(const ng_comm *c);
const char *ng_comm_backend_name(ng_comm_backend b);
int ng_comm_rank(const ng_comm *c);
int ng_comm_size(const ng_comm *c);
int ng_comm_node(const ng_comm *c); /* 0 .. nodes-1, numbered by their lowest rank */
int ng_comm_nodes(const ng_comm *c);
int ng_comm_local_rank(const ng_comm *c); /* index among the ranks of this node */
int ng_comm_local_size(const ng_comm *c);
/* The GPU for this rank: local rank modulo the visible devices. ng_comm_init sets
 * NG_CUDA_DEVICE to it (unless already set) so core's CUDA context opens that device. */
int ng_comm_device_for_local_rank(int local_rank, int device_count);
/* 1 when MPI granted MPI_THREAD_MULTIPLE (non-blocking all-reduces then run on a thread). */
int ng_comm_thread_multiple(void);
/* The MPI library version for `natgrad info` ("not built" without MPI). */
const char *ng_comm_mpi_version(void);

/* In-place all-reduce of every element of t with the communicator's default algorithm. */
void ng_comm_allreduce(ng_comm *c, ng_tensor *t, ng_comm_op op);
/* The same with an explicit algorithm (opts NULL: the default). */
void ng_comm_allreduce_with(ng_comm *c, ng_tensor *t, ng_comm_op op, const ng_allreduce_opts *o);
/* out (n elements) on rank r = reduction of elements [r*n, (r+1)*n) of every rank's in. */
void ng_comm_reduce_scatter(ng_comm *c, const ng_tensor *in, ng_tensor *out, ng_comm_op op);
/* out (size*n elements) = every rank's in (n elements) in rank order. */
void ng_comm_allgather(ng_comm *c, const ng_tensor *in, ng_tensor *out);
void ng_comm_broadcast(ng_comm *c, ng_tensor *t, int root);
void ng_comm_barrier(ng_comm *c);
/* Sum or max of n host doubles across ranks, in place (metrics, skip and stop flags). */
void ng_comm_scalars(ng_comm *c, double *v, int n, ng_comm_scalar_op op);

/* Non-blocking all-reduce for gradient buckets. Buckets complete in the order they were
 * started, on every rank; t must not be touched until ng_comm_wait returns. MPI: a worker
 * thread per communicator runs them in FIFO order on a private duplicate of the communicator
 * (synchronously inside start when MPI lacks MPI_THREAD_MULTIPLE). NCCL: queued on the
 * communicator's stream after the work already queued on core's stream; wait makes core's
 * stream wait for it (the host does not block). */
ng_comm_request *ng_comm_allreduce_start(ng_comm *c, ng_tensor *t, ng_comm_op op,
                                         const ng_allreduce_opts *o);
void ng_comm_wait(ng_comm_request *r);

/* A new communicator of the ranks passing the same color (ordered by key, then rank); a
 * negative color returns NULL. Collective over c. Freed by ng_comm_free or with the world. */
ng_comm *ng_comm_split(ng_comm *c, int color, int key);
void ng_comm_free(ng_comm *c);
/* Ends every rank of the job with this exit code. */
void ng_comm_abort(ng_comm *c, int code);

/* Sets the algorithm used by ng_comm_allreduce, and the table used by NG_AR_AUTO. */
void ng_comm_set_allreduce(ng_comm *c, const ng_allreduce_opts *o);
void ng_comm_set_table(ng_comm *c, const ng_allreduce_rule *rules, int n);
/* What auto picks for a message of `bytes` bytes on this communicator. */
ng_allreduce_opts ng_comm_auto_choice(const ng_comm *c, int64_t bytes);

/* Names: "flat", "ring", "hier_rs", "hier_leader", "torus", "auto"; parsing returns -1 when
 * unknown. A full name may carry the levels: "hier_rs:ring/flat" (intra/inter). */
const char *ng_allreduce_algo_name(ng_allreduce_algo a);
int ng_allreduce_algo_from_name(const char *s);
/* Parses "algo[:intra/inter]" into opts (chunk and rows left as they were); 0 on success. */
int ng_allreduce_opts_parse(const char *s, ng_allreduce_opts *o);
/* "hier_rs:ring/flat" (levels only for hierarchical algorithms); a rotating static buffer. */
const char *ng_allreduce_opts_name(const ng_allreduce_opts *o);

/* The auto table as JSON ({"allreduce_table": [{"max_bytes": .., "algo": ".."}, ..]}). */
int ng_allreduce_table_load(const char *path, ng_allreduce_rule *rules, int cap);
void ng_allreduce_table_save(const char *path, const ng_allreduce_rule *rules, int n);

#ifdef __cplusplus
}
#endif
#endif
