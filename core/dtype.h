/* Element types and devices that tensors carry, with their sizes and names. */
#ifndef NG_DTYPE_H
#define NG_DTYPE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { NG_F32 = 0, NG_F64, NG_F16, NG_BF16, NG_I32, NG_U8, NG_NUM_DTYPES } ng_dtype;
typedef enum { NG_CPU = 0, NG_CUDA, NG_NUM_DEVICES } ng_device;

size_t ng_dtype_size(ng_dtype t);
const char *ng_dtype_name(ng_dtype t);
const char *ng_device_name(ng_device d);
/* Floating types: the ones arithmetic ops accept. */
int ng_dtype_is_float(ng_dtype t);
/* Parses "f32", "fp16", "bf16", ...; returns -1 when the name is unknown. */
int ng_dtype_from_name(const char *name);

#ifdef __cplusplus
}
#endif
#endif
