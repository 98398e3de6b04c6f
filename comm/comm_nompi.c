/* Stands in for comm_mpi.c in a build without MPI: one process, world size 1. */
#include <stdlib.h>

#include "comm_internal.h"
#include "core/build_info.h"

int ng_comm_mpi_world(ng_comm *world, int *argc, char ***argv, int ranks_per_node) {
    (void)world, (void)argc, (void)argv, (void)ranks_per_node;
    return 0;
}
void ng_comm_mpi_finalize(void) {}
void ng_comm_mpi_abort_all(int code) {
    exit(code);
}
int ng_comm_mpi_launched(void) {
    return 0;
}
int ng_comm_thread_multiple(void) {
    return 0;
}
const char *ng_comm_mpi_version(void) {
    return "not built (one process only)";
}

/* core's build report asks comm for the MPI version; registered whenever comm/ is linked in. */
__attribute__((constructor)) static void register_mpi_version(void) {
    ng_build_info_set_mpi(ng_comm_mpi_version);
}
