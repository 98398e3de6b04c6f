/* Calling a CUDA twin from host code that also builds without CUDA: the one macro that hides
 * whether CUDA was built in, so layer code has no #ifdefs. */
#ifndef NG_DISPATCH_H
#define NG_DISPATCH_H

#include "core/error.h"
#include "core/tensor.h"

#ifdef NG_HAVE_CUDA
#define NG_CUDA_ONLY(call) (call)
#else
#define NG_CUDA_ONLY(call)                                                                         \
    ng_fail("a CUDA tensor reached %s, but natgrad was built without CUDA", __func__)
#endif

/* Runs cpu_call or cuda_call by the device of `t`. The CUDA emulation build (core/cuda_emu.h)
 * runs cpu_call for a CUDA tensor too, with device memory open: the host code around a CUDA
 * twin is the CUDA build's, its kernel is the CPU twin. */
#ifdef NG_CUDA_EMU
#include "core/cuda_emu.h"
#define NG_DISPATCH(t, cpu_call, cuda_call)                                                        \
    do {                                                                                           \
        if ((t)->device == NG_CUDA) {                                                              \
            ng_emu_enter();                                                                        \
            (cpu_call);                                                                            \
            ng_emu_leave();                                                                        \
            (void)sizeof((cuda_call), 0); /* still type-checked */                                 \
        } else                                                                                     \
            (cpu_call);                                                                            \
    } while (0)
#else
#define NG_DISPATCH(t, cpu_call, cuda_call)                                                        \
    do {                                                                                           \
        if ((t)->device == NG_CUDA)                                                                \
            NG_CUDA_ONLY(cuda_call);                                                               \
        else                                                                                       \
            (cpu_call);                                                                            \
    } while (0)
#endif

#endif
