/* The memory plan against real passes: for every model of the zoo, plain and checkpointed, in f32,
 * f16 and bf16, with and without dropout, the planned arena peaks of a training step (and of the
 * true Fisher's two backwards over one forward, and of an evaluation forward) equal the
 * high-water marks the arenas reach when the step runs: the plan replays the same traffic. bf16
 * runs twice on the CPU: on oneDNN's native bf16 convolutions, pools and Linear matmuls (where the
 * CPU has AVX512_BF16) and with them forced onto the f32 copies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "apps/memory_report.h"
#include "core/backend.h"
#include "core/linalg.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/layernorm.h"
#include "nn/models.h"
#include "nn/conv_kernels.h"
#include "nn/linear.h"
#include "nn/plan.h"
#include "nn/pool.h"
#include "nn/pool_onednn.h"
#include "data/fractal.h"
#include "optim/plan.h"
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

/* Channel sums on CUDA (batch norm's statistics, global pooling's plane sums) take two double
 * partials per block from the CUDA workspace: blocks of at least 4096 elements of a row, about
 * 8192 blocks in all (one per row beyond 8192 rows). */
static size_t want_sums(int64_t A, int64_t R, int64_t S) {
    int64_t chunks = (A * S + 4095) / 4096, most = 8192 / R > 1 ? 8192 / R : 1;
    if (chunks > most) chunks = most;
    if (chunks < 1) chunks = 1;
    return 16 * (size_t)(R * chunks);
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
        size_t sums = want_sums(1, o, (int64_t)1300 * 1300 * 1300); /* the bias gradient's */
        NG_TEST(bg.workspace == sums && bg.grads >= dy + ((size_t)48 << 20) &&
                    bg.grads <= dy + ((size_t)65 << 20),
                "conv %s of a 1300^3 sample on CUDA: workspace %zu (want %zu, the bias sums "
                "only: im2col), gradient arena %zu (want dy plus 48-64 MiB of columns)",
                ng_dtype_name(dt), bg.workspace, sums, bg.grads);
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

static size_t up256(size_t x) {
    return (x + 255) / 256 * 256;
}

/* What the CUDA eigh of b matrices n x n asks of the workspace without a GPU to ask cuSOLVER,
 * written out from the documented rule (core/linalg.h): b copies, LAPACK's syevd workspace (lwork
 * 1 + 6n + 2n^2 elements, liwork 3 + 5n ints; b of them for batched Jacobi, b > 1 and n <= 32),
 * b infos, b flags, each piece rounded to 256 bytes. */
static size_t want_eigh(size_t es, int64_t b, int64_t n) {
    size_t solver = es * (size_t)(1 + 6 * n + 2 * n * n) + 4 * (size_t)(3 + 5 * n);
    if (b > 1 && n <= 32) solver *= (size_t)b;
    return up256(es * (size_t)(b * n * n)) + up256(solver) + 2 * up256(4 * (size_t)b);
}

/* The Cholesky inverse of one n x n matrix: potri's n^2 elements (potrf needs none), an info and a
 * flag. */
static size_t want_chol_inv(size_t es, int64_t n) {
    return up256(es * (size_t)(n * n)) + 2 * up256(4);
}

/* A reduction's partial sums: a double per 256 elements (1 to 1024 of them) and the result. */
static size_t want_reduce(int64_t numel) {
    int64_t nb = (numel + 255) / 256;
    if (nb > 1024) nb = 1024;
    return (size_t)(nb + 1) * 8;
}

static size_t max2(size_t a, size_t b) {
    return a > b ? a : b;
}

/* K-FAC's share of the CUDA workspace planned without a GPU: the eigendecompositions (factors of
 * one side up to 32 batched) or the damped factors' Cholesky inverses, LAPACK's estimate, marked
 * as one; nothing on the CPU. */
static void kfac_workspace_planned(void) {
    if (ng_cuda_available()) {
        printf("# kfac_workspace_planned: a GPU is here; test_linalg_gpu checks cuSOLVER's\n");
        return;
    }
    uint64_t seed = ng_test_seed();
    /* layer 1: [N, f1] -> 16 (A of side f1 + 1 > 32, G 16); layer 2: 15 -> o2 (A 16, G o2) */
    int64_t f1 = 40 + (int64_t)(seed % 60), o2 = 5 + (int64_t)(seed / 60 % 8), N = 7;
    ng_layer *l1 = ng_linear("fc1", f1, 16, 1), *l2 = ng_linear("fc2", 15, o2, 1);
    ng_layer *pair = ng_linear("pair", 15, 16, 1); /* alone: A and G both of side 16 */
    for (int d = 0; d < 2; d++)
        for (int inv = 0; inv < 2; inv++) {
            ng_dtype dt = d ? NG_F64 : NG_F32;
            size_t es = ng_dtype_size(dt);
            ng_kfac_config c = ng_kfac_default_config();
            c.inverse = inv ? NG_KFAC_CHOLESKY : NG_KFAC_EIGEN;
            ng_kfac_planner *p = ng_kfac_planner_new(&c, dt, NG_CUDA);
            ng_kfac_planner_capture(p, l1, 2, (int64_t[]){N, f1}, dt);
            ng_kfac_planner_capture(p, l2, 2, (int64_t[]){N, 15}, dt);
            int est = 0;
            size_t got = ng_kfac_planner_cuda_workspace(p, &est, NULL);
            size_t want = want_reduce((f1 + 1) * (f1 + 1));
            if (inv) {
                int64_t sides[4] = {f1 + 1, 16, 16, o2};
                for (int k = 0; k < 4; k++) want = max2(want, want_chol_inv(es, sides[k]));
            } else {
                want = max2(want, want_eigh(es, 2, 16)); /* the two of side 16 in one call */
                want = max2(want, max2(want_eigh(es, 1, f1 + 1), want_eigh(es, 1, o2)));
            }
            NG_TEST(got == want && est == 1,
                    "kfac %s %s, layers %lld->16, 15->%lld, on CUDA without a GPU: workspace %zu, "
                    "estimated %d; want %zu, estimated 1",
                    inv ? "cholesky" : "eigen", ng_dtype_name(dt), (long long)f1, (long long)o2,
                    got, est, want);
            ng_kfac_planner_free(p);

            /* one layer whose factors are both 16 wide: one batched call of 2 (eigen) */
            p = ng_kfac_planner_new(&c, dt, NG_CUDA);
            ng_kfac_planner_capture(p, pair, 2, (int64_t[]){N, 15}, dt);
            got = ng_kfac_planner_cuda_workspace(p, &est, NULL);
            want = max2(want_reduce(256), inv ? want_chol_inv(es, 16) : want_eigh(es, 2, 16));
            NG_TEST(got == want, "kfac %s %s, factors 16 and 16: workspace %zu, want %zu",
                    inv ? "cholesky" : "eigen", ng_dtype_name(dt), got, want);
            ng_kfac_planner_free(p);

            p = ng_kfac_planner_new(&c, dt, NG_CPU);
            ng_kfac_planner_capture(p, l1, 2, (int64_t[]){N, f1}, dt);
            est = 0;
            got = ng_kfac_planner_cuda_workspace(p, &est, NULL);
            NG_TEST(got == 0 && est == 0, "kfac on the CPU: CUDA workspace %zu, estimated %d", got,
                    est);
            ng_kfac_planner_free(p);
        }
    /* the batched rule itself: b > 1 and n <= 32 only */
    int64_t n = 2 + (int64_t)(seed % 31), b = 2 + (int64_t)(seed / 31 % 5);
    int est = 0;
    size_t got = ng_linalg_cuda_workspace(NG_LINALG_EIGH, NG_F32, b, n, &est);
    NG_TEST(got == want_eigh(4, b, n) && est == 1, "eigh %lld x %lld^2: %zu, want %zu",
            (long long)b, (long long)n, got, want_eigh(4, b, n));
    got = ng_linalg_cuda_workspace(NG_LINALG_EIGH, NG_F32, b, 32, NULL); /* the last batched */
    NG_TEST(got == want_eigh(4, b, 32), "eigh %lld x 32^2: %zu, want %zu", (long long)b, got,
            want_eigh(4, b, 32));
    got = ng_linalg_cuda_workspace(NG_LINALG_EIGH, NG_F32, b, n + 33, NULL);
    NG_TEST(got == want_eigh(4, b, n + 33), "eigh %lld x %lld^2 (one by one): %zu, want %zu",
            (long long)b, (long long)(n + 33), got, want_eigh(4, b, n + 33));
    got = ng_linalg_cuda_workspace(NG_LINALG_CHOLESKY, NG_F64, b, n, NULL);
    NG_TEST(got == 2 * up256(4 * (size_t)b), "cholesky %lld x %lld^2: %zu, want infos and flags",
            (long long)b, (long long)n, got);
    ng_layer_free(l1), ng_layer_free(l2), ng_layer_free(pair);
}

/* ng_mem_predict of a config (YAML text plus --set overrides) planned for the GPU, as
 * `natgrad plan --device cuda` does. */
static void predict(const char *yaml, const char *const *sets, int nsets, ng_mem_figures *f,
                    ng_train_setup *s) {
    char path[] = "/tmp/test_plan_XXXXXX";
    int fd = mkstemp(path);
    NG_TEST(fd >= 0, "cannot make a temporary config");
    FILE *out = fdopen(fd, "w");
    fputs(yaml, out);
    fclose(out);
    ng_train_setup_load(s, path, sets, nsets);
    unlink(path);
    s->device = NG_CUDA;
    ng_mem_predict(s, &s->arch, s->batch, f);
}

/* The K-FAC planner's share for the setup, replayed as ng_mem_predict gathers it. */
static size_t kfac_share(const ng_train_setup *s, int *est) {
    const ng_kfac_config *kc = NULL;
    for (int i = 0; i < s->optim.n; i++)
        if (!strcmp(s->optim.kind[i]->name, "kfac")) kc = s->optim.settings[i];
    if (!kc) return 0;
    ng_model *m = ng_model_new(ng_arch_build(&s->arch));
    int64_t in[NG_MAX_DIMS] = {s->batch};
    int nd = ng_arch_input_shape(&s->arch, in + 1) + 1;
    ng_kfac_planner *kp = ng_kfac_planner_new(kc, NG_F32, NG_CUDA);
    ng_plan_train_step_observed(m->root, nd, in, NG_F32, NG_F32, NG_CUDA, 0,
                                ng_kfac_planner_capture, kp);
    size_t ws = ng_kfac_planner_cuda_workspace(kp, est, NULL);
    ng_kfac_planner_free(kp);
    ng_model_free(m);
    return ws;
}

/* The plan's CUDA workspace is the largest of its users' requests (one buffer grown to the
 * largest): FractalDB's device batches (painted: 8 bytes a pixel), left out when augmentation
 * keeps the batches on the host; K-FAC's inverse updates; the loss and the reductions. */
static void workspace_is_the_largest_user(void) {
    if (ng_cuda_available()) {
        printf("# workspace_is_the_largest_user: a GPU is here; plan.sh checks measured runs\n");
        return;
    }
    int64_t side = 16 + (int64_t)(ng_test_seed() % 4) * 4,
            batch = 8 + (int64_t)(ng_test_seed() % 9);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "seed: 5\n"
             "model: {arch: mlp, width: 8, depth: 1}\n"
             "data:\n"
             "  name: fractal\n"
             "  fractal: {categories: 2, instances: 20, test_instances: 2, side: %lld, points: "
             "300, patch: 3}\n"
             "train: {batch_size: %lld, steps: 1}\n"
             "optimizer: {name: sgd, lr: 0.05}\n",
             (long long)side, (long long)batch);
    struct {
        const char *sets[3];
        int nsets, painted, augment, kfac;
    } cases[] = {
        {{NULL}, 0, 1, 0, 0},
        {{"data.fractal.patch=1"}, 1, 0, 0, 0},
        {{"data.augment.hflip=true"}, 1, 1, 1, 0},
        {{"kfac.enabled=true"}, 1, 1, 0, 1},
        {{"kfac.enabled=true", "kfac.inverse=cholesky", "kfac.damping_mode=factored"}, 3, 1, 0, 1},
    };
    for (int k = 0; k < 5; k++) {
        ng_train_setup s;
        ng_mem_figures f;
        predict(yaml, cases[k].sets, cases[k].nsets, &f, &s);
        ng_model *m = ng_model_new(ng_arch_build(&s.arch));
        size_t frac =
            cases[k].augment ? 0 : ng_fractal_cuda_workspace(batch, side, cases[k].painted);
        int est = 0;
        size_t kfac = kfac_share(&s, &est);
        size_t small = max2(ng_xent_cuda_workspace(batch, NULL, NULL), want_reduce(m->numel));
        size_t want = max2(max2(frac, kfac), small);
        NG_TEST(f.arenas.workspace == want && f.arenas.workspace_estimated == cases[k].kfac &&
                    !f.arenas.workspace_bounded,
                "case %d (%s %s): CUDA workspace %zu, estimated %d; want %zu = the largest of "
                "fractal %zu, K-FAC %zu, loss and reductions %zu",
                k, cases[k].nsets ? cases[k].sets[0] : "painted",
                cases[k].nsets > 1 ? cases[k].sets[1] : "", f.arenas.workspace,
                f.arenas.workspace_estimated, want, frac, kfac, small);
        if (cases[k].painted && !cases[k].augment) /* the last painter of every pixel */
            NG_TEST(frac >= 8 * (size_t)(side * side * batch) &&
                        frac < 8 * (size_t)(side * side * batch) + 1024 * (size_t)batch + 256,
                    "painted fractals %lld x %lld^2: %zu bytes", (long long)batch, (long long)side,
                    frac);
        if (cases[k].kfac) /* at least the first layer's A: side^2 inputs and the bias */
            NG_TEST(kfac >= want_eigh(4, 1, side * side + 1) || cases[k].nsets == 3,
                    "K-FAC share %zu, below the first layer's eigh %zu", kfac,
                    want_eigh(4, 1, side * side + 1));
        if (!cases[k].kfac && !cases[k].augment)
            NG_TEST(frac > small,
                    "case %d: the fractal batch (%zu) should be the largest user "
                    "(%zu)",
                    k, frac, small);
        ng_mem_figures cpu;
        s.device = NG_CPU;
        ng_mem_predict(&s, &s.arch, s.batch, &cpu);
        NG_TEST(cpu.arenas.workspace == 0, "case %d on the CPU: CUDA workspace %zu", k,
                cpu.arenas.workspace);
        ng_model_free(m);
        ng_train_setup_free(&s);
    }
}

static void channel_sums_planned(void) {
    uint64_t seed = ng_test_seed();
    int64_t C = 3 + (int64_t)(seed % 60), N = 2 + (int64_t)(seed / 60 % 30),
            side = 8 + (int64_t)(seed % 41);
    int64_t in[4] = {N, C, side, side};
    ng_layer *bn = ng_batchnorm("bn", 2, C, 0.1, 1e-5);
    ng_arena_plan tr = ng_plan_train_step(bn, 4, in, NG_F32, NG_F32, NG_CUDA, 0);
    ng_arena_plan ev = ng_plan_eval(bn, 4, in, NG_F32, NG_F32, NG_CUDA);
    ng_arena_plan cpu = ng_plan_train_step(bn, 4, in, NG_F32, NG_F32, NG_CPU, 0);
    size_t want = want_sums(N, C, side * side);
    NG_TEST(
        tr.workspace == want && ev.workspace == 0 && cpu.workspace == 0,
        "batch norm [%lld, %lld, %lld^2] on CUDA: step workspace %zu (want %zu), evaluation %zu "
        "(want 0: running statistics), CPU %zu",
        (long long)N, (long long)C, (long long)side, tr.workspace, want, ev.workspace,
        cpu.workspace);
    ng_layer_free(bn);
    ng_layer *gp = ng_global_avgpool("gap");
    int64_t wide[4] = {N * 300, C, side, side}; /* beyond 8192 planes: one block each */
    ev = ng_plan_eval(gp, 4, wide, NG_F32, NG_F32, NG_CUDA);
    want = want_sums(1, N * 300 * C, side * side);
    NG_TEST(ev.workspace == want,
            "global pooling of %lld planes of %lld^2 on CUDA: workspace %zu, want %zu",
            (long long)(N * 300 * C), (long long)side, ev.workspace, want);
    ng_layer_free(gp);
}

int main(void) {
    recompute_holds_four();
    channel_sums_planned();
    kfac_workspace_planned();
    workspace_is_the_largest_user();
    layernorm_workspace_planned();
    cudnn_workspace_planned();
    static const ng_dtype dts[] = {NG_F32, NG_F16, NG_BF16, NG_BF16};
    for (int d = 0; d < 4; d++) {
        ng_dtype dt = dts[d];
        ng_conv_use_native_bf16(d != 3); /* the last: bf16 on the f32 copies */
        ng_pool_use_native_bf16(d != 3);
        ng_linear_use_onednn(d != 3);
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
