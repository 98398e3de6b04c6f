/* The kernels of the CUDA linear algebra (core/linalg_cuda.cu) that its host code
 * (core/linalg_cusolver.c) launches on core's stream, on f32 or f64 [b, n, n] row-major buffers.
 * The emulation build has their twins in core/cuda_emu.c. */
#ifndef NG_LINALG_CUDA_H
#define NG_LINALG_CUDA_H

#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The strict upper triangle of every matrix: zeroed, or (mirror) copied from the lower one. */
void ng_linalg_cuda_set_upper(void *x, ng_dtype dt, int64_t b, int64_t n, int mirror);
/* bad[p] = 1 where the lower triangle of matrix p holds NaN or Inf (bad is left as it is
 * elsewhere: zero it first). */
void ng_linalg_cuda_lower_nonfinite(const void *a, ng_dtype dt, int64_t b, int64_t n, int *bad);
/* dst_p = src_p^T for every matrix p; no overlap. */
void ng_linalg_cuda_transpose(const void *src, void *dst, ng_dtype dt, int64_t b, int64_t n);
/* count NaNs from x. */
void ng_linalg_cuda_fill_nan(void *x, ng_dtype dt, int64_t count);

#ifdef __cplusplus
}
#endif
#endif
