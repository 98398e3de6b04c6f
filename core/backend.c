/* Picks the backend for a device: the one place that knows whether CUDA was built in. */
#include "backend.h"

#include "core/threads.h"

extern const ng_backend ng_cpu_backend_table;
#ifdef NG_HAVE_CUDA
extern const ng_backend ng_cuda_backend_table;
int ng_cuda_device_count(void);
size_t ng_cuda_device_memory(void);
#endif

const ng_backend *ng_backend_cuda(void) {
#ifdef NG_HAVE_CUDA
    return &ng_cuda_backend_table;
#else
    return NULL;
#endif
}

const ng_backend *ng_backend_for(ng_device dev, const char *what) {
    if (dev == NG_CPU) {
        ng_threads(); /* NG_THREADS reaches OpenBLAS before the first CPU op */
        return &ng_cpu_backend_table;
    }
    const ng_backend *b = dev == NG_CUDA ? ng_backend_cuda() : NULL;
    NG_CHECK(b, "%s: device %s is not available in this build (natgrad was built without CUDA)",
             what, ng_device_name(dev));
    return b;
}

size_t ng_cuda_total_memory(void) {
#ifdef NG_HAVE_CUDA
    return ng_cuda_available() ? ng_cuda_device_memory() : 0;
#else
    return 0;
#endif
}

int ng_cuda_available(void) {
#ifdef NG_HAVE_CUDA
    return ng_cuda_device_count() > 0;
#else
    return 0;
#endif
}
