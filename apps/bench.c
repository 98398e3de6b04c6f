/* `natgrad bench`: forward+backward time, images/s, activation and gradient-scratch memory and
 * the device's peak of a model at a batch size, on the CPU or the GPU, in fp32, bf16 or fp16,
 * with any checkpoint spec; with --step, a whole training step of a config (its optimizer chain
 * too, K-FAC's factors and inverses at their intervals) on one fixed batch, as `natgrad train`
 * runs it (apps/step.h) without the data loader. The arenas are sized by the memory plan (or
 * --arena-mib), so the peak is what the step needs. Prints a table; --json writes the figures:
 * the median step, and the mean, which is what steps with intervals cost on average. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/bench_layers.h"
#include "apps/clock.h"
#include "apps/commands.h"
#include "apps/memory_report.h"
#include "apps/metrics.h"
#include "apps/step.h"
#include "apps/train_config.h"
#include "core/backend.h"
#include "core/ops.h"
#include "core/rng.h"
#include "core/threads.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/models.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: natgrad bench --model ARCH|--config FILE [--batch N] [--device cpu|cuda] "
        "[--steps N]\n"
        "                     [--img N] [--checkpoint SPEC] [--precision fp32|bf16|fp16]\n"
        "                     [--arena-mib N] [--json FILE]\n"
        "       natgrad bench --config FILE --step [--set KEY=VALUE ...] [--batch N] [--steps N]\n"
        "                     [--device cpu|cuda] [--precision P] [--json FILE]\n"
        "       natgrad bench --model ARCH|--config FILE --per-layer [--precision fp16|bf16]\n"
        "                     [--batch N]"
        " [--img N] [--steps N] [--device cpu|cuda] [--json FILE]\n"
        "  --config F   the model of a train config (a run's config.yaml) instead of --model\n"
        "  --step       time the config's whole training step: forward, backward and its\n"
        "               optimizer chain (precision from the config unless --precision)\n"
        "  --set K=V    override a config key (with --config)\n"
        "  --per-layer  inference forward layer by layer, fp32 against the half type (default\n"
        "               fp16): time, speed-up, bytes moved, FLOPs, arithmetic intensity\n"
        "ARCH: %s\n"
        "SPEC: none, every K (segments of K blocks; all = every 1) or block indices 0,3,7\n",
        ng_arch_names());
}

static int bad(const char *opt, const char *val, const char *want) {
    fprintf(stderr, "natgrad: error: bench: %s %s: %s\n", opt, val ? val : "(missing)", want);
    usage(stderr);
    return 2;
}

int ng_cmd_bench(int argc, char **argv) {
    const char *arch = NULL, *json = NULL, *config = NULL;
    int64_t batch = 32, img = 0;
    int steps = 10;
    const char *ckpt = NULL;
    ng_dtype compute = NG_F32;
    long arena_mib = 0;
    int per_layer = 0, step_mode = 0, precision_given = 0, dev_given = 0;
    const char *sets[64];
    int nsets = 0;
    ng_device dev = ng_cuda_available() ? NG_CUDA : NG_CPU;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--per-layer")) {
            per_layer = 1;
            continue;
        } else if (!strcmp(a, "--step")) {
            step_mode = 1;
            continue;
        } else if (!strcmp(a, "--set")) {
            if (!v || !strchr(v, '=') || nsets == 64) return bad(a, v, "KEY=VALUE (at most 64)");
            sets[nsets++] = v;
        } else if (!strcmp(a, "--checkpoint")) {
            ng_ckpt_spec sp;
            char why[128];
            if (!v || !ng_ckpt_spec_parse(v, &sp, why, sizeof why))
                return bad(a, v, "none, every K, all, or block indices such as 0,3,7");
            ckpt = v;
        } else if (!strcmp(a, "--precision")) {
            if (!v || (strcmp(v, "fp32") && strcmp(v, "bf16") && strcmp(v, "fp16")))
                return bad(a, v, "fp32, bf16 or fp16");
            compute = !strcmp(v, "fp32") ? NG_F32 : !strcmp(v, "bf16") ? NG_BF16 : NG_F16;
            precision_given = 1;
        } else if (!strcmp(a, "--config")) {
            if (!v) return bad(a, v, "a train config file");
            config = v;
        } else if (!strcmp(a, "--model")) {
            if (!v) return bad(a, v, "an architecture name");
            arch = v;
        } else if (!strcmp(a, "--batch")) {
            if (!v || (batch = atoll(v)) <= 0 || batch > (1 << 30))
                return bad(a, v, "a batch size from 1 to 2^30");
        } else if (!strcmp(a, "--img")) {
            /* bounded so shape arithmetic (img^3 voxels, patches) stays far from overflow */
            if (!v || (img = atoll(v)) <= 0 || img > 65536)
                return bad(a, v, "an image side from 1 to 65536");
        } else if (!strcmp(a, "--steps")) {
            if (!v || (steps = atoi(v)) < 1 || steps > 1000) return bad(a, v, "1..1000 steps");
        } else if (!strcmp(a, "--arena-mib")) {
            if (!v || (arena_mib = atol(v)) <= 0 || arena_mib > (1L << 30))
                return bad(a, v, "a size in MiB from 1 to 2^30");
        } else if (!strcmp(a, "--device")) {
            if (!v || (strcmp(v, "cpu") && strcmp(v, "cuda"))) return bad(a, v, "cpu or cuda");
            dev = strcmp(v, "cpu") ? NG_CUDA : NG_CPU;
            dev_given = 1;
        } else if (!strcmp(a, "--json")) {
            if (!v) return bad(a, v, "a file name");
            json = v;
        } else {
            return bad(a, NULL, "unknown option");
        }
        i++;
    }
    ng_arch ar;
    ng_train_setup setup = {0};
    if ((step_mode || nsets) && !config)
        return bad(step_mode ? "--step" : "--set", NULL, "needs --config");
    if (step_mode && per_layer) return bad("--step", NULL, "not with --per-layer");
    if (config) { /* the model exactly as a run builds it: width, depth, input from its data */
        if (arch) return bad("--model", arch, "not with --config");
        ng_train_setup_load(&setup, config, sets, nsets);
        ar = setup.arch;
        arch = ar.arch;
        if (step_mode && !precision_given) compute = setup.compute;
        if (step_mode && !dev_given) dev = setup.device;
    } else {
        if (!arch) return bad("--model", NULL, "is required (or --config)");
        if (!ng_arch_defaults(arch, &ar)) return bad("--model", arch, "unknown architecture");
    }
    if (img) ar.img = img;
    if (per_layer) {
        if (ckpt || arena_mib)
            return bad(ckpt ? "--checkpoint" : "--arena-mib", NULL, "not with --per-layer");
        int status = ng_bench_per_layer(&ar, arch, batch, dev, compute == NG_F32 ? NG_F16 : compute,
                                        steps, json);
        if (config) ng_train_setup_free(&setup);
        return status;
    }
    char why[128], spec[256];
    if (ckpt) ng_ckpt_spec_parse(ckpt, &ar.checkpoint, why, sizeof why);
    ng_ckpt_spec_format(&ar.checkpoint, spec, sizeof spec);
    ng_model *m = ng_model_new(ng_arch_build(&ar));
    int64_t shape[5] = {batch};
    int nd = ng_arch_input_shape(&ar, shape + 1) + 1;
    ng_arena_plan plan = ng_plan_train_step(m->root, nd, shape, NG_F32, compute, dev, 0);
    if (step_mode) { /* the chain's arenas (a true Fisher keeps the forward for two backwards) */
        ng_mem_figures fig;
        setup.device = dev, setup.compute = compute;
        ng_mem_predict(&setup, &ar, batch, &fig);
        plan = fig.arenas;
    }
    size_t bytes = arena_mib ? (size_t)arena_mib << 20 : ng_mem_arena_capacity(plan.joint);
    ng_mem_reset_peak(dev);
    ng_model_build_mixed(m, dev, compute, 1, bytes, 0);
    ng_tensor x = ng_tensor_new(NG_F32, dev, nd, shape, "input");
    ng_rng_normal(&x, (ng_rng_key){.seed = 5, .stream = 1}, 0, 1);
    ng_tensor lh = ng_tensor_1d(NG_I32, NG_CPU, batch, "labels");
    for (int64_t i = 0; i < batch; i++) ((int32_t *)lh.data)[i] = (int32_t)(i % ar.classes);
    ng_tensor labels = ng_tensor_to(&lh, dev, "labels");
    ng_optimizer *opt = step_mode ? ng_optim_plan_build(&setup.optim, m, NULL) : NULL;
    char chain[256] = "none";
    if (opt) ng_optimizer_describe(opt, chain, sizeof chain);
    double *ms = malloc(sizeof(double) * (size_t)steps), mean = 0;
    for (int s = -1; s < steps; s++) { /* step -1 warms up (cuDNN algorithm search, caches) */
        ng_sync(dev);
        double t0 = ng_now();
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 1, (uint64_t)(s + 1));
        if (opt) { /* training's passes, then the chain's step (K-FAC's intervals from step 0) */
            ng_step_passes p = {.seed = 1, .step = s + 1, .scale = 1.0};
            ng_step_run_passes(m, opt, &ctx, &x, &labels, &p);
            ng_optimizer_step(opt, ng_schedule_lr(&setup.sched, s + 1));
            ng_model_refresh_compute(m);
        } else {
            ng_tensor y = ng_model_forward(m, &ctx, &x);
            ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dlogits");
            ng_softmax_xent(&y, &labels, 0.0, &dy, NULL);
            ng_model_backward(m, &ctx, &dy);
        }
        ng_sync(dev);
        if (s >= 0) ms[s] = (ng_now() - t0) * 1e3, mean += ms[s] / steps;
    }
    qsort(ms, (size_t)steps, sizeof(double), cmp_double);
    double med = ms[steps / 2];
    double act = m->acts.peak / 1048576.0, scratch = m->grads.peak / 1048576.0;
    size_t peak = ng_mem_stats_get(dev).peak;
    printf(
        "natgrad bench: %s, batch %lld, %s, %s, checkpointing %s, optimizer %s, %d steps, %d CPU "
        "threads\n",
        arch, (long long)batch, ng_device_name(dev), ng_dtype_name(compute), spec, chain, steps,
        ng_threads());
    printf("%-24s %6s %10s %10s %10s %12s %12s %12s %12s\n", "model", "batch", "ms/step", "mean ms",
           "img/s", "act MiB", "scratch MiB", "peak MiB", "params");
    printf("%-24s %6lld %10.2f %10.2f %10.1f %12.1f %12.1f %12.1f %12lld\n", arch, (long long)batch,
           med, mean, batch / (med * 1e-3), act, scratch, peak / 1048576.0, (long long)m->count);
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) return bad("--json", json, "cannot be written");
        fprintf(f,
                "{\"model\": \"%s\", \"batch\": %lld, \"device\": \"%s\", \"dtype\": \"%s\", "
                "\"checkpoint\": \"%s\", \"optimizer\": \"%s\", \"steps\": %d, "
                "\"ms_per_step\": %s, \"mean_ms_per_step\": %s, \"images_per_s\": %s, "
                "\"activation_bytes\": %zu, \"scratch_bytes\": %zu, \"peak_bytes\": %zu, "
                "\"params\": %lld}\n",
                arch, (long long)batch, ng_device_name(dev), ng_dtype_name(compute), spec, chain,
                steps, ng_json_num("%.4f", med).s, ng_json_num("%.4f", mean).s,
                ng_json_num("%.2f", batch / (med * 1e-3)).s, m->acts.peak, m->grads.peak, peak,
                (long long)m->count);
        fclose(f);
    }
    free(ms);
    if (opt) ng_optimizer_free(opt);
    ng_tensor_free(&x), ng_tensor_free(&lh), ng_tensor_free(&labels);
    ng_model_free(m);
    if (config) ng_train_setup_free(&setup);
    return 0;
}
