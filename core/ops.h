/* Dense ops. Each public function checks its tensors (shapes, dtypes, devices: a mismatch is a
 * usage error naming the tensors) and dispatches to the CPU or CUDA twin by the tensors' device.
 * All tensors of one call must be on the same device. Ops run on the CUDA stream of the
 * context; functions returning a host value synchronise. */
#ifndef NG_OPS_H
#define NG_OPS_H

#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C = alpha * op(A) op(B) + beta * C, row-major. op(A) is [m,k]: A is [m,k], or [k,m] when
 * trans_a. 2-D tensors give one product; 3-D tensors [batch, r, c] give a strided batched
 * product, where A or B may have batch 1 to be shared by every product.
 * Types: A and B share one of f32, f64, f16, bf16. C is f32 for f32/f16/bf16 inputs, or the
 * input type itself (f16/bf16 outputs are rounded from an f32 accumulator); f64 needs f64 C.
 * Accumulation is f32 (f64 for f64). With beta == 0, C is not read (NaN in C does not leak). */
void ng_gemm(int trans_a, int trans_b, double alpha, const ng_tensor *A, const ng_tensor *B,
             double beta, ng_tensor *C);

/* y += alpha * x */
void ng_axpy(double alpha, const ng_tensor *x, ng_tensor *y);
/* x *= alpha */
void ng_scale(double alpha, ng_tensor *x);
/* every element = value, converted as ng_cast converts */
void ng_fill(ng_tensor *x, double value);
/* dst = src, same dtype and element count, same device (ng_tensor_copy crosses devices). */
void ng_copy(ng_tensor *dst, const ng_tensor *src);
/* dst = src converted to dst's dtype. Floats round to nearest even (f64 -> f16/bf16 rounds
 * once, correctly). To integers: truncate toward zero, saturate at the type's range, NaN -> 0;
 * i32 -> u8 saturates too. */
void ng_cast(ng_tensor *dst, const ng_tensor *src);
/* c = a + b and c = a * b, element-wise; all three the same shape and dtype (c may alias). */
void ng_add(const ng_tensor *a, const ng_tensor *b, ng_tensor *c);
void ng_mul(const ng_tensor *a, const ng_tensor *b, ng_tensor *c);
/* A[i,i] += value for a square [n,n] or batched [b,n,n] tensor. */
void ng_add_diagonal(ng_tensor *A, double value);

/* Reductions over all elements, accumulated in double on the CPU and in float/double per
 * block then double on the GPU. */
double ng_sum(const ng_tensor *x);
double ng_sumsq(const ng_tensor *x);
double ng_maxabs(const ng_tensor *x); /* NaN if any element is NaN */
int ng_all_finite(const ng_tensor *x);
/* The CUDA reductions above take their partial sums from the shared CUDA workspace: one double
 * per block of 256 elements, at most 1024 blocks, and the result (8200 bytes at most). The
 * blocks, and the bytes the memory plan counts, for x of numel elements. */
int64_t ng_reduce_cuda_blocks(int64_t numel);
size_t ng_reduce_cuda_workspace(int64_t numel);

/* Blocks until the device has finished queued work. */
void ng_sync(ng_device dev);

#ifdef __cplusplus
}
#endif
#endif
