/* Reports what was built in; the CUDA part lives in build_info_cuda.cu. */
#include "build_info.h"

#include <cblas.h>

#include "backend.h"
#ifdef NG_HAVE_MPI
#include <mpi.h>
#endif

#ifdef NG_HAVE_CUDA
void ng_cuda_print_info(FILE *f);
#endif

void ng_print_build_info(FILE *f) {
#ifdef NG_VERSION
    fprintf(f, "natgrad %s\n", NG_VERSION);
#endif
    fprintf(f, "BLAS:      OpenBLAS %s (%d threads) + LAPACKE\n", openblas_get_config(),
            openblas_get_num_threads());
#ifdef NG_HAVE_MPI
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    char *nl = lib;
    while (*nl && *nl != '\n' && *nl != ',') nl++;
    *nl = 0;
    fprintf(f, "MPI:       %s (MPI %d.%d)\n", lib, MPI_VERSION, MPI_SUBVERSION);
#else
    fprintf(f, "MPI:       not built (one process only)\n");
#endif
#ifdef NG_HAVE_CUDA
    ng_cuda_print_info(f);
#else
    fprintf(f, "CUDA:      not built (CPU only)\n");
#endif
}
