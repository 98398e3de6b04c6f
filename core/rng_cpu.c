/* CPU RNG fills: one Philox block per 4 elements, values by the shared rule in rng_dist.h so
 * they match the CUDA fills bit for bit. */
#include "backend.h"
#include "half.h"
#include "rng_dist.h"

/* Stores v by the rounding rule of rng_dist.h: f16/bf16 round the float, not the double. */
static void store(void *data, ng_dtype dt, int64_t i, double v) {
    switch (dt) {
        case NG_F64:
            ((double *)data)[i] = v;
            break;
        case NG_F32:
            ((float *)data)[i] = (float)v;
            break;
        case NG_F16:
            ((ng_f16 *)data)[i] = ng_f32_to_f16((float)v);
            break;
        case NG_BF16:
            ((ng_bf16 *)data)[i] = ng_f32_to_bf16((float)v);
            break;
        default:
            ng_fail("ng_cpu_rng_fill: %s is not a floating type", ng_dtype_name(dt));
    }
}

void ng_cpu_rng_fill(ng_tensor *t, ng_rng_dist dist, ng_rng_key key, double p0, double p1) {
    int64_t n = t->numel;
    for (int64_t b = 0; 4 * b < n; b++) {
        uint32_t w[4];
        double v[4];
        ng_rng_block(key, (uint64_t)b, w);
        ng_rng_block_values(dist, w, p0, p1, v);
        int64_t i0 = 4 * b, cnt = n - i0 < 4 ? n - i0 : 4;
        for (int64_t j = 0; j < cnt; j++) store(t->data, t->dtype, i0 + j, v[j]);
    }
}
