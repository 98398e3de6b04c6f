/* Whole models on CUDA against the CPU twin: a small ViT and a 3D-CNN (checkpointed, recomputed),
 * forward and backward, plus LeNet and VGG. */
#include "gradcheck.h"
#include "nn/models.h"
#include "testing.h"

static ng_arch cur;
static ng_layer *make_cur(void) {
    return ng_arch_build(&cur);
}

int main(void) {
    ng_test_require_gpu("test_models_gpu");
    ng_arch_defaults("vit", &cur);
    cur.img = 28, cur.patch = 4, cur.width = 48, cur.depth = 3, cur.heads = 3, cur.classes = 10;
    ng_twincheck("vit 28px", make_cur, 4, (int64_t[]){5, 1, 28, 28}, 1, 1e-4);
    ng_arch_defaults("cnn3d", &cur);
    cur.img = 17, cur.checkpoint.every = 1;
    ng_twincheck("cnn3d 17^3 checkpointed", make_cur, 5, (int64_t[]){2, 1, 17, 17, 17}, 1, 1e-4);
    /* recomputed blocks move each output down over the last in gap-sized device copies */
    cur.checkpoint.recompute = 1;
    ng_twincheck("cnn3d 17^3 recomputed", make_cur, 5, (int64_t[]){2, 1, 17, 17, 17}, 1, 1e-4);
    ng_arch_defaults("lenet", &cur);
    ng_twincheck("lenet", make_cur, 4, (int64_t[]){7, 1, 28, 28}, 1, 1e-4);
    ng_arch_defaults("vgg", &cur);
    cur.width = 16, cur.depth = 3;
    ng_twincheck("vgg", make_cur, 4, (int64_t[]){3, 3, 32, 32}, 1, 1e-4);
    /* Mixed precision: the ViT (n = 76 roundings on its longest chain, as in test_mixed.c for two
     * blocks, here three: 110) and the checkpointed 3D-CNN (6 layers: 41), the latter small: two
     * half-precision twins differ by an ulp here and there, so among the ~10^5 ReLU inputs of a
     * 17^3 volume a few always switch sides (a kink, redrawn, not a rounding error); at 5^3 with
     * 8 channels (12,000 of them) most draws have none. */
    for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
        ng_arch_defaults("vit", &cur);
        cur.img = 28, cur.patch = 4, cur.width = 48, cur.depth = 3, cur.heads = 3, cur.classes = 10;
        ng_twincheck_mixed("vit 28px, mixed", make_cur, 4, (int64_t[]){5, 1, 28, 28}, 1, dt,
                           ng_mixed_tol(dt, 110, 192));
        ng_arch_defaults("cnn3d", &cur);
        cur.img = 5, cur.width = 8, cur.checkpoint.every = 1;
        ng_twincheck_mixed("cnn3d 5^3 checkpointed, mixed", make_cur, 5, (int64_t[]){2, 1, 5, 5, 5},
                           1, dt, ng_mixed_tol(dt, 41, 216));
    }
    return ng_test_finish("test_models_gpu");
}
