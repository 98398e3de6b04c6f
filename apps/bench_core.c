/* `natgrad bench-core`: GEMM TFLOP/s (f32, f16, bf16 with f32 accumulation), symmetric eigh and
 * Cholesky-inverse milliseconds, on one device. Prints a table; --json writes the figures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "apps/metrics.h"
#include "core/backend.h"
#include "core/linalg.h"
#include "core/ops.h"
#include "core/rng.h"

typedef struct {
    char what[16];
    ng_dtype dt;
    int64_t n;
    double ms, tflops;
} row;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int parse_sizes(const char *s, int64_t *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        char *end;
        long long v = strtoll(s, &end, 10);
        /* 2^20 squared is 4 TiB of f32: larger is a typo, and its byte counts would overflow */
        if (end == s || v <= 0 || v > (1 << 20)) return -1;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return -1;
    }
    return n;
}

/* Median over reps of one call, after one warm-up call. */
#define TIME_MEDIAN(result_ms, reps, dev, call)                                                    \
    do {                                                                                           \
        double ts_[64];                                                                            \
        call;                                                                                      \
        ng_sync(dev);                                                                              \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            double t0_ = ng_now();                                                                 \
            call;                                                                                  \
            ng_sync(dev);                                                                          \
            ts_[r_] = (ng_now() - t0_) * 1e3;                                                      \
        }                                                                                          \
        qsort(ts_, (size_t)(reps), sizeof(double), cmp_double);                                    \
        result_ms = ts_[(reps) / 2];                                                               \
    } while (0)

int ng_cmd_bench_core(int argc, char **argv) {
    ng_device dev = ng_cuda_available() ? NG_CUDA : NG_CPU;
    int64_t gemm_n[8] = {1024, 2048}, eigh_n[8] = {256, 512};
    int ng = 2, ne = 2, reps = 5;
    const char *json = NULL;
    if (dev == NG_CUDA) {
        gemm_n[0] = 4096, gemm_n[1] = 8192;
        eigh_n[0] = 1024, eigh_n[1] = 2048, eigh_n[2] = 4096, ne = 3;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            printf("usage: natgrad bench-core [--device cpu|cuda] [--gemm N,N,..] [--eigh N,N,..] "
                   "[--reps R] [--json FILE]\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "natgrad: error: bench-core: option %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            dev = !strcmp(v, "cpu") ? NG_CPU : NG_CUDA;
        else if (!strcmp(a, "--gemm") && (ng = parse_sizes(v, gemm_n, 8)) >= 0) {
        } else if (!strcmp(a, "--eigh") && (ne = parse_sizes(v, eigh_n, 8)) >= 0) {
        } else if (!strcmp(a, "--reps") && (reps = atoi(v)) >= 1 && reps <= 64) {
        } else if (!strcmp(a, "--json"))
            json = v;
        else {
            fprintf(stderr,
                    "natgrad: error: bench-core: bad option %s %s (--device cpu|cuda, --gemm and "
                    "--eigh take comma-separated sizes from 1 to 2^20, --reps 1..64)\n",
                    a, v);
            return 2;
        }
        i++;
    }
    row rows[64];
    int nr = 0;
    ng_dtype dts[3] = {NG_F32, NG_F16, NG_BF16};
    for (int s = 0; s < ng; s++)
        for (int d = 0; d < 3; d++) {
            int64_t n = gemm_n[s];
            ng_tensor A = ng_tensor_2d(dts[d], dev, n, n, "A"),
                      B = ng_tensor_2d(dts[d], dev, n, n, "B");
            ng_tensor C = ng_tensor_2d(dts[d], dev, n, n, "C");
            ng_rng_uniform(&A, (ng_rng_key){.seed = 3, .stream = 1}, -1, 1);
            ng_rng_uniform(&B, (ng_rng_key){.seed = 3, .stream = 2}, -1, 1);
            row r = {.dt = dts[d], .n = n};
            snprintf(r.what, sizeof r.what, "gemm");
            TIME_MEDIAN(r.ms, reps, dev, ng_gemm(0, 0, 1.0, &A, &B, 0.0, &C));
            r.tflops = 2.0 * n * n * n / (r.ms * 1e-3) / 1e12;
            rows[nr++] = r;
            ng_tensor_free(&A), ng_tensor_free(&B), ng_tensor_free(&C);
        }
    for (int s = 0; s < ne; s++) {
        int64_t n = eigh_n[s];
        ng_tensor X = ng_tensor_2d(NG_F32, dev, n, n, "X"),
                  A = ng_tensor_2d(NG_F32, dev, n, n, "A");
        ng_tensor Q = ng_tensor_2d(NG_F32, dev, n, n, "Q"), w = ng_tensor_1d(NG_F32, dev, n, "w");
        ng_rng_normal(&X, (ng_rng_key){.seed = 4, .stream = 1}, 0, 1);
        ng_gemm(0, 1, 1.0 / n, &X, &X, 0.0, &A); /* a well-conditioned SPD factor */
        ng_add_diagonal(&A, 0.1);
        row r = {.dt = NG_F32, .n = n};
        snprintf(r.what, sizeof r.what, "eigh");
        TIME_MEDIAN(r.ms, reps, dev, ng_eigh(&A, &w, &Q));
        rows[nr++] = r;
        snprintf(r.what, sizeof r.what, "chol_inv");
        TIME_MEDIAN(r.ms, reps, dev, ng_cholesky_inverse(&A, &Q));
        rows[nr++] = r;
        ng_tensor_free(&X), ng_tensor_free(&A), ng_tensor_free(&Q), ng_tensor_free(&w);
    }
    printf("natgrad bench-core on %s (median of %d after 1 warm-up)\n", ng_device_name(dev), reps);
    printf("%-9s %-5s %6s %11s %9s\n", "op", "dtype", "n", "ms", "TFLOP/s");
    for (int i = 0; i < nr; i++) {
        printf("%-9s %-5s %6lld %11.3f", rows[i].what, ng_dtype_name(rows[i].dt),
               (long long)rows[i].n, rows[i].ms);
        if (rows[i].tflops > 0)
            printf(" %9.2f\n", rows[i].tflops);
        else
            printf(" %9s\n", "-");
    }
    if (json) {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", json);
        FILE *f = fopen(tmp, "w");
        if (!f) {
            fprintf(stderr, "natgrad: error: bench-core: cannot write --json file %s\n", json);
            return 2;
        }
        fprintf(f, "{\"device\": \"%s\", \"reps\": %d, \"results\": [\n", ng_device_name(dev),
                reps);
        for (int i = 0; i < nr; i++)
            fprintf(f,
                    "  {\"op\": \"%s\", \"dtype\": \"%s\", \"n\": %lld, \"ms\": %s, \"tflops\": "
                    "%s}%s\n",
                    rows[i].what, ng_dtype_name(rows[i].dt), (long long)rows[i].n,
                    ng_json_num("%.6f", rows[i].ms).s, ng_json_num("%.4f", rows[i].tflops).s,
                    i + 1 < nr ? "," : "");
        fprintf(f, "]}\n");
        fclose(f);
        rename(tmp, json);
    }
    return 0;
}
