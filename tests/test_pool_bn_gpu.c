/* Pooling and batch norm on CUDA against the CPU twins at awkward sizes, including reductions
 * spread over several blocks per channel, and the running statistics after a training step. */
#include <math.h>
#include <stdlib.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "pool_bn_cases.h"
#include "nn/batchnorm.h"
#include "nn/model.h"
#include "nn/pool.h"
#include "testing.h"

static ng_layer *make_max3(void) {
    return ng_maxpool("pool", 3, (int64_t[]){3, 2, 3}, (int64_t[]){2, 2, 1}, (int64_t[]){1, 1, 1});
}
static ng_layer *make_avg2(void) {
    return ng_avgpool("pool", 2, (int64_t[]){3, 2}, (int64_t[]){1, 2}, (int64_t[]){1, 1});
}
static ng_layer *make_avg3(void) {
    return ng_avgpool("pool", 3, (int64_t[]){2, 3, 3}, (int64_t[]){2, 2, 2}, (int64_t[]){1, 1, 1});
}

static ng_layer *make_bn2(void) {
    return ng_batchnorm("bn", 2, 6, 0.1, 1e-5);
}
static ng_layer *make_bn2_3(void) {
    return ng_batchnorm("bn", 2, 3, 0.1, 1e-5);
}
static ng_layer *make_bn3(void) {
    return ng_batchnorm("bn", 3, 5, 0.2, 1e-3);
}
static ng_layer *make_bn_relu3(void) {
    return ng_batchnorm_relu("bn", 3, 5, 0.2, 1e-3);
}

/* The fused batch norm + ReLU on the GPU in each memory mode: the GPU's two layers bit for bit
 * (the recomputed mask included), and the CPU twin within rounding. */
static void bn_relu_modes(void) {
    const ng_dtype dts[4] = {NG_F64, NG_F32, NG_F16, NG_BF16};
    for (int t = 0; t < 4; t++) {
        ng_dtype dt = dts[t];
        ng_tensor x64, dy64;
        double p[6];
        bn_relu_inputs(&x64, &dy64, p);
        int64_t n = x64.numel;
        bn_relu_result ref = bn_relu_run(NG_CUDA, dt, BN_RELU_TWO_LAYERS, &x64, &dy64, p);
        bn_relu_result cpu = bn_relu_run(NG_CPU, dt, BN_RELU_TWO_LAYERS, &x64, &dy64, p);
        double tol = dt == NG_F64 ? 1e-12 : dt == NG_F32 ? 1e-5 : dt == NG_F16 ? 2e-3 : 1.6e-2;
        ng_test_close("batchnorm + relu output, cuda vs cpu", cpu.y, ref.y, n, tol, tol);
        ng_test_close("batchnorm + relu dx, cuda vs cpu", cpu.dx, ref.dx, n, tol, tol);
        bn_relu_check_modes(NG_CUDA, dt, &x64, &dy64, p, &ref);
        bn_relu_result_free(&ref), bn_relu_result_free(&cpu);
        ng_tensor_free(&x64), ng_tensor_free(&dy64);
    }
}

/* Running stats after one training step on each device. */
static void running_twin(void) {
    uint64_t seed = ng_test_seed();
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, 4, (int64_t[]){8, 3, 33, 35}, "x");
    ng_test_fill_uniform(&x, 1, 4);
    double *stats[2][2];
    for (int d = 0; d < 2; d++) {
        ng_device dev = d ? NG_CUDA : NG_CPU;
        ng_model *m = ng_model_new(make_bn2_3());
        ng_model_build(m, dev, NG_F32, seed, 8 << 20, 1 << 20);
        ng_tensor xd = ng_tensor_to(&x, dev, "x");
        ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
        ng_model_forward(m, &ctx, &xd);
        ng_tensor rm, rv;
        ng_batchnorm_running(m->root, &rm, &rv);
        NG_TEST(rm.device == dev, "running stats live on the model's device after forward");
        stats[d][0] = ng_test_to_f64(&rm);
        stats[d][1] = ng_test_to_f64(&rv);
        ng_tensor_free(&xd);
        ng_model_free(m);
    }
    ng_test_close("running mean cuda vs cpu", stats[0][0], stats[1][0], 3, 1e-6, 0);
    ng_test_close("running var cuda vs cpu", stats[0][1], stats[1][1], 3, 1e-6, 0);
    for (int d = 0; d < 2; d++) free(stats[d][0]), free(stats[d][1]);
    ng_tensor_free(&x);
}

int main(void) {
    ng_gradcheck_prepare = ng_gradcheck_set_running_stats;
    ng_test_require_gpu("test_pool_bn_gpu");
    ng_twincheck("maxpool2d", make_max2, 4, (int64_t[]){3, 5, 17, 19}, 1, 1e-6);
    ng_twincheck("maxpool3d", make_max3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, 1e-6);
    ng_twincheck("avgpool2d", make_avg2, 4, (int64_t[]){3, 5, 17, 19}, 1, 1e-6);
    ng_twincheck("avgpool3d", make_avg3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, 1e-6);
    ng_twincheck("global avgpool 3-D", make_gap, 5, (int64_t[]){4, 6, 9, 10, 11}, 1, 1e-6);
    ng_twincheck("global avgpool, 2 blocks per plane", make_gap, 4, (int64_t[]){2, 2, 65, 70}, 1,
                 1e-6);
    ng_twincheck("batchnorm2d train", make_bn2, 4, (int64_t[]){4, 6, 13, 15}, 1, 1e-5);
    ng_twincheck("batchnorm2d eval", make_bn2, 4, (int64_t[]){4, 6, 13, 15}, 0, 1e-5);
    ng_twincheck("batchnorm3d train", make_bn3, 5, (int64_t[]){2, 5, 9, 10, 11}, 1, 1e-5);
    ng_twincheck("batchnorm3d eval", make_bn3, 5, (int64_t[]){2, 5, 9, 10, 11}, 0, 1e-5);
    ng_twincheck("batchnorm2d train, 3 blocks per channel", make_bn2_3, 4,
                 (int64_t[]){8, 3, 33, 35}, 1, 1e-5);
    running_twin();
    ng_twincheck("batchnorm_relu3d train", make_bn_relu3, 5, (int64_t[]){2, 5, 9, 10, 11}, 1, 1e-5);
    bn_relu_modes();
    for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
        ng_twincheck_mixed("maxpool3d, mixed", make_max3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, dt,
                           ng_mixed_tol(dt, 1, 0));
        ng_twincheck_mixed("avgpool3d, mixed", make_avg3, 5, (int64_t[]){2, 3, 9, 10, 11}, 1, dt,
                           ng_mixed_tol(dt, 5, 27));
        ng_twincheck_mixed("batchnorm3d train, mixed", make_bn3, 5, (int64_t[]){2, 5, 9, 10, 11}, 1,
                           dt, ng_mixed_tol(dt, 2, 1980));
        ng_twincheck_mixed("batchnorm3d eval, mixed", make_bn3, 5, (int64_t[]){2, 5, 9, 10, 11}, 0,
                           dt, ng_mixed_tol(dt, 2, 0));
    }
    return ng_test_finish("test_pool_bn_gpu");
}
