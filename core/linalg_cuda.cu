/* PLACEHOLDER: CUDA linear algebra (being written). */
#include "backend.h"
ng_status ng_cuda_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) { ng_fail("todo"); return NG_OK; }
ng_status ng_cuda_cholesky(const ng_tensor *A, ng_tensor *L) { ng_fail("todo"); return NG_OK; }
ng_status ng_cuda_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) { ng_fail("todo"); return NG_OK; }
