/* Tensors: a typed, shaped, contiguous view of memory on one device.
 * A tensor either owns its buffer (ng_tensor_new / ng_tensor_free) or is a view into another
 * buffer (ng_tensor_view, arenas); views are never freed. */
#ifndef NG_TENSOR_H
#define NG_TENSOR_H

#include <stdint.h>

#include "dtype.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NG_MAX_DIMS 5

typedef struct ng_tensor {
    void *data;
    ng_dtype dtype;
    ng_device device;
    int ndim;
    int64_t shape[NG_MAX_DIMS];
    int64_t numel;
    int owns;         /* 1 when ng_tensor_free must release data */
    const char *name; /* used in error messages; not owned */
} ng_tensor;

/* Allocates a tensor of the given shape (contents undefined) through the counting allocator. */
ng_tensor ng_tensor_new(ng_dtype dtype, ng_device dev, int ndim, const int64_t *shape,
                        const char *name);
/* Shorthands for 1-3 dims. */
ng_tensor ng_tensor_1d(ng_dtype dtype, ng_device dev, int64_t n0, const char *name);
ng_tensor ng_tensor_2d(ng_dtype dtype, ng_device dev, int64_t n0, int64_t n1, const char *name);
ng_tensor ng_tensor_3d(ng_dtype dtype, ng_device dev, int64_t n0, int64_t n1, int64_t n2,
                       const char *name);
void ng_tensor_free(ng_tensor *t);

/* A tensor over existing memory, not owned. */
ng_tensor ng_tensor_wrap(void *data, ng_dtype dtype, ng_device dev, int ndim, const int64_t *shape,
                         const char *name);
/* A contiguous view of `t` starting `offset` elements in, with a new shape; the view must lie
 * inside t. */
ng_tensor ng_tensor_view(const ng_tensor *t, int64_t offset, int ndim, const int64_t *shape,
                         const char *name);
/* Same data, new shape with the same element count. */
ng_tensor ng_tensor_reshape(const ng_tensor *t, int ndim, const int64_t *shape);

/* A new owned tensor with t's shape and dtype on another device, holding t's data. */
ng_tensor ng_tensor_to(const ng_tensor *t, ng_device dev, const char *name);
/* Copies src into dst (same dtype and element count), across devices if they differ. */
void ng_tensor_copy(ng_tensor *dst, const ng_tensor *src);

size_t ng_tensor_bytes(const ng_tensor *t);
/* The element count of `shape` into *numel, or 0 when a dim is negative or the count or its
 * bytes (elem_size each) overflow int64: for sizes read from files, before they are trusted. */
int ng_shape_numel(int ndim, const int64_t *shape, size_t elem_size, int64_t *numel);
int ng_tensor_same_shape(const ng_tensor *a, const ng_tensor *b);
/* "f32 cuda [3,5,7]": for messages. Returns a pointer into a small rotating buffer. */
const char *ng_tensor_desc(const ng_tensor *t);
/* The tensor's name or "tensor" when unnamed. */
const char *ng_tensor_name(const ng_tensor *t);

#ifdef __cplusplus
}
#endif
#endif
