/* Activation checkpointing from model.checkpoint: for a ViT, a 3D-CNN and a VGG under every
 * spec form (every K with K dividing the blocks or not, a list), the gradients are bit-identical
 * to the plain run, observers (K-FAC) see every layer once with the same tensors, batch-norm
 * running statistics are updated once, and the activation peak falls (at least 2x for a 12-block
 * ViT with one block a segment, 1.5x for the 6-block 3D-CNN per stage). Bad specs fail naming the
 * key. */
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "nn/model.h"
#include "nn/models.h"
#include "testing.h"

typedef struct {
    int inputs, grads;
    double sum; /* sum of |x| and |dy| over every call, in call order */
} seen;

static void add_abs(seen *s, const ng_tensor *t) {
    double *v = ng_test_to_f64(t);
    for (int64_t i = 0; i < t->numel; i++) s->sum += v[i] < 0 ? -v[i] : v[i];
    free(v);
}
static void on_input(void *self, ng_layer *l, const ng_tensor *x) {
    (void)l;
    ((seen *)self)->inputs++;
    add_abs(self, x);
}
static void on_grad(void *self, ng_layer *l, const ng_tensor *dy) {
    (void)l;
    ((seen *)self)->grads++;
    add_abs(self, dy);
}

typedef struct {
    double *grads, *buffers;
    int64_t ngrads, nbuffers;
    seen obs;
    size_t act_peak;
} outcome;

/* One training forward and backward of arch `a` with checkpoint spec `spec`, fixed seeds. */
static outcome run(ng_arch a, const char *spec, ng_dtype compute, int batch, uint64_t seed) {
    char why[128];
    NG_TEST(ng_ckpt_spec_parse(spec, &a.checkpoint, why, sizeof why), "spec '%s': %s", spec, why);
    ng_model *m = ng_model_new(ng_arch_build(&a));
    ng_model_build_mixed(m, NG_CPU, compute, seed, 256 << 20, 64 << 20);
    int64_t shape[NG_MAX_DIMS] = {batch};
    int nd = ng_arch_input_shape(&a, shape + 1) + 1;
    ng_tensor x = ng_tensor_new(NG_F32, NG_CPU, nd, shape, "input");
    ng_rng_normal(&x, (ng_rng_key){.seed = seed, .stream = 1}, 0, 1);
    outcome o = {0};
    ng_observer obs = {&o.obs, on_input, on_grad};
    ng_ctx ctx = ng_model_ctx(m, 1, seed, 3);
    ctx.observer = &obs;
    ng_tensor y = ng_model_forward(m, &ctx, &x);
    ng_tensor dy = ng_arena_tensor(&m->grads, y.dtype, y.ndim, y.shape, "dy");
    ng_rng_normal(&dy, (ng_rng_key){.seed = seed, .stream = 2}, 0, 1);
    ng_model_backward(m, &ctx, &dy);
    o.grads = ng_test_to_f64(&m->flat_grads);
    o.ngrads = m->flat_grads.numel;
    o.nbuffers = m->buffer_numel;
    if (o.nbuffers) o.buffers = ng_test_to_f64(&m->flat_buffers);
    o.act_peak = m->acts.peak;
    ng_tensor_free(&x);
    ng_model_free(m);
    return o;
}

static void same(const char *what, const char *spec, const outcome *p, const outcome *c) {
    NG_TEST(!memcmp(p->grads, c->grads, sizeof(double) * (size_t)p->ngrads),
            "%s, checkpoint '%s': gradients differ from the plain run", what, spec);
    NG_TEST(!p->nbuffers || !memcmp(p->buffers, c->buffers, sizeof(double) * (size_t)p->nbuffers),
            "%s, checkpoint '%s': running statistics differ (the replay updated them?)", what,
            spec);
    NG_TEST(p->obs.inputs == c->obs.inputs && p->obs.grads == c->obs.grads,
            "%s, checkpoint '%s': observer saw %d inputs and %d grads, plain %d and %d", what, spec,
            c->obs.inputs, c->obs.grads, p->obs.inputs, p->obs.grads);
    NG_TEST(p->obs.sum == c->obs.sum, "%s, checkpoint '%s': observed tensors differ (%.17g, %.17g)",
            what, spec, c->obs.sum, p->obs.sum);
}

static void done(outcome *o) {
    free(o->grads);
    free(o->buffers);
}

static void check_specs(const char *what, const ng_arch *a, int batch, ng_dtype compute) {
    static const char *specs[] = {"every 1", "every 2", "every 3",  "0,2",
                                  "[1]",     "all",     "recompute"};
    uint64_t seed = ng_test_seed();
    outcome plain = run(*a, "none", compute, batch, seed);
    NG_TEST(plain.obs.inputs > 0, "%s: the observer saw nothing", what);
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        outcome c = run(*a, specs[i], compute, batch, seed);
        same(what, specs[i], &plain, &c);
        NG_TEST(c.act_peak < plain.act_peak, "%s, checkpoint '%s': activation peak %zu, plain %zu",
                what, specs[i], c.act_peak, plain.act_peak);
        done(&c);
    }
    done(&plain);
}

static ng_arch arch(const char *name) {
    ng_arch a;
    NG_TEST(ng_arch_defaults(name, &a), "no architecture %s", name);
    return a;
}

static void test_bit_identical(void) {
    ng_arch v = arch("vit");
    v.img = 8, v.patch = 4, v.width = 16, v.heads = 2, v.depth = 4, v.dropout = 0.1;
    check_specs("vit with dropout", &v, 3, NG_F32);
    check_specs("vit with dropout, bf16", &v, 3, NG_BF16);
    ng_arch c = arch("cnn3d");
    c.img = 6, c.width = 4, c.depth = 4;
    check_specs("cnn3d", &c, 2, NG_F32);
    check_specs("cnn3d, fp16", &c, 2, NG_F16);
    ng_arch g = arch("vgg");
    g.img = 16, g.width = 4, g.depth = 4; /* every spec splits it into 2+ segments */
    check_specs("vgg", &g, 2, NG_F32);
    ng_arch n = arch("nin");
    n.img = 12, n.width = 4, n.depth = 4; /* mlpconv blocks: 1x1 convs and overlapping pools */
    check_specs("nin", &n, 2, NG_F32);
}

/* The bar: one block a segment halves the activation peak of a 12-block ViT at least,
 * and the 3D-CNN per stage likewise. */
static void test_peak_falls(void) {
    uint64_t seed = ng_test_seed();
    ng_arch v = arch("vit");
    v.img = 16, v.patch = 4, v.width = 32, v.heads = 2, v.depth = 12;
    outcome p = run(v, "none", NG_F32, 4, seed), c = run(v, "every 1", NG_F32, 4, seed);
    NG_TEST(c.act_peak * 2 <= p.act_peak, "12-block vit: checkpointed peak %zu, plain %zu",
            c.act_peak, p.act_peak);
    done(&p), done(&c);
    ng_arch d = arch("cnn3d");
    d.img = 12, d.width = 8, d.depth = 6;
    p = run(d, "none", NG_F32, 2, seed), c = run(d, "every 1", NG_F32, 2, seed);
    /* A block keeps its conv's output and the fused batch norm + ReLU's: 2d tensors for d blocks
     * plain; checkpointed, d kept outputs and one block's conv output (batch norm writes over it
     * in a segment's first forward, and keeps no output in the replay), so the peak falls by
     * 2d / (d + 1), 1.7x for 6 blocks (test_plan holds both to the plan exactly). */
    NG_TEST(c.act_peak * 3 <= p.act_peak * 2, "cnn3d per stage: checkpointed peak %zu, plain %zu",
            c.act_peak, p.act_peak);
    /* Recomputed, at most one block output lives besides the replayed block's two and the one
     * the chain is moving: 4 tensors (and the 1-channel input) for any depth, against 6 + 2. */
    outcome r = run(d, "recompute", NG_F32, 2, seed);
    NG_TEST(r.act_peak * 3 <= c.act_peak * 2, "cnn3d recomputed: peak %zu, checkpointed %zu",
            r.act_peak, c.act_peak);
    done(&r);
    done(&p), done(&c);
}

static void test_bad_specs(void) {
    static const char *bad[] = {"every 0", "every", "every 2x", "1,1", "x", "1,", "-1", "64"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ng_ckpt_spec s;
        char why[128];
        NG_TEST(!ng_ckpt_spec_parse(bad[i], &s, why, sizeof why), "spec '%s' was accepted", bad[i]);
    }
    ng_arch v = arch("vit");
    v.depth = 3;
    char why[128];
    ng_ckpt_spec_parse("0,5", &v.checkpoint, why, sizeof why);
    NG_TEST_ERROR(ng_arch_build(&v), "model.checkpoint: block 5 does not exist");
    ng_arch m = arch("mlp");
    m.checkpoint.every = 1;
    NG_TEST_ERROR(ng_arch_build(&m), "model.checkpoint: mlp has no blocks");
    char text[64];
    ng_ckpt_spec s;
    ng_ckpt_spec_parse(" blocks 3, 0 ,7 ", &s, why, sizeof why);
    ng_ckpt_spec_format(&s, text, sizeof text);
    NG_TEST(!strcmp(text, "blocks 0,3,7"), "canonical form '%s'", text);
}

int main(void) {
    test_bit_identical();
    test_peak_falls();
    test_bad_specs();
    return ng_test_finish("test_checkpoint");
}
