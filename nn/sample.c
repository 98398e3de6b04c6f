/* Categorical label sampling: argument checks, dispatch, and the CPU twin of the per-row rule
 * in sample.h (the CUDA twin is in sample_cuda.cu). */
#include "nn/sample.h"

#include "core/dispatch.h"
#include "core/error.h"

static void sample_cpu(const ng_tensor *logits, ng_rng_key key, ng_tensor *labels) {
    int64_t N = logits->shape[0], C = logits->shape[1];
    int is_f64 = logits->dtype == NG_F64;
    size_t es = is_f64 ? sizeof(double) : sizeof(float);
    int32_t *out = labels->data;
    for (int64_t n = 0; n < N; n++)
        out[n] = ng_sample_row((const char *)logits->data + (size_t)(n * C) * es, is_f64, C,
                               ng_sample_u01(key, n));
}

void ng_sample_categorical(const ng_tensor *logits, ng_rng_key key, ng_tensor *labels) {
    NG_CHECK(logits->ndim == 2 && logits->shape[1] >= 1 &&
                 (logits->dtype == NG_F32 || logits->dtype == NG_F64),
             "ng_sample_categorical: logits '%s' are %s; f32 or f64 [N, C] with C >= 1 is needed",
             ng_tensor_name(logits), ng_tensor_desc(logits));
    NG_CHECK(labels->dtype == NG_I32 && labels->numel == logits->shape[0] &&
                 labels->device == logits->device,
             "ng_sample_categorical: labels '%s' are %s; i32 [%lld] on %s is needed for logits %s",
             ng_tensor_name(labels), ng_tensor_desc(labels), (long long)logits->shape[0],
             ng_device_name(logits->device), ng_tensor_desc(logits));
    if (!labels->numel) return;
    NG_DISPATCH(logits, sample_cpu(logits, key, labels),
                ng_sample_categorical_cuda(logits, key, labels));
}
