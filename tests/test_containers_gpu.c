/* Linear and containers on CUDA against the CPU twin. */
#include "gradcheck.h"
#include "nn/containers.h"
#include "nn/linear.h"
#include "testing.h"

static ng_layer *make_linear(void) {
    return ng_linear("fc", 129, 65, 1);
}

static ng_layer *make_blocks(void) {
    ng_layer *s = ng_sequence("");
    ng_layer_add_child(s, ng_linear("stem", 33, 64, 1));
    ng_layer *f = ng_sequence("");
    ng_layer_add_child(f, ng_linear("blocks.0.fc1", 64, 256, 1));
    ng_layer_add_child(f, ng_linear("blocks.0.fc2", 256, 64, 1));
    ng_layer_add_child(s, ng_checkpoint("blocks.0", ng_residual("blocks.0", f), 1));
    ng_layer_add_child(s, ng_linear("head", 64, 10, 1));
    return s;
}

int main(void) {
    ng_test_require_gpu("test_containers_gpu");
    ng_twincheck("linear", make_linear, 3, (int64_t[]){4, 17, 129}, 1, 1e-5);
    ng_twincheck("checkpointed blocks", make_blocks, 2, (int64_t[]){37, 33}, 1, 1e-5);
    /* f16/bf16 twins: both store the same half values except where f32 (CUDA) and double (CPU)
     * arithmetic round to different neighbours; tolerances as in tests/test_mixed.c. */
    for (ng_dtype dt = NG_F16; dt <= NG_BF16; dt++) {
        ng_twincheck_mixed("linear, mixed", make_linear, 3, (int64_t[]){4, 17, 129}, 1, dt,
                           ng_mixed_tol(dt, 2, 129));
        ng_twincheck_mixed("checkpointed blocks, mixed", make_blocks, 2, (int64_t[]){37, 33}, 1, dt,
                           ng_mixed_tol(dt, 14, 256));
    }
    return ng_test_finish("test_containers_gpu");
}
