/* What this build of natgrad contains (CUDA and library versions, MPI, BLAS) and which
 * devices it sees: the one place that reports the build-time choices. */
#ifndef NG_BUILD_INFO_H
#define NG_BUILD_INFO_H

#include <stdio.h>

void ng_print_build_info(FILE *f);
/* comm/ tells core how to ask for the MPI and NCCL versions (core links neither). */
void ng_build_info_set_mpi(const char *(*version)(void));
void ng_build_info_set_nccl(const char *(*version)(void));

#endif
