/* PLACEHOLDER: CPU twins of the dense ops (being written). */
#include "backend.h"
void ng_cpu_gemm(const ng_gemm_desc *d) { (void)d; ng_fail("ng_cpu_gemm: not implemented"); }
void ng_cpu_axpy(double alpha, const ng_tensor *x, ng_tensor *y) { (void)alpha; (void)x; (void)y; ng_fail("todo"); }
void ng_cpu_scale(double alpha, ng_tensor *x) { (void)alpha; (void)x; ng_fail("todo"); }
void ng_cpu_fill(ng_tensor *x, double value) { (void)x; (void)value; ng_fail("todo"); }
void ng_cpu_cast(ng_tensor *dst, const ng_tensor *src) { (void)dst; (void)src; ng_fail("todo"); }
void ng_cpu_binary(ng_binary_op op, const ng_tensor *a, const ng_tensor *b, ng_tensor *c) { (void)op; (void)a; (void)b; (void)c; ng_fail("todo"); }
void ng_cpu_add_diagonal(ng_tensor *A, double value) { (void)A; (void)value; ng_fail("todo"); }
double ng_cpu_reduce(ng_reduce_op op, const ng_tensor *x) { (void)op; (void)x; ng_fail("todo"); return 0; }
