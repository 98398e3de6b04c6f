/* Sizes and names of element types and devices. */
#include "dtype.h"

#include <string.h>

static const struct {
    const char *name, *alias;
    size_t size;
} dtypes[NG_NUM_DTYPES] = {
    [NG_F32] = {"f32", "fp32", 4},  [NG_F64] = {"f64", "fp64", 8},
    [NG_F16] = {"f16", "fp16", 2},  [NG_BF16] = {"bf16", "bfloat16", 2},
    [NG_I32] = {"i32", "int32", 4}, [NG_U8] = {"u8", "uint8", 1},
};

size_t ng_dtype_size(ng_dtype t) {
    return (unsigned)t < NG_NUM_DTYPES ? dtypes[t].size : 0;
}

const char *ng_dtype_name(ng_dtype t) {
    return (unsigned)t < NG_NUM_DTYPES ? dtypes[t].name : "?";
}

const char *ng_device_name(ng_device d) {
    return d == NG_CPU ? "cpu" : d == NG_CUDA ? "cuda" : "?";
}

int ng_dtype_is_float(ng_dtype t) {
    return t == NG_F32 || t == NG_F64 || t == NG_F16 || t == NG_BF16;
}

int ng_dtype_from_name(const char *name) {
    for (int i = 0; i < NG_NUM_DTYPES; i++)
        if (!strcmp(name, dtypes[i].name) || !strcmp(name, dtypes[i].alias)) return i;
    return -1;
}
