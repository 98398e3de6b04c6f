/* PLACEHOLDER: CUDA twins of the dense ops (being written). */
#include "backend.h"
void ng_cuda_gemm(const ng_gemm_desc *d) { (void)d; ng_fail("todo"); }
void ng_cuda_axpy(double alpha, const ng_tensor *x, ng_tensor *y) { ng_fail("todo"); }
void ng_cuda_scale(double alpha, ng_tensor *x) { ng_fail("todo"); }
void ng_cuda_fill(ng_tensor *x, double value) { ng_fail("todo"); }
void ng_cuda_cast(ng_tensor *dst, const ng_tensor *src) { ng_fail("todo"); }
void ng_cuda_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c) { ng_fail("todo"); }
void ng_cuda_add_diagonal(ng_tensor *A, double value) { ng_fail("todo"); }
double ng_cuda_reduce(ng_reduce_op op, const ng_tensor *x) { ng_fail("todo"); return 0; }
