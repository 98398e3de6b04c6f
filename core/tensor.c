/* Tensor construction, views and copies. */
#include "tensor.h"

#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "error.h"
#include "memory.h"

const char *ng_tensor_name(const ng_tensor *t) {
    return t && t->name ? t->name : "tensor";
}

int ng_shape_numel(int ndim, const int64_t *shape, size_t elem_size, int64_t *numel) {
    /* Sizes come from files and configs: every product is checked, and so is the byte count,
     * which must fit an int64 so pointer offsets and size_t arithmetic cannot wrap. */
    int64_t n = 1, bytes;
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return 0;
    if (__builtin_mul_overflow(n, (int64_t)elem_size, &bytes)) return 0;
    *numel = n;
    return 1;
}

static int64_t shape_numel(ng_dtype dtype, int ndim, const int64_t *shape, const char *name) {
    const char *nm = name ? name : "tensor";
    NG_CHECK(ndim >= 0 && ndim <= NG_MAX_DIMS, "tensor '%s': %d dims, at most %d allowed", nm, ndim,
             NG_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        NG_CHECK(shape[i] >= 0, "tensor '%s': dim %d is %lld, must be >= 0", nm, i,
                 (long long)shape[i]);
    int64_t n = 0;
    if (!ng_shape_numel(ndim, shape, ng_dtype_size(dtype), &n)) {
        ng_tensor t = {.dtype = dtype, .ndim = ndim};
        for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
        ng_fail("tensor '%s': shape %s holds more than 2^63 bytes", nm, ng_tensor_desc(&t));
    }
    return n;
}

ng_tensor ng_tensor_wrap(void *data, ng_dtype dtype, ng_device dev, int ndim, const int64_t *shape,
                         const char *name) {
    NG_CHECK((unsigned)dtype < NG_NUM_DTYPES, "tensor '%s': bad dtype %d", name ? name : "tensor",
             (int)dtype);
    ng_tensor t = {.data = data, .dtype = dtype, .device = dev, .ndim = ndim, .name = name};
    t.numel = shape_numel(dtype, ndim, shape, name);
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    return t;
}

ng_tensor ng_tensor_new(ng_dtype dtype, ng_device dev, int ndim, const int64_t *shape,
                        const char *name) {
    ng_tensor t = ng_tensor_wrap(NULL, dtype, dev, ndim, shape, name);
    t.data = ng_alloc(dev, ng_tensor_bytes(&t));
    t.owns = 1;
    return t;
}

ng_tensor ng_tensor_1d(ng_dtype dtype, ng_device dev, int64_t n0, const char *name) {
    return ng_tensor_new(dtype, dev, 1, (int64_t[]){n0}, name);
}

ng_tensor ng_tensor_2d(ng_dtype dtype, ng_device dev, int64_t n0, int64_t n1, const char *name) {
    return ng_tensor_new(dtype, dev, 2, (int64_t[]){n0, n1}, name);
}

ng_tensor ng_tensor_3d(ng_dtype dtype, ng_device dev, int64_t n0, int64_t n1, int64_t n2,
                       const char *name) {
    return ng_tensor_new(dtype, dev, 3, (int64_t[]){n0, n1, n2}, name);
}

void ng_tensor_free(ng_tensor *t) {
    if (t->owns) ng_free(t->device, t->data, ng_tensor_bytes(t));
    t->data = NULL;
    t->owns = 0;
}

ng_tensor ng_tensor_view(const ng_tensor *t, int64_t offset, int ndim, const int64_t *shape,
                         const char *name) {
    ng_tensor v = ng_tensor_wrap(NULL, t->dtype, t->device, ndim, shape, name);
    NG_CHECK(offset >= 0 && offset <= t->numel - v.numel,
             "view '%s' of %s: %lld elements from element %lld lie outside its %lld elements",
             ng_tensor_name(&v), ng_tensor_name(t), (long long)v.numel, (long long)offset,
             (long long)t->numel);
    v.data = (char *)t->data + (size_t)offset * ng_dtype_size(t->dtype);
    return v;
}

ng_tensor ng_tensor_reshape(const ng_tensor *t, int ndim, const int64_t *shape) {
    ng_tensor v = ng_tensor_wrap(t->data, t->dtype, t->device, ndim, shape, t->name);
    NG_CHECK(v.numel == t->numel, "reshape of %s %s to %lld elements", ng_tensor_name(t),
             ng_tensor_desc(t), (long long)v.numel);
    return v;
}

size_t ng_tensor_bytes(const ng_tensor *t) {
    return (size_t)t->numel * ng_dtype_size(t->dtype);
}

int ng_tensor_same_shape(const ng_tensor *a, const ng_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

const char *ng_tensor_desc(const ng_tensor *t) {
    static char bufs[4][96];
    static int next;
    char *s = bufs[next++ & 3];
    int n = snprintf(s, 96, "%s %s [", ng_dtype_name(t->dtype), ng_device_name(t->device));
    for (int i = 0; i < t->ndim && n < 80; i++)
        n += snprintf(s + n, 96 - n, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    snprintf(s + n, 96 - n, "]");
    return s;
}

void ng_tensor_copy(ng_tensor *dst, const ng_tensor *src) {
    NG_CHECK(dst->dtype == src->dtype && dst->numel == src->numel,
             "copy from %s %s to %s %s: dtype and element count must match", ng_tensor_name(src),
             ng_tensor_desc(src), ng_tensor_name(dst), ng_tensor_desc(dst));
    if (!src->numel) return;
    ng_device dev = dst->device == NG_CPU ? src->device : dst->device;
    ng_backend_for(dev, "ng_tensor_copy")
        ->memcpy(dst->data, dst->device, src->data, src->device, ng_tensor_bytes(src));
}

ng_tensor ng_tensor_to(const ng_tensor *t, ng_device dev, const char *name) {
    ng_tensor r = ng_tensor_new(t->dtype, dev, t->ndim, t->shape, name ? name : t->name);
    ng_tensor_copy(&r, t);
    return r;
}
