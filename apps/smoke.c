/* `natgrad smoke`: GEMM (f32, f16, bf16) and eigh/Cholesky on each available device, checked
 * against float64 on the CPU; exit 1 if any check fails. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "apps/commands.h"
#include "core/backend.h"
#include "core/linalg.h"
#include "core/ops.h"
#include "core/rng.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double *host_f64(const ng_tensor *t) {
    ng_tensor h = ng_tensor_new(NG_F64, NG_CPU, t->ndim, t->shape, "host");
    ng_tensor src = t->device == NG_CPU ? *t : ng_tensor_to(t, NG_CPU, "host");
    ng_cast(&h, &src);
    if (t->device != NG_CPU) ng_tensor_free(&src);
    return h.data; /* the caller frees through ng_free-sized memory: keep it simple, leak */
}

static int check_gemm(ng_device dev, ng_dtype dt, int64_t n) {
    ng_rng_key k = {.seed = 1, .stream = 7};
    ng_tensor A64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "A"), B64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "B");
    ng_rng_uniform(&A64, k, -1, 1);
    k.stream++;
    ng_rng_uniform(&B64, k, -1, 1);
    ng_tensor Ah = ng_tensor_2d(dt, NG_CPU, n, n, "A"), Bh = ng_tensor_2d(dt, NG_CPU, n, n, "B");
    ng_cast(&Ah, &A64);
    ng_cast(&Bh, &B64);
    /* the reference uses the rounded inputs, so only accumulation error remains */
    ng_cast(&A64, &Ah);
    ng_cast(&B64, &Bh);
    ng_tensor C64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "C64");
    ng_gemm(0, 0, 1.0, &A64, &B64, 0.0, &C64);
    ng_tensor A = ng_tensor_to(&Ah, dev, "A"), B = ng_tensor_to(&Bh, dev, "B");
    ng_tensor C = ng_tensor_2d(NG_F32, dev, n, n, "C");
    double t0 = now();
    ng_gemm(0, 0, 1.0, &A, &B, 0.0, &C);
    ng_sync(dev);
    double dt_s = now() - t0;
    double *c = host_f64(&C), *r = C64.data, num = 0, den = 0;
    for (int64_t i = 0; i < n * n; i++) num += (c[i] - r[i]) * (c[i] - r[i]), den += r[i] * r[i];
    double rel = sqrt(num / den);
    int ok = rel < 1e-5;
    printf("  gemm %-4s %-4s n=%-5lld rel.err %.2e  %8.2f ms  %s\n", ng_dtype_name(dt),
           ng_device_name(dev), (long long)n, rel, dt_s * 1e3, ok ? "ok" : "FAIL");
    ng_tensor *ts[] = {&A64, &B64, &Ah, &Bh, &C64, &A, &B, &C};
    for (int i = 0; i < 8; i++) ng_tensor_free(ts[i]);
    return ok;
}

static int check_eigh(ng_device dev, int64_t n) {
    ng_tensor X = ng_tensor_2d(NG_F64, NG_CPU, n, n, "X"), S = ng_tensor_2d(NG_F64, NG_CPU, n, n, "S");
    ng_rng_normal(&X, (ng_rng_key){.seed = 2, .stream = 1}, 0, 1);
    ng_gemm(0, 1, 1.0 / n, &X, &X, 0.0, &S); /* a covariance, like a K-FAC factor */
    ng_tensor S32 = ng_tensor_2d(NG_F32, NG_CPU, n, n, "S32");
    ng_cast(&S32, &S);
    ng_tensor A = ng_tensor_to(&S32, dev, "factor"), Q = ng_tensor_2d(NG_F32, dev, n, n, "Q");
    ng_tensor w = ng_tensor_1d(NG_F32, dev, n, "w");
    double t0 = now();
    ng_status st = ng_eigh(&A, &w, &Q);
    ng_sync(dev);
    double dt_s = now() - t0;
    /* reconstruct Q diag(w) Q^T in f64 on the CPU */
    double *q = host_f64(&Q), *ww = host_f64(&w), *s = S.data, num = 0, den = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t l = 0; l < n; l++) acc += q[i * n + l] * ww[l] * q[j * n + l];
            double e = (double)((float *)S32.data)[i * n + j];
            num += (acc - e) * (acc - e);
            den += e * e;
        }
    (void)s;
    double rel = sqrt(num / den);
    int ok = st == NG_OK && rel < 1e-4;
    printf("  eigh f32  %-4s n=%-5lld rel.err %.2e  %8.2f ms  %s\n", ng_device_name(dev),
           (long long)n, rel, dt_s * 1e3, ok ? "ok" : "FAIL");
    ng_tensor *ts[] = {&X, &S, &S32, &A, &Q, &w};
    for (int i = 0; i < 6; i++) ng_tensor_free(ts[i]);
    return ok;
}

int ng_cmd_smoke(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int ok = 1;
    ng_device devs[2] = {NG_CPU, NG_CUDA};
    int ndev = ng_cuda_available() ? 2 : 1;
    printf("natgrad smoke: core ops against float64 references\n");
    for (int d = 0; d < ndev; d++) {
        ng_dtype dts[3] = {NG_F32, NG_F16, NG_BF16};
        for (int i = 0; i < 3; i++) ok &= check_gemm(devs[d], dts[i], 256);
        ok &= check_eigh(devs[d], 128);
    }
    if (ndev == 1) printf("  (no CUDA device: GPU checks skipped)\n");
    printf("smoke: %s\n", ok ? "all checks passed" : "FAILED");
    return ok ? 0 : 1;
}
