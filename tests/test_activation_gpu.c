/* ReLU, GELU, dropout, softmax and flatten on CUDA against the CPU twin, at awkward sizes, in f32
 * (through ng_twincheck) and in f16/bf16 (layer forward and backward, and ng_softmax_rows). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "activation_cases.h"
#include "gradcheck.h"
#include "nn/activation.h"
#include "nn/model.h"
#include "testing.h"

/* f32 sums of k terms by one warp (k/32 sequential adds per lane, then 5 shuffle levels): a
 * relative error of about (k/32 + 5) ulps at worst; twice that for the gradient's dot product
 * and the output's own rounding. */
static double warp_sum_tol(int64_t k) {
    return 2.0 * ((double)k / 32 + 5) * ldexp(1.0, -24);
}

typedef struct {
    double *y, *dx;
    int64_t ny;
} run_out;

/* One forward and backward of a fresh layer on `dev`, x and dy given on the host in any dtype. */
static run_out run_layer(ng_layer *(*make)(void), ng_device dev, const ng_tensor *xh,
                         const ng_tensor *dyh, int training) {
    ng_model *m = ng_model_new(make());
    ng_model_build(m, dev, NG_F32, 1, (size_t)16 << 20, (size_t)16 << 20);
    ng_tensor x = ng_tensor_to(xh, dev, "x"), dy = ng_tensor_to(dyh, dev, "dy");
    ng_tensor dx = ng_tensor_new(xh->dtype, dev, xh->ndim, xh->shape, "dx");
    ng_test_poison(&dx);
    ng_ctx ctx = ng_model_ctx(m, training, 11, 4);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    run_out r = {.y = ng_test_to_f64(&y), .ny = y.numel};
    m->root->ops->backward(m->root, &ctx, &dy, &dx);
    r.dx = ng_test_to_f64(&dx);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_tensor_free(&dx);
    ng_model_free(m);
    return r;
}

/* 16-bit types: both twins read the same rounded inputs; the CPU rounds a double result, CUDA a
 * float one, so they may land one 16-bit ulp apart (rtol), plus the subnormal spacing of f16,
 * plus the float error CUDA carried before rounding (extra_abs). That last one is absolute: GELU's
 * derivative cancels to 0 near x = -0.75, where a relative bound would not hold. */
static void check_half(const char *what, ng_layer *(*make)(void), ng_dtype dt, int training,
                       double extra_abs) {
    int64_t shape[3] = {3, 5, 257};
    ng_tensor x = ng_tensor_new(dt, NG_CPU, 3, shape, "x"),
              dy = ng_tensor_new(dt, NG_CPU, 3, shape, "dy");
    ng_test_fill_uniform(&x, -3, 3);
    ng_test_fill_uniform(&dy, -1, 1);
    run_out c = run_layer(make, NG_CPU, &x, &dy, training);
    run_out g = run_layer(make, NG_CUDA, &x, &dy, training);
    double ulp = dt == NG_F16 ? ldexp(1.0, -10) : ldexp(1.0, -7);
    double atol = (dt == NG_F16 ? ldexp(1.0, -24) : 1e-38) + extra_abs;
    char label[128];
    snprintf(label, sizeof label, "%s %s: output cuda vs cpu", what, ng_dtype_name(dt));
    ng_test_close(label, c.y, g.y, c.ny, ulp, atol);
    snprintf(label, sizeof label, "%s %s: input grad cuda vs cpu", what, ng_dtype_name(dt));
    ng_test_close(label, c.dx, g.dx, x.numel, ulp, atol);
    free(c.y), free(c.dx), free(g.y), free(g.dx);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

/* ng_softmax_rows and its backward called directly, as attention does, on [B*H, T, T]. */
static void check_softmax_rows(ng_dtype dt, int64_t bh, int64_t t) {
    int64_t shape[3] = {bh, t, t};
    ng_tensor x = ng_tensor_new(dt, NG_CPU, 3, shape, "scores");
    ng_tensor dy = ng_tensor_new(dt, NG_CPU, 3, shape, "dprobs");
    ng_test_fill_uniform(&x, -6, 6);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_tensor y = ng_tensor_new(dt, NG_CPU, 3, shape, "probs"),
              dx = ng_tensor_new(dt, NG_CPU, 3, shape, "dscores");
    ng_test_poison(&y);
    ng_test_poison(&dx);
    ng_softmax_rows(&x, &y);
    ng_softmax_rows_backward(&y, &dy, &dx);
    ng_tensor xg = ng_tensor_to(&x, NG_CUDA, "scores"), dyg = ng_tensor_to(&dy, NG_CUDA, "dprobs");
    ng_tensor yg = ng_tensor_new(dt, NG_CUDA, 3, shape, "probs"),
              dxg = ng_tensor_new(dt, NG_CUDA, 3, shape, "dscores");
    ng_test_poison(&yg);
    ng_test_poison(&dxg);
    ng_softmax_rows(&xg, &yg);
    /* The backward takes the CPU's y, so it is compared on identical inputs. */
    ng_tensor yc = ng_tensor_to(&y, NG_CUDA, "probs");
    ng_softmax_rows_backward(&yc, &dyg, &dxg);
    double *a = ng_test_to_f64(&y), *b = ng_test_to_f64(&yg), *da = ng_test_to_f64(&dx),
           *db = ng_test_to_f64(&dxg);
    char label[128];
    snprintf(label, sizeof label, "ng_softmax_rows %s [%lld,%lld,%lld] cuda vs cpu",
             ng_dtype_name(dt), (long long)bh, (long long)t, (long long)t);
    if (dt == NG_F32) {
        ng_test_rel_norm(label, a, b, x.numel, warp_sum_tol(t));
        snprintf(label, sizeof label, "ng_softmax_rows_backward %s cuda vs cpu", ng_dtype_name(dt));
        ng_test_rel_norm(label, da, db, x.numel, warp_sum_tol(t));
    } else {
        double ulp = dt == NG_F16 ? ldexp(1.0, -10) : ldexp(1.0, -7);
        double atol = dt == NG_F16 ? ldexp(1.0, -24) : 1e-38;
        ng_test_close(label, a, b, x.numel, ulp + warp_sum_tol(t), atol);
        /* dy - dot cancels: compare by norm, against the 16-bit rounding of the result. */
        snprintf(label, sizeof label, "ng_softmax_rows_backward %s cuda vs cpu", ng_dtype_name(dt));
        ng_test_rel_norm(label, da, db, x.numel, ulp);
    }
    free(a), free(b), free(da), free(db);
    ng_tensor_free(&x), ng_tensor_free(&dy), ng_tensor_free(&y), ng_tensor_free(&dx);
    ng_tensor_free(&xg), ng_tensor_free(&dyg), ng_tensor_free(&yg), ng_tensor_free(&dxg);
    ng_tensor_free(&yc);
}

int main(void) {
    ng_test_require_gpu("test_activation_gpu");
    int64_t odd[3] = {3, 5, 257};
    /* ReLU, flatten and dropout do no rounding the CPU does not do the same way: exact. */
    ng_twincheck("relu", make_relu, 3, odd, 1, 0);
    ng_twincheck("flatten", make_flatten, 3, odd, 1, 0);
    ng_twincheck("dropout training", make_dropout, 3, odd, 1, 0);
    ng_twincheck("dropout eval", make_dropout, 3, odd, 0, 0);
    /* erff/tanhf/expf are within 2 ulps; a handful of float operations around them. */
    ng_twincheck("gelu erf", make_gelu_erf, 3, odd, 1, 8 * ldexp(1.0, -24));
    ng_twincheck("gelu tanh", make_gelu_tanh, 3, odd, 1, 8 * ldexp(1.0, -24));
    ng_twincheck("softmax", make_softmax, 3, odd, 1, warp_sum_tol(257));
    ng_twincheck("softmax wide rows", make_softmax, 2, (int64_t[]){3, 3001}, 1, warp_sum_tol(3001));
    ng_twincheck("softmax narrow rows", make_softmax, 2, (int64_t[]){4097, 3}, 1, warp_sum_tol(3));
    ng_twincheck("dropout large", make_dropout, 2, (int64_t[]){1001, 1027}, 1, 0);

    ng_dtype halves[2] = {NG_F16, NG_BF16};
    for (int i = 0; i < 2; i++) {
        check_half("relu", make_relu, halves[i], 1, 0);
        /* 8 float ulps of terms of size up to |x| = 3. */
        check_half("gelu erf", make_gelu_erf, halves[i], 1, 8 * 3 * ldexp(1.0, -24));
        check_half("gelu tanh", make_gelu_tanh, halves[i], 1, 8 * 3 * ldexp(1.0, -24));
        check_half("dropout", make_dropout, halves[i], 1, 0);
        check_softmax_rows(halves[i], 6, 197);
    }
    check_softmax_rows(NG_F32, 6, 197);
    check_softmax_rows(NG_F32, 2, 33);
    return ng_test_finish("test_activation_gpu");
}
