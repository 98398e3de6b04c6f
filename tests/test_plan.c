/* The memory plan against real passes: for every model of the zoo, plain and checkpointed, in f32,
 * f16 and bf16, with and without dropout, the planned arena peaks of a training step (and of the
 * true Fisher's two backwards over one forward, and of an evaluation forward) equal the
 * high-water marks the arenas reach when the step runs: the plan replays the same traffic. bf16
 * runs twice on the CPU: on oneDNN's native bf16 convolutions, pools and Linear matmuls (where the
 * CPU has AVX512_BF16) and with them forced onto the f32 copies. */
#include <stdlib.h>
#include <string.h>

#include "core/backend.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/conv.h"
#include "nn/layernorm.h"
#include "nn/models.h"
#include "nn/conv_kernels.h"
#include "nn/linear.h"
#include "nn/plan.h"
#include "nn/pool_onednn.h"
#include "testing.h"

static void check(const char *what, ng_arch a, const char *spec, ng_dtype compute, int batch,
                  int true_fisher) {
    char why[128];
    NG_TEST(ng_ckpt_spec_parse(spec, &a.checkpoint, why, sizeof why), "spec %s: %s", spec, why);
    int64_t in[NG_MAX_DIMS] = {batch};
    int nd = ng_arch_input_shape(&a, in + 1) + 1;

    ng_layer *shadow = ng_arch_build(&a); /* planned on a tree that is never built */
    ng_arena_plan p = ng_plan_train_step(shadow, nd, in, NG_F32, compute, NG_CPU, true_fisher);
    ng_arena_plan e = ng_plan_eval(shadow, nd, in, NG_F32, compute, NG_CPU);
    ng_layer_free(shadow);

    ng_model *m = ng_model_new(ng_arch_build(&a));
    ng_model_build_mixed(m, NG_CPU, compute, ng_test_seed(), 512 << 20, 256 << 20);
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, nd, in, "input");
    ng_rng_normal(&x, (ng_rng_key){.seed = 3, .stream = 1}, 0, 1);
    ng_tensor labels = ng_tensor_1d(NG_I32, NG_CPU, batch, "labels");
    for (int i = 0; i < batch; i++) ((int32_t *)labels.data)[i] = (int32_t)(i % a.classes);

    ng_ctx ctx = ng_model_ctx(m, 1, 5, 1);
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
    if (true_fisher) {
        ng_tensor sampled = ng_arena_tensor(&m->grads, NG_I32, 1, (int64_t[]){batch}, "sampled");
        (void)sampled;
        ng_softmax_xent(&y, &labels, 0, &dy, NULL);
        ctx.retain = 1;
        ng_model_backward(m, &ctx, &dy);
        ctx.retain = 0;
    }
    ng_softmax_xent(&y, &labels, 0, &dy, NULL);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(p.acts == m->acts.peak && p.grads == m->grads.peak && p.joint == m->arena_peak,
            "%s, checkpoint %s, %s%s: planned activations %zu, scratch %zu, both %zu bytes, "
            "measured %zu, %zu, %zu",
            what, spec, ng_dtype_name(compute), true_fisher ? ", true Fisher" : "", p.acts, p.grads,
            p.joint, m->acts.peak, m->grads.peak, m->arena_peak);
    NG_TEST(p.joint <= p.acts + p.grads && p.joint >= p.acts && p.joint >= p.grads,
            "%s: the shared buffer %zu is not between the larger arena and their sum", what,
            p.joint);

    ng_model_reset_arenas(m);
    m->acts.peak = m->grads.peak = m->arena_peak = 0;
    ng_ctx ev = ng_model_ctx(m, 0, 5, 1);
    ng_model_forward(m, &ev, &x);
    NG_TEST(e.acts == m->acts.peak && e.grads == m->grads.peak && e.joint == m->arena_peak,
            "%s, checkpoint %s, %s: planned evaluation %zu and %zu bytes, measured %zu and %zu",
            what, spec, ng_dtype_name(compute), e.acts, e.grads, m->acts.peak, m->grads.peak);
    ng_tensor_free(&x);
    ng_tensor_free(&labels);
    ng_model_free(m);
}

static ng_arch arch(const char *name) {
    ng_arch a;
    NG_TEST(ng_arch_defaults(name, &a), "no architecture %s", name);
    return a;
}

/* What recompute comes to on the GPU, where cuDNN's workspace lies outside the arenas: a 3D-CNN
 * step holds four block activations at any depth (a block's input and its conv's output, the
 * gradients w.r.t. a block's output and input) besides the model's input and small tensors.
 * Fused batch norm + ReLU keeps no output in the replayed block and writes over its conv's output
 * in the recomputation chain; before, a step held five. */
static void recompute_holds_four(void) {
    for (int depth = 6; depth <= 12; depth += 6) {
        ng_arch a = arch("cnn3d");
        a.img = 24, a.width = 16, a.depth = depth;
        char why[128];
        NG_TEST(ng_ckpt_spec_parse("recompute", &a.checkpoint, why, sizeof why), "%s", why);
        int64_t in[NG_MAX_DIMS] = {1};
        int nd = ng_arch_input_shape(&a, in + 1) + 1;
        ng_layer *root = ng_arch_build(&a);
        ng_arena_plan p = ng_plan_train_step(root, nd, in, NG_F32, NG_F16, NG_CUDA, 0);
        ng_layer_free(root);
        size_t vox = 24 * 24 * 24, act = vox * 16 * 2, input = vox * 2;
        NG_TEST(p.joint >= 4 * act && p.joint <= 4 * act + input + act / 8,
                "cnn3d depth %d recomputed, f16 on the GPU: step holds %zu bytes, %.3f block "
                "activations (%zu bytes each)",
                depth, p.joint, (double)p.joint / (double)act, act);
    }
}

/* The CUDA plan of a convolution: cuDNN's workspace outside the arenas (the cap the algorithm
 * picker allows where no GPU answers, plus the half weight gradient of a half backward), and the
 * im2col path's columns in the gradient arena where one sample is beyond cuDNN's int sizes. */
static void cudnn_workspace_planned(void) {
    if (ng_cuda_available()) {
        printf("# cudnn_workspace_planned: a GPU is here; test_conv_gpu checks cuDNN's answer\n");
        return;
    }
    int64_t o = 2 + (int64_t)(ng_test_seed() % 7), c = 1 + (int64_t)(ng_test_seed() / 7 % 3);
    for (ng_dtype dt = NG_F32; dt <= NG_BF16; dt++) {
        if (dt != NG_F32 && dt != NG_F16 && dt != NG_BF16) continue;
        ng_layer *l =
            ng_conv("conv", 3, c, o, (int64_t[]){3, 3, 3}, NULL, (int64_t[]){1, 1, 1}, NULL, 1);
        int64_t small[5] = {2, c, 9, 10, 11};
        ng_arena_plan fw = ng_plan_eval(l, 5, small, NG_F32, dt, NG_CUDA);
        ng_arena_plan tr = ng_plan_train_step(l, 5, small, NG_F32, dt, NG_CUDA, 0);
        size_t cap = (size_t)1 << 30, dw = (size_t)(o * c * 27) * ng_dtype_size(dt);
        size_t want = dt == NG_F32 ? cap : (cap + 255) / 256 * 256 + dw;
        NG_TEST(fw.workspace == cap && fw.workspace_bounded,
                "conv %s forward on cuDNN without a GPU: workspace %zu, bounded %d; want the cap",
                ng_dtype_name(dt), fw.workspace, fw.workspace_bounded);
        NG_TEST(tr.workspace == want && tr.workspace_bounded,
                "conv %s step on cuDNN without a GPU: workspace %zu, want %zu (cap + half dw)",
                ng_dtype_name(dt), tr.workspace, want);
        /* one sample of 1300^3 x c elements is beyond int: the im2col path, in 64 MiB chunks */
        int64_t big[5] = {1, c, 1300, 1300, 1300};
        ng_arena_plan bg = ng_plan_train_step(l, 5, big, NG_F32, dt, NG_CUDA, 0);
        size_t act = (size_t)1300 * 1300 * 1300 * ng_dtype_size(dt);
        size_t dy = act * (size_t)o;
        NG_TEST(bg.workspace == 0 && bg.grads >= dy + ((size_t)48 << 20) &&
                    bg.grads <= dy + ((size_t)65 << 20),
                "conv %s of a 1300^3 sample on CUDA: workspace %zu (want 0: im2col), gradient "
                "arena %zu (want dy plus 48-64 MiB of columns)",
                ng_dtype_name(dt), bg.workspace, bg.grads);
        ng_layer_free(l);
    }
}

/* LayerNorm's CUDA backward takes its dw/db partial sums from the CUDA workspace: the plan counts
 * chunks x 2 x dim accumulators, chunks of at least 16 rows and at most 512 of them. */
static void layernorm_workspace_planned(void) {
    int64_t dim = 8 + (int64_t)(ng_test_seed() % 57), rows[3] = {5, 400, 100000};
    for (int k = 0; k < 3; k++)
        for (int d = 0; d < 2; d++) {
            ng_dtype dt = d ? NG_F64 : NG_F32;
            ng_layer *l = ng_layernorm("ln", dim, 1e-5);
            int64_t in[2] = {rows[k], dim};
            ng_arena_plan tr = ng_plan_train_step(l, 2, in, dt, dt, NG_CUDA, 0);
            ng_arena_plan cpu = ng_plan_train_step(l, 2, in, dt, dt, NG_CPU, 0);
            int64_t per = rows[k] / 512 + (rows[k] % 512 != 0), chunks;
            if (per < 16) per = 16;
            chunks = (rows[k] + per - 1) / per;
            size_t want = (size_t)(chunks * 2 * dim) * ng_dtype_size(dt);
            NG_TEST(
                tr.workspace == want && cpu.workspace == 0,
                "layernorm [%lld, %lld] %s: CUDA workspace %zu planned, want %zu (%lld chunks); "
                "CPU %zu, want 0",
                (long long)rows[k], (long long)dim, ng_dtype_name(dt), tr.workspace, want,
                (long long)chunks, cpu.workspace);
            ng_layer_free(l);
        }
}

int main(void) {
    recompute_holds_four();
    layernorm_workspace_planned();
    cudnn_workspace_planned();
    static const ng_dtype dts[] = {NG_F32, NG_F16, NG_BF16, NG_BF16};
    for (int d = 0; d < 4; d++) {
        ng_dtype dt = dts[d];
        ng_conv_use_native_bf16(d != 3); /* the last: bf16 on the f32 copies */
        ng_pool_use_native_bf16(d != 3);
        ng_linear_use_native_bf16(d != 3);
        ng_arch a = arch("mlp");
        a.width = 64, a.dropout = 0.2;
        check("mlp with dropout", a, "none", dt, 5, 0);
        check("mlp with dropout", a, "none", dt, 5, 1);
        a = arch("lenet");
        check("lenet", a, "none", dt, 3, 0);
        a = arch("nin");
        a.img = 16, a.width = 8;
        check("nin", a, "none", dt, 2, 0);
        check("nin", a, "every 1", dt, 2, 0);
        check("nin", a, "recompute", dt, 2, 0);
        a = arch("vgg");
        a.img = 16, a.width = 4, a.depth = 3;
        const char *specs[] = {"none", "every 1", "every 2", "1", "0,2", "recompute"};
        for (int k = 0; k < 6; k++) check("vgg", a, specs[k], dt, 2, k == 1);
        a = arch("cnn3d");
        a.img = 10, a.width = 4, a.depth = 4;
        for (int k = 0; k < 6; k++) check("cnn3d", a, specs[k], dt, 2, k == 2);
        a = arch("vit");
        a.img = 16, a.patch = 4, a.width = 32, a.heads = 2, a.depth = 4, a.dropout = 0.1;
        for (int k = 0; k < 6; k++) check("vit with dropout", a, specs[k], dt, 3, k == 1 || k == 5);
    }
    /* a 3D-CNN big enough that a sample's im2col columns exceed the 64 MiB scratch cap, so the
     * convolutions work in position chunks */
    ng_arch big = arch("cnn3d");
    big.img = 72, big.width = 8, big.depth = 2;
    check("cnn3d 72^3", big, "every 1", NG_F32, 1, 0);
    return ng_test_finish("test_plan");
}
