/* The optimizer interface: a K-FAC part driven through the interface gives the bits of K-FAC and
 * SGD driven by hand (empirical and true Fisher); every chain (SGD, AdamW, K-FAC + SGD) restored
 * from its parts' state tables continues bit-exactly; the chain's structure, metrics and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "nn/activation.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "nn/sample.h"
#include "optim/kfac.h"
#include "optim/optimizer.h"
#include "testing.h"

#define ARENA ((size_t)1 << 22)
enum { N = 8, IN = 5, H = 7, C = 4 };

static ng_model *build(uint64_t seed) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", IN, H, 1));
    ng_layer_add_child(s, ng_relu("act"));
    ng_layer_add_child(s, ng_linear("fc2", H, C, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build(m, NG_CPU, NG_F64, seed, ARENA, ARENA);
    return m;
}

/* A batch per step: inputs from the test's seed, labels from the step. */
typedef struct {
    ng_tensor x[6], y[6];
} batches;

static batches make_batches(void) {
    batches b;
    for (int s = 0; s < 6; s++) {
        b.x[s] = ng_tensor_2d(NG_F64, NG_CPU, N, IN, "x");
        ng_test_fill_uniform(&b.x[s], -1, 1);
        b.y[s] = ng_tensor_1d(NG_I32, NG_CPU, N, "y");
        for (int n = 0; n < N; n++) ((int32_t *)b.y[s].data)[n] = (int32_t)((n * 7 + s * 3) % C);
    }
    return b;
}

static void free_batches(batches *b) {
    for (int s = 0; s < 6; s++) ng_tensor_free(&b->x[s]), ng_tensor_free(&b->y[s]);
}

static ng_rng_key fisher_key(int64_t step) {
    return (ng_rng_key){.seed = 5, .stream = 77, .offset = (uint64_t)step << 32};
}

/* One training step through the interface, in the trainer's order. */
static void step_chain(ng_model *m, ng_optimizer *o, const batches *b, int64_t step, double lr) {
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 3, (uint64_t)step);
    ctx.observer = ng_optimizer_observer(o);
    ng_optimizer_begin(o, step, N);
    ng_tensor logits = ng_model_forward(m, &ctx, &b->x[step]);
    ng_tensor d = ng_arena_tensor(&m->grads, logits.dtype, logits.ndim, logits.shape, "d");
    if (ng_optimizer_sampled_backward(o)) {
        ng_tensor smp = ng_arena_tensor(&m->grads, NG_I32, 1, (int64_t[]){N}, "sampled");
        ng_sample_categorical(&logits, fisher_key(step), &smp);
        ng_softmax_xent(&logits, &smp, 0.0, &d, NULL);
        ng_optimizer_pass(o, NG_PASS_SAMPLED);
        ng_model_zero_grad(m);
        ctx.retain = 1; /* the forward serves the loss backward below too */
        ng_model_backward(m, &ctx, &d);
        ctx.retain = 0;
    }
    ng_optimizer_pass(o, NG_PASS_LOSS);
    ng_optimizer_set_loss_scale(o, 1.0);
    ng_softmax_xent(&logits, &b->y[step], 0.0, &d, NULL);
    ng_model_zero_grad(m);
    ng_model_backward(m, &ctx, &d);
    ng_optimizer_after_backward(o);
    ng_optimizer_step(o, lr);
}

/* The same step with K-FAC and SGD driven by hand, as the trainer did before the interface. */
static void step_direct(ng_model *m, ng_kfac *k, ng_optimizer *sgd, int true_fisher,
                        const batches *b, int64_t step, double lr) {
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 3, (uint64_t)step);
    ctx.observer = ng_kfac_observer(k);
    ng_kfac_begin(k, step, N, 1, !true_fisher);
    ng_tensor logits = ng_model_forward(m, &ctx, &b->x[step]);
    ng_tensor d = ng_arena_tensor(&m->grads, logits.dtype, logits.ndim, logits.shape, "d");
    if (true_fisher) {
        ng_tensor smp = ng_arena_tensor(&m->grads, NG_I32, 1, (int64_t[]){N}, "sampled");
        ng_sample_categorical(&logits, fisher_key(step), &smp);
        ng_softmax_xent(&logits, &smp, 0.0, &d, NULL);
        ng_kfac_begin(k, step, N, 0, 1);
        ng_model_zero_grad(m);
        ctx.retain = 1;
        ng_model_backward(m, &ctx, &d);
        ctx.retain = 0;
        ng_kfac_begin(k, step, N, 0, 0);
    }
    ng_softmax_xent(&logits, &b->y[step], 0.0, &d, NULL);
    ng_model_zero_grad(m);
    ng_model_backward(m, &ctx, &d);
    ng_kfac_step(k, step, lr);
    ng_optimizer_step(sgd, lr);
}

static ng_kfac_config kfac_config(int fisher) {
    ng_kfac_config c = ng_kfac_default_config();
    c.factor_every = 1, c.inv_every = 2, c.damping = 0.05, c.kl_clip = 0.01;
    c.fisher = fisher;
    return c;
}

static const ng_optim_config sgd_cfg = {.name = "sgd", .momentum = 0.9, .weight_decay = 1e-3};

static void same_bits(const char *what, const ng_tensor *a, const ng_tensor *b) {
    double *x = ng_test_to_f64(a), *y = ng_test_to_f64(b);
    ng_test_close(what, x, y, a->numel, 0, 0);
    free(x), free(y);
}

static void test_kfac_part_matches_direct(void) {
    uint64_t seed = ng_test_seed();
    batches b = make_batches();
    for (int fisher = 0; fisher < 2; fisher++) {
        ng_kfac_config c = kfac_config(fisher);
        ng_model *m1 = build(seed), *m2 = build(seed);
        ng_optimizer *o = ng_kfac_optimizer_new(m1, &c, ng_optimizer_new(m1, &sgd_cfg));
        ng_kfac *k = ng_kfac_new(m2, &c);
        ng_optimizer *sgd = ng_optimizer_new(m2, &sgd_cfg);
        NG_TEST(ng_optimizer_sampled_backward(o) == fisher, "sampled_backward %d for fisher %d",
                ng_optimizer_sampled_backward(o), fisher);
        for (int64_t s = 0; s < 5; s++) {
            step_chain(m1, o, &b, s, 0.1);
            step_direct(m2, k, sgd, fisher, &b, s, 0.1);
        }
        same_bits(fisher ? "true Fisher: weights through the interface"
                         : "empirical Fisher: weights through the interface",
                  &m1->flat_params, &m2->flat_params);
        /* and K-FAC did act: plain SGD on the same batches ends elsewhere */
        ng_model *m3 = build(seed);
        ng_optimizer *plain = ng_optimizer_new(m3, &sgd_cfg);
        for (int64_t s = 0; s < 5; s++) step_chain(m3, plain, &b, s, 0.1);
        double *p1 = ng_test_to_f64(&m1->flat_params), *p3 = ng_test_to_f64(&m3->flat_params);
        double diff = 0;
        for (int64_t i = 0; i < m1->numel; i++) diff = fmax(diff, fabs(p1[i] - p3[i]));
        NG_TEST(diff > 1e-6, "K-FAC through the interface changed nothing (max diff %g)", diff);
        free(p1), free(p3);
        ng_optimizer_free(plain), ng_model_free(m3);
        ng_optimizer_free(o), ng_optimizer_free(sgd), ng_kfac_free(k);
        ng_model_free(m1), ng_model_free(m2);
    }
    free_batches(&b);
}

typedef enum { CHAIN_SGD, CHAIN_ADAMW, CHAIN_KFAC } chain_kind;

static ng_optimizer *make_chain(ng_model *m, chain_kind kind) {
    if (kind == CHAIN_ADAMW)
        return ng_optimizer_new(
            m,
            &(ng_optim_config){
                .name = "adamw", .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.01});
    ng_optimizer *base = ng_optimizer_new(m, &sgd_cfg);
    if (kind == CHAIN_SGD) return base;
    ng_kfac_config c = kfac_config(NG_KFAC_TRUE_FISHER);
    c.inv_every = 3; /* the restored chain must carry inverses from before the copy */
    return ng_kfac_optimizer_new(m, &c, base);
}

/* Copies every part's state of `from` into `to` by name, as a checkpoint and resume do. */
static void copy_state(ng_optimizer *from, ng_optimizer *to) {
    ng_optimizer *pa[4], *pb[4];
    int na = ng_optimizer_parts(from, pa, 4), nb = ng_optimizer_parts(to, pb, 4);
    NG_TEST(na == nb, "parts %d and %d", na, nb);
    for (int i = 0; i < na && i < nb; i++) {
        int n = ng_optimizer_state_count(pa[i]);
        NG_TEST(n == ng_optimizer_state_count(pb[i]), "%s: state counts differ", pa[i]->ops->kind);
        const char **names = malloc(sizeof *names * (size_t)(n + 1)),
                   **names2 = malloc(sizeof *names2 * (size_t)(n + 1));
        ng_tensor **ta = malloc(sizeof *ta * (size_t)(n + 1)),
                  **tb = malloc(sizeof *tb * (size_t)(n + 1));
        NG_TEST(ng_optimizer_state(pa[i], names, ta, n) == n, "state fills %d", n);
        ng_optimizer_state(pb[i], names2, tb, n);
        for (int j = 0; j < n; j++) {
            NG_TEST(!strcmp(names[j], names2[j]), "state %d: %s vs %s", j, names[j], names2[j]);
            ng_tensor_copy(tb[j], ta[j]);
        }
        free(names), free(names2), free(ta), free(tb);
    }
    ng_optimizer_set_step(to, ng_optimizer_get_step(from));
}

static void test_resume_every_chain(void) {
    static const char *label[] = {"sgd", "adamw", "kfac+sgd"};
    uint64_t seed = ng_test_seed();
    batches b = make_batches();
    for (chain_kind kind = CHAIN_SGD; kind <= CHAIN_KFAC; kind++) {
        ng_model *m1 = build(seed), *m2 = build(seed + 1);
        ng_optimizer *o1 = make_chain(m1, kind), *o2 = make_chain(m2, kind);
        char d[64];
        ng_optimizer_describe(o1, d, sizeof d);
        NG_TEST(!strcmp(d, label[kind]), "describe: '%s', expected '%s'", d, label[kind]);
        for (int64_t s = 0; s < 4; s++) step_chain(m1, o1, &b, s, 0.05);
        /* the interrupted run: fresh objects, weights and every part's state copied over */
        ng_tensor_copy(&m2->flat_params, &m1->flat_params);
        copy_state(o1, o2);
        NG_TEST(ng_optimizer_get_step(o2) == 4, "%s: step %lld after restore", label[kind],
                (long long)ng_optimizer_get_step(o2));
        for (int64_t s = 4; s < 6; s++) {
            step_chain(m1, o1, &b, s, 0.05);
            step_chain(m2, o2, &b, s, 0.05);
        }
        char what[96];
        snprintf(what, sizeof what, "%s: weights after a restore", label[kind]);
        same_bits(what, &m1->flat_params, &m2->flat_params);
        ng_optimizer_free(o1), ng_optimizer_free(o2);
        ng_model_free(m1), ng_model_free(m2);
    }
    free_batches(&b);
}

static void test_structure(void) {
    ng_model *m = build(ng_test_seed());
    ng_optimizer *sgd = ng_optimizer_new(m, &sgd_cfg);
    NG_TEST(!ng_optimizer_observer(sgd), "SGD observes layers");
    char buf[256];
    NG_TEST(ng_optimizer_metrics(sgd, buf, sizeof buf) == 0 && !buf[0], "SGD metrics: '%s'", buf);
    ng_kfac_config c = kfac_config(NG_KFAC_EMPIRICAL);
    c.damping = 0.25;
    ng_optimizer *o = ng_kfac_optimizer_new(m, &c, sgd);
    ng_optimizer *parts[4];
    NG_TEST(ng_optimizer_parts(o, parts, 4) == 2 && parts[0] == o && parts[1] == sgd,
            "parts of kfac+sgd");
    NG_TEST(!strcmp(parts[0]->ops->file, "kfac") && !strcmp(parts[1]->ops->file, "optimizer"),
            "checkpoint files %s, %s", parts[0]->ops->file, parts[1]->ops->file);
    NG_TEST(ng_optimizer_observer(o) == ng_kfac_observer(ng_kfac_of(o)), "the K-FAC observer");
    int r = -1, w = -1;
    NG_TEST(!ng_optimizer_sharded(o, &r, &w), "one process: K-FAC is not sharded");
    /* 2 layers x (A, G, QA, dA, QG, dG, meta) */
    NG_TEST(ng_optimizer_state_count(o) == 14, "K-FAC state count %d", ng_optimizer_state_count(o));
    const char *names[2];
    ng_tensor *ts[2];
    NG_TEST(ng_optimizer_state(o, names, ts, 2) == 2 && !strcmp(names[0], "fc1.kfac_A"),
            "state with cap 2: %s", names[0]);
    size_t len = ng_optimizer_metrics(o, buf, sizeof buf);
    NG_TEST(len == strlen(buf) && !strcmp(buf, ", \"kfac_damping\": 0.25"), "metrics: '%s'", buf);
    NG_TEST_ERROR(ng_kfac_of(sgd), "not a K-FAC part");
    NG_TEST_ERROR(ng_kfac_optimizer_new(m, &c, NULL), "base optimizer");
    NG_TEST_ERROR(ng_optimizer_step(o, NAN), "optimizer.lr");
    NG_TEST_ERROR(ng_optimizer_set_loss_scale(o, 0.0), "loss scale");
    ng_optimizer_free(o);
    ng_model_free(m);
}

int main(void) {
    test_kfac_part_matches_direct();
    test_resume_every_chain();
    test_structure();
    return ng_test_finish("test_optimizer");
}
