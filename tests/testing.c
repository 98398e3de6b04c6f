/* The tensor and process test helpers (see testing.h); the RNG, comparisons and counting are in
 * testing_base.c. */
#include "testing.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/half.h"

static void store(void *data, ng_dtype t, int64_t i, double v) {
    switch (t) {
        case NG_F32:
            ((float *)data)[i] = (float)v;
            break;
        case NG_F64:
            ((double *)data)[i] = v;
            break;
        case NG_F16:
            ((ng_f16 *)data)[i] = ng_f32_to_f16((float)v);
            break;
        case NG_BF16:
            ((ng_bf16 *)data)[i] = ng_f32_to_bf16((float)v);
            break;
        case NG_I32:
            ((int32_t *)data)[i] = (int32_t)v;
            break;
        case NG_U8:
            ((uint8_t *)data)[i] = (uint8_t)v;
            break;
        default:
            break;
    }
}

static double load(const void *data, ng_dtype t, int64_t i) {
    switch (t) {
        case NG_F32:
            return ((const float *)data)[i];
        case NG_F64:
            return ((const double *)data)[i];
        case NG_F16:
            return ng_f16_to_f32(((const ng_f16 *)data)[i]);
        case NG_BF16:
            return ng_bf16_to_f32(((const ng_bf16 *)data)[i]);
        case NG_I32:
            return ((const int32_t *)data)[i];
        case NG_U8:
            return ((const uint8_t *)data)[i];
        default:
            return NAN;
    }
}

/* Runs fn on a host copy of t and writes it back when t lives elsewhere. */
static void host_edit(ng_tensor *t, void (*fn)(ng_tensor *, double, double), double a, double b) {
    if (t->device == NG_CPU) {
        fn(t, a, b);
        return;
    }
    ng_tensor h = ng_tensor_to(t, NG_CPU, "host copy");
    fn(&h, a, b);
    ng_tensor_copy(t, &h);
    ng_tensor_free(&h);
}

static void fill_uniform(ng_tensor *t, double lo, double hi) {
    for (int64_t i = 0; i < t->numel; i++)
        store(t->data, t->dtype, i, lo + (hi - lo) * 0.5 * (ng_test_uniform() + 1.0));
}

void ng_test_fill_uniform(ng_tensor *t, double lo, double hi) {
    host_edit(t, fill_uniform, lo, hi);
}

static void poison(ng_tensor *t, double a, double b) {
    (void)a;
    (void)b;
    if (ng_dtype_is_float(t->dtype))
        for (int64_t i = 0; i < t->numel; i++) store(t->data, t->dtype, i, NAN);
    else
        memset(t->data, 0xAB, ng_tensor_bytes(t));
}

void ng_test_poison(ng_tensor *t) {
    host_edit(t, poison, 0, 0);
}

double *ng_test_to_f64(const ng_tensor *t) {
    ng_tensor h = t->device == NG_CPU ? *t : ng_tensor_to(t, NG_CPU, "host copy");
    double *r = malloc(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
    for (int64_t i = 0; i < t->numel; i++) r[i] = load(h.data, h.dtype, i);
    if (t->device != NG_CPU) ng_tensor_free(&h);
    return r;
}

int ng_test_have_gpu(void) {
    return ng_cuda_available();
}

int ng_test_run_child(void (*fn)(void), char *said, size_t cap) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(NULL); /* nothing buffered is written twice */
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < cap && (r = read(fd[0], said + n, cap - 1 - n)) > 0) n += (size_t)r;
    said[n] = 0;
    close(fd[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    return st;
}

int ng_test_emulated(const char *what) {
#ifdef NG_CUDA_EMU
    printf("%s: skipped in the CUDA emulation (a check of the GPU kernels themselves)\n", what);
    return 1;
#else
    (void)what;
    return 0;
#endif
}

void ng_test_require_gpu(const char *name) {
    if (!ng_test_have_gpu()) {
        printf("%s: skipped, no CUDA device (or built without CUDA)\n", name);
        exit(77);
    }
}
