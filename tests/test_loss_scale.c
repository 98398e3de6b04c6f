/* Dynamic loss scaling: issue 10's sequence (start 4, growth 2, backoff 0.5, interval 2: two clean
 * steps give 8, an injected inf gives 4 and a skip that leaves the weights and the SGD/AdamW state
 * untouched), the abort after max_skips, bf16's unscaled mode, unscaling exact against an
 * unscaled run, the state table, and bad configs naming their precision.* key. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/ops.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/activation.h"
#include "nn/loss.h"
#include "nn/model.h"
#include "optim/loss_scale.h"
#include "optim/optimizer.h"
#include "testing.h"

#define B 6

static ng_model *tiny_model(ng_dtype compute) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 5, 8, 1));
    ng_layer_add_child(s, ng_relu("act"));
    ng_layer_add_child(s, ng_linear("fc2", 8, 3, 1));
    ng_model *m = ng_model_new(s);
    ng_model_build_mixed(m, NG_CPU, compute, 11, 1 << 16, 1 << 16);
    return m;
}

typedef struct {
    ng_tensor x, labels;
} batch;

static batch new_batch(void) {
    batch b = {ng_tensor_2d(NG_F32, NG_CPU, B, 5, "x"), ng_tensor_1d(NG_I32, NG_CPU, B, "labels")};
    ng_test_fill_uniform(&b.x, -1, 1);
    for (int i = 0; i < B; i++)
        ((int32_t *)b.labels.data)[i] = (int32_t)((ng_test_uniform() + 1) * 1.5);
    return b;
}

/* Forward, scaled loss gradient, backward: leaves scale * gradient in flat_grads. */
static void scaled_backward(ng_model *m, const batch *b, double scale, uint64_t step) {
    ng_model_zero_grad(m);
    ng_model_reset_arenas(m);
    ng_ctx ctx = ng_model_ctx(m, 1, 5, step);
    ng_tensor y = ng_model_forward(m, &ctx, &b->x);
    ng_tensor dy = ng_arena_tensor(ctx.acts, y.dtype, y.ndim, y.shape, "dlogits");
    ng_softmax_xent_scaled(&y, &b->labels, 0.0, scale, &dy, NULL);
    ng_model_backward(m, &ctx, &dy);
}

static int same_bits(const ng_tensor *a, const ng_tensor *b) {
    return a->numel == b->numel && !memcmp(a->data, b->data, ng_tensor_bytes(a));
}

static void issue_sequence(const char *opt) {
    ng_model *m = tiny_model(NG_F16);
    ng_optim_config oc =
        !strcmp(opt, "sgd")
            ? (ng_optim_config){.name = "sgd", .momentum = 0.9}
            : (ng_optim_config){
                  .name = "adamw", .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    ng_optimizer *o = ng_optimizer_new(m, &oc);
    ng_loss_scale_config c = {.dynamic = 1,
                              .init_scale = 4,
                              .growth_factor = 2,
                              .backoff_factor = 0.5,
                              .growth_interval = 2,
                              .max_skips = 3};
    ng_loss_scaler ls;
    ng_loss_scaler_init(&ls, &c);
    batch b = new_batch();
    for (int step = 0; step < 2; step++) {
        scaled_backward(m, &b, ng_loss_scaler_scale(&ls), (uint64_t)step);
        NG_TEST(ng_loss_scaler_unscale(&ls, &m->flat_grads) == NG_LOSS_SCALE_STEP,
                "%s: clean step %d not taken", opt, step);
        ng_optimizer_step(o, 0.1);
        ng_model_refresh_compute(m);
    }
    NG_TEST(ng_loss_scaler_scale(&ls) == 8, "%s: two clean steps give scale %g, not 8", opt,
            ng_loss_scaler_scale(&ls));

    /* Snapshot weights, their compute copy and optimizer state, then a step with an inf. */
    ng_tensor w0 = ng_tensor_to(&m->flat_params, NG_CPU, "w0");
    ng_tensor c0 = ng_tensor_to(&m->flat_compute, NG_CPU, "c0");
    const char *names[NG_OPTIM_MAX_STATE];
    ng_tensor *st[NG_OPTIM_MAX_STATE], st0[NG_OPTIM_MAX_STATE];
    int ns = ng_optimizer_state(o, names, st, NG_OPTIM_MAX_STATE);
    for (int i = 0; i < ns; i++) st0[i] = ng_tensor_to(st[i], NG_CPU, names[i]);
    int64_t step0 = ng_optimizer_get_step(o);
    scaled_backward(m, &b, ng_loss_scaler_scale(&ls), 2);
    ((float *)m->flat_grads.data)[m->params[1].offset] = INFINITY; /* fc1.bias[0] */
    ng_loss_scale_verdict v = ng_loss_scaler_unscale(&ls, &m->flat_grads);
    NG_TEST(v == NG_LOSS_SCALE_SKIP, "%s: an inf gradient gave verdict %d, not skip", opt, (int)v);
    NG_TEST(ng_loss_scaler_scale(&ls) == 4, "%s: the inf gives scale %g, not 4", opt,
            ng_loss_scaler_scale(&ls));
    /* The caller's side of a skip: no optimizer step and no refresh. */
    if (v == NG_LOSS_SCALE_STEP) ng_optimizer_step(o, 0.1);
    NG_TEST(same_bits(&w0, &m->flat_params) && same_bits(&c0, &m->flat_compute),
            "%s: weights changed on a skipped step", opt);
    for (int i = 0; i < ns; i++)
        NG_TEST(same_bits(&st0[i], st[i]), "%s: state %s changed on a skipped step", opt, names[i]);
    NG_TEST(ng_optimizer_get_step(o) == step0, "%s: step count moved on a skip", opt);
    NG_TEST(ls.clean_steps == 0 && ls.skips == 1, "%s: after a skip clean_steps %g skips %g", opt,
            ls.clean_steps, ls.skips);

    /* A clean step resets the skip run; then max_skips (3) infs in a row abort on the third. */
    scaled_backward(m, &b, ng_loss_scaler_scale(&ls), 3);
    NG_TEST(ng_loss_scaler_unscale(&ls, &m->flat_grads) == NG_LOSS_SCALE_STEP && ls.skips == 0,
            "%s: the clean step after a skip was not taken", opt);
    for (int k = 0; k < 3; k++) {
        ((float *)m->flat_grads.data)[0] = k == 1 ? NAN : -INFINITY;
        v = ng_loss_scaler_unscale(&ls, &m->flat_grads);
        NG_TEST(v == (k < 2 ? NG_LOSS_SCALE_SKIP : NG_LOSS_SCALE_ABORT),
                "%s: skip %d in a row gave verdict %d", opt, k + 1, (int)v);
    }
    NG_TEST(ls.scale == 0.5 && strstr(ng_loss_scaler_why(&ls), "3 steps in a row"),
            "%s: after three backoffs from 4 the scale is %g; why: %s", opt, ls.scale,
            ng_loss_scaler_why(&ls));
    for (int i = 0; i < ns; i++) ng_tensor_free(&st0[i]);
    ng_tensor_free(&w0);
    ng_tensor_free(&c0);
    ng_tensor_free(&b.x);
    ng_tensor_free(&b.labels);
    ng_optimizer_free(o);
    ng_model_free(m);
}

/* In f32 a power-of-two scale commutes with every rounding (no overflow or underflow here), so
 * unscaled gradients equal the unscaled run's bit for bit. */
static void unscale_exact(void) {
    ng_model *a = tiny_model(NG_F32), *b = tiny_model(NG_F32);
    batch x = new_batch();
    ng_loss_scale_config c = ng_loss_scale_defaults(NG_F16);
    c.init_scale = 1024;
    ng_loss_scaler ls;
    ng_loss_scaler_init(&ls, &c);
    scaled_backward(a, &x, 1.0, 0);
    scaled_backward(b, &x, ng_loss_scaler_scale(&ls), 0);
    NG_TEST(ng_loss_scaler_unscale(&ls, &b->flat_grads) == NG_LOSS_SCALE_STEP, "clean step");
    NG_TEST(same_bits(&a->flat_grads, &b->flat_grads),
            "f32 gradients scaled by 1024 and unscaled differ from the unscaled run");
    ng_tensor_free(&x.x);
    ng_tensor_free(&x.labels);
    ng_model_free(a);
    ng_model_free(b);
}

static void bf16_unscaled(void) {
    ng_loss_scale_config c = ng_loss_scale_defaults(NG_BF16);
    NG_TEST(!c.dynamic && ng_loss_scale_defaults(NG_F16).dynamic &&
                ng_loss_scale_defaults(NG_F16).init_scale == 65536,
            "defaults: f16 dynamic from 2^16, bf16 not");
    c.growth_interval = 1;
    ng_loss_scaler ls;
    ng_loss_scaler_init(&ls, &c);
    for (int k = 0; k < 5; k++) ng_loss_scaler_update(&ls, 1);
    NG_TEST(ng_loss_scaler_scale(&ls) == 1, "bf16 scale grew to %g", ng_loss_scaler_scale(&ls));
    NG_TEST(ng_loss_scaler_update(&ls, 0) == NG_LOSS_SCALE_SKIP && ls.scale == 1,
            "bf16: a non-finite gradient skips and keeps scale 1");
}

static void state_table(void) {
    ng_loss_scale_config c = ng_loss_scale_defaults(NG_F16);
    c.growth_interval = 3;
    ng_loss_scaler a, b;
    ng_loss_scaler_init(&a, &c);
    ng_loss_scaler_init(&b, &c);
    ng_loss_scaler_update(&a, 0);
    ng_loss_scaler_update(&a, 1);
    ng_loss_scaler_update(&a, 1);
    const char *na[4], *nb[4];
    ng_tensor ta[4], tb[4];
    int n = ng_loss_scaler_state(&a, na, ta, 4);
    NG_TEST(n == 3 && ng_loss_scaler_state(&b, nb, tb, 4) == 3 &&
                !strcmp(na[0], "loss_scale.scale") && !strcmp(na[1], "loss_scale.clean_steps") &&
                !strcmp(na[2], "loss_scale.skips"),
            "state table names");
    for (int i = 0; i < n; i++) ng_tensor_copy(&tb[i], &ta[i]);
    NG_TEST(b.scale == 32768 && b.clean_steps == 2 && b.skips == 0,
            "restored state: scale %g clean %g skips %g", b.scale, b.clean_steps, b.skips);
    /* The restored scaler continues as the original: one more clean step grows both. */
    ng_loss_scaler_update(&a, 1);
    ng_loss_scaler_update(&b, 1);
    NG_TEST(a.scale == 65536 && b.scale == a.scale && b.clean_steps == 0, "continued state");
}

static void bad_configs(void) {
    ng_loss_scaler ls;
    ng_loss_scale_config c = ng_loss_scale_defaults(NG_F16);
    c.growth_interval = 0;
    NG_TEST_ERROR(ng_loss_scaler_init(&ls, &c), "precision.growth_interval");
    c = ng_loss_scale_defaults(NG_F16);
    c.max_skips = 0;
    NG_TEST_ERROR(ng_loss_scaler_init(&ls, &c), "train.max_skips");
    c = ng_loss_scale_defaults(NG_F16);
    c.backoff_factor = 1;
    NG_TEST_ERROR(ng_loss_scaler_init(&ls, &c), "precision.backoff_factor");
    c = ng_loss_scale_defaults(NG_F16);
    c.init_scale = 0;
    NG_TEST_ERROR(ng_loss_scaler_init(&ls, &c), "precision.init_scale");
}

/* The trainer's sequence of docs/ARCHITECTURE.md ("Mixed precision") for 40 SGD steps on one
 * batch: scaled loss, backward, unscale and check, step, refresh. A model that learns shows the
 * pieces fit together; the loss must fall to under half its start in every precision, as it
 * does in f32. */
static double train_sequence(ng_dtype compute) {
    ng_model *m = tiny_model(compute);
    ng_optim_config oc = {.name = "sgd", .momentum = 0.9};
    ng_optimizer *o = ng_optimizer_new(m, &oc);
    ng_loss_scaler ls;
    ng_loss_scale_config c = ng_loss_scale_defaults(compute);
    /* The scale moves during the run, and stays where |dlogits| <= scale / B cannot reach f16's
     * 65504 (2^8 x 16 / 6 at the end), so no step may skip on these finite data. */
    c.init_scale = 256;
    c.growth_interval = 10;
    ng_loss_scaler_init(&ls, &c);
    batch b = new_batch();
    double first = 0, last = 0;
    int skipped = 0;
    for (int step = 0; step < 40; step++) {
        ng_model_zero_grad(m);
        ng_model_reset_arenas(m);
        ng_ctx ctx = ng_model_ctx(m, 1, 5, (uint64_t)step);
        ng_tensor y = ng_model_forward(m, &ctx, &b.x);
        ng_tensor dy = ng_arena_tensor(ctx.acts, y.dtype, y.ndim, y.shape, "dlogits");
        last = ng_softmax_xent_scaled(&y, &b.labels, 0.0, ng_loss_scaler_scale(&ls), &dy, NULL);
        if (!step) first = last;
        ng_model_backward(m, &ctx, &dy);
        ng_loss_scale_verdict v = ng_loss_scaler_unscale(&ls, &m->flat_grads);
        NG_CHECK(v != NG_LOSS_SCALE_ABORT, "%s", ng_loss_scaler_why(&ls));
        if (v == NG_LOSS_SCALE_SKIP) {
            skipped++;
            continue;
        }
        ng_optimizer_step(o, 0.2);
        ng_model_refresh_compute(m);
    }
    NG_TEST(last < 0.5 * first, "%s training: loss %g -> %g does not halve", ng_dtype_name(compute),
            first, last);
    NG_TEST(skipped == 0, "%s training: %d steps skipped on finite data", ng_dtype_name(compute),
            skipped);
    NG_TEST(compute != NG_F16 || ng_loss_scaler_scale(&ls) == 256.0 * 16,
            "f16 training: the scale grew x2 every 10 clean steps (x16 in 40), not to %g",
            ng_loss_scaler_scale(&ls));
    ng_tensor_free(&b.x);
    ng_tensor_free(&b.labels);
    ng_optimizer_free(o);
    ng_model_free(m);
    return last;
}

int main(void) {
    ng_test_seed();
    issue_sequence("sgd");
    issue_sequence("adamw");
    unscale_exact();
    bf16_unscaled();
    train_sequence(NG_F32);
    train_sequence(NG_F16);
    train_sequence(NG_BF16);
    state_table();
    bad_configs();
    return ng_test_finish("test_loss_scale");
}
