/* `natgrad bench --per-layer`: the inference forward of a model taken apart, layer by layer, in
 * fp32 and in a half type (fp16 by default), to answer which layers gain from half-precision
 * storage and why: per layer the time in both, the speed-up, the bytes the layer must move
 * (input, output and weights at the storage width), its FLOPs (ng_layer_flops) and arithmetic
 * intensity. A "layer" is every child of the model's sequences, recursively; other containers
 * (a transformer block's residual branches, attention) are timed whole.
 *
 * On a CPU without fp16 arithmetic the half types are storage only: every op widens them to f32
 * (F16C/AVX2 where the CPU has them, core/half_vec.h), computes in f32 and rounds back, so a
 * layer gains when moving half the bytes saves more than the conversions cost. Where the CPU has
 * fp16 arithmetic (Arm FP16, AVX512-FP16: core/hgemm.h) the fp16 Linear and conv layers compute
 * in it, twice the lanes of f32; the header names which ran. */
#include "apps/bench_layers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/clock.h"
#include "apps/memory_report.h"
#include "apps/metrics.h"
#include "core/backend.h"
#include "core/half_vec.h"
#include "core/hgemm.h"
#include "core/ops.h"
#include "core/rng.h"
#include "nn/model.h"
#include "nn/plan.h"

#define MAX_ROWS 512

typedef struct {
    ng_layer *l;   /* valid while the model it was collected from lives */
    char name[80]; /* the layer's, for the report */
    const char *kind;
    int nd, on;
    int64_t in[NG_MAX_DIMS], out[NG_MAX_DIMS];
    int64_t flops, weights; /* weights: parameter elements of the layer and its children */
    double ms[2];           /* median forward time in fp32 and in the half type */
} row;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int64_t numel(int nd, const int64_t *s) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= s[i];
    return n;
}

static int64_t weights_of(const ng_layer *l) {
    int64_t n = 0;
    for (int i = 0; i < l->nparams; i++) n += l->params[i].value.numel;
    for (int i = 0; i < l->nchildren; i++) n += weights_of(l->children[i]);
    return n;
}

/* The leaves of the sequence tree with their input shapes, following the shapes down. */
static void collect(ng_layer *l, int nd, const int64_t *in, row *rows, int *n) {
    if (!strcmp(l->ops->kind, "sequence")) {
        int64_t cur[NG_MAX_DIMS];
        int cn = nd;
        memcpy(cur, in, sizeof(int64_t) * (size_t)nd);
        for (int i = 0; i < l->nchildren; i++) {
            collect(l->children[i], cn, cur, rows, n);
            int64_t next[NG_MAX_DIMS];
            int nn;
            ng_layer_out_shape(l->children[i], cn, cur, &nn, next);
            cn = nn;
            memcpy(cur, next, sizeof(int64_t) * (size_t)nn);
        }
        return;
    }
    if (*n == MAX_ROWS) ng_fail("bench --per-layer: more than %d layers", MAX_ROWS);
    row *r = &rows[(*n)++];
    r->l = l, r->nd = nd, r->kind = l->ops->kind;
    snprintf(r->name, sizeof r->name, "%s", l->name[0] ? l->name : "(root)");
    memcpy(r->in, in, sizeof(int64_t) * (size_t)nd);
    ng_layer_out_shape(l, nd, in, &r->on, r->out);
    r->flops = ng_layer_flops(l, nd, in);
    r->weights = weights_of(l);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* Times every row's forward (eval mode) on its own input, the input being the previous rows'
 * outputs, and the whole model's forward; returns the latter's median in ms. */
static double time_rows(const ng_arch *ar, ng_dtype compute, ng_device dev, int nd,
                        const int64_t *shape, row *rows, int nrows, int k, int reps) {
    ng_model *m = ng_model_new(ng_arch_build(ar));
    /* The walk keeps every layer's output, as a training forward does, plus a copy of the input
     * and each layer's scratch on top in eval mode (whose kernels may differ from training's):
     * twice the training step's plan is room enough, and memory is not what this measures. */
    ng_arena_plan plan = ng_plan_train_step(m->root, nd, shape, NG_F32, compute, dev, 0);
    ng_model_build_mixed(m, dev, compute, 1, 2 * ng_mem_arena_capacity(plan.joint), 0);
    ng_tensor x = ng_tensor_new(NG_F32, dev, nd, shape, "input");
    ng_rng_normal(&x, (ng_rng_key){.seed = 5, .stream = 1}, 0, 1);
    double *t = malloc(sizeof(double) * (size_t)reps), whole;
    for (int s = -1; s < reps; s++) { /* -1 warms the caches up */
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 0, 1, 0);
        ng_sync(dev);
        double t0 = ng_now();
        ng_model_forward(m, &ctx, &x);
        ng_sync(dev);
        if (s >= 0) t[s] = (ng_now() - t0) * 1e3;
    }
    whole = median(t, reps);
    /* Layer by layer: the model's own layers (the rows were collected on another instance of the
     * same architecture: same order, same shapes). */
    row *mine = calloc((size_t)nrows, sizeof *mine);
    int n = 0;
    collect(m->root, nd, shape, mine, &n);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 0, 1, 0);
    ng_tensor cur = ng_arena_tensor(ctx.acts, compute, nd, shape, "input");
    ng_cast(&cur, &x);
    for (int i = 0; i < n; i++) {
        ng_layer *l = mine[i].l;
        ng_tensor y = {0};
        for (int s = -1; s < reps; s++) {
            ng_arena_mark mk = ng_arena_get_mark(ctx.acts);
            ctx.inplace = 0; /* the input is the next repetition's too */
            ng_sync(dev);
            double t0 = ng_now();
            l->ops->forward(l, &ctx, &cur);
            ng_sync(dev);
            if (s >= 0) t[s] = (ng_now() - t0) * 1e3;
            ng_arena_release(ctx.acts, mk);
        }
        rows[i].ms[k] = median(t, reps);
        ctx.inplace = 0;
        y = l->ops->forward(l, &ctx, &cur); /* the next layer's input, kept */
        cur = y;
    }
    free(mine), free(t);
    ng_tensor_free(&x);
    ng_model_free(m);
    return whole;
}

int ng_bench_per_layer(const ng_arch *ar, const char *arch, int64_t batch, ng_device dev,
                       ng_dtype half, int reps, const char *json) {
    int64_t shape[NG_MAX_DIMS] = {batch};
    int nd = ng_arch_input_shape(ar, shape + 1) + 1;
    ng_layer *root = ng_arch_build(ar);
    row *rows = calloc(MAX_ROWS, sizeof *rows);
    int n = 0;
    collect(root, nd, shape, rows, &n);
    int64_t model_flops = ng_layer_flops(root, nd, shape);
    ng_layer_free(root);
    double whole[2];
    ng_dtype types[2] = {NG_F32, half};
    for (int k = 0; k < 2; k++)
        whole[k] = time_rows(ar, types[k], dev, nd, shape, rows, n, k, reps);

    size_t es[2] = {4, 2};
    printf("natgrad bench --per-layer: %s, batch %lld, %s, inference forward, fp32 against %s "
           "(half conversions: %s, fp16 arithmetic: %s), median of %d\n",
           arch, (long long)batch, ng_device_name(dev), ng_dtype_name(half),
           dev == NG_CPU ? ng_half_vec_isa() : "device",
           dev == NG_CPU && half == NG_F16 ? ng_hgemm_isa() : "-", reps);
    printf("%-26s %-14s %9s %9s %9s %7s %9s %9s %8s %8s\n", "layer", "kind", "MFLOP", "fp32 ms",
           "half ms", "speedup", "fp32 MB", "half MB", "flop/B", "GFLOP/s");
    double sum[2] = {0, 0}, mb_sum[2] = {0, 0};
    int64_t flop_sum = 0;
    for (int i = 0; i < n; i++) {
        row *r = &rows[i];
        int64_t elems = numel(r->nd, r->in) + numel(r->on, r->out) + r->weights;
        double mb[2] = {elems * es[0] / 1e6, elems * es[1] / 1e6};
        /* A view (flatten) takes no measurable time: its ratios print as 0. */
        double speedup = r->ms[1] > 0 ? r->ms[0] / r->ms[1] : 0;
        double gflops = r->ms[0] > 0 ? r->flops / (r->ms[0] * 1e6) : 0;
        printf("%-26.26s %-14.14s %9.2f %9.3f %9.3f %7.2f %9.2f %9.2f %8.1f %8.2f\n", r->name,
               r->kind, r->flops / 1e6, r->ms[0], r->ms[1], speedup, mb[0], mb[1],
               r->flops / (mb[1] * 1e6), gflops);
        for (int k = 0; k < 2; k++) sum[k] += r->ms[k], mb_sum[k] += mb[k];
        flop_sum += r->flops;
    }
    printf("%-26s %-14s %9.2f %9.3f %9.3f %7.2f %9.2f %9.2f\n", "sum of layers", "", flop_sum / 1e6,
           sum[0], sum[1], sum[0] / sum[1], mb_sum[0], mb_sum[1]);
    printf("%-26s %-14s %9.2f %9.3f %9.3f %7.2f\n", "model forward", "", model_flops / 1e6,
           whole[0], whole[1], whole[0] / whole[1]);
    int status = 0;
    if (json) {
        FILE *f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "natgrad: error: bench: --json %s: cannot be written\n", json);
            status = 2;
        } else {
            fprintf(f,
                    "{\"model\": \"%s\", \"batch\": %lld, \"device\": \"%s\", \"half\": \"%s\", "
                    "\"fp16_arithmetic\": \"%s\", \"reps\": %d, \"model_flops\": %lld, "
                    "\"model_ms\": [%s, %s], \"layers\": [",
                    arch, (long long)batch, ng_device_name(dev), ng_dtype_name(half),
                    dev == NG_CPU && half == NG_F16 ? ng_hgemm_isa() : "-", reps,
                    (long long)model_flops, ng_json_num("%.5f", whole[0]).s,
                    ng_json_num("%.5f", whole[1]).s);
            for (int i = 0; i < n; i++) {
                row *r = &rows[i];
                int64_t elems = numel(r->nd, r->in) + numel(r->on, r->out) + r->weights;
                fprintf(f,
                        "%s\n  {\"name\": \"%s\", \"kind\": \"%s\", \"flops\": %lld, \"bytes\": "
                        "[%lld, %lld], \"ms\": [%s, %s]}",
                        i ? "," : "", r->name, r->kind, (long long)r->flops, (long long)(elems * 4),
                        (long long)(elems * 2), ng_json_num("%.5f", r->ms[0]).s,
                        ng_json_num("%.5f", r->ms[1]).s);
            }
            fprintf(f, "\n]}\n");
            fclose(f);
        }
    }
    free(rows);
    return status;
}
