/* Convolution on CUDA against the CPU twin: cuDNN and the im2col path (also in position chunks)
 * at awkward sizes, and ng_im2col CUDA vs CPU. */
#include <stdlib.h>

#include "core/dispatch.h"
#include "core/memory.h"
#include "core/ops.h"
#include "conv_cases.h"
#include "gradcheck.h"
#include "nn/conv.h"
#include "nn/conv_kernels.h"
#include "nn/model.h"
#include "nn/plan.h"
#include "testing.h"

static ng_layer *make_c3(void) {
    return ng_conv("conv", 3, 3, 5, (int64_t[]){3, 3, 3}, (int64_t[]){2, 2, 2},
                   (int64_t[]){1, 1, 1}, NULL, 1);
}
static ng_layer *make_c3_dil(void) {
    return ng_conv("conv", 3, 4, 6, (int64_t[]){3, 2, 3}, (int64_t[]){1, 2, 1},
                   (int64_t[]){2, 0, 1}, (int64_t[]){2, 1, 1}, 0);
}
static ng_layer *make_c2(void) {
    return ng_conv("conv", 2, 5, 7, (int64_t[]){3, 2}, (int64_t[]){2, 1}, (int64_t[]){1, 0},
                   (int64_t[]){1, 2}, 1);
}
static ng_layer *make_c2_1x1(void) {
    return ng_conv("conv", 2, 16, 9, (int64_t[]){1, 1}, NULL, NULL, NULL, 1);
}

static void twins(const char *path) {
    char what[128];
    /* f32 sums of at most a few hundred products: relative errors near 1e-6 at worst. */
    snprintf(what, sizeof what, "conv3d k3 s2 p1 [2,3,9,10,11] -> 5 (%s)", path);
    ng_twincheck(what, make_c3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, 1e-5);
    snprintf(what, sizeof what, "conv3d dilated, no bias (%s)", path);
    ng_twincheck(what, make_c3_dil, 5, (int64_t[]){3, 4, 7, 9, 8}, 1, 1e-5);
    snprintf(what, sizeof what, "conv2d 3x2 s(2,1) d(1,2) (%s)", path);
    ng_twincheck(what, make_c2, 4, (int64_t[]){3, 5, 17, 19}, 1, 1e-5);
    snprintf(what, sizeof what, "conv2d 1x1 (%s)", path);
    ng_twincheck(what, make_c2_1x1, 4, (int64_t[]){4, 16, 6, 7}, 1, 1e-5);
}

/* The im2col path on CUDA in position chunks (a small gradient arena) against the CPU. */
static void chunked(void) {
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 5, (int64_t[]){2, 3, 9, 10, 11}, "x");
    ng_tensor dy = ng_tensor_new(NG_F32, NG_CPU, 5, (int64_t[]){2, 5, 5, 5, 6}, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    uint64_t seed = ng_test_seed();
    conv_pass c = conv_pass_run(make_c3, NG_CPU, NG_F32, seed, 8 << 20, &x, &dy);
    /* K = 81: 150 positions x (2 K + 5) x 4 bytes per sample do not fit in 20000 bytes. */
    conv_pass g = conv_pass_run(make_c3, NG_CUDA, NG_F32, seed, 20000, &x, &dy);
    ng_test_rel_norm("conv3d im2col path in chunks on CUDA: output", c.y, g.y, c.ny, 1e-5);
    ng_test_rel_norm("conv3d im2col path in chunks on CUDA: input grad", c.dx, g.dx, c.nx, 1e-5);
    ng_test_rel_norm("conv3d im2col path in chunks on CUDA: param grads", c.g, g.g, c.ng, 1e-5);
    conv_pass_free(&c);
    conv_pass_free(&g);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

static void im2col_twin(const char *what, const ng_conv_geom *gm, int ndim, const int64_t *shape,
                        int64_t n, int64_t p0, int64_t np) {
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, ndim, shape, "x");
    ng_test_fill_uniform(&x, -1, 1);
    int64_t K = gm->in_ch * gm->kernel[0] * gm->kernel[1] * gm->kernel[2];
    ng_tensor cc = ng_tensor_2d(NG_F32, NG_CPU, np, K, "cols");
    ng_tensor xg = ng_tensor_to(&x, NG_CUDA, "x"),
              cg = ng_tensor_2d(NG_F32, NG_CUDA, np, K, "cols");
    ng_test_poison(&cc);
    ng_test_poison(&cg);
    ng_im2col(&x, n, gm, p0, np, &cc);
    ng_im2col(&xg, n, gm, p0, np, &cg);
    double *a = ng_test_to_f64(&cc), *b = ng_test_to_f64(&cg);
    ng_test_close(what, a, b, np * K, 0, 0); /* pure copies: identical */
    free(a), free(b);
    ng_tensor_free(&x);
    ng_tensor_free(&cc);
    ng_tensor_free(&xg);
    ng_tensor_free(&cg);
}

/* A half conv step on cuDNN asks the CUDA workspace for what the plan predicts (the plan asks
 * cuDNN's heuristics for the same algorithms), and cuDNN takes the shape at all (else the twin
 * checks below would test the im2col path twice). First in the process: the workspace only grows,
 * and its peak is the process's. */
static void workspace_as_planned(ng_dtype dt) {
    ng_model *m = ng_model_new(make_c3());
    int64_t in[5] = {2, 3, 9, 10, 11};
    ng_arena_plan p = ng_plan_train_step(m->root, 5, in, NG_F32, dt, NG_CUDA, 0);
    NG_TEST(!p.workspace_bounded, "conv %s plan on the GPU: cuDNN was not asked",
            ng_dtype_name(dt));
    ng_model_build_mixed(m, NG_CUDA, dt, ng_test_seed(), 8 << 20, 8 << 20);
    ng_tensor x = ng_tensor_new(dt, NG_CUDA, 5, in, "x");
    ng_tensor dy = ng_tensor_new(dt, NG_CUDA, 5, (int64_t[]){2, 5, 5, 5, 6}, "dy");
    ng_tensor dx = ng_tensor_new(dt, NG_CUDA, 5, in, "dx");
    ng_fill(&x, 0.5);
    ng_fill(&dy, 0.25);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_model_forward(m, &ctx, &x);
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    size_t got = ng_mem_stats_get(NG_CUDA).cat_peak[NG_MEM_WORKSPACE];
    NG_TEST(got == p.workspace, "conv %s step on cuDNN: workspace peak %zu bytes, planned %zu",
            ng_dtype_name(dt), got, p.workspace);
    void *cache = NULL;
    ng_conv_geom g = {.nd = 3,
                      .in_ch = 3,
                      .out_ch = 5,
                      .kernel = {3, 3, 3},
                      .stride = {2, 2, 2},
                      .padding = {1, 1, 1},
                      .dilation = {1, 1, 1},
                      .bias = 1};
    int64_t ws = -1; /* the CUDA build's only: ng_test_require_gpu has left the others */
    (void)cache, (void)g;
    NG_CUDA_ONLY(ws = ng_conv_cudnn_workspace(&cache, &g, 5, in, dt, 1, 1));
    NG_TEST(ws >= 0, "cuDNN takes no %s conv3d [2,3,9,10,11] backward", ng_dtype_name(dt));
    NG_CUDA_ONLY(ng_conv_cudnn_free(cache));
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&dx);
    ng_model_free(m);
}

int main(void) {
    ng_test_require_gpu("test_conv_gpu");
    workspace_as_planned(NG_F16); /* the largest request comes first: the peak is the process's */
    ng_conv_use_cudnn(1);
    twins("cuDNN");
    ng_conv_use_cudnn(0);
    twins("im2col");
    /* f16/bf16 on the im2col path (columns copied, GEMM with f32 accumulation, col2im gathered in
     * double and rounded once), then on cuDNN's tensor cores, whose weight gradient is rounded
     * once more (to the half type, before it is added into the f32 master): one rounding more. */
    for (int cudnn = 0; cudnn <= 1; cudnn++) {
        ng_conv_use_cudnn(cudnn);
        for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
            ng_twincheck_mixed(cudnn ? "conv3d, mixed (cuDNN)" : "conv3d, mixed (im2col)", make_c3,
                               5, (int64_t[]){2, 3, 9, 10, 11}, 1, dt,
                               ng_mixed_tol(dt, 4 + cudnn, 81));
            ng_twincheck_mixed(cudnn ? "conv2d, mixed (cuDNN)" : "conv2d, mixed (im2col)", make_c2,
                               4, (int64_t[]){3, 5, 17, 19}, 1, dt,
                               ng_mixed_tol(dt, 4 + cudnn, 30));
        }
    }
    ng_conv_use_cudnn(0);
    chunked();
    ng_conv_use_cudnn(1);
    ng_conv_geom g3 = {.nd = 3,
                       .in_ch = 3,
                       .out_ch = 1,
                       .kernel = {3, 2, 3},
                       .stride = {2, 1, 2},
                       .padding = {1, 1, 0},
                       .dilation = {1, 2, 1}};
    im2col_twin("ng_im2col 3-D CUDA vs CPU", &g3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, 37, 101);
    ng_conv_geom g2 = {.nd = 2,
                       .in_ch = 5,
                       .out_ch = 1,
                       .kernel = {3, 3, 1},
                       .stride = {1, 2, 1},
                       .padding = {1, 1, 0},
                       .dilation = {2, 1, 1}};
    im2col_twin("ng_im2col 2-D CUDA vs CPU", &g2, 4, (int64_t[]){3, 5, 17, 19}, 2, 4, 143);
    return ng_test_finish("test_conv_gpu");
}
