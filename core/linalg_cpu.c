/* PLACEHOLDER: CPU linear algebra (being written). */
#include "backend.h"
ng_status ng_cpu_eigh(const ng_tensor *A, ng_tensor *w, ng_tensor *Q) { (void)A; (void)w; (void)Q; ng_fail("todo"); return NG_OK; }
ng_status ng_cpu_cholesky(const ng_tensor *A, ng_tensor *L) { (void)A; (void)L; ng_fail("todo"); return NG_OK; }
ng_status ng_cpu_cholesky_inverse(const ng_tensor *A, ng_tensor *inv) { (void)A; (void)inv; ng_fail("todo"); return NG_OK; }
