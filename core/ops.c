/* Public ops: argument checks with messages that name the tensors, then dispatch by device. */
#include "ops.h"

#include "backend.h"
#include "error.h"

static const ng_backend *same_device(const char *op, const ng_tensor *a, const ng_tensor *b,
                                     const ng_tensor *c) {
    const ng_tensor *ts[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (!ts[i]) continue;
        NG_CHECK(ts[i]->data || !ts[i]->numel, "%s: tensor '%s' has no data", op,
                 ng_tensor_name(ts[i]));
        NG_CHECK(ts[i]->device == a->device, "%s: '%s' is %s but '%s' is %s: move one first", op,
                 ng_tensor_name(a), ng_tensor_desc(a), ng_tensor_name(ts[i]),
                 ng_tensor_desc(ts[i]));
    }
    return ng_backend_for(a->device, op);
}

static void need_float(const char *op, const ng_tensor *t) {
    NG_CHECK(ng_dtype_is_float(t->dtype), "%s: '%s' is %s; a floating type is needed", op,
             ng_tensor_name(t), ng_tensor_desc(t));
}

static void need_same(const char *op, const ng_tensor *a, const ng_tensor *b) {
    NG_CHECK(a->dtype == b->dtype && ng_tensor_same_shape(a, b),
             "%s: '%s' is %s but '%s' is %s: dtype and shape must match", op, ng_tensor_name(a),
             ng_tensor_desc(a), ng_tensor_name(b), ng_tensor_desc(b));
}

void ng_gemm(int trans_a, int trans_b, double alpha, const ng_tensor *A, const ng_tensor *B,
             double beta, ng_tensor *C) {
    const ng_backend *be = same_device("ng_gemm", A, B, C);
    NG_CHECK(A->ndim == B->ndim && A->ndim == C->ndim && (A->ndim == 2 || A->ndim == 3),
             "ng_gemm: A %s, B %s, C %s: all 2-D, or all 3-D [batch,rows,cols]", ng_tensor_desc(A),
             ng_tensor_desc(B), ng_tensor_desc(C));
    int o = A->ndim - 2; /* index of the row dim */
    int64_t m = trans_a ? A->shape[o + 1] : A->shape[o],
            k = trans_a ? A->shape[o] : A->shape[o + 1];
    int64_t kb = trans_b ? B->shape[o + 1] : B->shape[o],
            n = trans_b ? B->shape[o] : B->shape[o + 1];
    NG_CHECK(k == kb && C->shape[o] == m && C->shape[o + 1] == n,
             "ng_gemm: op(A) of '%s' %s is [%lld,%lld] and op(B) of '%s' %s is [%lld,%lld], so C "
             "must be [%lld,%lld] with equal inner dims, but '%s' is %s",
             ng_tensor_name(A), ng_tensor_desc(A), (long long)m, (long long)k, ng_tensor_name(B),
             ng_tensor_desc(B), (long long)kb, (long long)n, (long long)m, (long long)n,
             ng_tensor_name(C), ng_tensor_desc(C));
    int64_t batch = o ? C->shape[0] : 1;
    if (o) {
        NG_CHECK((A->shape[0] == batch || A->shape[0] == 1) &&
                     (B->shape[0] == batch || B->shape[0] == 1),
                 "ng_gemm: batch of A %s and B %s must be C's batch %lld or 1", ng_tensor_desc(A),
                 ng_tensor_desc(B), (long long)batch);
    }
    ng_dtype it = A->dtype, ot = C->dtype;
    NG_CHECK(B->dtype == it && ng_dtype_is_float(it),
             "ng_gemm: A '%s' is %s and B '%s' is %s: both one of f32, f64, f16, bf16",
             ng_tensor_name(A), ng_tensor_desc(A), ng_tensor_name(B), ng_tensor_desc(B));
    NG_CHECK(it == NG_F64 ? ot == NG_F64 : (ot == NG_F32 || ot == it),
             "ng_gemm: C '%s' is %s; for %s inputs C must be %s", ng_tensor_name(C),
             ng_tensor_desc(C), ng_dtype_name(it), it == NG_F64 ? "f64" : "f32 or the input type");
    ng_gemm_desc d = {
        .trans_a = trans_a,
        .trans_b = trans_b,
        .m = m,
        .n = n,
        .k = k,
        .batch = batch,
        .lda = A->shape[o + 1],
        .ldb = B->shape[o + 1],
        .ldc = n,
        .stride_a = o && A->shape[0] > 1 ? A->shape[1] * A->shape[2] : 0,
        .stride_b = o && B->shape[0] > 1 ? B->shape[1] * B->shape[2] : 0,
        .stride_c = m * n,
        .alpha = alpha,
        .beta = beta,
        .in_type = it,
        .out_type = ot,
        .A = A->data,
        .B = B->data,
        .C = C->data,
    };
    if (m && n && batch) be->gemm(&d);
}

void ng_axpy(double alpha, const ng_tensor *x, ng_tensor *y) {
    const ng_backend *be = same_device("ng_axpy", x, y, NULL);
    need_float("ng_axpy", y);
    need_same("ng_axpy", x, y);
    if (y->numel) be->axpy(alpha, x, y);
}

void ng_scale(double alpha, ng_tensor *x) {
    const ng_backend *be = same_device("ng_scale", x, NULL, NULL);
    need_float("ng_scale", x);
    if (x->numel) be->scale(alpha, x);
}

void ng_fill(ng_tensor *x, double value) {
    const ng_backend *be = same_device("ng_fill", x, NULL, NULL);
    if (x->numel) be->fill(x, value);
}

void ng_copy(ng_tensor *dst, const ng_tensor *src) {
    same_device("ng_copy", dst, src, NULL);
    ng_tensor_copy(dst, src);
}

void ng_cast(ng_tensor *dst, const ng_tensor *src) {
    const ng_backend *be = same_device("ng_cast", dst, src, NULL);
    NG_CHECK(dst->numel == src->numel, "ng_cast: '%s' %s and '%s' %s differ in element count",
             ng_tensor_name(src), ng_tensor_desc(src), ng_tensor_name(dst), ng_tensor_desc(dst));
    if (dst->numel) be->cast(dst, src);
}

static void binary(const char *op, ng_binary_op kind, const ng_tensor *a, const ng_tensor *b,
                   ng_tensor *c) {
    const ng_backend *be = same_device(op, a, b, c);
    need_float(op, a);
    need_same(op, a, b);
    need_same(op, a, c);
    if (c->numel) be->binary(kind, a, b, c);
}

void ng_add(const ng_tensor *a, const ng_tensor *b, ng_tensor *c) {
    binary("ng_add", NG_BIN_ADD, a, b, c);
}

void ng_mul(const ng_tensor *a, const ng_tensor *b, ng_tensor *c) {
    binary("ng_mul", NG_BIN_MUL, a, b, c);
}

void ng_add_diagonal(ng_tensor *A, double value) {
    const ng_backend *be = same_device("ng_add_diagonal", A, NULL, NULL);
    need_float("ng_add_diagonal", A);
    int o = A->ndim - 2;
    NG_CHECK((A->ndim == 2 || A->ndim == 3) && A->shape[o] == A->shape[o + 1],
             "ng_add_diagonal: '%s' is %s; a square [n,n] or [b,n,n] tensor is needed",
             ng_tensor_name(A), ng_tensor_desc(A));
    if (A->numel) be->add_diagonal(A, value);
}

static double reduce(const char *op, ng_reduce_op kind, const ng_tensor *x) {
    const ng_backend *be = same_device(op, x, NULL, NULL);
    need_float(op, x);
    if (!x->numel) return kind == NG_RED_ALL_FINITE ? 1.0 : 0.0;
    return be->reduce(kind, x);
}

double ng_sum(const ng_tensor *x) {
    return reduce("ng_sum", NG_RED_SUM, x);
}
double ng_sumsq(const ng_tensor *x) {
    return reduce("ng_sumsq", NG_RED_SUMSQ, x);
}
double ng_maxabs(const ng_tensor *x) {
    return reduce("ng_maxabs", NG_RED_MAXABS, x);
}
int ng_all_finite(const ng_tensor *x) {
    return reduce("ng_all_finite", NG_RED_ALL_FINITE, x) != 0;
}

void ng_sync(ng_device dev) {
    ng_backend_for(dev, "ng_sync")->sync();
}

int64_t ng_reduce_cuda_blocks(int64_t numel) {
    int64_t nb = (numel + 255) / 256; /* the kernel's 256 threads a block */
    return nb < 1 ? 1 : nb > 1024 ? 1024 : nb;
}

size_t ng_reduce_cuda_workspace(int64_t numel) {
    return (size_t)(ng_reduce_cuda_blocks(numel) + 1) * sizeof(double);
}
