/* The safetensors file format (8-byte little-endian header length, a JSON header naming each
 * tensor's dtype, shape and byte range, then raw little-endian data), as PyTorch and timm read
 * and write it. Files are written to a temporary name, fsynced and renamed, so a reader never
 * sees half a file. A malformed file is a usage error that names the file and the tensor. */
#ifndef NG_SAFETENSORS_H
#define NG_SAFETENSORS_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    const ng_tensor *tensor; /* any device, any dtype */
} ng_st_entry;

/* Writes the tensors in the given order. `meta` is an optional NULL-terminated list of key,
 * value string pairs stored under "__metadata__". */
void ng_safetensors_save(const char *path, const ng_st_entry *entries, int n, const char **meta);

typedef struct ng_safetensors ng_safetensors;

/* Reads and validates the whole file: known dtypes, shapes that match their byte ranges,
 * ranges inside the data and not overlapping. */
ng_safetensors *ng_safetensors_open(const char *path);
void ng_safetensors_close(ng_safetensors *f);
/* Closes every file still open and returns how many there were. For code that catches usage
 * errors (tests, fuzzers): a caller that raised an error with a file open leaves it here. */
int ng_safetensors_close_all(void);
int ng_safetensors_count(const ng_safetensors *f);
/* The i-th tensor (in file order of offsets) as a host view into the file's buffer, aligned to
 * its element size (a tensor stored at an unaligned offset is viewed in an aligned copy). */
ng_tensor ng_safetensors_get(const ng_safetensors *f, int i);
/* The tensor named `name` as a host view, or 0 when absent. */
int ng_safetensors_find(const ng_safetensors *f, const char *name, ng_tensor *out);
/* A metadata value, or NULL. */
const char *ng_safetensors_meta(const ng_safetensors *f, const char *key);
const char *ng_safetensors_path(const ng_safetensors *f);

/* The safetensors dtype name ("F32", "BF16", ...) and back (-1 when unknown). */
const char *ng_st_dtype_name(ng_dtype t);
int ng_st_dtype_from_name(const char *s);

/* Writes `bytes` to path through path.tmp + fsync + rename; ng_fail naming the file on error. */
void ng_write_file_atomic(const char *path, const void *data, size_t bytes);

#ifdef __cplusplus
}
#endif
#endif
