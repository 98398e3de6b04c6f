/* Shared test helpers: see testing.h. */
#include "testing.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/half.h"

static int passed, failed;
static uint64_t rng_state;
static int seeded;
jmp_buf ng_test_jmp;

uint64_t ng_test_seed(void) {
    if (!seeded) {
        const char *e = getenv("NG_TEST_SEED");
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rng_state =
            e ? strtoull(e, NULL, 10) : (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
        seeded = 1;
        fprintf(stderr, "test inputs: NG_TEST_SEED=%llu\n", (unsigned long long)rng_state);
    }
    return rng_state;
}

double ng_test_uniform(void) {
    ng_test_seed();
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

int ng_test_int(int lo, int hi) {
    int v = lo + (int)((ng_test_uniform() + 1) / 2 * (hi - lo + 1));
    return v > hi ? hi : v;
}

double ng_test_tf32(double v) {
    if (v == 0 || !isfinite(v)) return v;
    int e;
    double m = frexp((double)(float)v, &e);
    return ldexp(nearbyint(ldexp(m, 11)), e - 11);
}

uint64_t ng_test_fnv1a(const void *p, size_t n) {
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

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

int ng_test_close(const char *what, const double *e, const double *g, int64_t n, double rtol,
                  double atol) {
    int64_t bad = 0, worst_i = -1;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double err = fabs(g[i] - e[i]);
        int ok = (isnan(e[i]) && isnan(g[i])) || (isinf(e[i]) && e[i] == g[i]) ||
                 err <= atol + rtol * fabs(e[i]);
        if (!isnan(err) && err > worst) worst = err, worst_i = i;
        if (!ok) {
            if (bad < 8)
                fprintf(stderr, "  %s: [%lld] expected %.10g got %.10g\n", what, (long long)i, e[i],
                        g[i]);
            bad++;
        }
    }
    if (bad) {
        fprintf(
            stderr,
            "FAIL %s: %lld of %lld elements differ (rtol %g, atol %g); worst |err| %g at %lld\n",
            what, (long long)bad, (long long)n, rtol, atol, worst, (long long)worst_i);
        failed++;
        return 0;
    }
    passed++;
    return 1;
}

int ng_test_rel_norm(const char *what, const double *e, const double *g, int64_t n, double tol) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (g[i] - e[i]) * (g[i] - e[i]);
        den += e[i] * e[i];
    }
    double rel = sqrt(num) / (den > 0 ? sqrt(den) : 1.0);
    if (!(rel <= tol)) { /* NaN fails too */
        fprintf(stderr, "FAIL %s: relative error %g > %g\n", what, rel, tol);
        failed++;
        return 0;
    }
    passed++;
    return 1;
}

void ng_test_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    failed++;
}

void ng_test_pass(void) {
    passed++;
}

int ng_test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, passed, failed);
    return failed ? 1 : 0;
}

static void jump_handler(const char *msg) {
    (void)msg;
    longjmp(ng_test_jmp, 1);
}

static ng_error_handler saved;

int ng_test_begin_catch(void) {
    saved = ng_set_error_handler(jump_handler);
    return 1;
}

void ng_test_end_catch(const char *stmt, int raised, const char *needle) {
    ng_set_error_handler(saved);
    if (!raised) {
        ng_test_fail("expected an error from `%s`, none was raised", stmt);
    } else if (needle && !strstr(ng_last_error(), needle)) {
        ng_test_fail("error from `%s` should mention '%s' but said: %s", stmt, needle,
                     ng_last_error());
    } else {
        passed++;
    }
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
