/* The CPU backend table: host memory and the CPU twins of every op. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "memory.h"

static void *cpu_alloc(size_t bytes) {
    void *p = NULL;
    /* Round up: aligned_alloc wants a multiple of the alignment. */
    size_t n = (bytes + NG_ALIGN - 1) / NG_ALIGN * NG_ALIGN;
    if (posix_memalign(&p, NG_ALIGN, n ? n : NG_ALIGN)) return NULL;
    return p;
}

static void cpu_free(void *p) {
    free(p);
}

static void cpu_memcpy(void *dst, ng_device dd, const void *src, ng_device sd, size_t bytes) {
    (void)dd;
    (void)sd; /* only called for host to host */
    memmove(dst, src, bytes);
}

static void cpu_sync(void) {}

const ng_backend ng_cpu_backend_table = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memcpy = cpu_memcpy,
    .sync = cpu_sync,
    .gemm = ng_cpu_gemm,
    .axpy = ng_cpu_axpy,
    .scale = ng_cpu_scale,
    .fill = ng_cpu_fill,
    .cast = ng_cpu_cast,
    .binary = ng_cpu_binary,
    .add_diagonal = ng_cpu_add_diagonal,
    .reduce = ng_cpu_reduce,
    .eigh = ng_cpu_eigh,
    .cholesky = ng_cpu_cholesky,
    .cholesky_inverse = ng_cpu_cholesky_inverse,
    .rng_fill = ng_cpu_rng_fill,
};
