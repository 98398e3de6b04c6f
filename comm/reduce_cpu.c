/* Local reductions on host buffers: dst += src and buf /= n per dtype. fp16/bf16 go through f32
 * with core/half.h, so a sum of two halves is rounded once, as on the GPU and in NCCL. */
#include "comm_internal.h"

#include "core/error.h"
#include "core/half.h"

void ng_comm_cpu_add(void *dst, const void *src, int64_t n, ng_dtype dt) {
    switch (dt) {
        case NG_F32: {
            float *d = dst;
            const float *s = src;
            for (int64_t i = 0; i < n; i++) d[i] += s[i];
            return;
        }
        case NG_F64: {
            double *d = dst;
            const double *s = src;
            for (int64_t i = 0; i < n; i++) d[i] += s[i];
            return;
        }
        case NG_F16: {
            ng_f16 *d = dst;
            const ng_f16 *s = src;
            for (int64_t i = 0; i < n; i++)
                d[i] = ng_f32_to_f16(ng_f16_to_f32(d[i]) + ng_f16_to_f32(s[i]));
            return;
        }
        case NG_BF16: {
            ng_bf16 *d = dst;
            const ng_bf16 *s = src;
            for (int64_t i = 0; i < n; i++)
                d[i] = ng_f32_to_bf16(ng_bf16_to_f32(d[i]) + ng_bf16_to_f32(s[i]));
            return;
        }
        default:
            ng_fail("comm: cannot reduce %s elements", ng_dtype_name(dt));
    }
}

/* The quotient is taken in double and rounded once to the element type (the CUDA twin in
 * reduce_cuda.cu does the same), so every algorithm's average has the same bits. */
void ng_comm_cpu_divide(void *buf, int64_t n, ng_dtype dt, int by) {
    double q = by;
    switch (dt) {
        case NG_F32: {
            float *d = buf;
            for (int64_t i = 0; i < n; i++) d[i] = (float)((double)d[i] / q);
            return;
        }
        case NG_F64: {
            double *d = buf;
            for (int64_t i = 0; i < n; i++) d[i] = d[i] / q;
            return;
        }
        case NG_F16: {
            ng_f16 *d = buf;
            for (int64_t i = 0; i < n; i++)
                d[i] = ng_f32_to_f16((float)((double)ng_f16_to_f32(d[i]) / q));
            return;
        }
        case NG_BF16: {
            ng_bf16 *d = buf;
            for (int64_t i = 0; i < n; i++)
                d[i] = ng_f32_to_bf16((float)((double)ng_bf16_to_f32(d[i]) / q));
            return;
        }
        default:
            ng_fail("comm: cannot average %s elements", ng_dtype_name(dt));
    }
}
