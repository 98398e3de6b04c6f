/* NG_THREADS, applied once to OpenBLAS and OpenMP. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "core/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdlib.h>

#include "core/error.h"

static int threads; /* 0: not read yet */

/* The cores of this process's affinity mask, which is what a container or taskset grants. */
static int cores(void) {
    cpu_set_t set;
    if (!sched_getaffinity(0, sizeof set, &set)) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    return omp_get_num_procs();
}

int ng_threads(void) {
    if (threads) return threads;
    const char *v = getenv("NG_THREADS");
    int n = cores();
    if (v && *v) {
        char *end;
        long t = strtol(v, &end, 10);
        NG_CHECK(*end == '\0' && t >= 1 && t <= 1024,
                 "NG_THREADS is '%s'; a thread count from 1 to 1024 is needed", v);
        n = (int)t;
    }
    threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
    return n;
}
