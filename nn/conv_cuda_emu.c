/* nn/conv_cuda.cu's one kernel that host code launches directly rather than through a CPU twin
 * (the cuDNN binding's half weight gradient added into the f32 master), for the emulation build
 * (core/cuda_emu.h): run on the host with device memory open. */
#include "core/cuda_emu.h"
#include "core/error.h"
#include "core/half.h"
#include "nn/conv_kernels.h"

void ng_conv_add_widened_cuda(ng_tensor *dw, const void *h, ng_dtype dt) {
    NG_CHECK(dw->device == NG_CUDA && dw->dtype == NG_F32 && (dt == NG_F16 || dt == NG_BF16),
             "conv: the widening add takes an f32 CUDA gradient and a half one, not %s and %s",
             ng_tensor_desc(dw), ng_dtype_name(dt));
    NG_CHECK(ng_emu_is_device(h, (size_t)dw->numel * 2),
             "conv: the half weight gradient of %s is not in device memory", ng_tensor_desc(dw));
    ng_emu_enter();
    float *d = dw->data;
    for (int64_t i = 0; i < dw->numel; i++)
        d[i] += dt == NG_F16 ? ng_f16_to_f32(((const ng_f16 *)h)[i])
                             : ng_bf16_to_f32(((const ng_bf16 *)h)[i]);
    ng_emu_leave();
}
