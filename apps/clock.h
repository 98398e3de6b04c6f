/* Wall-clock seconds for timing in the apps. */
#ifndef NG_CLOCK_H
#define NG_CLOCK_H

#include <time.h>

static inline double ng_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#endif
