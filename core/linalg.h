/* Symmetric dense linear algebra for K-FAC factors: eigendecomposition, Cholesky, inverses.
 * Types f32 and f64; square [n,n] or batched [b,n,n] inputs. Only the lower triangle of a
 * symmetric input is read. Numerical failure is returned, never hidden as NaN. */
#ifndef NG_LINALG_H
#define NG_LINALG_H

#include "error.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A = Q diag(w) Q^T with w ascending and the eigenvectors in Q's columns (row-major Q[i,j] is
 * component i of eigenvector j). A [n,n] or [b,n,n]; w [n] or [b,n]; Q like A (Q may alias A).
 * CPU: LAPACKE syevd. CUDA: cuSOLVER Xsyevd, or batched syevj when b > 1 and n <= 32.
 * Returns NG_ERR_NONFINITE for NaN/Inf input and NG_ERR_NO_CONVERGE on solver failure; then
 * w and Q are filled with NaN so that an unchecked result cannot pass for a good one. */
ng_status ng_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q);

/* Lower Cholesky factor L (upper triangle zeroed), A = L L^T. NG_ERR_NOT_PD when A is not
 * positive definite (L is then filled with NaN). */
ng_status ng_cholesky(const ng_tensor *A, ng_tensor *L);

/* A^-1 of a symmetric positive definite A through its Cholesky factor; full symmetric result. */
ng_status ng_cholesky_inverse(const ng_tensor *A, ng_tensor *inv);

/* (A + lambda I)^-1 for symmetric A and lambda > 0 (K-FAC's damped factor inverse).
 * Tries Cholesky; when A + lambda I is not positive definite (A indefinite from round-off or
 * bad statistics) it falls back to the eigendecomposition with eigenvalues clamped at 0,
 * i.e. Q diag(1 / (max(w,0) + lambda)) Q^T, which is always finite. Returns NG_OK on either
 * path, NG_ERR_NONFINITE for non-finite input anywhere in A, both triangles (inv filled with
 * NaN). `used_fallback`, if not
 * NULL, is set to 1 when the eigen path was taken. */
ng_status ng_damped_inverse(const ng_tensor *A, double lambda, ng_tensor *inv, int *used_fallback);

/* The CUDA twins' scratch, for the memory plan and the twins alike (one formula). Each twin takes
 * one request of the shared CUDA workspace (core/cuda_context.h), laid out as [b copies of A
 * (eigh only, solved in place)][the solver's scratch][b infos][b non-finite flags], each piece
 * rounded up to 256 bytes. */
typedef enum { NG_LINALG_EIGH, NG_LINALG_CHOLESKY, NG_LINALG_CHOLESKY_INVERSE } ng_linalg_op;
typedef struct {
    size_t solver, info, bad, total; /* offsets of the pieces (the copies at 0), and the size */
} ng_linalg_ws_layout;
ng_linalg_ws_layout ng_linalg_ws(ng_linalg_op op, ng_dtype dt, int64_t b, int64_t n,
                                 size_t solver_bytes);
/* 1 when the CUDA eigh of b matrices n x n takes batched Jacobi (syevjBatched, n <= 32). */
int ng_linalg_cuda_batched(int64_t b, int64_t n);
/* The bytes the CUDA twin of op asks of the workspace for b matrices n x n of dt (f32, f64).
 * Where a GPU is present the solver's part is cuSOLVER's own answer to the query the twin makes,
 * so the figure is exact. Without one it is an estimate from LAPACK's workspace formulas and
 * *estimated (when not NULL) is set to 1: eigh (syevd, jobz V) lwork 1 + 6n + 2n^2 elements plus
 * liwork 3 + 5n ints, b times that on the batched Jacobi path; potrf none; potri n^2 elements. */
size_t ng_linalg_cuda_workspace(ng_linalg_op op, ng_dtype dt, int64_t b, int64_t n, int *estimated);

#ifdef __cplusplus
}
#endif
#endif
