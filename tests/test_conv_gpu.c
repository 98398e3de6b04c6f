/* Convolution on CUDA against the CPU twin: cuDNN and the im2col path (also in position chunks)
 * at awkward sizes, and ng_im2col CUDA vs CPU. */
#include <stdlib.h>

#include "core/ops.h"
#include "conv_cases.h"
#include "gradcheck.h"
#include "nn/conv.h"
#include "nn/conv_kernels.h"
#include "nn/model.h"
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

int main(void) {
    ng_test_require_gpu("test_conv_gpu");
    ng_conv_use_cudnn(1);
    twins("cuDNN");
    ng_conv_use_cudnn(0);
    twins("im2col");
    /* f16/bf16 take the im2col path on CUDA (cuDNN is used for f32/f64 only): columns copied,
     * GEMM with f32 accumulation, col2im gathered in double and rounded once. */
    for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
        ng_twincheck_mixed("conv3d, mixed", make_c3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, dt,
                           ng_mixed_tol(dt, 4, 81));
        ng_twincheck_mixed("conv2d, mixed", make_c2, 4, (int64_t[]){3, 5, 17, 19}, 1, dt,
                           ng_mixed_tol(dt, 4, 30));
    }
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
    im2col_twin("ng_im2col 2-D CUDA vs CPU", &g2, 4, (int64_t[]){3, 5, 17, 19}, 2, 0, 153);
    return ng_test_finish("test_conv_gpu");
}
