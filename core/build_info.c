/* Reports what was built in; the CUDA part lives in build_info_cuda.cu. */
#include "build_info.h"
#include "half_vec.h"
#include "hgemm.h"

#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>

#include "backend.h"
#include "core/threads.h"

/* MPI and NCCL are linked into comm/ only; comm/ registers its version reporters when it is
 * linked into the program. */
static const char *(*mpi_version)(void), *(*nccl_version)(void);

void ng_build_info_set_mpi(const char *(*version)(void)) {
    mpi_version = version;
}

void ng_build_info_set_nccl(const char *(*version)(void)) {
    nccl_version = version;
}

#ifdef NG_HAVE_CUDA
void ng_cuda_print_info(FILE *f, const char *nccl);
#endif

void ng_print_build_info(FILE *f) {
#ifdef NG_VERSION
    fprintf(f, "natgrad %s\n", NG_VERSION);
#endif
    fprintf(f, "BLAS:      OpenBLAS %s (%d threads) + LAPACKE\n", openblas_get_config(),
            openblas_get_num_threads());
    const dnnl_version_t *v = dnnl_version();
    fprintf(f, "oneDNN:    %d.%d.%d (%s, CPU convolutions)\n", v->major, v->minor, v->patch,
            v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other runtime");
    fprintf(f, "Threads:   %d (NG_THREADS; OpenBLAS, oneDNN and natgrad's loops)\n", ng_threads());
    fprintf(f,
            "fp16:      conversions %s, arithmetic %s (NG_F16_NATIVE; fp16 evaluation forwards)\n",
            ng_half_vec_isa(), ng_hgemm_isa());
    fprintf(f, "MPI:       %s\n", mpi_version ? mpi_version() : "not linked into this program");
#ifdef NG_HAVE_CUDA
    ng_cuda_print_info(f, nccl_version ? nccl_version() : "not linked into this program");
#else
    fprintf(f, "CUDA:      not built (CPU only)\n");
#endif
}
