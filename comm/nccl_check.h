/* The NCCL checking macro: file, line, the call and NCCL's own message, then abort (the device
 * state is no longer trusted). Lives in comm/ so core compiles without nccl.h. */
#ifndef NG_NCCL_CHECK_H
#define NG_NCCL_CHECK_H

#include <nccl.h>

#include "core/error.h"

#define NG_NCCL_CHECK(call)                                                                        \
    do {                                                                                           \
        ncclResult_t ng_r_ = (call);                                                               \
        if (ng_r_ != ncclSuccess)                                                                  \
            ng_lib_fail("NCCL", __FILE__, __LINE__, #call, ncclGetErrorString(ng_r_));             \
    } while (0)

#endif
