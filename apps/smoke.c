/* `natgrad smoke`: GEMM (f32, f16, bf16) and eigh on each available device, checked against
 * float64 on the CPU; exit 1 if any check fails. */
#include <math.h>
#include <stdio.h>

#include "apps/clock.h"
#include "apps/commands.h"
#include "core/backend.h"
#include "core/linalg.h"
#include "core/ops.h"
#include "core/rng.h"

/* An f64 host copy of any float tensor. */
static ng_tensor host_f64(const ng_tensor *t) {
    ng_tensor h = ng_tensor_new(NG_F64, NG_CPU, t->ndim, t->shape, "host copy");
    ng_tensor src = t->device == NG_CPU ? *t : ng_tensor_to(t, NG_CPU, "host copy");
    ng_cast(&h, &src);
    if (t->device != NG_CPU) ng_tensor_free(&src);
    return h;
}

static double rel_err(const ng_tensor *got, const ng_tensor *ref) {
    ng_tensor g = host_f64(got);
    const double *a = g.data, *r = ref->data;
    double num = 0, den = 0;
    for (int64_t i = 0; i < ref->numel; i++)
        num += (a[i] - r[i]) * (a[i] - r[i]), den += r[i] * r[i];
    ng_tensor_free(&g);
    return sqrt(num / den);
}

static int check_gemm(ng_device dev, ng_dtype dt, int64_t n) {
    ng_tensor A64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "A"),
              B64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "B");
    ng_rng_uniform(&A64, (ng_rng_key){.seed = 1, .stream = 1}, -1, 1);
    ng_rng_uniform(&B64, (ng_rng_key){.seed = 1, .stream = 2}, -1, 1);
    ng_tensor Ah = ng_tensor_2d(dt, NG_CPU, n, n, "A"), Bh = ng_tensor_2d(dt, NG_CPU, n, n, "B");
    ng_cast(&Ah, &A64);
    ng_cast(&Bh, &B64);
    ng_cast(&A64, &Ah); /* the reference takes the rounded inputs: only accumulation differs */
    ng_cast(&B64, &Bh);
    ng_tensor C64 = ng_tensor_2d(NG_F64, NG_CPU, n, n, "C64");
    ng_gemm(0, 0, 1.0, &A64, &B64, 0.0, &C64);
    ng_tensor A = ng_tensor_to(&Ah, dev, "A"), B = ng_tensor_to(&Bh, dev, "B");
    ng_tensor C = ng_tensor_2d(NG_F32, dev, n, n, "C");
    double t0 = ng_now();
    ng_gemm(0, 0, 1.0, &A, &B, 0.0, &C);
    ng_sync(dev);
    double ms = (ng_now() - t0) * 1e3, rel = rel_err(&C, &C64);
    int ok = rel < 1e-5;
    printf("  gemm %-4s %-4s n=%-5lld rel.err %.2e  %8.2f ms  %s\n", ng_dtype_name(dt),
           ng_device_name(dev), (long long)n, rel, ms, ok ? "ok" : "FAIL");
    ng_tensor *ts[] = {&A64, &B64, &Ah, &Bh, &C64, &A, &B, &C};
    for (int i = 0; i < 8; i++) ng_tensor_free(ts[i]);
    return ok;
}

static int check_eigh(ng_device dev, int64_t n) {
    /* A covariance like a K-FAC factor, rounded to f32; the reference is its f64 value. */
    ng_tensor X = ng_tensor_2d(NG_F64, NG_CPU, n, 2 * n, "X"),
              S = ng_tensor_2d(NG_F64, NG_CPU, n, n, "S");
    ng_rng_normal(&X, (ng_rng_key){.seed = 2, .stream = 1}, 0, 1);
    ng_gemm(0, 1, 0.5 / n, &X, &X, 0.0, &S);
    ng_tensor S32 = ng_tensor_2d(NG_F32, NG_CPU, n, n, "factor");
    ng_cast(&S32, &S);
    ng_cast(&S, &S32);
    ng_tensor A = ng_tensor_to(&S32, dev, "factor"), Q = ng_tensor_2d(NG_F32, dev, n, n, "Q");
    ng_tensor w = ng_tensor_1d(NG_F32, dev, n, "w");
    double t0 = ng_now();
    ng_status st = ng_eigh(&A, &w, &Q);
    ng_sync(dev);
    double ms = (ng_now() - t0) * 1e3;
    /* Q diag(w) Q^T in f64 */
    ng_tensor q = host_f64(&Q), wq = host_f64(&w), QW = ng_tensor_2d(NG_F64, NG_CPU, n, n, "QW");
    ng_tensor R = ng_tensor_2d(NG_F64, NG_CPU, n, n, "R");
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            ((double *)QW.data)[i * n + j] = ((double *)q.data)[i * n + j] * ((double *)wq.data)[j];
    ng_gemm(0, 1, 1.0, &QW, &q, 0.0, &R);
    double rel = rel_err(&R, &S);
    int ok = st == NG_OK && rel < 1e-5;
    printf("  eigh f32  %-4s n=%-5lld rel.err %.2e  %8.2f ms  %s\n", ng_device_name(dev),
           (long long)n, rel, ms, ok ? "ok" : "FAIL");
    ng_tensor *ts[] = {&X, &S, &S32, &A, &Q, &w, &q, &wq, &QW, &R};
    for (int i = 0; i < 10; i++) ng_tensor_free(ts[i]);
    return ok;
}

int ng_cmd_smoke(int argc, char **argv) {
    (void)argc;
    (void)argv;
    int ok = 1, ndev = ng_cuda_available() ? 2 : 1;
    ng_device devs[2] = {NG_CPU, NG_CUDA};
    ng_dtype dts[3] = {NG_F32, NG_F16, NG_BF16};
    printf("natgrad smoke: core ops against float64 references\n");
    for (int d = 0; d < ndev; d++) {
        for (int i = 0; i < 3; i++) ok &= check_gemm(devs[d], dts[i], 256);
        ok &= check_eigh(devs[d], 128);
    }
    if (ndev == 1) printf("  (no CUDA device: GPU checks skipped)\n");
    printf("smoke: %s\n", ok ? "all checks passed" : "FAILED");
    return ok ? 0 : 1;
}
