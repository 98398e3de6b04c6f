/* The CUDA optimizer updates against their CPU twins: SGD and AdamW over 5 steps on a model of
 * 100003 parameters (f32 and f64), the fused kernels directly at an odd length with every mask
 * value, and global-norm clipping of CUDA gradients. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/dispatch.h"
#include "core/ops.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "optim/optimizer.h"
#include "optim/update_kernels.h"
#include "testing.h"

#define U32 (1.0 / 16777216.0)         /* 2^-24 */
#define U64 (1.0 / 9007199254740992.0) /* 2^-53 */
#define STEPS 5
#define ODD_N 100003

/* 331 x 301 weights + 331 biases + 41 weights = 100003 parameters, padded to 100032 flat
 * elements: 390.75 blocks of 256 threads. No forward pass runs, so the shapes need not chain. */
static ng_model *big_model(ng_dtype dt, ng_device dev) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 301, 331, 1));
    ng_layer_add_child(s, ng_linear("fc2", 41, 1, 0));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, dev, dt, 11, 1 << 16, 1 << 16);
    return m;
}

static double maxabs(const double *x, int64_t n) {
    double a = 0;
    for (int64_t i = 0; i < n; i++) a = fmax(a, fabs(x[i]));
    return a;
}

/* Both twins evaluate the same double formulas (update_kernels.h) with explicitly rounded device
 * operations, so bit-equal results are expected. The tolerance allows what a differing double
 * operation could cause: a result off by a few units of 2^-53 can round the stored value one ulp
 * of the storage type the other way, once per step, and such a difference is carried on with a
 * factor of at most 1 (keep, momentum, beta): 2 * STEPS ulps of the largest value. */
static void compare(const char *what, const ng_tensor *cpu, const ng_tensor *gpu) {
    double *c = ng_test_to_f64(cpu), *g = ng_test_to_f64(gpu);
    double u = cpu->dtype == NG_F32 ? U32 : U64;
    int64_t same = 0;
    for (int64_t i = 0; i < cpu->numel; i++) same += c[i] == g[i];
    ng_test_close(what, c, g, cpu->numel, 2 * u, 2 * STEPS * u * maxabs(c, cpu->numel));
    if (same != cpu->numel)
        fprintf(stderr, "  %s: %lld of %lld elements bit-equal\n", what, (long long)same,
                (long long)cpu->numel);
    free(c), free(g);
}

static void check_model(const char *label, ng_optim_config c, ng_dtype dt) {
    ng_model *mc = big_model(dt, NG_CPU), *mg = big_model(dt, NG_CUDA);
    NG_TEST(mc->count == ODD_N, "the model has %lld parameters", (long long)mc->count);
    ng_optimizer *oc = ng_optimizer_new(mc, &c), *og = ng_optimizer_new(mg, &c);
    char what[160];
    snprintf(what, sizeof what, "%s %s: initial parameters", label, ng_dtype_name(dt));
    compare(what, &mc->flat_params, &mg->flat_params);
    for (int k = 0; k < STEPS; k++) {
        double lr = 0.15 + 0.1 * ng_test_uniform();
        ng_test_fill_uniform(&mc->flat_grads, -1, 1); /* gaps too: both twins must skip them */
        ng_tensor_copy(&mg->flat_grads, &mc->flat_grads);
        ng_optimizer_step(oc, lr);
        ng_optimizer_step(og, lr);
    }
    ng_sync(NG_CUDA);
    snprintf(what, sizeof what, "%s %s: parameters after %d steps", label, ng_dtype_name(dt),
             STEPS);
    compare(what, &mc->flat_params, &mg->flat_params);
    const char *nc[4], *ng[4];
    ng_tensor *tc[4], *tg[4];
    int n = ng_optimizer_state(oc, nc, tc, 4);
    NG_TEST(n == ng_optimizer_state(og, ng, tg, 4), "%s: state counts differ", label);
    for (int i = 0; i < n; i++) {
        NG_TEST(tg[i]->device == NG_CUDA && tg[i]->dtype == dt, "%s: %s is %s", label, ng[i],
                ng_tensor_desc(tg[i]));
        snprintf(what, sizeof what, "%s %s: %s after %d steps", label, ng_dtype_name(dt), nc[i],
                 STEPS);
        compare(what, tc[i], tg[i]);
    }
    ng_optimizer_free(oc), ng_optimizer_free(og);
    ng_model_free(mc), ng_model_free(mg);
}

/* The kernels on their own at an odd length with random mask values, gaps included. */
static void check_kernels(ng_dtype dt) {
    if (ng_test_emulated("the update kernels called directly")) return;
    int64_t n = ODD_N;
    ng_tensor p = ng_tensor_1d(dt, NG_CPU, n, "p"), g = ng_tensor_1d(dt, NG_CPU, n, "g");
    ng_tensor s1 = ng_tensor_1d(dt, NG_CPU, n, "s1"), s2 = ng_tensor_1d(dt, NG_CPU, n, "s2");
    ng_tensor k = ng_tensor_1d(NG_U8, NG_CPU, n, "mask");
    ng_test_fill_uniform(&p, -1, 1);
    ng_test_fill_uniform(&s1, -1, 1);
    ng_test_fill_uniform(&s2, 0, 1); /* exp_avg_sq is never negative */
    uint8_t *kk = k.data;
    for (int64_t i = 0; i < n; i++) kk[i] = (uint8_t)((ng_test_uniform() + 1.0) * 1.5); /* 0..2 */
    ng_tensor pg = ng_tensor_to(&p, NG_CUDA, "p"), gg = ng_tensor_to(&g, NG_CUDA, "g");
    ng_tensor s1g = ng_tensor_to(&s1, NG_CUDA, "s1"), s2g = ng_tensor_to(&s2, NG_CUDA, "s2");
    ng_tensor kg = ng_tensor_to(&k, NG_CUDA, "mask");
    for (int step = 0; step < STEPS; step++) {
        ng_test_fill_uniform(&g, -1, 1);
        ng_tensor_copy(&gg, &g);
        double lr = 0.1, wd = 0.05, b1 = 0.9, b2 = 0.99, t = step + 1;
        if (step % 2 == 0) {
            ng_sgd_args a = {.lr = lr,
                             .l2 = step == 2 ? 0.0 : wd,
                             .keep = step == 2 ? 1.0 - lr * wd : 1.0,
                             .momentum = 0.9,
                             .nesterov = step == 4,
                             .first = step == 0};
            ng_optim_sgd_cpu(a, &p, &g, &s1, &k);
            NG_DISPATCH(&pg, (void)0, ng_optim_sgd_cuda(a, &pg, &gg, &s1g, &kg));
        } else {
            ng_adamw_args a = {.keep = 1.0 - lr * wd,
                               .beta1 = b1,
                               .one_minus_beta1 = 1.0 - b1,
                               .beta2 = b2,
                               .one_minus_beta2 = 1.0 - b2,
                               .step_size = lr / (1.0 - pow(b1, t)),
                               .bc2_sqrt = sqrt(1.0 - pow(b2, t)),
                               .eps = 1e-8};
            ng_optim_adamw_cpu(a, &p, &g, &s1, &s2, &k);
            NG_DISPATCH(&pg, (void)0, ng_optim_adamw_cuda(a, &pg, &gg, &s1g, &s2g, &kg));
        }
    }
    /* SGD without a buffer must leave the buffers alone. */
    ng_sgd_args plain = {.lr = 0.1, .l2 = 0.01, .keep = 1.0};
    ng_optim_sgd_cpu(plain, &p, &g, NULL, &k);
    NG_DISPATCH(&pg, (void)0, ng_optim_sgd_cuda(plain, &pg, &gg, NULL, &kg));
    ng_sync(NG_CUDA);
    char what[96];
    snprintf(what, sizeof what, "kernels %s: parameters", ng_dtype_name(dt));
    compare(what, &p, &pg);
    snprintf(what, sizeof what, "kernels %s: momentum / exp_avg", ng_dtype_name(dt));
    compare(what, &s1, &s1g);
    snprintf(what, sizeof what, "kernels %s: exp_avg_sq", ng_dtype_name(dt));
    compare(what, &s2, &s2g);
    ng_tensor_free(&p), ng_tensor_free(&g), ng_tensor_free(&s1), ng_tensor_free(&s2);
    ng_tensor_free(&k), ng_tensor_free(&pg), ng_tensor_free(&gg), ng_tensor_free(&s1g);
    ng_tensor_free(&s2g), ng_tensor_free(&kg);
}

static void check_clip(ng_dtype dt) {
    ng_model *mc = big_model(dt, NG_CPU), *mg = big_model(dt, NG_CUDA);
    ng_test_fill_uniform(&mc->flat_grads, -1, 1);
    ng_tensor_copy(&mg->flat_grads, &mc->flat_grads);
    double nc = ng_clip_grad_norm(mc, 0.0);
    double ngpu = ng_clip_grad_norm(mg, nc / 4.0);
    ng_clip_grad_norm(mc, nc / 4.0);
    /* Both accumulate squares in double, in different orders: n * 2^-53 relative at most. */
    NG_TEST(fabs(ngpu - nc) <= (double)mc->numel * U64 * nc,
            "clip %s: CUDA norm %.17g, CPU norm %.17g", ng_dtype_name(dt), ngpu, nc);
    /* The factor comes from norms that may differ in the last bits, then one rounded product. */
    double *c = ng_test_to_f64(&mc->flat_grads), *g = ng_test_to_f64(&mg->flat_grads);
    double u = dt == NG_F32 ? U32 : U64;
    ng_test_close(dt == NG_F32 ? "clip f32: CUDA gradients" : "clip f64: CUDA gradients", c, g,
                  mc->numel, 3 * u + (double)mc->numel * U64, 0);
    free(c), free(g);
    ng_model_free(mc), ng_model_free(mg);
}

int main(void) {
    ng_test_require_gpu("test_optim_gpu");
    ng_test_seed();
    const ng_dtype dts[2] = {NG_F32, NG_F64};
    for (int d = 0; d < 2; d++) {
        ng_dtype dt = dts[d];
        check_model(
            "sgd nesterov+l2",
            (ng_optim_config){.name = "sgd", .momentum = 0.9, .nesterov = 1, .weight_decay = 0.05},
            dt);
        check_model(
            "sgdw",
            (ng_optim_config){.name = "sgd", .momentum = 0.9, .weight_decay = 0.05, .decoupled = 1},
            dt);
        check_model("sgd plain", (ng_optim_config){.name = "sgd", .weight_decay = 0.01}, dt);
        check_model(
            "adamw",
            (ng_optim_config){
                .name = "adamw", .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.05},
            dt);
        check_kernels(dt);
        check_clip(dt);
    }
    return ng_test_finish("test_optim_gpu");
}
