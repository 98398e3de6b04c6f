/* OpenBLAS's sgemm against oneDNN's f32 matmul on the twelve GEMMs of a ViT-Ti Linear layer set
 * (width 192, MLP 768, 3,200 rows = batch 64 x 50 tokens): forward x W^T, input gradient dy W and
 * weight gradient dy^T x for qkv, proj, fc1 and fc2, row-major with the transposes read by
 * strides, as nn/linear.c and nn/linear_onednn.c call them. Best of 7, interleaved, threads from
 * OMP_NUM_THREADS / OPENBLAS_NUM_THREADS; the largest difference between the two results is
 * printed beside the times (f32 sums in different orders). The figures behind docs/BENCHMARKS.md's
 * "f32 Linear layers on oneDNN". Not part of the build:
 *
 *   gcc -O2 -fopenmp experiments/cpu_speed/gemm_onednn.c -o /tmp/gemm_onednn -ldnnl -lopenblas
 *   OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OMP_WAIT_POLICY=passive /tmp/gemm_onednn */
#include <cblas.h>
#include <math.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            fprintf(stderr, "gemm_onednn: %s failed (%d)\n", #call, (int)st_);                     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* C [m,n] = op(A) op(B), k the inner size; ta: A stored [k,m], tb: B stored [n,k]. */
typedef struct {
    const char *what;
    int ta, tb, m, n, k;
} shape;

static dnnl_memory_desc_t desc(int64_t r, int64_t c, int64_t sr, int64_t sc) {
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {r, c}, s = {sr, sc};
    CHECK(dnnl_memory_desc_init_by_strides(&md, 2, d, dnnl_f32, s));
    return md;
}

int main(void) {
    const shape shapes[] = {
        {"qkv forward", 0, 1, 3200, 576, 192}, {"proj forward", 0, 1, 3200, 192, 192},
        {"fc1 forward", 0, 1, 3200, 768, 192}, {"fc2 forward", 0, 1, 3200, 192, 768},
        {"qkv dx", 0, 0, 3200, 192, 576},      {"proj dx", 0, 0, 3200, 192, 192},
        {"fc1 dx", 0, 0, 3200, 192, 768},      {"fc2 dx", 0, 0, 3200, 768, 192},
        {"qkv dW", 1, 0, 576, 192, 3200},      {"proj dW", 1, 0, 192, 192, 3200},
        {"fc1 dW", 1, 0, 768, 192, 3200},      {"fc2 dW", 1, 0, 192, 768, 3200}};
    dnnl_engine_t eng;
    dnnl_stream_t str;
    CHECK(dnnl_engine_create(&eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&str, eng, dnnl_stream_default_flags));
    double total_blas = 0, total_dnnl = 0;
    srand(1);
    printf("%-13s %5s %5s %5s %10s %10s %7s  %s\n", "gemm", "m", "n", "k", "openblas", "onednn",
           "ratio", "oneDNN kernel, max |difference|");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        shape s = shapes[i];
        size_t na = (size_t)s.m * s.k, nb = (size_t)s.k * s.n, nc = (size_t)s.m * s.n;
        float *A = malloc(na * sizeof *A), *B = malloc(nb * sizeof *B);
        float *C1 = malloc(nc * sizeof *C1), *C2 = malloc(nc * sizeof *C2);
        if (!A || !B || !C1 || !C2) return 1;
        for (size_t j = 0; j < na; j++) A[j] = (float)rand() / (float)RAND_MAX - 0.5f;
        for (size_t j = 0; j < nb; j++) B[j] = (float)rand() / (float)RAND_MAX - 0.5f;
        int lda = s.ta ? s.m : s.k, ldb = s.tb ? s.k : s.n;
        dnnl_memory_desc_t ad = desc(s.m, s.k, s.ta ? 1 : s.k, s.ta ? s.m : 1);
        dnnl_memory_desc_t bd = desc(s.k, s.n, s.tb ? 1 : s.n, s.tb ? s.k : 1);
        dnnl_memory_desc_t cd = desc(s.m, s.n, s.n, 1);
        dnnl_matmul_desc_t mm;
        dnnl_primitive_desc_t pd;
        dnnl_primitive_t prim;
        const char *impl = "";
        CHECK(dnnl_matmul_desc_init(&mm, &ad, &bd, NULL, &cd));
        CHECK(dnnl_primitive_desc_create(&pd, &mm, NULL, eng, NULL));
        CHECK(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl));
        CHECK(dnnl_primitive_create(&prim, pd));
        dnnl_memory_t ma, mb, mc;
        CHECK(dnnl_memory_create(&ma, &ad, eng, A));
        CHECK(dnnl_memory_create(&mb, &bd, eng, B));
        CHECK(dnnl_memory_create(&mc, &cd, eng, C2));
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
        double best_blas = INFINITY, best_dnnl = INFINITY;
        for (int r = 0; r < 7; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans,
                        s.tb ? CblasTrans : CblasNoTrans, s.m, s.n, s.k, 1.0f, A, lda, B, ldb, 0.0f,
                        C1, s.n);
            double t1 = now();
            CHECK(dnnl_primitive_execute(prim, str, 3, args));
            CHECK(dnnl_stream_wait(str));
            double t2 = now();
            best_blas = fmin(best_blas, t1 - t0), best_dnnl = fmin(best_dnnl, t2 - t1);
        }
        double diff = 0;
        for (size_t j = 0; j < nc; j++) diff = fmax(diff, fabs((double)C1[j] - (double)C2[j]));
        printf("%-13s %5d %5d %5d %8.2f ms %7.2f ms %6.2fx  %s, %.2g\n", s.what, s.m, s.n, s.k,
               1e3 * best_blas, 1e3 * best_dnnl, best_blas / best_dnnl, impl, diff);
        total_blas += best_blas, total_dnnl += best_dnnl;
        dnnl_memory_destroy(ma), dnnl_memory_destroy(mb), dnnl_memory_destroy(mc);
        dnnl_primitive_destroy(prim), dnnl_primitive_desc_destroy(pd);
        free(A), free(B), free(C1), free(C2);
    }
    printf("%-13s %23s %8.2f ms %7.2f ms %6.2fx\n", "all twelve", "", 1e3 * total_blas,
           1e3 * total_dnnl, total_blas / total_dnnl);
    dnnl_stream_destroy(str), dnnl_engine_destroy(eng);
    return 0;
}
