/* Linear and the containers (sequence, residual, checkpoint segment): backward against finite
 * differences in float64; checkpointing gives identical results with less activation memory. */
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "nn/model.h"
#include "testing.h"

static ng_layer *make_linear(void) {
    return ng_linear("fc", 7, 5, 1);
}
static ng_layer *make_linear_nobias(void) {
    return ng_linear("fc", 7, 5, 0);
}

static ng_layer *make_seq(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc1", 6, 9, 1));
    ng_layer_add_child(s, ng_linear("fc2", 9, 4, 0));
    ng_layer_add_child(s, ng_linear("fc3", 4, 3, 1));
    return s;
}

static ng_layer *make_residual(void) {
    ng_layer *f = ng_sequence("branch");
    ng_layer_add_child(f, ng_linear("branch.fc1", 6, 8, 1));
    ng_layer_add_child(f, ng_linear("branch.fc2", 8, 6, 1));
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_residual("res", f));
    ng_layer_add_child(s, ng_linear("head", 6, 2, 1));
    return s;
}

/* Two residual blocks, each in a checkpoint segment, between linear layers. */
static ng_layer *make_ckpt(int enabled) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("stem", 5, 16, 1));
    for (int b = 0; b < 2; b++) {
        char name[32];
        ng_layer *f = ng_sequence("");
        snprintf(name, sizeof name, "blocks.%d.fc1", b);
        ng_layer_add_child(f, ng_linear(name, 16, 64, 1));
        snprintf(name, sizeof name, "blocks.%d.fc2", b);
        ng_layer_add_child(f, ng_linear(name, 64, 16, 1));
        snprintf(name, sizeof name, "blocks.%d", b);
        ng_layer_add_child(s, ng_checkpoint(name, ng_residual(name, f), enabled));
    }
    ng_layer_add_child(s, ng_linear("head", 16, 3, 1));
    return s;
}
static ng_layer *make_ckpt_on(void) {
    return make_ckpt(1);
}

/* Runs one forward/backward; returns the output and gradients in f64 and the arena peak. */
static void run(int enabled, uint64_t seed, const ng_tensor *x, const ng_tensor *dy, double **y,
                double **g, size_t *peak, int64_t *ny, int64_t *ng) {
    ng_model *m = ng_model_new(make_ckpt(enabled));
    ng_model_build(m, NG_CPU, NG_F64, seed, 1 << 22, 1 << 22);
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ng_tensor out = ng_model_forward(m, &ctx, x);
    *y = ng_test_to_f64(&out); /* before backward, which hands the activations back */
    ng_model_backward(m, &ctx, dy);
    *g = ng_test_to_f64(&m->flat_grads);
    *peak = m->acts.peak;
    *ny = out.numel;
    *ng = m->numel;
    ng_model_free(m);
}

static void test_checkpoint_memory(void) {
    int64_t n = 32;
    ng_tensor x = ng_tensor_2d(NG_F64, NG_CPU, n, 5, "x"),
              dy = ng_tensor_2d(NG_F64, NG_CPU, n, 3, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    uint64_t seed = ng_test_seed();
    double *y0, *g0, *y1, *g1;
    size_t p0, p1;
    int64_t ny, ng;
    run(0, seed, &x, &dy, &y0, &g0, &p0, &ny, &ng);
    run(1, seed, &x, &dy, &y1, &g1, &p1, &ny, &ng);
    ng_test_close("checkpointed output equals plain", y0, y1, ny, 0, 0);
    ng_test_close("checkpointed gradients equal plain", g0, g1, ng, 0, 0);
    /* Each block's interior holds a [n,64] hidden activation and its [n,16] output; with
     * checkpointing only block outputs stay. */
    NG_TEST(p1 + (size_t)n * 64 * 8 <= p0,
            "checkpointing saves activation memory: %zu vs %zu bytes", p1, p0);
    free(y0), free(g0), free(y1), free(g1);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
}

/* Counts observer calls: the checkpoint replay must not call input() again. */
static int n_input, n_grad;
static void on_input(void *s, ng_layer *l, const ng_tensor *x) {
    (void)s, (void)l, (void)x, n_input++;
}
static void on_grad(void *s, ng_layer *l, const ng_tensor *g) {
    (void)s, (void)l, (void)g, n_grad++;
}

static void test_observer_once(void) {
    ng_model *m = ng_model_new(make_ckpt(1));
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 22, 1 << 22);
    ng_tensor x = ng_tensor_2d(NG_F32, NG_CPU, 4, 5, "x"),
              dy = ng_tensor_2d(NG_F32, NG_CPU, 4, 3, "dy");
    ng_test_fill_uniform(&x, -1, 1);
    ng_test_fill_uniform(&dy, -1, 1);
    ng_observer obs = {.input = on_input, .output_grad = on_grad};
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    ctx.observer = &obs;
    ng_model_forward(m, &ctx, &x);
    ng_model_backward(m, &ctx, &dy);
    NG_TEST(n_input == 6 && n_grad == 6, "6 linear layers observed once each: %d inputs, %d grads",
            n_input, n_grad);
    ng_tensor_free(&x);
    ng_tensor_free(&dy);
    ng_model_free(m);
}

static void test_errors(void) {
    ng_model *m = ng_model_new(ng_linear("fc", 7, 5, 1));
    ng_model_build(m, NG_CPU, NG_F32, 1, 1 << 20, 1 << 20);
    ng_tensor x = ng_tensor_2d(NG_F32, NG_CPU, 3, 6, "x");
    ng_ctx ctx = ng_model_ctx(m, 1, 1, 0);
    NG_TEST_ERROR(ng_model_forward(m, &ctx, &x), "fc");
    ng_tensor_free(&x);
    ng_model_free(m);
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("fc", 2, 2, 1));
    ng_layer_add_child(s, ng_linear("fc", 2, 2, 1));
    NG_TEST_ERROR(ng_model_new(s), "fc.weight");
}

int main(void) {
    ng_gradcheck_opts o = {0};
    int64_t s2[2] = {4, 7}, s3[3] = {2, 3, 7}, s6[2] = {5, 6}, s5[2] = {3, 5};
    ng_gradcheck("linear", make_linear, 2, s2, o);
    ng_gradcheck("linear on tokens", make_linear, 3, s3, o);
    ng_gradcheck("linear no bias", make_linear_nobias, 2, s2, o);
    ng_gradcheck("sequence", make_seq, 2, s6, o);
    ng_gradcheck("residual", make_residual, 2, s6, o);
    ng_gradcheck("checkpointed residual blocks", make_ckpt_on, 2, s5, o);
    test_checkpoint_memory();
    test_observer_once();
    test_errors();
    return ng_test_finish("test_containers");
}
