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

/* Runs cpu_call or cuda_call by the device of `t`. */
#define NG_DISPATCH(t, cpu_call, cuda_call)                                                        \
    do {                                                                                           \
        if ((t)->device == NG_CUDA)                                                                \
            NG_CUDA_ONLY(cuda_call);                                                               \
        else                                                                                       \
            (cpu_call);                                                                            \
    } while (0)

#endif
