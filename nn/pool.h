/* Pooling over 2-D images and 3-D volumes: max, average, and global average. */
#ifndef NG_POOL_H
#define NG_POOL_H

#include "nn/layer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Input [N, C, (D,) H, W]; kernel has nd entries; stride (NULL: = kernel) and padding (NULL: 0)
 * too. Padding may be at most half the kernel, as in PyTorch, so no window lies wholly in the
 * padding. Output size per dim: (in + 2 pad - k) / stride + 1, floored (ceil_mode off).
 * Max pooling ignores padded positions; its gradient goes to the window's argmax, the first
 * maximum in row-major window order on ties; a NaN in a window is its maximum. f32 on the CPU
 * runs on oneDNN with these rules kept (nn/pool.c). */
ng_layer *ng_maxpool(const char *name, int nd, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding);
/* Average with count_include_pad, PyTorch's default: the divisor is always prod(kernel). */
ng_layer *ng_avgpool(const char *name, int nd, const int64_t *kernel, const int64_t *stride,
                     const int64_t *padding);
/* [N, C, spatial...] -> [N, C], the mean over all spatial positions. */
ng_layer *ng_global_avgpool(const char *name);

#ifdef __cplusplus
}
#endif
#endif
