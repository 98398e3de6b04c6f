/* Public linear algebra: checks, batching of square inputs, and the damped inverse built from
 * the backend's Cholesky and eigendecomposition. */
#include "linalg.h"

#include <math.h>

#include "backend.h"
#include "dispatch.h"
#include "dtype.h"
#include "memory.h"
#include "ops.h"

/* Checks a square [n,n] or [b,n,n] f32/f64 tensor and returns its [b,n,n] form. */
static ng_tensor as_batch(const char *op, const ng_tensor *A) {
    NG_CHECK(A->dtype == NG_F32 || A->dtype == NG_F64, "%s: '%s' is %s; f32 or f64 is needed", op,
             ng_tensor_name(A), ng_tensor_desc(A));
    int o = A->ndim - 2;
    NG_CHECK((A->ndim == 2 || A->ndim == 3) && A->shape[o] == A->shape[o + 1],
             "%s: '%s' is %s; a square [n,n] or batched [b,n,n] matrix is needed", op,
             ng_tensor_name(A), ng_tensor_desc(A));
    int64_t s[3] = {o ? A->shape[0] : 1, A->shape[o], A->shape[o]};
    return ng_tensor_reshape(A, 3, s);
}

static const ng_backend *check_like(const char *op, const ng_tensor *A, const ng_tensor *B) {
    NG_CHECK(A->device == B->device && A->dtype == B->dtype && ng_tensor_same_shape(A, B),
             "%s: output '%s' is %s but input '%s' is %s: they must match", op, ng_tensor_name(B),
             ng_tensor_desc(B), ng_tensor_name(A), ng_tensor_desc(A));
    return ng_backend_for(A->device, op);
}

ng_status ng_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) {
    ng_tensor a = as_batch("ng_eigh", A);
    const ng_backend *be = check_like("ng_eigh", A, Q);
    NG_CHECK(w->device == A->device && w->dtype == A->dtype &&
                 w->numel == a.shape[0] * a.shape[1] && w->ndim == A->ndim - 1,
             "ng_eigh: eigenvalues '%s' are %s; for '%s' %s they must be %s [%s%lld]",
             ng_tensor_name(w), ng_tensor_desc(w), ng_tensor_name(A), ng_tensor_desc(A),
             ng_dtype_name(A->dtype), A->ndim == 3 ? "b," : "", (long long)a.shape[1]);
    ng_tensor q = ng_tensor_reshape(Q, 3, a.shape);
    ng_tensor ww = ng_tensor_reshape(w, 2, a.shape);
    if (!a.numel) return NG_OK;
    return be->eigh(&a, &ww, &q);
}

ng_status ng_cholesky(const ng_tensor *A, ng_tensor *L) {
    ng_tensor a = as_batch("ng_cholesky", A);
    const ng_backend *be = check_like("ng_cholesky", A, L);
    ng_tensor l = ng_tensor_reshape(L, 3, a.shape);
    if (!a.numel) return NG_OK;
    return be->cholesky(&a, &l);
}

ng_status ng_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) {
    ng_tensor a = as_batch("ng_cholesky_inverse", A);
    const ng_backend *be = check_like("ng_cholesky_inverse", A, inv);
    ng_tensor v = ng_tensor_reshape(inv, 3, a.shape);
    if (!a.numel) return NG_OK;
    return be->cholesky_inverse(&a, &v);
}

ng_status ng_damped_inverse(const ng_tensor *A, double lambda, ng_tensor *inv, int *used_fallback) {
    ng_tensor a = as_batch("ng_damped_inverse", A);
    check_like("ng_damped_inverse", A, inv);
    NG_CHECK(lambda > 0 && isfinite(lambda), "ng_damped_inverse: damping %g must be > 0", lambda);
    if (used_fallback) *used_fallback = 0;
    if (!a.numel) return NG_OK;
    if (!ng_all_finite(A)) {
        ng_fill(inv, NAN);
        return NG_ERR_NONFINITE;
    }
    /* Cholesky of A + lambda I: the fast path, taken whenever it succeeds. */
    ng_tensor damped = ng_tensor_new(a.dtype, a.device, 3, a.shape, "damped factor");
    ng_copy(&damped, &a);
    ng_add_diagonal(&damped, lambda);
    ng_tensor v = ng_tensor_reshape(inv, 3, a.shape);
    ng_status st = ng_cholesky_inverse(&damped, &v);
    ng_tensor_free(&damped);
    if (st != NG_ERR_NOT_PD) return st;

    /* Indefinite: Q diag(1/(max(w,0)+lambda)) Q^T, computed as (Q D^1/2)(Q D^1/2)^T. */
    if (used_fallback) *used_fallback = 1;
    int64_t b = a.shape[0], n = a.shape[1];
    ng_tensor w = ng_tensor_new(a.dtype, NG_CPU, 2, (int64_t[]){b, n}, "eigenvalues");
    ng_tensor wd = ng_tensor_new(a.dtype, a.device, 2, (int64_t[]){b, n}, "eigenvalues");
    ng_tensor Q = ng_tensor_new(a.dtype, a.device, 3, a.shape, "eigenvectors");
    st = ng_eigh(&a, &wd, &Q);
    if (st == NG_OK) {
        ng_tensor_copy(&w, &wd);
        /* Scale column j of each Q by sqrt(1/(max(w_j,0)+lambda)) with a diagonal GEMM. */
        ng_tensor D = ng_tensor_new(a.dtype, NG_CPU, 3, a.shape, "scaling");
        ng_fill(&D, 0);
        for (int64_t p = 0; p < b; p++)
            for (int64_t j = 0; j < n; j++) {
                double x = a.dtype == NG_F64 ? ((double *)w.data)[p * n + j]
                                             : ((float *)w.data)[p * n + j];
                double s = 1.0 / sqrt((x > 0 ? x : 0) + lambda);
                if (a.dtype == NG_F64)
                    ((double *)D.data)[(p * n + j) * n + j] = s;
                else
                    ((float *)D.data)[(p * n + j) * n + j] = (float)s;
            }
        ng_tensor Dd = ng_tensor_to(&D, a.device, "scaling");
        ng_tensor QD = ng_tensor_new(a.dtype, a.device, 3, a.shape, "scaled eigenvectors");
        ng_gemm(0, 0, 1.0, &Q, &Dd, 0.0, &QD);
        ng_gemm(0, 1, 1.0, &QD, &QD, 0.0, &v);
        ng_tensor_free(&D);
        ng_tensor_free(&Dd);
        ng_tensor_free(&QD);
    } else {
        ng_fill(inv, NAN);
    }
    ng_tensor_free(&w);
    ng_tensor_free(&wd);
    ng_tensor_free(&Q);
    return st;
}

static size_t align256(size_t bytes) {
    return (bytes + 255) / 256 * 256;
}

ng_linalg_ws_layout ng_linalg_ws(ng_linalg_op op, ng_dtype dt, int64_t b, int64_t n,
                                 size_t solver_bytes) {
    ng_linalg_ws_layout l;
    l.solver = op == NG_LINALG_EIGH ? align256(ng_dtype_size(dt) * (size_t)(b * n * n)) : 0;
    l.info = l.solver + align256(solver_bytes);
    l.bad = l.info + align256(sizeof(int) * (size_t)b);
    l.total = l.bad + align256(sizeof(int) * (size_t)b);
    return l;
}

int ng_linalg_cuda_batched(int64_t b, int64_t n) {
    return b > 1 && n <= 32;
}

/* LAPACK's workspace for the same job, standing in for cuSOLVER's where no GPU can be asked. */
static size_t solver_estimate(ng_linalg_op op, size_t es, int64_t b, int64_t n) {
    if (op == NG_LINALG_EIGH) {
        size_t one = es * (size_t)(1 + 6 * n + 2 * n * n) + sizeof(int) * (size_t)(3 + 5 * n);
        return ng_linalg_cuda_batched(b, n) ? (size_t)b * one : one;
    }
    return op == NG_LINALG_CHOLESKY_INVERSE ? es * (size_t)(n * n) : 0;
}

size_t ng_linalg_cuda_workspace(ng_linalg_op op, ng_dtype dt, int64_t b, int64_t n,
                                int *estimated) {
    NG_CHECK(dt == NG_F32 || dt == NG_F64, "ng_linalg_cuda_workspace: %s factors; f32 or f64",
             ng_dtype_name(dt));
    NG_CHECK(b >= 0 && n >= 0, "ng_linalg_cuda_workspace: %lld matrices of side %lld", (long long)b,
             (long long)n);
    if (!b || !n) return 0; /* the twins are not called for an empty batch */
    size_t solver = 0;
    if (ng_cuda_available()) {
        NG_CUDA_ONLY(solver = ng_cuda_linalg_solver_bytes(op, dt, b, n));
    } else {
        solver = solver_estimate(op, ng_dtype_size(dt), b, n);
        if (estimated) *estimated = 1;
    }
    return ng_linalg_ws(op, dt, b, n, solver).total;
}
