/* Inside comm/, for the two files that bind MPI (comm_mpi.c, comm_nccl.c): the MPI state of a
 * communicator and the checking macro. */
#ifndef NG_COMM_MPI_H
#define NG_COMM_MPI_H

#include <mpi.h>

#include "comm_internal.h"

/* The first member of every MPI-backed communicator's impl (the NCCL backend's too). */
typedef struct {
    MPI_Comm comm;
} ng_mpi_impl;

static inline MPI_Comm ng_mpi_comm(const ng_comm *c) {
    return ((const ng_mpi_impl *)c->impl)->comm;
}

void ng_mpi_check_fail(const char *file, int line, const char *call, int err);
#define NG_MPI_CHECK(call)                                                                         \
    do {                                                                                           \
        int ng_e_ = (call);                                                                        \
        if (ng_e_ != MPI_SUCCESS) ng_mpi_check_fail(__FILE__, __LINE__, #call, ng_e_);             \
    } while (0)

/* Shared with the NCCL backend, which keeps an MPI communicator beside its NCCL one. */
void ng_mpi_barrier(ng_comm *c);
void ng_mpi_scalars(ng_comm *c, double *v, int n, ng_comm_scalar_op op);
void ng_mpi_allgather_ints(ng_comm *c, const int *mine, int *all);
void ng_mpi_abort(ng_comm *c, int code);
/* MPI_Comm_split into a fresh ng_mpi_impl-headed struct of `impl_bytes`; NULL impl when not a
 * member. Sets child->rank and ->size. */
void ng_mpi_split_into(ng_comm *parent, int color, int key, ng_comm *child, size_t impl_bytes);
void ng_mpi_free_comm(ng_comm *c);

#endif
