/* The model zoo: every architecture builds, maps [B, input] to [B, classes], has the parameter
 * count PyTorch gives for the same network, and passes a whole-model gradient check in f64. */
#include <string.h>

#include "gradcheck.h"
#include "nn/model.h"
#include "nn/models.h"
#include "testing.h"

static ng_arch cur;
static ng_layer *make_cur(void) {
    return ng_arch_build(&cur);
}

static int64_t param_count(const ng_arch *a) {
    ng_model *m = ng_model_new(ng_arch_build(a));
    int64_t n = m->count;
    ng_model_free(m);
    return n;
}

static void check_shape(const char *arch, const ng_arch *a) {
    int64_t in[5] = {3}, out[5];
    int nd = ng_arch_input_shape(a, in + 1) + 1, on;
    ng_layer *l = ng_arch_build(a);
    ng_layer_out_shape(l, nd, in, &on, out);
    NG_TEST(on == 2 && out[0] == 3 && out[1] == a->classes, "%s: output [3, %lld], got %d dims",
            arch, (long long)a->classes, on);
    ng_layer_free(l);
}

int main(void) {
    const char *archs[] = {"mlp", "lenet", "vgg", "nin", "cnn3d", "vit_tiny_patch4_28"};
    for (int i = 0; i < 6; i++) {
        ng_arch a;
        NG_TEST(ng_arch_defaults(archs[i], &a), "defaults for %s", archs[i]);
        check_shape(archs[i], &a);
    }
    ng_arch a;
    /* Counts of the same networks in PyTorch (torch.nn layers with default bias):
     * LeNet-5 on 28x28 with padding 2 in conv1: 156 + 2416 + 48120 + 10164 + 850. */
    ng_arch_defaults("lenet", &a);
    NG_TEST(param_count(&a) == 61706, "lenet has 61,706 parameters");
    /* MLP 784-512-512-10: 401920 + 262656 + 5130. */
    ng_arch_defaults("mlp", &a);
    NG_TEST(param_count(&a) == 669706, "mlp 784-512-512-10 has 669,706 parameters");
    /* 3D-CNN of gpu.md: conv 1->16 (448), 5 x conv 16->16 (6928 each), 6 BN (32 each), head
     * 16->2 (34). */
    ng_arch_defaults("cnn3d", &a);
    NG_TEST(param_count(&a) == 448 + 5 * 6928 + 6 * 32 + 34, "cnn3d parameter count");
    NG_TEST(!ng_arch_defaults("resnet50", &a), "unknown architecture is refused");
    cur = a;
    snprintf(cur.arch, sizeof cur.arch, "warpnet");
    NG_TEST_ERROR(ng_arch_build(&cur), "warpnet");

    /* Whole-model gradient checks on tiny instances, in training mode. */
    ng_gradcheck_opts o = {.training = 1, .max_checks = 12};
    ng_arch_defaults("mlp", &cur);
    cur.img = 4, cur.width = 6, cur.classes = 3;
    ng_gradcheck("mlp", make_cur, 4, (int64_t[]){3, 1, 4, 4}, o);
    ng_arch_defaults("lenet", &cur);
    cur.img = 12, cur.classes = 3;
    ng_gradcheck("lenet", make_cur, 4, (int64_t[]){2, 1, 12, 12}, o);
    ng_arch_defaults("vgg", &cur);
    cur.img = 8, cur.width = 3, cur.depth = 2, cur.classes = 3, cur.checkpoint.every = 1;
    ng_gradcheck("vgg checkpointed", make_cur, 4, (int64_t[]){3, 3, 8, 8}, o);
    ng_arch_defaults("nin", &cur);
    cur.img = 8, cur.width = 3, cur.depth = 2, cur.classes = 3;
    ng_gradcheck("nin", make_cur, 4, (int64_t[]){2, 3, 8, 8}, o);
    ng_arch_defaults("cnn3d", &cur);
    cur.img = 5, cur.width = 3, cur.depth = 2, cur.checkpoint.every = 1;
    ng_gradcheck("cnn3d checkpointed", make_cur, 5, (int64_t[]){2, 1, 5, 5, 5}, o);
    ng_arch_defaults("vit", &cur);
    cur.img = 8, cur.patch = 4, cur.width = 8, cur.depth = 2, cur.heads = 2, cur.classes = 3;
    ng_gradcheck("vit", make_cur, 4, (int64_t[]){2, 1, 8, 8}, o);
    return ng_test_finish("test_models");
}
