/* The test helpers that need nothing of natgrad but core/error.c: the test RNG, the
 * comparisons, pass/fail counting and catching usage errors (see testing.h). Kept apart from the
 * tensor helpers in testing.c so that kernels built for another CPU (tests/hgemm_cross.sh) can use
 * them without the rest of the library. */
#include "testing.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"

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
