/* natgrad's max pooling layer (forward, backward) against oneDNN's max pooling primitive on the
 * same plain NCHW f32 tensors, interleaved in one process (median of 30): the figures behind
 * docs/BENCHMARKS.md's note on pooling. The layer runs on oneDNN itself (nn/pool_onednn.c), so
 * this shows what the layer adds (the NaN check, the arena); a fourth argument `loops` times
 * natgrad's own loops instead. Not part of the build:
 *
 *   gcc -O2 -fopenmp -I. -Icore -I/usr/include/x86_64-linux-gnu/openblas-pthread \
 *       experiments/cpu_speed/pool_onednn.c -o /tmp/pool_onednn build-cpu/libnatgrad_nn.a \
 *       build-cpu/libnatgrad_core.a -llapacke -lopenblas -lcjson -ldnnl -lm -lpthread
 *   NG_THREADS=1 /tmp/pool_onednn 256 6 28 [loops]  # N C H: LeNet's first pool, batch 256 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <oneapi/dnnl/dnnl.h>
#include "core/threads.h"
#include "nn/model.h"
#include "nn/pool.h"
#include "nn/pool_onednn.h"
#include "core/rng.h"
static double now() {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
#define CK(x)                                                                                      \
    do {                                                                                           \
        dnnl_status_t s_ = (x);                                                                    \
        if (s_) {                                                                                  \
            printf("fail %s %d\n", #x, s_);                                                        \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
int cmp(const void *a, const void *b) {
    double x = *(double *)a, y = *(double *)b;
    return (x > y) - (x < y);
}
int main(int argc, char **argv) {
    int64_t N = atoi(argv[1]), C = atoi(argv[2]), H = atoi(argv[3]);
    ng_threads();
    if (argc > 4 && !strcmp(argv[4], "loops")) ng_pool_use_onednn(0);
    int64_t k2[2] = {2, 2}, p0[2] = {0, 0};
    ng_model *m = ng_model_new(ng_maxpool("pool", 2, k2, k2, p0));
    ng_model_build(m, NG_CPU, NG_F32, 1, 256 << 20, 256 << 20);
    int64_t xs[4] = {N, C, H, H};
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, xs, "x");
    ng_rng_normal(&x, (ng_rng_key){.seed = 1}, 0, 1);
    int64_t ys[4] = {N, C, H / 2, H / 2};
    ng_tensor dy = ng_tensor_new(NG_F32, NG_CPU, 4, ys, "dy"),
              dx = ng_tensor_new(NG_F32, NG_CPU, 4, xs, "dx");
    ng_rng_normal(&dy, (ng_rng_key){.seed = 2}, 0, 1);
    dnnl_engine_t e;
    CK(dnnl_engine_create(&e, dnnl_cpu, 0));
    dnnl_stream_t st;
    CK(dnnl_stream_create(&st, e, dnnl_stream_default_flags));
    dnnl_memory_desc_t sm, dm;
    dnnl_dims_t sd = {N, C, H, H}, dd = {N, C, H / 2, H / 2};
    CK(dnnl_memory_desc_init_by_tag(&sm, 4, sd, dnnl_f32, dnnl_nchw));
    CK(dnnl_memory_desc_init_by_tag(&dm, 4, dd, dnnl_f32, dnnl_nchw));
    dnnl_pooling_v2_desc_t pd;
    dnnl_dims_t s2 = {2, 2}, k = {2, 2}, dil = {0, 0}, pz = {0, 0};
    CK(dnnl_pooling_v2_forward_desc_init(&pd, dnnl_forward_training, dnnl_pooling_max, &sm, &dm, s2,
                                         k, dil, pz, pz));
    dnnl_primitive_desc_t ppd;
    CK(dnnl_primitive_desc_create(&ppd, &pd, NULL, e, NULL));
    const dnnl_memory_desc_t *wm = dnnl_primitive_desc_query_md(ppd, dnnl_query_workspace_md, 0);
    dnnl_primitive_t fwd;
    CK(dnnl_primitive_create(&fwd, ppd));
    dnnl_pooling_v2_desc_t bd;
    CK(dnnl_pooling_v2_backward_desc_init(&bd, dnnl_pooling_max, &sm, &dm, s2, k, dil, pz, pz));
    dnnl_primitive_desc_t bpd;
    CK(dnnl_primitive_desc_create(&bpd, &bd, NULL, e, ppd));
    dnnl_primitive_t bwd;
    CK(dnnl_primitive_create(&bwd, bpd));
    const char *impl;
    dnnl_primitive_desc_query(ppd, dnnl_query_impl_info_str, 0, &impl);
    printf("oneDNN impl: %s, workspace %zu B\n", impl, dnnl_memory_desc_get_size(wm));
    dnnl_memory_t ms, md, mw, mdd, mds;
    void *ws = malloc(dnnl_memory_desc_get_size(wm));
    float *yb = malloc(ng_tensor_bytes(&dy));
    CK(dnnl_memory_create(&ms, &sm, e, x.data));
    CK(dnnl_memory_create(&md, &dm, e, yb));
    CK(dnnl_memory_create(&mw, wm, e, ws));
    CK(dnnl_memory_create(&mdd, &dm, e, dy.data));
    CK(dnnl_memory_create(&mds, &sm, e, dx.data));
    enum { R = 30 };
    double nf[R], nb[R], of[R], ob[R];
    for (int r = 0; r < R; r++) {
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
        double t0 = now();
        ng_model_forward(m, &ctx, &x);
        double t1 = now();
        m->root->ops->backward(m->root, &ctx, &dy, &dx);
        double t2 = now();
        dnnl_exec_arg_t fa[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, md}, {DNNL_ARG_WORKSPACE, mw}};
        dnnl_exec_arg_t ba[3] = {
            {DNNL_ARG_DIFF_DST, mdd}, {DNNL_ARG_DIFF_SRC, mds}, {DNNL_ARG_WORKSPACE, mw}};
        double t3 = now();
        CK(dnnl_primitive_execute(fwd, st, 3, fa));
        dnnl_stream_wait(st);
        double t4 = now();
        CK(dnnl_primitive_execute(bwd, st, 3, ba));
        dnnl_stream_wait(st);
        double t5 = now();
        nf[r] = (t1 - t0) * 1e3;
        nb[r] = (t2 - t1) * 1e3;
        of[r] = (t4 - t3) * 1e3;
        ob[r] = (t5 - t4) * 1e3;
    }
    qsort(nf, R, 8, cmp);
    qsort(nb, R, 8, cmp);
    qsort(of, R, 8, cmp);
    qsort(ob, R, 8, cmp);
    printf("maxpool 2x2/2 on [%lld,%lld,%lld,%lld], %d threads, median of %d: natgrad fwd %.3f bwd "
           "%.3f ms; oneDNN (plain nchw) fwd %.3f bwd %.3f ms\n",
           (long long)N, (long long)C, (long long)H, (long long)H, ng_threads(), R, nf[R / 2],
           nb[R / 2], of[R / 2], ob[R / 2]);
    return 0;
}
