/* Local reductions on host buffers: dst += src and buf /= n per dtype. Each result is computed
 * in double and rounded once to the element type with core/convert.h (which the CUDA twin in
 * reduce_cuda.cu shares), so it is the correctly rounded sum or quotient on both sides. */
#include "comm_internal.h"

#include <string.h>

#include "core/convert.h"
#include "core/error.h"

static void check_float(ng_dtype dt) {
    NG_CHECK(dt == NG_F32 || dt == NG_F64 || dt == NG_F16 || dt == NG_BF16,
             "comm: cannot reduce %s elements", ng_dtype_name(dt));
}

void ng_comm_cpu_add(ng_comm *c, void *dst, const void *src, int64_t n, ng_dtype dt) {
    (void)c;
    check_float(dt);
    if (dt == NG_F32) { /* the hot path of the CPU rings: a plain loop the compiler vectorises */
        float *d = dst;
        const float *s = src;
        for (int64_t i = 0; i < n; i++) d[i] += s[i];
    } else {
        for (int64_t i = 0; i < n; i++)
            cv_store(dst, dt, i, cv_load(dst, dt, i) + cv_load(src, dt, i));
    }
}

void ng_comm_cpu_divide(ng_comm *c, void *buf, int64_t n, ng_dtype dt, int by) {
    (void)c;
    check_float(dt);
    for (int64_t i = 0; i < n; i++) cv_store(buf, dt, i, cv_load(buf, dt, i) / by);
}

void ng_comm_cpu_copy(ng_comm *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    memmove(dst, src, bytes);
}
