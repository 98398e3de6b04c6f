/* Versions of the CUDA libraries this build links, and the devices the driver shows (NCCL's
 * version comes from comm/, which links NCCL). */
#include <stdio.h>

#include "cuda_context.h"

extern "C" void ng_cuda_print_info(FILE *f, const char *nccl) {
    int rt = 0, drv = 0, blas = 0;
    cudaRuntimeGetVersion(&rt);
    if (cudaDriverGetVersion(&drv) != cudaSuccess) drv = 0;
    cudaGetLastError();
    fprintf(f, "CUDA:      runtime %d.%d, driver %s", rt / 1000, rt % 1000 / 10, drv ? "" : "none");
    if (drv) fprintf(f, "%d.%d", drv / 1000, drv % 1000 / 10);
    fprintf(f, " (compiled for archs %s)\n", NG_CUDA_ARCHS);
    size_t dnn = cudnnGetVersion();
    fprintf(f, "cuDNN:     %zu.%zu.%zu\n", dnn / 10000, dnn / 100 % 100, dnn % 100);
    cublasGetProperty(MAJOR_VERSION, &blas);
    int mi = 0, pa = 0;
    cublasGetProperty(MINOR_VERSION, &mi);
    cublasGetProperty(PATCH_LEVEL, &pa);
    fprintf(f, "cuBLAS:    %d.%d.%d\n", blas, mi, pa);
    int smj = 0, smi = 0, spa = 0;
    cusolverGetProperty(MAJOR_VERSION, &smj);
    cusolverGetProperty(MINOR_VERSION, &smi);
    cusolverGetProperty(PATCH_LEVEL, &spa);
    fprintf(f, "cuSOLVER:  %d.%d.%d\n", smj, smi, spa);
    fprintf(f, "NCCL:      %s\n", nccl);
    int n = ng_cuda_device_count();
    fprintf(f, "devices:   %d CUDA device%s\n", n, n == 1 ? "" : "s");
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
        fprintf(f, "  cuda:%d   %s, sm_%d%d, %d SMs, %.1f GiB\n", i, p.name, p.major, p.minor,
                p.multiProcessorCount, p.totalGlobalMem / 1073741824.0);
    }
}
